"""python tools/eval_sequences.py [ARGS]: the same as python -m meshstream_tools.eval_sequences (see that module)."""

from meshstream_tools.eval_sequences import main

if __name__ == "__main__":
    raise SystemExit(main())
