"""The zero-shot evaluation protocol of Chhetri et al. (arXiv:2512.22179).

Some attack classes are withheld from training entirely; the model sees benign traffic and the
remaining ("seen") attacks. The benign rows are split 80/20 and the 20 % is reserved for the
zero-shot test; the seen data (80 % benign plus all non-withheld attacks) is split 80/20,
stratified by label, into training and internal test rows. Evaluation sets are balanced 1:1
benign:attack by subsampling the larger side.

``seed`` here controls only the splits. The paper's reference notebook fixes the split seed at
42 and varies only the model seeds, so results across model seeds are on identical splits;
pass the model seed to the estimator, not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from latent_sculpting.io.formats.cicids2017 import ATTEMPTED_SUFFIX, BENIGN, canonical_labels
from latent_sculpting.io.table import FlowTable

__all__ = [
    "DEFAULT_WITHHELD",
    "Split",
    "ZeroShotSplits",
    "zero_shot_splits",
]

#: The classes the paper withholds as zero-day attacks (canonical names).
DEFAULT_WITHHELD: tuple[str, ...] = ("DoS slowloris", "DoS Slowhttptest", "Bot", "Infiltration")


@dataclass
class Split:
    """Rows of a :class:`~latent_sculpting.data.FlowTable` selected for one role.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32
    y : ndarray of shape (n_rows,), int8
        0 for ``BENIGN``, 1 for any attack.
    labels : ndarray of shape (n_rows,), object
        Canonical labels.
    index : ndarray of shape (n_rows,), int64
        Row indices into the table (sorted), for leakage checks and identifier lookup.
    """

    X: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def label_counts(self) -> dict[str, int]:
        """Rows per label, sorted by label."""
        counts = pd.Series(self.labels, dtype=object).value_counts(sort=False)
        return {str(k): int(v) for k, v in sorted(counts.items())}


@dataclass
class ZeroShotSplits:
    """The splits of the zero-shot protocol.

    Attributes
    ----------
    train : Split
        All seen training rows (benign and seen attacks). Stage 2 (the benign density) needs
        every benign training row, so nothing is undersampled here (the estimator undersamples
        benign rows for Stage 1 itself).
    internal_test : Split
        Held-out seen rows, balanced 1:1 benign:attack.
    zero_shot : Split
        Withheld attacks plus the reserved benign rows, balanced 1:1.
    zero_shot_attacks : Split
        Every withheld attack row (for per-class recall).
    withheld : tuple of str
        Canonical names of the withheld classes.
    feature_names : list of str
    seed : int
        Seed of the splits.
    """

    train: Split
    internal_test: Split
    zero_shot: Split
    zero_shot_attacks: Split
    withheld: tuple[str, ...]
    feature_names: list[str]
    seed: int

    def summary(self) -> dict[str, dict[str, int]]:
        """Rows per label for each split (JSON-serialisable)."""
        return {
            name: getattr(self, name).label_counts()
            for name in ("train", "internal_test", "zero_shot", "zero_shot_attacks")
        }


def _stratified_split(
    labels: np.ndarray, rows: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (keep, held-out) with ``fraction`` of each label held out.

    A class with fewer than 2 rows cannot be on both sides; it stays on the keep side rather
    than failing as scikit-learn's stratified splitter does.
    """
    keep, held = [], []
    codes, uniques = pd.factorize(labels[rows], sort=True)
    for code in range(len(uniques)):
        members = rows[codes == code]
        members = members[rng.permutation(len(members))]
        n_held = int(round(fraction * len(members))) if len(members) >= 2 else 0
        n_held = min(n_held, len(members) - 1) if len(members) >= 2 else 0
        held.append(members[:n_held])
        keep.append(members[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def _stratified_sample(
    labels: np.ndarray, rows: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``n`` of ``rows`` without replacement, keeping each label's share.

    Per-label quotas use the largest-remainder method, so they sum exactly to ``n``.
    """
    if n >= len(rows):
        return np.sort(rows)
    codes, uniques = pd.factorize(labels[rows], sort=True)
    sizes = np.bincount(codes, minlength=len(uniques))
    exact = sizes * (n / len(rows))
    quota = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(sizes)), -(exact - quota)))
    quota[order[: n - int(quota.sum())]] += 1
    chosen = [
        rng.choice(rows[codes == code], size=int(quota[code]), replace=False)
        for code in range(len(uniques))
    ]
    return np.sort(np.concatenate(chosen))


def _balance(labels: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Subsample the larger of benign / attack in ``rows`` to the size of the smaller (1:1)."""
    is_benign = labels[rows] == BENIGN
    benign, attack = rows[is_benign], rows[~is_benign]
    n = min(len(benign), len(attack))
    return np.sort(
        np.concatenate(
            [_stratified_sample(labels, benign, n, rng), _stratified_sample(labels, attack, n, rng)]
        )
    )


def _make_split(table: FlowTable, labels: np.ndarray, rows: np.ndarray) -> Split:
    rows = np.asarray(rows, dtype=np.int64)
    sel = labels[rows]
    return Split(
        X=table.X[rows],
        y=(sel != BENIGN).astype(np.int8),
        labels=sel,
        index=rows,
    )


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")


def zero_shot_splits(
    table: FlowTable,
    *,
    withheld: Iterable[str] = DEFAULT_WITHHELD,
    seed: int = 42,
    benign_test_fraction: float = 0.2,
    test_fraction: float = 0.2,
    balance: bool = True,
) -> ZeroShotSplits:
    """Build the paper's zero-shot splits from a labeled table.

    Following Chhetri et al. (arXiv:2512.22179): benign rows are split
    ``1 - benign_test_fraction`` / ``benign_test_fraction``, the latter reserved for the
    zero-shot test; seen rows (the remaining benign rows and all non-withheld attacks) are split
    ``1 - test_fraction`` / ``test_fraction``, stratified by label, into ``train`` and
    ``internal_test``; ``internal_test`` and ``zero_shot`` (withheld attacks + reserved benign)
    are balanced 1:1 benign:attack by subsampling the larger side, stratified by label.

    Parameters
    ----------
    table : FlowTable
        Labeled table with canonical labels (from :func:`load_cicids2017`).
    withheld : iterable of str, default DEFAULT_WITHHELD
        Classes withheld from training; canonical names or aliases (``"Botnet"``, ...). Their
        improved-release attempted variants (``"<class> - Attempted"``) are left out of every
        split, so no trace of a withheld class reaches training.
    seed : int, default 42
        Seed of the splits (only); the same seed gives identical splits.
    benign_test_fraction, test_fraction : float, default 0.2
        Fractions described above.
    balance : bool, default True
        Balance the evaluation sets 1:1; False keeps every row.

    Returns
    -------
    ZeroShotSplits

    Raises
    ------
    ValueError
        If the table has no labels or no benign rows, a withheld name is unknown, is
        ``BENIGN``, or is absent from the table (the message lists the labels present), or a
        fraction is outside (0, 1).
    """
    if table.labels is None:
        raise ValueError("zero_shot_splits needs a labeled table (labels is None)")
    _check_fraction("benign_test_fraction", benign_test_fraction)
    _check_fraction("test_fraction", test_fraction)
    withheld = canonical_labels(withheld)
    if not withheld:
        raise ValueError("withheld must name at least one attack class, got none")
    labels = np.asarray(table.labels, dtype=object)
    present = table.label_counts()
    if BENIGN in withheld:
        raise ValueError(f"{BENIGN!r} cannot be withheld; withheld={withheld}")
    absent = [w for w in withheld if w not in present]
    if absent:
        raise ValueError(
            f"withheld class(es) {absent} not in the data; labels present: {sorted(present)}"
        )
    if BENIGN not in present:
        raise ValueError(f"no {BENIGN!r} rows in the data; labels present: {sorted(present)}")

    rng = np.random.default_rng(seed)
    rows = np.arange(len(labels))
    is_benign = labels == BENIGN
    is_withheld = pd.Series(labels, dtype=object).isin(withheld).to_numpy()
    shadow = pd.Series(labels, dtype=object).isin([w + ATTEMPTED_SUFFIX for w in withheld])
    is_seen_attack = ~is_benign & ~is_withheld & ~shadow.to_numpy()

    benign_rows = rows[is_benign]
    benign_rows = benign_rows[rng.permutation(len(benign_rows))]
    n_reserved = int(round(benign_test_fraction * len(benign_rows)))
    reserved = np.sort(benign_rows[:n_reserved])
    seen = np.sort(np.concatenate([benign_rows[n_reserved:], rows[is_seen_attack]]))

    train, internal = _stratified_split(labels, seen, test_fraction, rng)
    attacks = rows[is_withheld]
    zero_shot = np.sort(np.concatenate([reserved, attacks]))
    if balance:
        internal = _balance(labels, internal, rng)
        zero_shot = _balance(labels, zero_shot, rng)
    return ZeroShotSplits(
        train=_make_split(table, labels, train),
        internal_test=_make_split(table, labels, internal),
        zero_shot=_make_split(table, labels, zero_shot),
        zero_shot_attacks=_make_split(table, labels, attacks),
        withheld=withheld,
        feature_names=list(table.feature_names),
        seed=seed,
    )
