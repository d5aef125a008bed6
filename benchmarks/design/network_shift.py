"""A model trained on one network, scored on another: drift report, and ``adapt``.

Three measurements, printed as Markdown:

1. **IoT-23, one capture as the new network.** IoT-23's captures come from different networks
   (an infected device each, with its own benign neighbours). For each target capture with at
   least 1,900 benign flows, the ``default`` preset (``target_fpr=0.01``) is trained on every
   other malware capture; then, for each of ``--draws`` random draws of ``--new`` benign flows
   of the target (the flows a user would declare benign), the rest of the target (its other
   benign flows and all its attacks) is scored by: the model as trained ("before"); the model
   after ``adapt`` on the drawn flows (the flow fine-tuned), after ``adapt --fresh-flow`` (the
   flow fitted afresh, as ``adapt`` did before) and after ``adapt --keep-training-prototypes``
   (the training flows' benign prototypes kept beside the new ones); a model trained with them
   (``sculpt train --benign-extra``: half trained on, half held out for the threshold); a
   random forest and kNN (the baselines of ``sculpt compare``) trained without and with them.
   Reported: AUROC of the target's attacks against its held-out benign flows (and of the
   flow's score alone, whatever weight the learned rule gives it), the realised false-positive
   rate and the recall at the targets 1 % and 5 % (our models; 5 % from the same calibration
   scores), paired bootstrap intervals of AUROC differences, and whether the drift report on
   the held-out benign flows (as ``sculpt score`` computes it on flows labelled benign) warns,
   and about which features.
2. **CIC-IDS-2017, Monday-Wednesday to Thursday-Friday** (the embedded sample; days are its
   files), the same way; ``--cic-train``/``--cic-new`` choose other days (Monday-Tuesday to
   Wednesday is a validation case that no reported case scores).
3. **False warnings on traffic like the training traffic.** ``--repeats`` times, the benign flows
   of the pooled IoT-23 malware captures, and of the whole embedded CIC sample, are split 60/40
   at random; the model is trained on the 60 % with the attacks (at most ``--attack-cap`` per
   class, to keep the fits short), the 40 % are scored and fed to the drift monitor.

Every number is from this script's own fits; nothing is tuned on its output. Timings are not
reported (the machine may be shared).

Usage::

    SCULPT_SHARED=../shared python benchmarks/design/network_shift.py  # about 1 h, 2 idle cores
    python benchmarks/design/network_shift.py --draws 1 --repeats 2    # a quick look
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from sklearn.metrics import roc_auc_score

from latent_sculpting import LatentSculpting, __version__, preset
from latent_sculpting.data import BENIGN, load_cicids2017
from latent_sculpting.io.encoding import encode
from latent_sculpting.io.flowspec import FlowSpec
from latent_sculpting.io.table import read_records
from latent_sculpting.model.calibration import conformal_threshold
from latent_sculpting.monitor.drift import DriftMonitor
from latent_sculpting.research.baselines import make_method
from latent_sculpting.research.benchmark.datasets import data_root, get_adapter
from latent_sculpting.research.benchmark.statistics import verdict
from latent_sculpting.research.provenance import commit
from latent_sculpting.train import EXTRA_HELD_OUT

TARGET_FPR = 0.01
ALPHAS = (0.01, 0.05)
METHODS = (
    "default before",
    "default + adapt",
    "default + adapt --fresh-flow",
    "default + adapt --keep-training-prototypes",
    "default --benign-extra",
    "rf without",
    "rf with",
    "knn without",
    "knn with",
)

#: Pairs of methods whose AUROC difference gets a bootstrap interval.
COMPARISONS = (
    ("default + adapt", "rf with"),
    ("default + adapt", "knn with"),
    ("default + adapt", "default before"),
    ("default + adapt", "default + adapt --fresh-flow"),
    ("default --benign-extra", "rf with"),
)


@dataclass
class Case:
    """A training network and a new one: features, 0/1 targets and classes of each."""

    title: str
    names: list[str]
    spec: FlowSpec
    X_train: np.ndarray
    y_train: np.ndarray
    classes_train: np.ndarray
    X_new: np.ndarray
    y_new: np.ndarray


def iot23_captures() -> dict[str, tuple[pa.Table, np.ndarray]]:
    """Records and classes of each IoT-23 capture (a network), by short name."""
    adapter = get_adapter("iot-23")
    out = {}
    for path in sorted((data_root() / adapter.folder).glob("*.csv")):
        records, *_ = read_records(path, format=adapter.format)
        classes, keep, _ = adapter.classes(records, path)
        rows = np.flatnonzero(keep)
        name = path.stem.removeprefix("CTU-").removesuffix("-labeled")
        out[name] = (records.take(pa.array(rows)), classes[rows])
    return out


def iot23_case(captures: dict, target: str) -> Case:
    adapter = get_adapter("iot-23")
    train = [k for k in captures if k.startswith("Malware") and k != target]
    records = pa.concat_tables([captures[k][0] for k in train], promote_options="permissive")
    classes = np.concatenate([captures[k][1] for k in train])
    spec = adapter.fit_spec(records, source="the training captures")
    new_records, new_classes = captures[target]
    return Case(
        title=f"IoT-23: {len(train)} other malware captures -> {target}",
        names=spec.feature_names,
        spec=spec,
        X_train=encode(spec, records).X,
        y_train=(classes != adapter.benign).astype(np.int64),
        classes_train=classes,
        X_new=encode(spec, new_records).X,
        y_new=(new_classes != adapter.benign).astype(np.int64),
    )


CIC_TRAIN = ("monday", "tuesday", "wednesday")
CIC_NEW = ("thursday", "friday")


def cic_case(train: tuple[str, ...] = CIC_TRAIN, new: tuple[str, ...] = CIC_NEW) -> Case:
    """The embedded sample's days ``train`` as the training network, ``new`` as the new one."""
    table = load_cicids2017()
    day = np.asarray([table.files[i].stem for i in table.source])
    early, late = np.isin(day, train), np.isin(day, new)
    y = (table.labels != BENIGN).astype(np.int64)
    return Case(
        title=f"CIC-IDS-2017 sample: {_days(train)} -> {_days(new)}",
        names=table.feature_names,
        spec=table.spec,
        X_train=table.X[early],
        y_train=y[early],
        classes_train=table.labels[early],
        X_new=table.X[late],
        y_new=y[late],
    )


def _days(days: tuple[str, ...]) -> str:
    return days[0].capitalize() + (f"-{days[-1].capitalize()}" if len(days) > 1 else "")


def fit_default(case: Case, X: np.ndarray, y: np.ndarray, classes: np.ndarray) -> LatentSculpting:
    model = LatentSculpting(**{**preset("default"), "target_fpr": TARGET_FPR}, random_state=0)
    return model.fit(pd.DataFrame(X, columns=case.names), y, groups=classes, spec=case.spec)


def evaluate(model: LatentSculpting, case: Case, benign: np.ndarray, attacks: np.ndarray) -> dict:
    """AUROC, realised FPR and recall at each target, and the drift report on ``benign``."""
    X = case.X_new
    score_b = model.decision_function(pd.DataFrame(X[benign], columns=case.names))
    score_a = model.decision_function(pd.DataFrame(X[attacks], columns=case.names))
    out = {"auroc": auroc(score_b, score_a)}
    if "nll" in getattr(model.fusion_, "tails_", {}):
        # The flow's own ranking, whatever weight the learned rule gives it.
        nll_b = model.score_details(pd.DataFrame(X[benign], columns=case.names))["nll"]
        nll_a = model.score_details(pd.DataFrame(X[attacks], columns=case.names))["nll"]
        out["flow auroc"] = auroc(nll_b, nll_a)
    for alpha in ALPHAS:
        threshold = (
            model.threshold_
            if alpha == model.target_fpr
            else conformal_threshold(model.calibration_scores_, alpha)
        )
        out[f"fpr@{alpha:g}"] = float(np.mean(score_b > threshold))
        out[f"recall@{alpha:g}"] = float(np.mean(score_a > threshold))
    out["scores"] = (score_b, score_a)
    adaptations = (getattr(model, "training_info_", None) or {}).get("adaptations") or [{}]
    out["flow refit"] = adaptations[-1].get("flow")
    report = DriftMonitor(model.drift_reference_).update(X[benign], score_b > model.threshold_)
    report = report.report()
    out["drifted"] = report.drifted
    # Moved features, the largest PSI first.
    order = np.argsort(-report.psi, kind="stable")
    out["moved"] = [report.feature_names[j] for j in order if report.feature_drifted[j]]
    out["top"] = report.top_features[:3]
    return out


def auroc(benign: np.ndarray, attacks: np.ndarray) -> float:
    if len(attacks) == 0:
        return math.nan
    y = np.r_[np.zeros(len(benign)), np.ones(len(attacks))]
    return float(roc_auc_score(y, np.r_[benign, attacks]))


def fit_baseline(name: str, X: np.ndarray, y: np.ndarray, classes: np.ndarray):  # noqa: ANN201
    return make_method(name, 0).fit(X, y, classes)


def baseline_result(method, case: Case, benign: np.ndarray, attacks: np.ndarray) -> dict:  # noqa: ANN001
    scores = (
        method.decision_function(case.X_new[benign]),
        method.decision_function(case.X_new[attacks]),
    )
    return {"auroc": auroc(*scores), "scores": scores}


def weighted_auroc(
    benign: np.ndarray, attacks: np.ndarray, w_benign: np.ndarray, w_attacks: np.ndarray
) -> np.ndarray:
    """AUROC of ``attacks`` against ``benign`` with each row counted by a weight, for every row
    of the weight matrices at once (ties count a half).

    A bootstrap resample is a weighting by how often each row was drawn; the benign scores are
    sorted once, so a resample costs two cumulative sums instead of a sort.
    """
    order = np.argsort(benign, kind="stable")
    sorted_b = benign[order]
    below = np.searchsorted(sorted_b, attacks, side="left")
    up_to = np.searchsorted(sorted_b, attacks, side="right")
    cum = np.concatenate([np.zeros((len(w_benign), 1)), np.cumsum(w_benign[:, order], axis=1)], 1)
    under = cum[:, below] + 0.5 * (cum[:, up_to] - cum[:, below])
    return (under * w_attacks).sum(axis=1) / (w_benign.sum(axis=1) * w_attacks.sum(axis=1))


def auroc_difference(
    ours: list[dict], theirs: list[dict], n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over draws of the AUROC difference ``ours - theirs``, and its 95 % paired
    bootstrap interval.

    Within each draw both methods scored the same held-out rows; a resample draws benign rows
    and attacks apart (the attacks are few on some captures) and weights both methods' scores
    the same, so what the rows share cancels. The draws are averaged resample by resample.
    """
    rng = np.random.default_rng(seed)
    observed, resampled = [], []
    for a, b in zip(ours, theirs, strict=True):
        (ab, aa), (bb, ba) = a["scores"], b["scores"]
        if len(aa) == 0:
            return math.nan, math.nan, math.nan
        observed.append(auroc(ab, aa) - auroc(bb, ba))
        diffs = []
        for start in range(0, n_resamples, 200):  # blocks: a resample of 20 k attacks is large
            size = min(200, n_resamples - start)
            w_b = rng.multinomial(len(ab), np.full(len(ab), 1 / len(ab)), size=size)
            w_a = rng.multinomial(len(aa), np.full(len(aa), 1 / len(aa)), size=size)
            diffs.append(weighted_auroc(ab, aa, w_b, w_a) - weighted_auroc(bb, ba, w_b, w_a))
        resampled.append(np.concatenate(diffs))
    means = np.mean(resampled, axis=0)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(np.mean(observed)), float(low), float(high)


def run_case(case: Case, n_new: int, draws: int) -> tuple[dict[str, list[dict]], str]:
    """Every method's results on each draw of ``n_new`` benign flows of the new network, and
    the channel weights of the model as trained (``adapt`` keeps them)."""
    print(f"\n<!-- {case.title}: fitting -->", flush=True)
    base = fit_default(case, case.X_train, case.y_train, case.classes_train)
    weights = ", ".join(f"{k} {v:g}" for k, v in getattr(base.fusion_, "weights_", {}).items())
    without = {
        name: fit_baseline(name, case.X_train, case.y_train, case.classes_train)
        for name in ("rf", "knn")
    }
    benign_label = case.classes_train[case.y_train == 0][0]
    benign_all = np.flatnonzero(case.y_new == 0)
    attacks = np.flatnonzero(case.y_new == 1)
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for draw in range(draws):
        rng = np.random.default_rng(draw)
        order = rng.permutation(benign_all)
        new, held = np.sort(order[:n_new]), np.sort(order[n_new:])
        frame = pd.DataFrame(case.X_new[new], columns=case.names)
        results["default before"].append(evaluate(base, case, held, attacks))
        adapted = copy.deepcopy(base).adapt(frame, random_state=draw)
        results["default + adapt"].append(evaluate(adapted, case, held, attacks))
        fresh = copy.deepcopy(base).adapt(frame, fresh_flow=True, random_state=draw)
        results["default + adapt --fresh-flow"].append(evaluate(fresh, case, held, attacks))
        kept = copy.deepcopy(base).adapt(frame, keep_training_prototypes=True, random_state=draw)
        results["default + adapt --keep-training-prototypes"].append(
            evaluate(kept, case, held, attacks)
        )

        # sculpt train --benign-extra: half of the new flows trained on, half held out.
        split = rng.permutation(len(new))
        n_held = int(round(EXTRA_HELD_OUT * len(new)))
        fit_part, held_part = np.sort(split[n_held:]), np.sort(split[:n_held])
        both = fit_default(
            case,
            np.r_[case.X_train, case.X_new[new][fit_part]],
            np.r_[case.y_train, np.zeros(len(fit_part), np.int64)],
            np.r_[case.classes_train, np.full(len(fit_part), benign_label, dtype=object)],
        )
        both.adapt(frame.iloc[held_part], refit=False, random_state=draw)
        results["default --benign-extra"].append(evaluate(both, case, held, attacks))

        X_with = np.r_[case.X_train, case.X_new[new]]
        y_with = np.r_[case.y_train, np.zeros(len(new), np.int64)]
        c_with = np.r_[case.classes_train, np.full(len(new), benign_label, dtype=object)]
        for name, method in without.items():
            results[f"{name} without"].append(baseline_result(method, case, held, attacks))
            with_new = fit_baseline(name, X_with, y_with, c_with)
            results[f"{name} with"].append(baseline_result(with_new, case, held, attacks))
        print(f"<!-- draw {draw} done -->", flush=True)
    return results, weights


def mean_sd(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def print_case(
    case: Case, results: dict[str, list[dict]], weights: str, n_new: int, draws: int
) -> None:
    n_benign = int((case.y_new == 0).sum())
    print(
        f"\n### {case.title}\n\n"
        f"Training: {len(case.y_train):,} flows ({int((case.y_train == 0).sum()):,} benign). "
        f"New network: {n_benign:,} benign flows, {int(case.y_new.sum()):,} attacks; "
        f"{n_new:,} benign flows drawn for adapting, {n_benign - n_new:,} held out; "
        f"{draws} draw(s), mean ± sample std. Channel weights learned in training (kept by adapt): "
        f"{weights or 'none'}.\n"
    )
    head = (
        "| method | AUROC | flow alone | FPR @1 % | recall @1 % | FPR @5 % | recall @5 % | "
        "drift warning |"
    )
    print(head + "\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, rows in results.items():
        flow = [r["flow auroc"] for r in rows if "flow auroc" in r]
        cells = [mean_sd([r["auroc"] for r in rows], 4), mean_sd(flow, 4) if flow else "–"]
        for alpha in ALPHAS:
            for key in ("fpr", "recall"):
                values = [r[f"{key}@{alpha:g}"] for r in rows if f"{key}@{alpha:g}" in r]
                cell = mean_sd(values) if values else "–"
                if key == "fpr" and len(values) > 1:
                    cell += f" (max {max(values):.3f})"
                cells.append(cell)
        warned = [r["drifted"] for r in rows if "drifted" in r]
        cells.append(f"{sum(warned)}/{len(warned)}" if warned else "–")
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(
        "\nAUROC differences, mean over the draws with a 95 % paired bootstrap interval over the "
        "scored rows (benign and attacks resampled apart; a tie when it contains 0):\n\n"
        "| method | against | difference | 95 % interval | verdict |\n|---|---|---:|---|---|"
    )
    for ours, theirs in COMPARISONS:
        diff, low, high = auroc_difference(results[ours], results[theirs])
        print(
            f"| {ours} | {theirs} | {diff:+.4f} | [{low:+.4f}, {high:+.4f}] | "
            f"{verdict(low, high)} |"
        )
    for method in (
        "default + adapt",
        "default + adapt --fresh-flow",
        "default + adapt --keep-training-prototypes",
        "default --benign-extra",
    ):
        shown = ", ".join(f"{100 * r['fpr@0.01']:.2f} %" for r in results[method])
        print(f"\nRealised FPR at the 1 % target per draw, {method}: {shown}.")
        refits = [r["flow refit"] for r in results[method] if r.get("flow refit")]
        if refits:
            print(f"The flow, per draw: {', '.join(refits)}.")
    before = results["default before"]
    print("\nDrift report before adapting, per draw (on the held-out benign flows):\n")
    for draw, r in enumerate(before):
        over = r["fpr@0.01"] > 2 * TARGET_FPR
        moved = ", ".join(r["moved"][:4]) + (" ..." if len(r["moved"]) > 4 else "")
        print(
            f"- draw {draw}: realised FPR {100 * r['fpr@0.01']:.2f} % "
            f"({'over' if over else 'within'} twice the 1 % target); "
            + (
                f"warning, {len(r['moved'])} moved feature(s): {moved}"
                if r["drifted"]
                else "no warning"
            )
        )


def false_warnings(
    title: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: np.ndarray,
    names: list[str],
    spec: FlowSpec,
    repeats: int,
    attack_cap: int,
) -> None:
    """Split benign 60/40, train on the 60 % and the attacks, score the 40 %: warnings?"""
    benign = np.flatnonzero(y == 0)
    attacks = np.flatnonzero(y == 1)
    warned, fprs, causes = 0, [], []
    for repeat in range(repeats):
        rng = np.random.default_rng(1000 + repeat)
        order = rng.permutation(benign)
        cut = int(0.6 * len(order))
        kept = []
        for c in np.unique(classes[attacks]):
            rows = attacks[classes[attacks] == c]
            kept.append(rng.permutation(rows)[:attack_cap])
        train = np.sort(np.r_[order[:cut], np.concatenate(kept)])
        held = np.sort(order[cut:])
        model = LatentSculpting(
            **{**preset("default"), "target_fpr": TARGET_FPR}, random_state=repeat
        )
        model.fit(pd.DataFrame(X[train], columns=names), y[train], groups=classes[train], spec=spec)
        flags = model.predict(pd.DataFrame(X[held], columns=names))
        report = DriftMonitor(model.drift_reference_).update(X[held], flags).report()
        warned += report.drifted
        fprs.append(report.flagged_share)
        causes += report.reasons
        print(f"<!-- {title}: repeat {repeat}: drifted={report.drifted} -->", flush=True)
    print(
        f"| {title} | {len(benign) - int(0.6 * len(benign)):,} | {repeats} | {warned} | "
        f"{mean_sd(fprs, 4)} | {'; '.join(causes[:3]) or '–'} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new", type=int, default=1000, help="benign flows adapted on")
    parser.add_argument("--draws", type=int, default=3, help="draws of those flows per case")
    parser.add_argument("--repeats", type=int, default=10, help="false-warning repeats")
    parser.add_argument("--attack-cap", type=int, default=2000, help="attacks per class, part 3")
    parser.add_argument("--targets", nargs="+", help="IoT-23 target captures (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--skip", nargs="+", default=[], choices=("iot23", "cic", "warnings"))
    parser.add_argument(
        "--cic-train", nargs="+", default=list(CIC_TRAIN), help="CIC sample days trained on"
    )
    parser.add_argument(
        "--cic-new", nargs="+", default=list(CIC_NEW), help="CIC sample days as the new network"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# Network shift: drift report and adapt\n\n"
        f"{datetime.now(timezone.utc):%Y-%m-%d}, commit {commit()}, latent-sculpting "
        f"{__version__}, torch {torch.__version__}, {platform.machine()} with "
        f"{torch.get_num_threads()} torch thread(s), python {platform.python_version()}; "
        f"`default` preset, target FPR {TARGET_FPR:g}, {args.new:,} benign flows of the new "
        f"network for adapting.\n\n"
        f"`python benchmarks/design/network_shift.py {' '.join(sys.argv[1:])}`"
    )
    captures = None
    if "iot23" not in args.skip:
        captures = iot23_captures()
        targets = args.targets or [
            name
            for name, (_, classes) in captures.items()
            if name.startswith("Malware") and (classes == "Benign").sum() >= 1900
        ]
        for target in targets:
            case = iot23_case(captures, target)
            print_case(case, *run_case(case, args.new, args.draws), args.new, args.draws)
    if "cic" not in args.skip:
        case = cic_case(tuple(args.cic_train), tuple(args.cic_new))
        print_case(case, *run_case(case, args.new, args.draws), args.new, args.draws)
    if "warnings" not in args.skip:
        print(
            "\n### False warnings on held-out benign flows like the training flows\n\n"
            "| data | held-out benign flows | repeats | warnings | flagged share | reasons |\n"
            "|---|---:|---:|---:|---:|---|"
        )
        captures = captures or iot23_captures()
        adapter = get_adapter("iot-23")
        malware = [k for k in captures if k.startswith("Malware")]
        records = pa.concat_tables([captures[k][0] for k in malware], promote_options="permissive")
        classes = np.concatenate([captures[k][1] for k in malware])
        # The spec sees the held-out rows' categories too: a category only they have then gets
        # an indicator of its own, out of the training range, which makes a warning likelier.
        spec = adapter.fit_spec(records)
        y = (classes != adapter.benign).astype(np.int64)
        false_warnings(
            "IoT-23 malware captures", encode(spec, records).X, y, classes, spec.feature_names,
            spec, args.repeats, args.attack_cap,
        )  # fmt: skip
        table = load_cicids2017()
        false_warnings(
            "CIC-IDS-2017 sample", table.X, (table.labels != BENIGN).astype(np.int64),
            table.labels, table.feature_names, table.spec, args.repeats, args.attack_cap,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
