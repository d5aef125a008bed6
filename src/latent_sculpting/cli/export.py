"""``sculpt export``: a saved model's scoring path as one ONNX graph."""

from __future__ import annotations

import argparse
import sys

from latent_sculpting.cli.common import add_threads_flag


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write a saved model's whole scoring path as one ONNX graph",
        description="Write the model's scoring path (preprocessing, encoder and Deep SVDD "
        "embedding where the model has them, flow, side channels (boosted trees, nearest benign "
        "prototype, forest), score rule, p-value and verdict) as one ONNX graph "
        "that onnxruntime scores: input `features` (float32 rows in the order of the model's "
        "features), outputs `score`, `p_value` and `is_attack`. Checked with onnxruntime "
        "against the native scores of rows drawn from the model's benign profile. Needs the "
        "onnx extra: pip install 'latent-sculpting[onnx]'.",
    )
    parser.add_argument("model", help="model file written by `sculpt train`")
    parser.add_argument(
        "--onnx", action="store_true", required=True, help="export to ONNX (the only format)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="ONNX", help=".onnx file to write")
    add_threads_flag(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.threads import limit_threads

    try:
        from latent_sculpting.serve.export import export_onnx
    except ImportError as error:
        raise ValueError(f"export needs onnx: install latent-sculpting[onnx] ({error})") from None
    model = LatentSculpting.load(args.model)
    with limit_threads(1):
        path = export_onnx(model, args.output)
    print(f"ONNX graph written to {path} ({Path(path).stat().st_size / 1024:.0f} KiB)")
    try:
        with limit_threads(1):
            difference, rows = _check(model, path)
    except ImportError:
        note = "onnxruntime is not installed; the graph was not checked"
        print(f"sculpt export: note: {note}", file=sys.stderr)
        return 0
    print(
        f"checked with onnxruntime on {rows} rows from the benign profile: largest score "
        f"difference from the native model {difference:.3g} (relative to max(1, |score|))"
    )
    return 0


def _check(model: object, path: object) -> tuple[float, int]:
    """Largest relative score difference between onnxruntime and the model on rows made of
    the benign profile's quantiles (or one row of zeros without a profile)."""
    import numpy as np
    import onnxruntime

    profile = getattr(model, "benign_profile_", None)
    if profile is None:
        rows = np.zeros((1, model.n_features_in_), dtype=np.float32)
    else:
        rows = np.ascontiguousarray(profile.quantiles_, dtype=np.float32)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # the thread policy of latent_sculpting.threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    score = session.run(["score"], {"features": rows})[0]
    native = model.decision_function(rows)
    difference = np.abs(score - native) / np.maximum(1.0, np.abs(native))
    return float(difference.max()), len(rows)
