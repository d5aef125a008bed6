"""Which channels, combined how, detect withheld attack families at low false-alarm rates?

The design search behind the ``default`` preset (docs/research/presets.md), run on VALIDATION
folds only: inside each test fold of ``sculpt benchmark`` (one attack family withheld), each other
family is held out in turn as a pseudo-zero-day
(:func:`latent_sculpting.research.benchmark.validation_folds`), so
no choice made here ever sees a test fold's withheld family, benign test rows or calibration
rows.

Each channel is fitted once per fold and its scores of four parts are cached: ``reference``
(benign fitting rows held out of the channels' fits, which place each channel's tail
p-values), ``calibration`` (the fold's threshold rows), ``test_benign`` and ``test_attack``.
Combination rules are then evaluated on the cached scores without refitting::

    python benchmarks/design/channel_search.py fit --datasets cicids2017 unsw-nb15 iot-23 --seeds 0
    python benchmarks/design/channel_search.py rank --out runs/channel-search

``rank`` prints, per dataset and over every fold, the mean AUROC and recall at 5 %, 1 % and
0.1 % false positives of every channel and combination, and per test fold which design the
validation folds inside it would choose.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np

from latent_sculpting.io.context.config import parse_context
from latent_sculpting.io.encoding import encode
from latent_sculpting.model.calibration import TailPValue
from latent_sculpting.research import provenance
from latent_sculpting.research.benchmark import load_dataset
from latent_sculpting.research.benchmark.context import context_columns
from latent_sculpting.research.benchmark.splits import (
    check_fold,
    drop_duplicates,
    split_fold,
    test_folds,
    validation_folds,
)
from latent_sculpting.research.evaluation import fold_metrics
from latent_sculpting.threads import limit_threads

PARTS = ("reference", "calibration", "test_benign", "test_attack")
REFERENCE_FRACTION = 0.25


# ---------------------------------------------------------------------------------- channels


def _log1p(X: np.ndarray) -> np.ndarray:
    return np.sign(X) * np.log1p(np.abs(X))


class Scaled:
    """Signed log1p, then standardisation on the benign fitting rows (zero-variance kept at 1)."""

    def fit(self, X: np.ndarray) -> Scaled:
        Z = _log1p(X.astype(np.float64))
        self.mean_, self.std_ = Z.mean(0), Z.std(0)
        self.std_[self.std_ < 1e-9] = 1.0
        return self

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((_log1p(X.astype(np.float64)) - self.mean_) / self.std_).astype(np.float32)


def fit_channels(X, y, seed, names, ref_rows):
    """Fit each channel on the fitting rows but ``ref_rows``; ``name -> scorer(X) -> scores``."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.neighbors import NearestNeighbors

    keep = np.ones(len(y), bool)
    keep[ref_rows] = False
    Xf, yf = X[keep], y[keep]
    benign = Xf[yf == 0]
    scale = Scaled().fit(benign)
    Zb = scale(benign)  # the scaled benign fitting rows, which most channels fit on
    out = {}
    for name in names:
        if name == "rf":
            rf = RandomForestClassifier(100, n_jobs=1, random_state=seed).fit(Xf, yf)
            out[name] = lambda A, m=rf: m.predict_proba(A)[:, 1]
        elif name == "hgb":
            hgb = HistGradientBoostingClassifier(random_state=seed).fit(Xf, yf)
            out[name] = lambda A, m=hgb: m.predict_proba(A)[:, 1]
        elif name == "hgbx":
            # The known attacks and as many synthetic rows (1) against benign (0): each synthetic
            # row draws every feature independently from the benign rows' marginals, so the
            # trees also learn where benign traffic's joint structure ends (classification
            # against a reference distribution; Hastie et al., ESL 14.2.4).
            rng = np.random.default_rng(seed)
            columns = rng.integers(0, len(Zb), size=Zb.shape)
            synthetic = np.take_along_axis(Zb, columns, axis=0)
            Zx = np.vstack([scale(Xf), synthetic])
            yx = np.r_[yf, np.ones(len(synthetic), dtype=yf.dtype)]
            hgbx = HistGradientBoostingClassifier(random_state=seed).fit(Zx, yx)
            out[name] = lambda A, m=hgbx: m.predict_proba(scale(A))[:, 1]
        elif name.startswith("knn"):
            k = int(name[3:] or 5)
            nn = NearestNeighbors(n_neighbors=k).fit(Zb)
            out[name] = lambda A, m=nn, k=k: m.kneighbors(scale(A), k)[0][:, -1]
        elif name.startswith("proto"):
            from sklearn.cluster import MiniBatchKMeans

            k = int(name[5:])
            centers = (
                MiniBatchKMeans(min(k, len(Zb)), random_state=seed, n_init=3, batch_size=4096)
                .fit(Zb)
                .cluster_centers_.astype(np.float32)
            )
            nn = NearestNeighbors(n_neighbors=1).fit(centers)
            out[name] = lambda A, m=nn: m.kneighbors(scale(A), 1)[0][:, 0]
        elif name == "maf":
            from latent_sculpting.model.density.train import fit_flow, negative_log_likelihood

            flow, _ = fit_flow(
                Zb,
                flow_transforms=5,
                flow_hidden=128,
                flow_hidden_layers=1,
                flow_lr=5e-4,
                flow_epochs=20,
                flow_batch_size=512,
                grad_clip=1.0,
                device="cpu",
                verbose=False,
            )
            out[name] = lambda A, f=flow: np.minimum(
                negative_log_likelihood(f, scale(A), device="cpu", fast_flow=None), 1e6
            )
        elif name == "sculpt":
            from latent_sculpting import LatentSculpting, preset

            # The flow on the sculpted code: the default's flow with Stage 1 in front of it
            # (the default itself no longer sculpts, since this search).
            params = {
                **preset("default"),
                "stage1": True,
                "flow_standardize": True,
                "score": "nll",
                "forest_trees": 0,
                "boost_iter": 0,
                "knn_prototypes": 0,
                "stack_folds": 0,
            }
            params.update(calibration="train", target_fpr=None, random_state=seed)
            model = LatentSculpting(**params).fit(Xf, yf)
            out[name] = lambda A, m=model: np.minimum(m.score_details(A)["nll"], 1e6)
        elif name == "svdd":
            from latent_sculpting.model.channels.deep_sad import DeepSAD

            svdd = DeepSAD(eta=0.0, rep_dim=32, random_state=seed).fit(Zb)
            out[name] = lambda A, m=svdd: m.decision_function(scale(A))
        elif name == "sad":
            from latent_sculpting.model.channels.deep_sad import DeepSAD

            # The benchmark baseline's settings; the known attacks labelled, pushed away.
            sad = DeepSAD(eta=1.0, random_state=seed).fit(scale(Xf), yf)
            out[name] = lambda A, m=sad: m.decision_function(scale(A))
        elif name == "ecod":
            from latent_sculpting.research.baselines import InductiveECOD

            ecod = InductiveECOD().fit(Zb)
            out[name] = lambda A, m=ecod: m.decision_function(scale(A))
        elif name == "iforest":
            from pyod.models.iforest import IForest

            forest = IForest(n_estimators=200, random_state=seed).fit(Zb)
            out[name] = lambda A, m=forest: m.decision_function(scale(A))
        else:
            raise ValueError(f"unknown channel {name!r}")
    return out


def run_fold(dataset, fold, seed, names, out: Path, context=None) -> Path | None:
    path = out / dataset.name / f"{_slug(fold.name)}-seed{seed}.npz"
    if path.exists():
        have = set(np.load(path).files)
        if all(f"{n}/{p}" in have for n in names for p in PARTS):
            return path
    try:
        rows = split_fold(dataset, fold, seed)
    except ValueError as error:
        print(f"skip {fold.name}: {error}")
        return None
    spec = dataset.adapter.fit_spec(dataset.records.take(rows.fit), source=fold.name)
    used = rows.used()
    X = encode(spec, dataset.records.take(used), source=fold.name).X
    rows = drop_duplicates(rows, dataset, used, X)
    check_fold(rows, dataset, fold, used, X)
    if context is not None:
        # As in the benchmark: duplicates are judged on the per-flow features, and the
        # dataset's context columns follow them.
        X = np.hstack([X, context_columns(dataset, context)[used].astype(X.dtype)])
    if len(rows.test_attack) == 0:
        print(f"skip {fold.name}: no test attack left")
        return None

    def features(index):
        return X[np.searchsorted(used, index)]

    X_fit = features(rows.fit)
    y_fit = (dataset.classes[rows.fit] != dataset.benign).astype(np.int64)
    benign_fit = np.flatnonzero(y_fit == 0)
    rng = np.random.default_rng(seed)
    ref_rows = np.sort(
        rng.choice(benign_fit, int(REFERENCE_FRACTION * len(benign_fit)), replace=False)
    )
    parts = {
        "reference": X_fit[ref_rows],
        "calibration": features(rows.calibration),
        "test_benign": features(rows.test_benign),
        "test_attack": features(rows.test_attack),
    }
    arrays = dict(np.load(path)) if path.exists() else {}
    for part, Xp in parts.items():
        cached = [len(v) for k, v in arrays.items() if k.endswith(f"/{part}")]
        if cached and cached[0] != len(Xp):
            # Another --max-per-class (or data) split this fold differently: the new channel's
            # scores would be of other rows than the cached ones.
            raise SystemExit(
                f"{path}: its {part} scores have {cached[0]} rows, this split {len(Xp)}; "
                "use the --max-per-class the cache was fitted with"
            )
    todo = [n for n in names if f"{n}/reference" not in arrays]
    seconds = {}
    start = time.perf_counter()
    scorers = fit_channels(X_fit, y_fit, seed, todo, ref_rows)
    for name, scorer in scorers.items():
        t = time.perf_counter()
        for part, Xp in parts.items():
            arrays[f"{name}/{part}"] = np.asarray(scorer(Xp), dtype=np.float64)
        seconds[name] = time.perf_counter() - t
    arrays["prevalence"] = np.asarray([dataset.prevalence(fold.withheld)])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"{fold.name} seed {seed}: {time.perf_counter() - start:.1f} s {todo}", flush=True)
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:120]


# ---------------------------------------------------------------------------------- combining


def p_scores(arrays, name, resolution=None, parts=PARTS[1:], uncapped=frozenset()):
    """Each part's ``-log p`` of channel ``name`` against its reference scores; a channel in
    ``uncapped`` has its tail's ``max_extrapolation`` infinite instead of the default."""
    cap = {"max_extrapolation": np.inf} if name in uncapped else {}
    tail = TailPValue(min_scale=resolution or 0.0, **cap).fit(arrays[f"{name}/reference"])
    return {p: tail.neg_log_p(arrays[f"{name}/{p}"]) for p in parts}


RESOLUTION = {"rf": 0.01, "hgb": 0.0}


def combine(arrays, channels, rule):
    logs = [p_scores(arrays, c, RESOLUTION.get(c)) for c in channels]
    out = {}
    for p in PARTS[1:]:
        stack = np.vstack([lg[p] for lg in logs])
        if rule == "fisher":
            out[p] = stack.sum(0)
        elif rule == "max":
            out[p] = stack.max(0)
        elif rule == "cauchy":
            # Cauchy combination (Liu and Xie 2020) of p = exp(-s); computed in log space for
            # tiny p: tan((0.5 - p) pi) ~ 1 / (p pi).
            pv = np.exp(-stack)
            t = np.where(pv < 1e-15, 1 / (pv * np.pi + 1e-300), np.tan((0.5 - pv) * np.pi))
            out[p] = np.log1p(np.maximum(t.mean(0), -0.999) + 1)
        else:
            raise ValueError(rule)
    return out


def designs(channels):
    singles = [((c,), "max") for c in channels]
    combos = []
    for r in (2, 3):
        for subset in itertools.combinations(channels, r):
            for rule in ("fisher", "max", "cauchy"):
                combos.append((subset, rule))
    return singles + combos


def metrics(s):
    """AUROC and recall at 5, 1 and 0.1 % false positives of one fold's combined scores."""
    m = fold_metrics(s["calibration"], s["test_benign"], s["test_attack"], prevalence=0.5)
    return {"auroc": m["auroc"], **{f"r{k}": m["recall_at_fpr"][k] for k in FPRS}}


FPRS = ("0.05", "0.01", "0.001")


def evaluate(arrays, design):
    channels, rule = design
    if len(channels) == 1:
        s = {p: arrays[f"{channels[0]}/{p}"] for p in PARTS[1:]}
    else:
        s = combine(arrays, channels, rule)
    return metrics(s)


# ---------------------------------------------------------------------------------- commands


def cmd_fit(args):
    out = Path(args.out)
    context = parse_context(args.context)
    for name in args.datasets:
        dataset = load_dataset(name, max_per_class=args.max_per_class or None)
        outers, _ = test_folds(dataset, ["families"], families=args.families)
        for outer in outers:
            folds = validation_folds(dataset, outer) if not args.test else [outer]
            for fold in folds:
                for seed in args.seeds:
                    with limit_threads(1):
                        run_fold(dataset, fold, seed, args.channels, out, context)


WEIGHTS = (0.0, 0.5, 1.0)


def weight_grid(n_channels):
    """Every weighting in {0, 1/2, 1} per channel but all zeros; equal weights are (1, ..., 1)."""
    return [w for w in itertools.product(WEIGHTS, repeat=n_channels) if any(w)]


def weighted(logs, weights, rule="sum", parts=PARTS[1:]):
    """Each part's weighted ``-log p`` of the channels, summed (Fisher's rule, the stacked
    rule's) or the largest taken (the strongest single evidence)."""
    reduce = np.sum if rule == "sum" else np.max
    return {
        p: reduce([w * lg[p] for w, lg in zip(weights, logs, strict=True)], axis=0) for p in parts
    }


def shrunk(weights):
    """Learned weights pulled halfway to equal ones: each channel keeps at least half the
    weight of the strongest, so no channel's evidence is switched off."""
    w = np.asarray(weights, dtype=np.float64)
    return tuple(0.5 * w / w.max() + 0.5)


def union(logs, weights, rule="sum"):
    """The learned sum and the equal-weights sum, each as ``-log p`` against the reference
    flows' own sums (:class:`TailPValue`), the larger taken: a flow either rule finds extreme
    is flagged, at the price of at most a doubled false-positive share per rule."""
    out = {}
    for w in (weights, (1.0,) * len(weights)):
        sums = weighted(logs, w, rule, parts=PARTS)
        tail = TailPValue().fit(sums["reference"])
        for p in PARTS[1:]:
            out.setdefault(p, []).append(tail.neg_log_p(sums[p]))
    return {p: np.max(v, axis=0) for p, v in out.items()}


#: What is done with the weights learned on the other folds (``--combine``).
COMBINES = {
    "learned": lambda logs, w, rule: weighted(logs, w, rule),
    "shrink": lambda logs, w, rule: weighted(logs, shrunk(w), rule),
    "union": union,
}


def _one_se(table, grid):
    """Equal weights unless the best mean beats theirs by more than one standard error of the
    paired difference over the folds (the one-standard-error rule, Breiman et al. 1984: the
    simplest design within noise of the best)."""
    best = int(np.argmax(table.mean(axis=0)))
    equal = grid.index((1.0,) * len(grid[0]))
    diff = table[:, best] - table[:, equal]
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else np.inf
    return best if diff.mean() > se else equal


def _novel_half(table, grid):
    """The best mean over the half of the folds whose held-out family the first channel alone
    (the boosted trees) detects worst: the known families least like the others, the nearest
    thing to a zero-day among them (a weighting chosen for the kind of family it will meet)."""
    alone = grid.index((1.0,) + (0.0,) * (len(grid[0]) - 1))
    novel = np.argsort(table[:, alone], kind="stable")[: max(1, len(table) // 2)]
    return int(np.argmax(table[novel].mean(axis=0)))


#: How the weighting is picked from its criterion on the other folds (a table, folds x
#: weightings): the best mean (what the stacked rule does), the best mean of the worse half of
#: the folds (a weighting that fails some family badly loses even when it does well on
#: average), the one-standard-error rule toward equal weights (:func:`_one_se`), or the best
#: mean over the folds least like the known families (:func:`_novel_half`).
AGGREGATES = {
    "mean": lambda table, grid: int(np.argmax(table.mean(axis=0))),
    "worse-half": lambda table, grid: int(
        np.argmax(np.sort(table, axis=0)[: max(1, len(table) // 2)].mean(axis=0))
    ),
    "one-se": _one_se,
    "novel-half": _novel_half,
}


def fold_tables(paths, channels, rule="sum", uncapped=frozenset()):
    """Each fold's channels' ``-log p`` (every part) and the :func:`metrics` of every weighting
    of :func:`weight_grid`, as an array (weightings x AUROC, recall at 5, 1, 0.1 %)."""
    grid = weight_grid(len(channels))
    logs_of, tables = {}, {}
    for path in paths:
        arrays = dict(np.load(path))
        logs = [p_scores(arrays, c, RESOLUTION.get(c), PARTS, uncapped) for c in channels]
        logs_of[path] = logs
        rows = [metrics(weighted(logs, w, rule)) for w in grid]
        tables[path] = np.asarray([[m["auroc"], *(m[f"r{k}"] for k in FPRS)] for m in rows])
    return grid, logs_of, tables


def learned(
    paths,
    channels,
    criterion=(0.01,),
    rule="sum",
    aggregate="mean",
    how="learned",
    uncapped=frozenset(),
    tables=None,
):
    """Weights learned on the other validation folds of the same test fold, applied to this one.

    For validation fold (F, G) the weights are those that score best on the folds (F, G'),
    G' != G: folds in which G is a known family, so G's detection never informs the choice.
    This is what an estimator learning its weights from pseudo-zero-day folds of its own
    training families would do. A weighting scores the mean of the AUROC and the recall at each
    false-positive rate in ``criterion`` (the stacked rule's ``fprs``); ``rule`` combines the
    weighted channels (:func:`weighted`); ``aggregate`` picks from the other folds' criteria
    (:data:`AGGREGATES`); ``how`` says how the chosen weights score the held-out fold
    (:data:`COMBINES`). ``tables``: :func:`fold_tables`'s output for these arguments, if
    computed already.
    """
    import pandas as pd

    grid, logs_of, tables = tables or fold_tables(paths, channels, rule, uncapped)
    columns = [0, *(1 + FPRS.index(str(f)) for f in criterion)]
    per_fold = {path: tables[path][:, columns].mean(axis=1) for path in paths}
    out = []
    for path in paths:
        others = [per_fold[q] for q in paths if q != path]
        if not others:
            continue
        best = grid[AGGREGATES[aggregate](np.asarray(others), grid)]
        out.append(
            {
                "fold": path.stem,
                "weights": best,
                **metrics(COMBINES[how](logs_of[path], best, rule)),
            }
        )
    return pd.DataFrame(out)


def _nonnegative_logistic(X, y, sample_weight, penalty):
    """Coefficients of a weighted, L2-penalised logistic regression bounded at 0 (intercept
    free, unpenalised). scikit-learn's ``LogisticRegression`` has no bounds, hence L-BFGS-B."""
    from scipy.optimize import minimize

    def loss(theta):
        z = X @ theta[:-1] + theta[-1]
        # log(1 + e^z) - y z, computed stably; its gradient in z is sigmoid(z) - y.
        value = np.sum(sample_weight * (np.logaddexp(0.0, z) - y * z))
        g = sample_weight * (1 / (1 + np.exp(-z)) - y)
        grad = np.append(X.T @ g + penalty * theta[:-1], g.sum())
        return value + penalty * theta[:-1] @ theta[:-1] / 2, grad

    k = X.shape[1]
    bounds = [(0, None)] * k + [(None, None)]
    return minimize(loss, np.zeros(k + 1), jac=True, method="L-BFGS-B", bounds=bounds).x[:-1]


def logistic(paths, channels, penalty=1.0, uncapped=frozenset()):
    """Weights fitted by a logistic regression on the other folds, applied to each fold.

    For each fold, the other folds of the same test fold are pooled: their held-out family's
    flows against their reference flows, each channel's ``-log p`` the features; every fold's
    attacks and benign flows weighted to equal totals; the weights bounded at 0 (a channel's
    evidence never counts against a flow) with an L2 penalty, the intercept free.
    """
    import pandas as pd

    logs_of = {
        p: [p_scores(dict(np.load(p)), c, RESOLUTION.get(c), PARTS, uncapped) for c in channels]
        for p in paths
    }
    out = []
    for path in paths:
        others = [q for q in paths if q != path]
        if not others:
            continue
        X, y, sw = [], [], []
        for q in others:
            for part, label in (("test_attack", 1.0), ("reference", 0.0)):
                rows = np.column_stack([lg[part] for lg in logs_of[q]])
                X.append(rows)
                y.append(np.full(len(rows), label))
                sw.append(np.full(len(rows), 1.0 / len(rows)))
        X, y, sw = np.vstack(X), np.concatenate(y), np.concatenate(sw)
        sw = sw / sw.sum()

        w = _nonnegative_logistic(X, y, sw, penalty / len(others))
        if not w.any():
            w = np.ones(len(channels))
        weights = tuple(float(v) for v in np.round(w / w.max(), 2))
        out.append(
            {"fold": path.stem, "weights": weights, **metrics(weighted(logs_of[path], tuple(w)))}
        )
    return pd.DataFrame(out)


def _outer_groups(out: Path):
    """(dataset, test fold, its validation folds' cache files), for every test fold cached."""
    for dataset_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        groups: dict[str, list[Path]] = {}
        for path in sorted(dataset_dir.glob("*.npz")):
            groups.setdefault(path.stem.split("___")[0], []).append(path)
        for outer, paths in groups.items():
            yield dataset_dir.name, outer, paths


def _learned_frame(
    out: Path,
    channels,
    criterion,
    rule="sum",
    aggregate="mean",
    how="learned",
    uncapped=frozenset(),
):
    import pandas as pd

    frames = []
    for dataset, outer, paths in _outer_groups(out):
        if how == "logistic":
            frame = logistic(paths, channels, uncapped=uncapped)
        else:
            frame = learned(paths, channels, criterion, rule, aggregate, how, uncapped)
        frame["dataset"], frame["outer"] = dataset, outer
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def cmd_learned(args):
    """Weights learned with one criterion; with ``--against``, paired differences from
    another criterion's choice over the same folds."""
    out = Path(args.out)
    cols = ["auroc", "r0.05", "r0.01", "r0.001"]
    uncapped = frozenset(args.uncap or ())
    frame = _learned_frame(
        out, args.channels, args.criterion, args.rule, args.aggregate, args.combine, uncapped
    )
    print(
        "learned weights over",
        "+".join(args.channels),
        f"rule {args.rule}, folds pooled by {args.aggregate}, applied {args.combine},",
        f"criterion: mean of AUROC and recall at {args.criterion} ({len(frame)} folds)",
    )
    print(frame[cols].mean().round(3).to_string())
    print(frame.groupby("dataset")[cols].mean().round(3).to_string())
    print(frame["weights"].astype(str).value_counts().head(10).to_string())
    against_options = (
        args.against,
        args.against_rule,
        args.against_channels,
        args.against_aggregate,
        args.against_combine,
        args.against_uncap,
    )
    # --uncap alone is compared with every tail capped, which no --against-uncap can name.
    if any(against_options) or uncapped:
        against = args.against or args.criterion
        against_rule = args.against_rule or args.rule
        against_channels = args.against_channels or args.channels
        against_aggregate = args.against_aggregate or args.aggregate
        against_combine = args.against_combine or args.combine
        other = _learned_frame(
            out,
            against_channels,
            against,
            against_rule,
            against_aggregate,
            against_combine,
            frozenset(args.against_uncap or ()),
        )
        assert list(other["fold"]) == list(frame["fold"])
        print(
            f"\nminus {'+'.join(against_channels)}, rule {against_rule}, criterion at "
            f"{against}, folds pooled by {against_aggregate}, applied {against_combine}: "
            "mean [bootstrap 95 % interval over folds]"
        )
        for col in cols:
            mean, low, high = _bootstrap(frame[col] - other[col])
            print(f"{col:7s} {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
        diff = (frame[cols] - other[cols]).groupby(frame["dataset"]).mean()
        print(diff.round(3).to_string())


def _bootstrap(diff, n=10_000, seed=0):
    diff = np.asarray(diff, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return diff.mean(), np.quantile(means, 0.025), np.quantile(means, 0.975)


def cmd_report(args):
    """The search's evidence as Markdown (docs/results/validation-search.md)."""
    import datetime
    import platform

    import pandas as pd

    out = Path(args.out)
    paths = sorted(out.glob("*/*.npz"))
    cols = ["auroc", "r0.05", "r0.01", "r0.001"]
    fixed = [
        (("hgb",), "max"),
        (("rf",), "max"),
        (("knn1",), "max"),
        (("proto1024",), "max"),
        (("maf",), "max"),
        (("sculpt",), "max"),
        (("svdd",), "max"),
        (("sad",), "max"),
        (("ecod",), "max"),
        (("iforest",), "max"),
        (("hgbx",), "max"),
        (("rf", "maf"), "fisher"),
        (("rf", "sculpt"), "fisher"),
        (("hgb", "knn1", "maf"), "fisher"),
        (("hgb", "knn1", "sculpt"), "fisher"),
        (("hgb", "proto1024", "maf"), "fisher"),
        (("hgb", "knn1", "maf"), "max"),
        (("hgb", "knn1", "maf"), "cauchy"),
    ]
    rows = []
    for path in paths:
        arrays = dict(np.load(path))
        have = {k.split("/")[0] for k in arrays if "/" in k}
        for design in fixed:
            if set(design[0]) <= have:
                name = "+".join(design[0]) + ("" if len(design[0]) == 1 else f" ({design[1]})")
                rows.append(
                    {
                        "dataset": path.parent.name,
                        "fold": str(path),
                        "design": name,
                        **evaluate(arrays, design),
                    }
                )
    frame = pd.DataFrame(rows)
    commit = provenance.commit()
    lines = [
        "# Design search on validation folds",
        "",
        f"`python benchmarks/design/channel_search.py report --out {args.out}` on the folds "
        "cached by "
        "`channel_search.py fit` (split seed 0, at most 6,000 rows per class). Machine "
        f"{platform.machine()}, {os.cpu_count()} CPUs; {datetime.date.today()}; commit {commit}.",
        "",
        "Every fold is a **validation** fold: inside a test fold of `sculpt benchmark` (one "
        "attack family withheld), another family is held out as a pseudo-zero-day; no test "
        "fold's withheld family, benign test rows or calibration rows are seen. Recall is of "
        "the held-out family at the threshold that flags 5 %, 1 % or 0.1 % of the fold's "
        "calibration rows (so the 0.1 % column rests on a few hundred rows: read it as rough).",
        "",
        f"{frame['fold'].nunique()} folds: "
        + ", ".join(f"{d} {n}" for d, n in frame.groupby("dataset")["fold"].nunique().items())
        + ".",
        "",
        "## Channels alone and fixed combinations",
        "",
    ]

    def table(part, title):
        t = part.groupby("design")[cols].mean().sort_values("auroc", ascending=False)
        # Not every channel was cached on every dataset: the count says which means compare.
        n = part.groupby("design")["fold"].nunique()
        body = [
            "| design | folds | AUROC | recall 5 % | 1 % | 0.1 % |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in t.iterrows():
            body.append(f"| {name} | {n[name]} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
        return [f"### {title}", "", *body, ""]

    lines += table(frame, f"All folds ({frame['fold'].nunique()})")
    for name, part in frame.groupby("dataset"):
        lines += table(part, f"{name} ({part['fold'].nunique()} folds)")
    lines += [
        "## Weights learned on the other folds",
        "",
        "For each validation fold (F, G), weights in {0, 1/2, 1} per channel chosen on the "
        "folds (F, G') with G' != G, then applied to (F, G): what the `stacked` rule does with "
        "its own training families. Mean over every fold:",
        "",
        "| channels | AUROC | recall 5 % | 1 % | 0.1 % |",
        "|---|---:|---:|---:|---:|",
    ]
    for channels in args.learned:
        learned_frame = _learned_frame(out, channels.split("+"), (0.01,))
        lines.append(
            f"| {channels} | " + " | ".join(f"{learned_frame[c].mean():.3f}" for c in cols) + " |"
        )
    lines += [
        "",
        "## Paired differences (bootstrap 95 % interval over folds)",
        "",
        "| difference | metric | mean | interval |",
        "|---|---|---:|---|",
    ]
    pivot = frame.pivot_table(index="fold", columns="design", values=["auroc", "r0.01"])
    for a, b in (
        ("sculpt", "maf"),
        ("hgb+knn1+sculpt (fisher)", "hgb+knn1+maf (fisher)"),
        ("proto1024", "knn1"),
        ("hgb+proto1024+maf (fisher)", "hgb+knn1+maf (fisher)"),
        ("hgb", "rf"),
    ):
        for metric in ("auroc", "r0.01"):
            if a in pivot[metric] and b in pivot[metric]:
                both = pivot[metric][[a, b]].dropna()
                mean, low, high = _bootstrap(both[a] - both[b])
                lines.append(
                    f"| {a} minus {b} | {metric} | {mean:+.3f} | [{low:+.3f}, {high:+.3f}] "
                    f"({len(both)} folds) |"
                )
    Path(args.write).parent.mkdir(parents=True, exist_ok=True)
    Path(args.write).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.write}")


def cmd_oracle(args):
    """How far any weighting of the channels could go: each fold scored with the weighting
    that does best *on that fold* (chosen with its own held-out family, so an optimistic upper
    bound, never a design), beside equal weights and the weights learned on the other folds."""
    import pandas as pd

    cols = ["auroc", "r0.01", "r0.001"]
    picked = [0, 1 + FPRS.index("0.01"), 1 + FPRS.index("0.001")]
    rows = []
    for dataset, _, paths in _outer_groups(Path(args.out)):
        computed = fold_tables(paths, args.channels)
        grid, _, tables = computed
        equal = grid.index((1.0,) * len(args.channels))
        for path in paths:
            table = tables[path][:, picked]
            for name, values in (("best on the fold", table.max(axis=0)), ("equal", table[equal])):
                rows.append(
                    {"dataset": dataset, "weights": name, **dict(zip(cols, values, strict=True))}
                )
        frame = learned(paths, args.channels, tables=computed)
        rows += [
            {"dataset": dataset, "weights": "learned on the other folds", **row}
            for row in frame[cols].to_dict("records")
        ]
    frame = pd.DataFrame(rows)
    n_folds = (frame["weights"] == "equal").sum()
    print(f"weightings of {'+'.join(args.channels)} ({n_folds} folds); each metric's")
    print("best weighting is taken separately, so the first row bounds every weighting from above")
    print(frame.groupby("weights")[cols].mean().round(3).to_string())
    print(frame.groupby(["dataset", "weights"])[cols].mean().round(3).to_string())


def cmd_rank(args):
    out = Path(args.out)
    results = []
    for path in sorted(out.glob("*/*.npz")):
        arrays = dict(np.load(path))
        have = {k.split("/")[0] for k in arrays if "/" in k}
        channels = [c for c in args.channels if c in have]
        outer = path.stem.split("___")[0] if "___" in path.stem else path.stem
        for design in designs(channels):
            results.append(
                {
                    "dataset": path.parent.name,
                    "fold": path.stem,
                    "outer": outer,
                    "design": "+".join(design[0])
                    + ("" if len(design[0]) == 1 else f":{design[1]}"),
                    **evaluate(arrays, design),
                }
            )
    (out / "ranking.json").write_text(json.dumps(results))
    import pandas as pd

    frame = pd.DataFrame(results)
    metric_cols = ["auroc", "r0.05", "r0.01", "r0.001"]
    table = frame.groupby("design")[metric_cols].mean()
    table["score"] = table[["auroc", "r0.01", "r0.001"]].mean(axis=1)
    print(table.sort_values("score", ascending=False).head(args.top).round(3).to_string())
    for name, part in frame.groupby("dataset"):
        t = part.groupby("design")[metric_cols].mean()
        t["score"] = t[["auroc", "r0.01", "r0.001"]].mean(axis=1)
        print(f"\n{name} ({part['fold'].nunique()} folds)")
        print(t.sort_values("score", ascending=False).head(10).round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit")
    fit.add_argument("--datasets", nargs="+", default=["cicids2017", "unsw-nb15", "iot-23"])
    fit.add_argument("--seeds", nargs="+", type=int, default=[0])
    fit.add_argument("--channels", nargs="+", default=["rf", "knn5", "knn1", "maf", "svdd"])
    fit.add_argument("--max-per-class", type=int, default=3000, help="0: every row")
    fit.add_argument("--test", action="store_true", help="the test folds (for the final table)")
    fit.add_argument("--families", nargs="+", help="only the test folds withholding these families")
    fit.add_argument(
        "--context",
        default="off",
        help="context features after the per-flow ones ('on' or time scales, as `sculpt "
        "train --context`; complete captures only, and with --max-per-class 0)",
    )
    fit.add_argument("--out", default="runs/channel-search")
    rank = sub.add_parser("rank")
    rank.add_argument(
        "--channels", nargs="+", default=["rf", "knn5", "knn1", "maf", "svdd", "hgb", "sculpt"]
    )
    rank.add_argument("--top", type=int, default=25)
    rank.add_argument("--out", default="runs/channel-search")
    learn = sub.add_parser("learned")
    learn.add_argument("--channels", nargs="+", default=["rf", "hgb", "knn1", "maf"])
    learn.add_argument("--out", default="runs/channel-search")
    learn.add_argument(
        "--criterion",
        nargs="+",
        type=float,
        default=[0.01],
        help="false-positive rates whose recalls, with the AUROC, score a weighting",
    )
    learn.add_argument("--rule", choices=("sum", "max"), default="sum")
    learn.add_argument("--against", nargs="+", type=float, help="another criterion to compare")
    learn.add_argument("--against-rule", choices=("sum", "max"), help="another rule to compare")
    learn.add_argument("--against-channels", nargs="+", help="other channels to compare")
    learn.add_argument("--aggregate", choices=sorted(AGGREGATES), default="mean")
    learn.add_argument(
        "--against-aggregate", choices=sorted(AGGREGATES), help="another pooling to compare"
    )
    learn.add_argument(
        "--combine",
        choices=sorted([*COMBINES, "logistic"]),
        default="learned",
        help="how the chosen weights score the held-out fold (default: as learned)",
    )
    learn.add_argument(
        "--against-combine", choices=sorted([*COMBINES, "logistic"]), help="another to compare"
    )
    learn.add_argument("--uncap", nargs="+", help="channels whose tail is not capped")
    learn.add_argument("--against-uncap", nargs="+", help="the same, for the comparison")
    oracle = sub.add_parser("oracle", help="the best weighting per fold: an upper bound")
    oracle.add_argument("--channels", nargs="+", default=["hgb", "knn1", "maf"])
    oracle.add_argument("--out", default="runs/channel-search")
    report = sub.add_parser("report")
    report.add_argument("--out", default="runs/channel-search")
    report.add_argument(
        "--learned",
        nargs="+",
        default=[
            "hgb+knn1+maf",
            "hgb+knn1+sculpt",
            "hgb+knn1+maf+sculpt",
            "hgb+rf+knn1+maf",
            "hgb+knn1",
            "hgb+maf",
            "rf+knn1+maf",
            "hgb+knn1+maf+sad",
            "hgb+knn1+maf+ecod",
            "hgb+knn1+maf+iforest",
            "hgb+knn1+sad",
            "hgb+knn1+ecod",
            "hgb+knn1+iforest",
            "sad+knn1+maf",
            "hgbx+knn1+maf",
            "hgb+knn1+maf+hgbx",
        ],
    )
    report.add_argument("--write", default="docs/results/validation-search.md")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}")
    commands = {
        "fit": cmd_fit,
        "rank": cmd_rank,
        "learned": cmd_learned,
        "oracle": cmd_oracle,
        "report": cmd_report,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
