"""How often the drift verdict fires on traffic like the training traffic, and on shifted traffic.

Each repetition splits the embedded sample's benign rows at random: 60 % are the "training"
benign rows (the :class:`~latent_sculpting.monitor.drift.DriftReference` is fitted on them; a simple
detector is fitted on three quarters of them and thresholded, split-conformally at the target
false-positive rate, on the last quarter), 40 % are the "new" traffic, scored and fed to a
:class:`~latent_sculpting.monitor.drift.DriftMonitor` whole and in short streams of ``m`` flows. The
detector is the distance to the 5th nearest training flow in log1p space, a stand-in for the
model (the verdict sees only features and flags; a valid conformal rule is what matters).

Shifted traffic: the same new rows with one feature multiplied by 10 (each non-constant feature
in turn), and the benign rows of Thursday and Friday scored against a reference and detector
fitted on Monday to Wednesday.

Usage::

    python benchmarks/design/drift_false_warnings.py [--repeats 200] [--target-fpr 0.01]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from sklearn.neighbors import NearestNeighbors

from latent_sculpting.data import BENIGN, load_cicids2017
from latent_sculpting.monitor.drift import DriftMonitor, DriftReference


class KnnDetector:
    """Distance to the k-th nearest training flow, thresholded split-conformally."""

    def __init__(self, fit_rows: np.ndarray, calibration_rows: np.ndarray, target_fpr: float):
        self.nn = NearestNeighbors(n_neighbors=5).fit(self._space(fit_rows))
        scores = np.sort(self.score(calibration_rows))
        n = len(scores)
        k = int(np.ceil((n + 1) * (1 - target_fpr)))
        self.threshold = scores[min(k, n) - 1]

    @staticmethod
    def _space(X: np.ndarray) -> np.ndarray:
        return np.sign(X) * np.log1p(np.abs(X))

    def score(self, X: np.ndarray) -> np.ndarray:
        return self.nn.kneighbors(self._space(X))[0][:, -1]

    def flag(self, X: np.ndarray) -> np.ndarray:
        return self.score(X) > self.threshold


def fit_parts(train: np.ndarray, names: list[str], target_fpr: float, rng: np.random.Generator):
    order = rng.permutation(len(train))
    cut = len(train) * 3 // 4
    detector = KnnDetector(train[order[:cut]], train[order[cut:]], target_fpr)
    reference = DriftReference().fit(train, feature_names=names, target_fpr=target_fpr)
    return reference, detector


def cause(reason: str) -> str:
    """The kind of a report's reason: flag rate, PSI, or out of range."""
    return reason.split(" on ")[0] if " feature" in reason else "flag rate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 300, 1000])
    args = parser.parse_args()
    table = load_cicids2017()
    benign = table.labels == BENIGN
    X, names = table.X[benign], table.feature_names
    day = np.asarray([table.files[i].stem for i in table.source[benign]])

    warned: collections.Counter[str] = collections.Counter()
    causes: collections.Counter[str] = collections.Counter()
    flagged_shares, max_psi = [], []
    shifted_hits: collections.Counter[str] = collections.Counter()
    shifted_tried: collections.Counter[str] = collections.Counter()
    for repeat in range(args.repeats):
        rng = np.random.default_rng(repeat)
        order = rng.permutation(len(X))
        cut = int(0.6 * len(X))
        train, new = X[order[:cut]], X[order[cut:]]
        reference, detector = fit_parts(train, names, args.target_fpr, rng)
        flags = detector.flag(new)
        report = DriftMonitor(reference).update(new, flags).report()
        flagged_shares.append(report.flagged_share)
        max_psi.append(float(report.psi.max()))
        warned["whole"] += report.drifted
        causes.update(f"whole: {cause(reason)}" for reason in report.reasons)
        for m in args.streams:
            for start in range(0, len(new) - m + 1, m):
                part = slice(start, start + m)
                r = DriftMonitor(reference).update(new[part], flags[part]).report()
                warned[f"m={m}"] += r.drifted
                warned[f"m={m} runs"] += 1
                causes.update(f"m={m}: {cause(reason)}" for reason in r.reasons)
        if repeat < 20:  # shifted copies: fewer repeats, the answer is never close
            for j, name in enumerate(names):
                if reference.minimum_[j] == reference.maximum_[j]:
                    continue
                shifted = new.copy()
                shifted[:, j] *= 10
                r = DriftMonitor(reference).update(shifted, detector.flag(shifted)).report()
                shifted_tried[name] += 1
                shifted_hits[name] += r.drifted and name in r.top_features[:1]

    print(f"benign rows {len(X)}, target FPR {args.target_fpr}, repeats {args.repeats}")
    print(f"new traffic per repeat: {len(X) - int(0.6 * len(X))} flows")
    print(
        f"flagged share on new traffic: mean {np.mean(flagged_shares):.4f}, "
        f"max {np.max(flagged_shares):.4f}; max PSI per repeat: median "
        f"{np.median(max_psi):.3f}, max {np.max(max_psi):.3f}"
    )
    print(f"false warnings, whole new traffic: {warned['whole']} / {args.repeats}")
    for m in args.streams:
        runs = warned[f"m={m} runs"]
        print(f"false warnings, streams of {m} flows: {warned[f'm={m}']} / {runs}")
    print(f"causes: {dict(causes)}")
    missed = [n for n in shifted_tried if shifted_hits[n] < shifted_tried[n]]
    print(
        f"one feature x 10: {len(shifted_tried) - len(missed)} / {len(shifted_tried)} "
        f"non-constant features warned and named first in every repeat; missed: "
        + ", ".join(f"{n} ({shifted_hits[n]}/{shifted_tried[n]})" for n in missed)
    )

    early = np.isin(day, ["monday", "tuesday", "wednesday"])
    rng = np.random.default_rng(0)
    reference, detector = fit_parts(X[early], names, args.target_fpr, rng)
    late = X[~early]
    report = DriftMonitor(reference).update(late, detector.flag(late)).report()
    print(f"\nMonday-Wednesday -> Thursday-Friday ({len(late)} flows):\n{report}")
    for reason in report.reasons:
        print("  -", reason)


if __name__ == "__main__":
    main()
