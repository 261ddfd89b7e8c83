"""python tools/measure_real_clip.py [ARGS]: the same as python -m meshstream_tools.measure_real_clip (see that module)."""

from meshstream_tools.measure_real_clip import main

if __name__ == "__main__":
    raise SystemExit(main())
