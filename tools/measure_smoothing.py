"""python tools/measure_smoothing.py [ARGS]: the same as python -m meshstream_tools.measure_smoothing (see that module)."""

from meshstream_tools.measure_smoothing import main

if __name__ == "__main__":
    raise SystemExit(main())
