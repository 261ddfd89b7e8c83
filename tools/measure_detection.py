"""python tools/measure_detection.py [ARGS]: the same as python -m meshstream_tools.measure_detection (see that module)."""

from meshstream_tools.measure_detection import main

if __name__ == "__main__":
    raise SystemExit(main())
