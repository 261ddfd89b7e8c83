"""Export a finished results file as animation:

    python -m stream.exporters RESULTS.npz --bvh OUT.bvh --glb OUT.glb [--units cm|m] [--body-model PATH]
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.exporters",
                                     description="results .npz -> BVH (one file per person) and/or GLB")
    parser.add_argument("results", metavar="RESULTS.npz", help="a results file from `meshstream process`")
    parser.add_argument("--bvh", metavar="OUT.bvh", help="BVH: the longest track here, others as OUT.<id>.bvh")
    parser.add_argument("--glb", metavar="OUT.glb", help="binary glTF with every person's skinned body and motion")
    parser.add_argument("--units", choices=("cm", "m"), default="cm", help="BVH units (default cm)")
    parser.add_argument("--body-model", default=None, metavar="open|PATH",
                        help="the body model the results were made with (default: the open model)")
    args = parser.parse_args(argv)
    if not args.bvh and not args.glb:
        parser.error("give --bvh OUT.bvh and/or --glb OUT.glb")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from stream.exporters import ExportError, export_bvh, export_glb

    try:
        body_model = None
        if args.body_model:
            from engines.body import load_body_model

            body_model = load_body_model(args.body_model)
        written = []
        if args.bvh:
            written += export_bvh(args.results, args.bvh, body_model, units=args.units)
        if args.glb:
            written.append(export_glb(args.results, args.glb, body_model))
    except (ExportError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
