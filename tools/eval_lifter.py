"""python tools/eval_lifter.py [ARGS]: the same as python -m meshstream_tools.eval_lifter (see that module)."""

from meshstream_tools.eval_lifter import main

if __name__ == "__main__":
    raise SystemExit(main())
