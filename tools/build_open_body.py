"""python tools/build_open_body.py [ARGS]: the same as python -m meshstream_tools.build_open_body (see that module)."""

from meshstream_tools.build_open_body import main

if __name__ == "__main__":
    raise SystemExit(main())
