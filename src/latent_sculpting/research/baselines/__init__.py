"""Baselines and ablations compared with latent sculpting under one protocol.

Every method is a :class:`Method`: fitted on raw flow features with 0/1 targets and canonical
labels, scoring with higher = more anomalous. :func:`make_method` builds one from its name;
``"knn@none"`` picks a method with another feature transform than its default. See
``docs/research/baselines.md`` for each method's library, inputs and threshold rule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from latent_sculpting.io.context.config import parse_context
from latent_sculpting.model.channels.deep_sad import DeepSAD
from latent_sculpting.model.presets import PRESETS
from latent_sculpting.research.baselines.base import EstimatorMethod, Method, preserve_global_rng
from latent_sculpting.research.baselines.ecod import InductiveECOD
from latent_sculpting.research.baselines.sculpting import ABLATIONS, SculptingMethod

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "CONTEXT_SUFFIX",
    "DEFAULT_METHODS",
    "DeepSAD",
    "EstimatorMethod",
    "InductiveECOD",
    "Method",
    "SculptingMethod",
    "make_method",
    "method_names",
    "parse_method",
    "preserve_global_rng",
]


def _mlp(seed: int | None) -> Any:
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=50, random_state=seed)


def _rf(seed: int | None) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed)


def _hgb(seed: int | None) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=seed)


def _ocsvm(seed: int | None) -> Any:
    from pyod.models.ocsvm import OCSVM

    return OCSVM(kernel="rbf", gamma="scale", nu=0.05)


def _iforest(seed: int | None) -> Any:
    from pyod.models.iforest import IForest

    return IForest(n_estimators=200, random_state=seed)


def _knn(seed: int | None) -> Any:
    from pyod.models.knn import KNN

    return KNN(n_neighbors=5, method="largest")


def _ecod(seed: int | None) -> Any:
    return InductiveECOD()


def _autoencoder(seed: int | None) -> Any:
    from pyod.models.auto_encoder import AutoEncoder

    # PyOD would standardise again (preprocessing=True); the features arrive scaled already.
    return AutoEncoder(
        epoch_num=20,
        batch_size=64,
        hidden_neuron_list=[64, 32],
        preprocessing=False,
        verbose=0,
        random_state=0 if seed is None else seed,
        device="cpu",
    )


def _deep_svdd(seed: int | None) -> Any:
    return DeepSAD(eta=0.0, random_state=seed)


def _deep_sad(seed: int | None) -> Any:
    return DeepSAD(eta=1.0, random_state=seed)


#: name -> (builder, trains_on, library, extra EstimatorMethod arguments).
BASELINES: dict[str, tuple[Callable[[int | None], Any], str, str, dict[str, Any]]] = {
    "mlp": (_mlp, "benign+attacks", "sklearn MLPClassifier", {}),
    "rf": (_rf, "benign+attacks", "sklearn RandomForestClassifier", {}),
    "hgb": (_hgb, "benign+attacks", "sklearn HistGradientBoostingClassifier", {}),
    # The kernel matrix grows with the square of the rows: fit on a benign subsample.
    "ocsvm": (_ocsvm, "benign", "PyOD OCSVM", {"max_fit_rows": 2000}),
    "iforest": (_iforest, "benign", "PyOD IForest", {}),
    "knn": (_knn, "benign", "PyOD KNN", {}),
    "ecod": (_ecod, "benign", "ECOD (Li et al. 2022), inductive", {}),
    "autoencoder": (_autoencoder, "benign", "PyOD AutoEncoder", {}),
    "deep-svdd": (
        _deep_svdd,
        "benign",
        "Deep SVDD (Ruff et al. 2018), torch",
        {"score": "decision_function"},
    ),
    "deep-sad": (
        _deep_sad,
        "benign+attacks",
        "Deep SAD (Ruff et al. 2020), torch",
        {"score": "decision_function"},
    ),
}

#: Feature transform of every baseline unless ``name@transform`` says otherwise: the signed
#: log1p tames counters that span ten orders of magnitude, which distance-based methods need.
BASELINE_TRANSFORM = "log1p"

#: What ``sculpt compare`` runs without ``--methods``.
DEFAULT_METHODS: tuple[str, ...] = (
    *BASELINES,
    "paper-v1",
    "paper-v2",
    "fused",
    "default",
    *(f"default-{a}" for a in ("noboost", "noknn", "noflow", "fisher", "forest", "sculpt")),
)


def method_names() -> list[str]:
    """Every name :func:`make_method` accepts (before an optional ``@transform``): the
    baselines, the presets, and each preset with each ablation that applies to it (one whose
    parameters fit together: Stage 1 alone needs a preset with Stage 1, say)."""
    return [*BASELINES, *(f"{b}{CONTEXT_SUFFIX}" for b in BASELINES), *PRESETS, *_ablated()]


#: ``rf-context``: a baseline fed the context features after the per-flow ones
#: (:mod:`latent_sculpting.research.benchmark.context`).
CONTEXT_SUFFIX = "-context"


#: Ablations of Stage 1's training or its rule: meaningless for a preset without Stage 1.
_NEEDS_STAGE1 = ("stage1", "ce", "nosep")


@functools.cache
def _ablated() -> tuple[str, ...]:
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.model.params import check_params

    names = []
    for name, params in PRESETS.items():
        for ablation, (change, _) in ABLATIONS.items():
            if ablation in _NEEDS_STAGE1 and not params["stage1"]:
                continue
            if ablation not in _NEEDS_STAGE1 and {**params, **change} == params:
                continue  # changes nothing: no method of its own
            try:
                check_params(LatentSculpting(**{**params, **change}).get_params())
            except ValueError:
                continue
            names.append(f"{name}-{ablation}")
    return tuple(names)


def parse_method(spec: str) -> tuple[str, str | None]:
    """Split ``"name@transform"`` into its name and transform (None when absent); validate."""
    from latent_sculpting.model.preprocessing import FEATURE_TRANSFORMS

    name, _, transform = spec.partition("@")
    if name not in method_names():
        raise ValueError(
            f"unknown method {name!r}; choose from {method_names()} "
            f"(optionally with @transform, transform in {FEATURE_TRANSFORMS})"
        )
    if transform and transform not in FEATURE_TRANSFORMS:
        raise ValueError(
            f"unknown feature transform {transform!r} in method {spec!r}; "
            f"choose from {FEATURE_TRANSFORMS}"
        )
    return name, transform or None


def make_method(
    spec: str,
    random_state: int | None = None,
    shared: dict | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> Method:
    """A fresh, unfitted method from its name.

    Parameters
    ----------
    spec : str
        A baseline (``"knn"``, ``"rf"``, ...), a preset of our detector (``"default"``,
        ``"paper-v1"``, ...), a preset with an ablation suffix (``"default-stage1"``,
        ``"default-stage2"``, ``"default-ce"``, ``"default-nosep"``), a baseline with context
        features (``"rf-context"``), each optionally followed by ``@none``, ``@log1p`` or
        ``@quantile`` to change its feature transform.
    random_state : int or None
        Model seed.
    shared : dict, optional
        Fitted models shared between configurations of our detector within one seed (see
        :class:`SculptingMethod`).
    overrides : dict, optional
        Estimator arguments that replace a preset's (the command line's ``--set``), before
        the ablation's and the transform's; baselines ignore them, but for ``context``: a
        ``<baseline>-context`` gets the context configuration our presets get (default "on").

    Raises
    ------
    ValueError
        If the name or the transform is unknown (the message lists the valid ones), or the
        detector's arguments do not fit together.
    """
    name, transform = parse_method(spec)
    base = name.removesuffix(CONTEXT_SUFFIX)
    if base in BASELINES:
        build, trains_on, library, extra = BASELINES[base]
        method = EstimatorMethod(
            spec,
            build,
            trains_on=trains_on,
            feature_transform=transform or BASELINE_TRANSFORM,
            library=library,
            random_state=random_state,
            **extra,
        )
        if name != base:  # the configuration --set context=... gives our presets, else "on"
            setting = (overrides or {}).get("context", "off")
            method.context_config = parse_context("on" if setting == "off" else setting)
        return method
    base, ablation = (name, None) if name in PRESETS else name.rsplit("-", 1)
    params = {**PRESETS[base], **(overrides or {})}
    if ablation is not None:
        params.update(ABLATIONS[ablation][0])
    if transform is not None:
        params["feature_transform"] = transform
    return SculptingMethod(
        spec, params, stage1_only=ablation == "stage1", random_state=random_state, shared=shared
    )
