"""Leave-one-attack-family-out: ``sculpt sweep``.

For each attack family in turn, every class of the family is withheld
(:func:`latent_sculpting.data.zero_shot_splits`), each method is fitted on benign flows and the
other families under the protocol of :mod:`latent_sculpting.compare` (a share of the benign
training rows held out of the fit), and the family is scored: its recall at the threshold that
flags ``fpr`` of the held-out benign rows, and its AUROC against the reserved benign test rows.
This is a stronger test of zero-shot generalisation than the paper's four withheld classes
(Chhetri et al., arXiv:2512.22179).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from .baselines import make_method, parse_method
from .compare import MethodFactory, calibration_holdout, limit_threads, load_table, run_config
from .data import BENIGN, FlowTable, zero_shot_splits
from .evaluation import aggregate, per_class_recall, recall_at_fpr
from .experiment import write_json, write_text

__all__ = ["DEFAULT_SWEEP_METHODS", "FAMILIES", "sweep", "sweep_markdown"]

#: Attack families of CIC-IDS-2017 (canonical labels). "Infiltration - Portscan" is the port
#: scan that the infiltrated host ran inside the network: port-scan traffic, so it belongs with
#: PortScan; leaving it in training while PortScan is withheld would leak the family. Heartbleed
#: (11 flows in the whole dataset) is no family of its own: it stays a seen class in every fold.
FAMILIES: dict[str, tuple[str, ...]] = {
    "DoS": ("DoS Hulk", "DoS GoldenEye", "DoS slowloris", "DoS Slowhttptest"),
    "DDoS": ("DDoS",),
    "PortScan": ("PortScan", "Infiltration - Portscan"),
    "Brute Force": ("FTP-Patator", "SSH-Patator"),
    "Web Attack": (
        "Web Attack - Brute Force",
        "Web Attack - XSS",
        "Web Attack - Sql Injection",
    ),
    "Bot": ("Bot",),
    "Infiltration": ("Infiltration",),
}

#: Our default preset and the two strongest baselines of ``sculpt compare`` on the sample.
DEFAULT_SWEEP_METHODS: tuple[str, ...] = ("default", "knn", "rf")


def sweep(
    *,
    data: str | Path | Sequence[str | Path] | None = None,
    methods: Sequence[str] = DEFAULT_SWEEP_METHODS,
    seeds: Sequence[int] = (0,),
    families: Mapping[str, Sequence[str]] | None = None,
    fpr: float = 0.01,
    holdout: float = 0.2,
    split_seed: int | None = 42,
    out: str | Path | None = None,
    max_per_class: int | None = None,
    plots: bool = True,
    verbose: bool = True,
    threads: int | None = None,
    factory: MethodFactory = make_method,
    table: FlowTable | None = None,
) -> dict:
    """Withhold each attack family in turn and measure how each method detects it.

    Parameters
    ----------
    data : path or list of paths, optional
        CIC-IDS-2017 files or folder; default the embedded sample.
    methods : sequence of str
        Names for :func:`latent_sculpting.baselines.make_method`.
    seeds : sequence of int
        Model seeds.
    families : mapping of str to labels, optional
        Default :data:`FAMILIES`. A family none of whose classes is in the data is skipped (and
        listed under ``skipped``); classes absent from the data are dropped from their family.
    fpr : float, default=0.01
        Benign false-positive rate that sets each method's threshold on the held-out benign rows.
    holdout : float, default=0.2
        Share of benign training rows held out of every fit.
    split_seed : int or None, default=42
        Seed of the splits and the holdout; None re-draws both per model seed.
    out : path, optional
        Output folder; default ``runs/sweep-<UTC time>``.
    max_per_class : int, optional
    plots : bool, default=True
    verbose : bool, default=True
    threads : int, optional
        Cap on BLAS/OpenMP/torch threads.
    factory : callable, default=make_method
        Builds each method; tests wrap it to record the rows every method is fitted on.
    table : FlowTable, optional
        Data already loaded (``data`` and ``max_per_class`` are then ignored).

    Returns
    -------
    dict
        The content of ``sweep.json``.
    """
    started = time.perf_counter()
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    methods = list(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    for name in methods:
        parse_method(name)
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out is not None else Path("runs") / f"sweep-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = load_table(data, max_per_class)

    present = table.label_counts()
    folds, skipped = {}, []
    for family, classes in (FAMILIES if families is None else families).items():
        kept = tuple(c for c in classes if c in present)
        if kept:
            folds[family] = kept
        else:
            skipped.append(family)
    if not folds:
        raise ValueError(f"no family has a class in the data; labels present: {sorted(present)}")

    runs: dict[str, dict[str, list[dict]]] = {f: {m: [] for m in methods} for f in folds}
    bar = tqdm(
        total=len(folds) * len(methods) * len(seeds), desc="sweep", unit="fit", disable=not verbose
    )
    with limit_threads(threads):
        for family, classes in folds.items():
            for seed in seeds:
                seed_of_split = seed if split_seed is None else split_seed
                # Unbalanced: AUROC does not need 1:1, and a small family keeps all its benign
                # counterparts.
                splits = zero_shot_splits(
                    table, withheld=classes, seed=seed_of_split, balance=False
                )
                fit_rows, calibration = calibration_holdout(splits.train.y, holdout, seed_of_split)
                fit_labels = splits.train.labels[fit_rows]
                leaked = sorted(set(fit_labels) & set(classes))
                if leaked:  # zero_shot_splits guarantees this; a sweep must never rely on luck
                    raise RuntimeError(f"fold {family!r} would train on {leaked}")
                shared: dict = {}
                zs = splits.zero_shot
                attack = zs.labels != BENIGN
                for name in methods:
                    bar.set_description(f"sweep {family}: {name} (seed {seed})")
                    method = factory(name, seed, shared)
                    start = time.perf_counter()
                    method.fit(splits.train.X[fit_rows], splits.train.y[fit_rows], fit_labels)
                    fit_seconds = time.perf_counter() - start
                    cal = method.decision_function(splits.train.X[calibration])
                    scores = method.decision_function(zs.X)
                    threshold = float(np.quantile(cal, 1 - fpr))
                    flagged = scores > threshold
                    runs[family][name].append(
                        {
                            "recall": recall_at_fpr(cal, scores[attack], fpr),
                            "auroc": float(roc_auc_score(zs.y, scores)),
                            "test_fpr": float(flagged[~attack].mean()),
                            "per_class_recall": per_class_recall(
                                zs.labels[attack], flagged[attack]
                            ),
                            "threshold": threshold,
                            "fit_seconds": fit_seconds,
                            "seed": seed,
                        }
                    )
                    bar.set_postfix(auroc=f"{runs[family][name][-1]['auroc']:.3f}")
                    bar.update()
    bar.close()

    results = {
        "families": {
            family: {
                "classes": list(classes),
                "rows": {c: int(present[c]) for c in classes},
                "methods": {
                    name: {
                        **aggregate(
                            [
                                {k: v for k, v in r.items() if k != "seed"}
                                for r in runs[family][name]
                            ]
                        ),
                        "per_seed": runs[family][name],
                    }
                    for name in methods
                },
            }
            for family, classes in folds.items()
        },
        "skipped": skipped,
        "config": run_config(
            table,
            methods=methods,
            seeds=list(seeds),
            fpr=fpr,
            holdout=holdout,
            split_seed=split_seed,
            max_per_class=max_per_class,
            threads=threads,
            seconds=time.perf_counter() - started,
        ),
    }
    write_json(results, out / "sweep.json")
    write_text(sweep_markdown(results), out / "sweep.md")
    if plots:
        plot_heatmap(results, out / "sweep_heatmap.png")
    if verbose:
        tqdm.write(f"sweep in {out}/ (sweep.json, sweep.md, sweep_heatmap.png)")
    return results


def sweep_markdown(results: dict) -> str:
    """Family x method tables of recall at the fixed benign FPR and of AUROC."""
    cfg = results["config"]
    methods = cfg["methods"]
    fams = results["families"]
    lines = [
        "# `sculpt sweep`: leave one attack family out",
        "",
        f"{len(cfg['seeds'])} seed(s) {cfg['seeds']}, split seed {cfg['split_seed']}. Data: "
        f"{cfg['n_rows']:,} rows from {len(cfg['data_files'])} file(s). Machine: "
        f"{cfg['machine']}. Date: {cfg['date']}. Total time {cfg['seconds']:.0f} s.",
        "",
        "Each row withholds one family (all its classes) from training; methods fit on benign "
        "flows and every other family, less "
        f"{100 * cfg['holdout']:g} % of the benign training rows, held out to set the threshold "
        f"that flags {100 * cfg['fpr']:g} % of them. Mean ± std over seeds.",
        "",
    ]
    for metric, title in (
        ("recall", f"Family recall at {100 * cfg['fpr']:g} % benign FPR"),
        ("auroc", "Family AUROC against reserved benign test flows"),
    ):
        lines += [
            f"## {title}",
            "",
            "| family (rows) | " + " | ".join(methods) + " |",
            "|---|" + "---:|" * len(methods),
        ]
        for family, entry in fams.items():
            cells = []
            for name in methods:
                stat = entry["methods"][name][metric]
                cells.append(f"{stat['mean']:.3f} ± {stat['std']:.3f}")
            lines.append(
                f"| {family} ({sum(entry['rows'].values()):,}) | " + " | ".join(cells) + " |"
            )
        lines.append("")
    lines += [
        "## Realised benign FPR on the reserved test flows",
        "",
        "| family | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for family, entry in fams.items():
        lines.append(
            f"| {family} | "
            + " | ".join(f"{entry['methods'][m]['test_fpr']['mean']:.3f}" for m in methods)
            + " |"
        )
    lines += [
        "",
        "Families: " + "; ".join(f"{f}: {', '.join(e['classes'])}" for f, e in fams.items()) + ".",
    ]
    if results["skipped"]:
        lines.append(f"Skipped (no class in the data): {', '.join(results['skipped'])}.")
    lines.append("")
    return "\n".join(lines)


def plot_heatmap(results: dict, path: Path) -> Path:
    """Family x method heat maps of recall at the fixed FPR and of AUROC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    methods = results["config"]["methods"]
    families = list(results["families"])
    fig, axes = plt.subplots(
        1, 2, figsize=(4 + 1.6 * len(methods), 1.2 + 0.55 * len(families)), squeeze=False
    )
    titles = (f"recall at {100 * results['config']['fpr']:g} % benign FPR", "AUROC")
    for ax, metric, title in zip(axes[0], ("recall", "auroc"), titles, strict=True):
        grid = np.array(
            [
                [results["families"][f]["methods"][m][metric]["mean"] for m in methods]
                for f in families
            ]
        )
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_yticks(range(len(families)), families)
        for i in range(len(families)):
            for j in range(len(methods)):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if grid[i, j] < 0.6 else "black",
                )
        ax.set_title(f"withheld family: {title}")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)
