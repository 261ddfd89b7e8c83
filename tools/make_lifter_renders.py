"""python tools/make_lifter_renders.py [ARGS]: the same as python -m meshstream_tools.make_lifter_renders (see that module)."""

from meshstream_tools.make_lifter_renders import main

if __name__ == "__main__":
    raise SystemExit(main())
