"""python tools/measure_retargeting.py [ARGS]: the same as python -m meshstream_tools.measure_retargeting (see that module)."""

from meshstream_tools.measure_retargeting import main

if __name__ == "__main__":
    raise SystemExit(main())
