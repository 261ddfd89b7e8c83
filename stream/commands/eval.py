"""Score results files against ground truth.

    meshstream eval PRED.npz GT.npz [--json]
    meshstream eval PRED_DIR GT_DIR [--json]     every GT_DIR/<clip>.npz against PRED_DIR/<clip>.npz

Predictions are matched to ground-truth people per frame (Hungarian on 2D keypoint distance,
gated), then MPJPE, PA-MPJPE, PVE (mm), acceleration error (mm/frame^2), 2D keypoint error (px),
detection rate, false positives, id switches and MOTA are reported per clip and overall.
Definitions: docs/accuracy.md, section "Metrics".
"""

from __future__ import annotations

NAME = "eval"
HELP = "score a results .npz (or a folder of them) against ground truth"


def add_arguments(parser) -> None:
    parser.add_argument("pred", help="predicted results .npz (from `meshstream process`), or a folder of them")
    parser.add_argument("gt", help="ground-truth .npz (from tools/make_synthetic.py), or a folder of them")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--gate", type=float, default=0.5,
                        help="largest match distance, as a fraction of the ground-truth keypoint box diagonal "
                             "(default 0.5)")
    parser.add_argument("--min-visible", type=int, default=6,
                        help="ignore ground-truth people with fewer visible keypoints (default 6)")


def _pairs(pred_path, gt_path):
    from pathlib import Path

    from stream.cli import UserError
    from stream.evaluation import load_sequence

    pred_path, gt_path = Path(pred_path), Path(gt_path)
    try:
        if gt_path.is_dir():
            if not pred_path.is_dir():
                raise UserError(f"{gt_path} is a folder, so PRED must be a folder of results too (got {pred_path})")
            gt_files = sorted(gt_path.glob("*.npz"))
            if not gt_files:
                raise UserError(f"no .npz files in {gt_path}; make ground truth with tools/make_synthetic.py")
            missing = [f.name for f in gt_files if not (pred_path / f.name).is_file()]
            if missing:
                raise UserError(f"{pred_path} has no results for {missing}; run `meshstream process` on those clips "
                                "(results must be named like the ground truth)")
            return [(load_sequence(pred_path / f.name, f.stem), load_sequence(f, f.stem)) for f in gt_files]
        if pred_path.is_dir():
            raise UserError(f"{pred_path} is a folder but {gt_path} is not; give two files or two folders")
        return [(load_sequence(pred_path, gt_path.stem), load_sequence(gt_path, gt_path.stem))]
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def run(args) -> int:
    import json

    from stream.cli import UserError
    from stream.evaluation import Settings, evaluate, format_table

    if not args.gate > 0:
        raise UserError(f"--gate must be positive, got {args.gate}")
    pairs = _pairs(args.pred, args.gt)
    results = evaluate(pairs, Settings(gate=args.gate, min_visible=args.min_visible))
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0
