"""python tools/train_lifter.py [ARGS]: the same as python -m meshstream_tools.train_lifter (see that module)."""

from meshstream_tools.train_lifter import main

if __name__ == "__main__":
    raise SystemExit(main())
