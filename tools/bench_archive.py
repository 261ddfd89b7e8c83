"""python tools/bench_archive.py [ARGS]: the same as python -m meshstream_tools.bench_archive (see that module)."""

from meshstream_tools.bench_archive import main

if __name__ == "__main__":
    raise SystemExit(main())
