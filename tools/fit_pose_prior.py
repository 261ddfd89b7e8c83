"""python tools/fit_pose_prior.py [ARGS]: the same as python -m meshstream_tools.fit_pose_prior (see that module)."""

from meshstream_tools.fit_pose_prior import main

if __name__ == "__main__":
    raise SystemExit(main())
