"""Statistics of the benchmark: spread over split seeds, paired bootstrap intervals of the
differences between methods, and mean ranks with the Friedman test and Nemenyi's critical
difference (Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7,
2006).

The Friedman test and the studentized range come from scipy. The Nemenyi critical difference is
one closed form on top of them (Demšar's eq. for CD); scikit-posthocs and autorank implement the
same but would bring statsmodels, seaborn and four more packages for that one formula and a
plot, so the formula and the diagram
(:func:`latent_sculpting.research.plots.plot_critical_difference`)
are written here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

from latent_sculpting.research.evaluation import FPRS, fpr_key, threshold_rank

__all__ = [
    "fold_bootstrap",
    "friedman_nemenyi",
    "mean_std",
    "paired_bootstrap",
    "percentile_interval",
    "verdict",
]

#: Resamples of :func:`fold_bootstrap`.
FOLD_RESAMPLES = 1000


def mean_std(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (``ddof=1``) and count of the finite values.

    The sample std estimates the spread of one more run; with one value it is undefined (NaN).
    """
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return {
        "mean": float(arr.mean()) if len(arr) else float("nan"),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else float("nan"),
        "n": int(len(arr)),
    }


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile bootstrap interval of the mean of the paired differences ``a - b``.

    Each pair is one unit (here a fold, its split seeds averaged); resampling units keeps the
    pairing, so what the two methods share (a hard fold) cancels.

    Returns
    -------
    dict
        ``difference`` (the observed mean), ``low``, ``high``, ``n`` (pairs with both values
        finite) and ``verdict`` (:func:`verdict`).

    Raises
    ------
    ValueError
        If ``a`` and ``b`` differ in length or ``confidence`` is not in (0, 1).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = (a - b)[np.isfinite(a) & np.isfinite(b)]
    if len(diff) == 0:
        nan = float("nan")
        return {"difference": nan, "low": nan, "high": nan, "n": 0, "verdict": "no data"}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    out = {
        "difference": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "n": int(len(diff)),
    }
    out["verdict"] = verdict(out["low"], out["high"])
    return out


def fold_bootstrap(
    calibration: np.ndarray,
    benign: np.ndarray,
    attacks: np.ndarray,
    *,
    fprs: Iterable[float] = FPRS,
    n_resamples: int = FOLD_RESAMPLES,
    seed: int | Sequence[int] = 0,
    chunk: int = 100,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of one fitted method's AUROC and recall at each false-positive rate
    on one fold: the held-out benign (calibration), benign test and attack test rows are each
    resampled with replacement, the threshold re-set on the resampled calibration rows by the
    rule of :func:`~latent_sculpting.research.evaluation.threshold_at_fpr`, and the metrics
    recomputed.

    The model stays fixed: the replicates say how much the figure would move with other rows
    drawn from the same traffic, not with another fit (that is the spread over split seeds).
    Rows are drawn by their position in the arrays given, so the same ``seed`` for every method
    of a fold, with each method's scores of the same rows in the same order, draws the same
    rows for each: replicate ``i`` of two methods is the same resample, and the difference of
    their replicates is a paired bootstrap of the difference on that fold.

    Each chunk of ``chunk`` replicates draws, in this order, indices into the calibration,
    benign and attack scores as given, with ``rng.integers`` (shape ``(chunk, n_rows)``); the
    AUROC of a replicate is the Mann-Whitney statistic of the resampled rows (ties count one
    half), computed from how many times each row was drawn.

    Returns
    -------
    dict of str to ndarray of shape (n_resamples,)
        ``"auroc"`` and ``"recall@<fpr>"`` (keys
        :func:`~latent_sculpting.research.evaluation.fpr_key`).

    Raises
    ------
    ValueError
        If a set of scores is empty or not finite, or ``n_resamples`` or ``chunk`` < 1.
    """
    parts = {
        "calibration": np.asarray(calibration, dtype=np.float64).ravel(),
        "benign": np.asarray(benign, dtype=np.float64).ravel(),
        "attacks": np.asarray(attacks, dtype=np.float64).ravel(),
    }
    for name, values in parts.items():
        if len(values) == 0 or not np.isfinite(values).all():
            raise ValueError(f"fold_bootstrap needs {name} scores, all finite; got {len(values)}")
    if n_resamples < 1 or chunk < 1:
        raise ValueError(f"n_resamples and chunk must be >= 1, got {n_resamples}, {chunk}")
    cal = parts["calibration"]
    # The counts below walk sorted scores; draws are by row, then carried to the sorted order.
    benign_order = np.argsort(parts["benign"], kind="stable")
    attack_order = np.argsort(parts["attacks"], kind="stable")
    benign, attacks = parts["benign"][benign_order], parts["attacks"][attack_order]
    n_cal, n_benign, n_attack = len(cal), len(benign), len(attacks)
    ranks = {fpr_key(f): threshold_rank(n_cal, f) for f in fprs}
    # The Mann-Whitney count walks the smaller side against the cumulative draws of the other:
    # for each of its rows, how much of the other side lies strictly below it and how much ties.
    attacks_walk = n_attack <= n_benign
    walk, other = (attacks, benign) if attacks_walk else (benign, attacks)
    below = np.searchsorted(other, walk, side="left")
    at_most = np.searchsorted(other, walk, side="right")
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"auroc": [], **{f"recall@{k}": [] for k in ranks}}
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        cal_r = np.sort(cal[rng.integers(0, n_cal, size=(size, n_cal))], axis=1)
        w_benign = _draw_counts(rng.integers(0, n_benign, size=(size, n_benign)), n_benign)
        w_attack = _draw_counts(rng.integers(0, n_attack, size=(size, n_attack)), n_attack)
        w_benign, w_attack = w_benign[:, benign_order], w_attack[:, attack_order]
        cum_attack = _cumulative(w_attack)
        w_walk, cum_other = (
            (w_attack, _cumulative(w_benign)) if attacks_walk else (w_benign, cum_attack)
        )
        lower = np.take(cum_other, below, axis=1)
        ties = np.take(cum_other, at_most, axis=1) - lower
        if attacks_walk:  # attack rows win over the benign rows below them
            wins = lower + 0.5 * ties
        else:  # benign rows lose to the attack rows above them
            wins = (cum_other[:, -1:] - lower - ties) + 0.5 * ties
        out["auroc"].append((w_walk * wins).sum(axis=1) / (n_benign * n_attack))
        rows = np.arange(size)
        for key, rank in ranks.items():
            caught_below = cum_attack[rows, np.searchsorted(attacks, cal_r[:, rank], "right")]
            out[f"recall@{key}"].append((n_attack - caught_below) / n_attack)
    return {k: np.concatenate(v) for k, v in out.items()}


def _cumulative(counts: np.ndarray) -> np.ndarray:
    """Running sums of ``counts`` along each row, with a leading 0: ``out[:, i]`` is the
    weight of the first ``i`` rows."""
    out = np.zeros((counts.shape[0], counts.shape[1] + 1))
    np.cumsum(counts, axis=1, out=out[:, 1:])
    return out


def _draw_counts(index: np.ndarray, n: int) -> np.ndarray:
    """How many times each of ``n`` rows is drawn in each row of ``index`` (shape
    ``(replicates, draws)``), as float64 of shape ``(replicates, n)``."""
    size = index.shape[0]
    flat = (index + n * np.arange(size)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)


def percentile_interval(replicates: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN, NaN without a finite one)."""
    values = np.asarray(replicates, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def verdict(low: float, high: float) -> str:
    """``"tie"`` when the interval contains 0, else ``"higher"`` or ``"lower"``."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no data"
    if low <= 0 <= high:
        return "tie"
    return "higher" if low > 0 else "lower"


def friedman_nemenyi(table: np.ndarray, names: Sequence[str], *, alpha: float = 0.05) -> dict:
    """Mean ranks, the Friedman test and Nemenyi's critical difference.

    Parameters
    ----------
    table : ndarray of shape (n_blocks, n_methods)
        One row per block (a fold), one column per method; higher is better. Blocks with a
        non-finite value are left out.
    names : sequence of str
        Method names, in column order.
    alpha : float, default 0.05

    Returns
    -------
    dict
        ``mean_rank`` (method -> mean rank, 1 = best, ties averaged), ``n_blocks``,
        ``friedman_statistic`` and ``friedman_p`` (None with fewer than 3 methods or 2
        blocks), ``critical_difference`` (Nemenyi, at ``alpha``; None likewise) and
        ``alpha``.
    """
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(names):
        raise ValueError(f"table has shape {table.shape}; expected (blocks, {len(names)})")
    table = table[np.isfinite(table).all(axis=1)]
    n, k = table.shape
    ranks = np.vstack([stats.rankdata(-row) for row in table]) if n else np.empty((0, k))
    out: dict = {
        "mean_rank": {m: float(r) for m, r in zip(names, ranks.mean(axis=0), strict=True)}
        if n
        else {m: float("nan") for m in names},
        "n_blocks": int(n),
        "alpha": alpha,
        "friedman_statistic": None,
        "friedman_p": None,
        "critical_difference": None,
    }
    if k >= 3 and n >= 2:
        if np.ptp(table, axis=1).any():
            result = stats.friedmanchisquare(*table.T)
            out["friedman_statistic"] = float(result.statistic)
            out["friedman_p"] = float(result.pvalue)
        else:  # every block ties every method: nothing to test
            out["friedman_statistic"], out["friedman_p"] = 0.0, 1.0
        q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
        out["critical_difference"] = float(q * np.sqrt(k * (k + 1) / (6 * n)))
    return out
