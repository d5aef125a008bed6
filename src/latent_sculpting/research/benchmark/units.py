"""One unit of the benchmark's work: one fold of one dataset for one split seed, every method.

Its rows are drawn (:func:`~.splits.split_fold`), its input spec is fitted on its training
records and every row it uses is encoded with it, evaluation rows that copy a training row are
removed, the fold is checked for leaks, and then each method is fitted on the training rows,
thresholded on the held-out benign rows and measured on the test rows (:func:`run_unit`). Each
finished method writes one checkpoint file, atomically, under a key that says what it was
computed from; a rerun with the same output folder reads it instead of fitting again.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from latent_sculpting.atomic import write_json
from latent_sculpting.io.encoding import encode
from latent_sculpting.io.flowspec import FlowSpec
from latent_sculpting.research.baselines import Method, make_method
from latent_sculpting.research.benchmark.context import with_context
from latent_sculpting.research.benchmark.datasets import Dataset
from latent_sculpting.research.benchmark.report import json_safe
from latent_sculpting.research.benchmark.splits import (
    BENIGN_TEST_FRACTION,
    CALIBRATION_FRACTION,
    KNOWN_TEST_FRACTION,
    Fold,
    FoldRows,
    check_fold,
    drop_duplicates,
    split_fold,
)
from latent_sculpting.research.benchmark.statistics import fold_bootstrap
from latent_sculpting.research.evaluation import FPRS, fold_metrics

__all__ = [
    "CHECKPOINT_VERSION",
    "MethodFactory",
    "checkpoint_key",
    "checkpoint_path",
    "fit_targets",
    "prepare_fold",
    "read_checkpoint",
    "run_unit",
]

#: ``factory(name, random_state, shared) -> Method``: :func:`make_method` unless a caller (a
#: test, ``benchmarks/design/preset_search.py``) builds its own.
MethodFactory = Callable[[str, int | None, dict], Method]

#: Bumped when a change makes old checkpoints mean something else.
CHECKPOINT_VERSION = 2


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("_") or "_"


def checkpoint_path(out: Path, fold: Fold, seed: int, method: str) -> Path:
    """Where the checkpoint of ``method`` on ``fold`` for split ``seed`` lives under ``out``."""
    return (
        out / "folds" / fold.dataset / _slug(fold.name) / f"seed-{seed}" / f"{_slug(method)}.json"
    )


def checkpoint_key(
    dataset: Dataset, fold: Fold, seed: int, method: str, overrides: Mapping | None = None
) -> str:
    """What a checkpoint was computed from: a rerun reuses it only when all of it agrees."""
    content = {
        "overrides": dict(overrides or {}),
        "version": CHECKPOINT_VERSION,
        "dataset": dataset.name,
        "sha256": dataset.sha256,
        "max_per_class": dataset.max_per_class,
        "fold": [fold.name, list(fold.withheld), list(fold.excluded)],
        "seed": seed,
        "method": method,
        "fractions": [BENIGN_TEST_FRACTION, CALIBRATION_FRACTION, KNOWN_TEST_FRACTION],
        "fprs": list(FPRS),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def read_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at ``path``, None when there is none; one computed from something else
    than ``key`` says is refused."""
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("key") != key:
        raise ValueError(
            f"{path} was computed with other data or settings (key {record.get('key')} != "
            f"{key}); write to another --out folder"
        )
    return record


def prepare_fold(
    dataset: Dataset, fold: Fold, seed: int
) -> tuple[FoldRows, FlowSpec, Callable[[np.ndarray], np.ndarray]]:
    """A fold's rows for one split seed, as every method of the benchmark sees them.

    The spec is fitted on the fitting rows only and encodes every row the fold uses;
    evaluation rows that copy a fitting row are removed, and the fold is checked.

    Returns
    -------
    rows : FoldRows
    spec : FlowSpec
    features : callable
        Dataset row indices (of ``rows``) -> their per-flow features, in that order.

    Raises
    ------
    LeakError
        As :func:`run_unit`.
    """
    rows = split_fold(dataset, fold, seed)
    where = f"{dataset.name}, fold {fold.name}"
    spec = dataset.adapter.fit_spec(dataset.records.take(rows.fit), source=f"{where}: fit rows")
    used = rows.used()
    X = encode(spec, dataset.records.take(used), source=where).X
    rows = drop_duplicates(rows, dataset, used, X)
    check_fold(rows, dataset, fold, used, X)

    def features(index: np.ndarray) -> np.ndarray:
        return X[np.searchsorted(used, index)]

    return rows, spec, features


def fit_targets(dataset: Dataset, rows: FoldRows) -> tuple[np.ndarray, np.ndarray]:
    """The fitting rows' targets: 1 for an attack, 0 for benign, and each row's family."""
    classes = dataset.classes[rows.fit]
    y = (classes != dataset.benign).astype(np.int64)
    # Methods learn from the family of each known attack, not its class: a rule that holds
    # known families out to learn how to meet unseen ones should hold out whole families, as
    # the protocol does (a class whose sibling stays in training is no unseen attack).
    family_of = {c: f for f, members in dataset.family_map().items() for c in members}
    return y, np.asarray([family_of.get(c, c) for c in classes], dtype=object)


def run_unit(
    dataset: Dataset,
    fold: Fold,
    seed: int,
    methods: Sequence[str],
    *,
    out: Path,
    factory: MethodFactory = make_method,
    overrides: Mapping | None = None,
) -> list[dict]:
    """One fold for one split seed: every method fitted, scored and measured, checkpointed.

    ``overrides`` are the parameters ``factory`` applies to our presets (``--set``): part of
    each checkpoint's key.

    The split seed also seeds the models, so each seed re-draws every split and every fit.

    Returns
    -------
    list of dict
        One record per method (see ``docs/research/protocol.md`` for the keys).

    Raises
    ------
    LeakError
        If the fold's roles overlap, a withheld or sibling class reaches the fitting rows, or an
        evaluation row copies a fitting row.
    """
    keys = {m: checkpoint_key(dataset, fold, seed, m, overrides) for m in methods}
    done = {m: read_checkpoint(checkpoint_path(out, fold, seed, m), keys[m]) for m in methods}
    if all(r is not None for r in done.values()):
        return [done[m] for m in methods]

    rows, spec, features = prepare_fold(dataset, fold, seed)
    where = f"{dataset.name}, fold {fold.name}"
    classes = dataset.classes
    X_fit, y_fit, labels_fit = features(rows.fit), *fit_targets(dataset, rows)
    parts = {
        "calibration": features(rows.calibration),
        "test_benign": features(rows.test_benign),
        "test_attack": features(rows.test_attack),
        "known_test": features(rows.known_test),
    }
    prevalence = dataset.prevalence(fold.withheld)
    common = {
        "dataset": dataset.name,
        "fold": fold.name,
        "kind": fold.kind,
        "outer": None if fold.outer is None else fold.outer.name,
        "withheld": list(fold.withheld),
        "siblings": list(fold.siblings),
        "split_seed": seed,
        "prevalence": prevalence,
        # Rows used, after the duplicates of fitting rows were removed (counted beside).
        "rows": rows.counts(),
        "duplicates_removed": dict(rows.duplicates),
        "n_features": spec.n_features,
    }
    records = []
    shared: dict = {}
    for name in methods:
        if done[name] is not None:
            records.append(done[name])
            continue
        method = factory(name, seed, shared)
        start = time.perf_counter()
        X_method, method_parts = with_context(method, dataset, rows, X_fit, parts)
        method.fit(X_method, y_fit, labels_fit)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = {part: method.decision_function(Xp) for part, Xp in method_parts.items()}
        score_seconds = time.perf_counter() - start
        for part, values in scores.items():
            if not np.isfinite(values).all():
                raise ValueError(f"{where}: {name} gave non-finite scores on the {part} rows")
        metrics = fold_metrics(
            scores["calibration"],
            scores["test_benign"],
            scores["test_attack"],
            prevalence=prevalence,
            attack_labels=classes[rows.test_attack],
        )
        known = fold_metrics(
            scores["calibration"], scores["test_benign"], scores["known_test"], prevalence=0.5
        )
        native = getattr(method, "native_threshold_", None)
        record = {
            **common,
            "method": name,
            "trains_on": getattr(method, "trains_on", ""),
            "feature_transform": getattr(method, "feature_transform", ""),
            "library": getattr(method, "library", ""),
            **metrics,
            "known": {"auroc": known["auroc"], "recall_at_fpr": known["recall_at_fpr"]},
            "native": None
            if native is None
            else {
                "threshold": float(native),
                "recall": float((scores["test_attack"] > native).mean()),
                "realised_fpr": float((scores["test_benign"] > native).mean()),
            },
            "fit_seconds": fit_seconds,
            "reused_fit": bool(getattr(method, "reused_fit_", False)),
            "score_seconds": score_seconds,
            "key": keys[name],
        }
        if all(len(scores[p]) for p in ("calibration", "test_benign", "test_attack")):
            # One seed per fold and split seed, the same for every method: paired resamples.
            replicates = fold_bootstrap(
                scores["calibration"],
                scores["test_benign"],
                scores["test_attack"],
                seed=[seed, zlib.crc32(dataset.name.encode()), zlib.crc32(fold.name.encode())],
            )
            record["bootstrap"] = {k: np.round(v, 6).tolist() for k, v in replicates.items()}
            # Replicates drawn by row position (not by sorted score, as before 2026-12-07):
            # only these pair with another method's row by row.
            record["bootstrap_pairing"] = "rows"
        record = json_safe(record)
        path = checkpoint_path(out, fold, seed, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record, path)
        records.append(record)
    return records
