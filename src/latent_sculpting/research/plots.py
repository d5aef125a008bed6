"""Figures of a run, written as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from latent_sculpting.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

__all__ = [
    "incident_timeline_png",
    "plot_critical_difference",
    "plot_curves",
    "plot_latent",
    "plot_recall_heatmap",
    "plot_score_histograms",
    "save_figure",
]


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Save to a temporary name, then rename, so a figure is never half-written."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_curves(
    y_true: np.ndarray, scores_by_run: Mapping[str, np.ndarray], path: Path, title: str
) -> Path:
    """ROC and precision-recall curves, one line per run (seed or method)."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, scores in scores_by_run.items():
        fpr, tpr, _ = roc_curve(y_true, scores)
        roc_ax.plot(fpr, tpr, lw=1.5, label=name)
        precision, recall, _ = precision_recall_curve(y_true, scores)
        pr_ax.plot(recall, precision, lw=1.5, label=name)
    roc_ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    roc_ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC: {title}")
    pr_ax.axhline(np.mean(y_true), ls="--", c="grey", lw=1)
    pr_ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall: {title}")
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if ax is roc_ax else "lower left")
    return save_figure(fig, path)


def _signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log10(1 + np.abs(values))


def plot_score_histograms(
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: Mapping[float, float],
    path: Path,
    *,
    xlabel: str = "Stage-2 score (negative log-likelihood)",
    highlight: Sequence[str] = (),
) -> Path:
    """Histogram of the score per class, thresholds as vertical lines.

    Scores of attacks run to thousands of nats while benign ones sit near zero, so the x axis
    is ``sign(s) log10(1 + |s|)``. Benign is filled grey; classes in ``highlight`` (the
    withheld ones) are drawn bold.
    """
    scores = _signed_log(np.asarray(scores, dtype=np.float64))
    labels = np.asarray(labels).astype(str)
    finite = np.isfinite(scores)
    lo, hi = np.percentile(scores[finite], [0.5, 99.5]) if finite.any() else (0.0, 1.0)
    bins = np.linspace(lo, hi, 70)
    highlight = set(highlight)
    fig, ax = plt.subplots(figsize=(11, 5))
    classes = sorted(np.unique(labels), key=lambda c: (c != "BENIGN", c not in highlight, c))
    colours = plt.cm.tab20(np.linspace(0, 1, 20))
    for i, label in enumerate(classes):
        values = np.clip(scores[(labels == label) & finite], lo, hi)
        name = f"{label} (n={len(values)}){' — withheld' if label in highlight else ''}"
        if label == "BENIGN":
            ax.hist(values, bins=bins, density=True, color="0.7", label=name)
        else:
            bold = label in highlight
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                density=True,
                lw=2.2 if bold else 0.9,
                color=colours[i % 20],
                alpha=1.0 if bold else 0.6,
                label=name,
            )
    for p, value in sorted(thresholds.items()):
        x = float(_signed_log(np.asarray(value)))
        if lo <= x <= hi:
            ax.axvline(x, ls=":", c="black", lw=1)
            ax.text(
                x,
                0.98,
                f" P{p:g}",
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                transform=ax.get_xaxis_transform(),
            )
    ax.set(
        xlabel=f"{xlabel}, sign(s)·log10(1 + |s|)",
        ylabel="density",
        title="Score distribution per class, with the percentile thresholds",
    )
    ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_latent(
    codes: np.ndarray,
    labels: np.ndarray,
    path: Path,
    *,
    max_points: int = 5000,
    seed: int = 0,
    centers: Sequence[np.ndarray] = (),
    highlight: Sequence[str] = (),
) -> Path:
    """2-D projection of latent codes coloured by class (UMAP if installed, else PCA).

    Classes in ``highlight`` (the withheld ones) are drawn as triangles on top.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    keep = rng.permutation(len(codes))[:max_points]
    codes, labels = np.asarray(codes)[keep], labels[keep]
    try:
        import umap  # type: ignore[import-not-found]

        reducer, method = umap.UMAP(n_components=2, random_state=seed), "UMAP"
        xy = reducer.fit_transform(codes)
        center_xy = reducer.transform(np.vstack(centers)) if len(centers) else None
    except ImportError:
        pca, method = PCA(n_components=2, random_state=seed).fit(codes), "PCA"
        xy = pca.transform(codes)
        center_xy = pca.transform(np.vstack(centers)) if len(centers) else None
    fig, ax = plt.subplots(figsize=(9, 7))
    highlight = set(highlight)
    # Benign first, known attacks next, withheld ones last, so the zero-day classes stay visible.
    classes = sorted(np.unique(labels), key=lambda c: (c != "BENIGN", c in highlight, c))
    colours = plt.cm.tab20(np.linspace(0, 1, 20))
    for i, label in enumerate(classes):
        mask = labels == label
        withheld = label in highlight
        ax.scatter(
            xy[mask, 0],
            xy[mask, 1],
            s=14 if withheld else 4,
            alpha=0.7,
            marker="^" if withheld else "o",
            color="0.35" if label == "BENIGN" else colours[i % 20],
            label=f"{label} ({mask.sum()}){' — withheld' if withheld else ''}",
        )
    if center_xy is not None:
        ax.scatter(
            center_xy[:, 0], center_xy[:, 1], marker="X", s=90, c="black", label="Stage-1 centroids"
        )
    ax.set(title=f"Latent space ({method} projection)", xlabel=f"{method} 1", ylabel=f"{method} 2")
    ax.legend(fontsize=7, markerscale=1.5, bbox_to_anchor=(1.02, 1), loc="upper left")
    return save_figure(fig, path)


def plot_recall_heatmap(results: Mapping, path: Path, *, fpr: str = "0.01") -> Path:
    """Withheld family x method: recall at a benign false-positive rate, mean over split seeds,
    from a ``benchmark.json`` result set."""
    methods = list(results["config"]["methods"])
    per = {(p["dataset"], p["fold"], p["method"]): p for p in results["per_fold"]}
    folds = list(dict.fromkeys((r["dataset"], r["fold"]) for r in results["folds"]))
    grid = np.full((len(folds), len(methods)), np.nan)
    unresolved = np.zeros(grid.shape, dtype=bool)
    for i, fold in enumerate(folds):
        for j, method in enumerate(methods):
            stat = per.get((*fold, method), {}).get(f"recall@{fpr}") or {}
            if stat.get("mean") is not None:
                grid[i, j] = stat["mean"]
            # No seed of the fold resolves the rate (its benign rows are too few).
            unresolved[i, j] = stat.get("n") == 0
    fig, ax = plt.subplots(figsize=(3 + 1.1 * len(methods), 1.2 + 0.38 * len(folds)))
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_yticks(range(len(folds)), [f"{d}: {f}" for d, f in folds], fontsize=8)
    for i in range(len(folds)):
        for j in range(len(methods)):
            if np.isfinite(grid[i, j]):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if grid[i, j] < 0.6 else "black",
                )
            elif unresolved[i, j]:
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="grey")
    ax.set_title(f"Recall of the withheld family at {100 * float(fpr):g} % benign FPR")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_critical_difference(
    mean_rank: Mapping[str, float], cd: float, path: Path, *, title: str = ""
) -> Path:
    """Critical-difference diagram (Demšar 2006): methods on a rank axis, best on the left; a
    bar joins methods whose mean ranks differ by less than the Nemenyi critical difference
    ``cd`` (not significantly different)."""
    names = sorted(mean_rank, key=lambda m: mean_rank[m])
    ranks = np.array([mean_rank[m] for m in names])
    k = len(names)
    lo, hi = 1, max(k, int(np.ceil(ranks.max())))
    half = (k + 1) // 2
    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.3 * half))
    ax.set_xlim(lo - 0.3, hi + 0.3)
    ax.set_ylim(0, 1)
    ax.axis("off")
    top = 0.72
    ax.hlines(top, lo, hi, color="black", lw=1)
    for r in range(lo, hi + 1):
        ax.vlines(r, top, top + 0.03, color="black", lw=1)
        ax.text(r, top + 0.05, str(r), ha="center", va="bottom", fontsize=8)
    ax.hlines(0.93, lo, lo + cd, color="black", lw=2)
    ax.text(lo + cd + 0.05, 0.93, f"CD = {cd:.2f}", ha="left", va="center", fontsize=8)
    step = (top - 0.2) / max(1, half)
    for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
        left = i < half
        y = top - 0.15 - step * (i if left else k - 1 - i)
        x_text = lo - 0.2 if left else hi + 0.2
        ax.plot([rank, rank, x_text], [top, y, y], color="black", lw=0.8)
        ax.text(
            x_text,
            y,
            f"{name} ({rank:.2f})",
            ha="right" if left else "left",
            va="center",
            fontsize=8,
        )
    # Maximal groups of consecutive methods within one critical difference of each other.
    groups = []
    for i in range(k):
        j = i
        while j + 1 < k and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in groups):
            groups.append((i, j))
    for g, (i, j) in enumerate(groups):
        y = top - 0.05 - 0.04 * g
        ax.hlines(y, ranks[i] - 0.03, ranks[j] + 0.03, color="tab:red", lw=3)
    if title:
        ax.set_title(title, fontsize=9, pad=2)
    return save_figure(fig, path)


def incident_timeline_png(
    times: np.ndarray,
    scores: np.ndarray,
    flagged: np.ndarray,
    ports: Sequence[object],
    *,
    start: float,
) -> bytes:
    """A small PNG of one incident's flows over time: their scores (flagged ones in red) and
    their destination ports, against the time since the incident's start (s, min or h)."""
    import io

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 2.8), sharex=True)
    x = np.asarray(times, dtype=np.float64) - start
    span = float(x.max()) if len(x) else 0.0
    unit, size = ("h", 3600.0) if span >= 7200 else ("min", 60.0) if span >= 120 else ("s", 1.0)
    x = x / size
    flagged = np.asarray(flagged, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    numeric = np.array([_as_float(p) for p in ports], dtype=np.float64)
    for mask, colour, label in (
        (~flagged, "#9aa3ad", "not flagged"),
        (flagged, "#c0392b", "flagged"),
    ):
        if mask.any():
            top.scatter(x[mask], scores[mask], s=9, c=colour, label=label, lw=0)
            bottom.scatter(x[mask], numeric[mask], s=9, c=colour, lw=0)
    top.set_ylabel("flow score", fontsize=8)
    bottom.set_ylabel("dest. port", fontsize=8)
    bottom.set_xlabel(f"{unit} since the incident's first flagged flow", fontsize=8)
    top.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, ncol=2)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout(pad=0.4)
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
