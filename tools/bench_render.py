"""python tools/bench_render.py [ARGS]: the same as python -m meshstream_tools.bench_render (see that module)."""

from meshstream_tools.bench_render import main

if __name__ == "__main__":
    raise SystemExit(main())
