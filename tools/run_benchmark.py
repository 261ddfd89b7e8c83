"""python tools/run_benchmark.py [ARGS]: the same as python -m meshstream_tools.run_benchmark (see that module)."""

from meshstream_tools.run_benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
