"""python tools/measure_detector_noise.py [ARGS]: the same as python -m meshstream_tools.measure_detector_noise (see that module)."""

from meshstream_tools.measure_detector_noise import main

if __name__ == "__main__":
    raise SystemExit(main())
