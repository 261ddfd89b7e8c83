"""python tools/make_synthetic.py [ARGS]: the same as python -m meshstream_tools.make_synthetic (see that module)."""

from meshstream_tools.make_synthetic import main

if __name__ == "__main__":
    raise SystemExit(main())
