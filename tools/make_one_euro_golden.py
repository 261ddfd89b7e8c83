"""python tools/make_one_euro_golden.py [ARGS]: the same as python -m meshstream_tools.make_one_euro_golden (see that module)."""

from meshstream_tools.make_one_euro_golden import main

if __name__ == "__main__":
    raise SystemExit(main())
