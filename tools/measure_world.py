"""python tools/measure_world.py [ARGS]: the same as python -m meshstream_tools.measure_world (see that module)."""

from meshstream_tools.measure_world import main

if __name__ == "__main__":
    raise SystemExit(main())
