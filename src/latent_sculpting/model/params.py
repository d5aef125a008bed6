"""The estimator's parameters: what each accepts, and which combinations make sense.

:data:`PARAMETER_CONSTRAINTS` is scikit-learn's ``_parameter_constraints`` block for
:class:`~latent_sculpting.LatentSculpting`, checked by scikit-learn's own validator (private API,
``sklearn.utils._param_validation``, stable since scikit-learn 1.2, pinned in
``constraints.txt``): its messages name the parameter, what it accepts and the value given.
:func:`check_params` adds the checks across parameters, so that a setting the chosen score
rule would ignore is refused rather than silently dropped. Both run before any data is
touched; the command line reads the same table to parse ``--set name=value``.
:class:`Parameters` is the estimator's constructor: it stores each parameter as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, ClassVar

from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import (
    Interval,
    Options,
    StrOptions,
    validate_parameter_constraints,
)

from latent_sculpting.io.context.config import context_option, parse_context
from latent_sculpting.model.channels.registry import SIDE_CHANNELS, enabled_channels
from latent_sculpting.model.fusion import FUSIONS
from latent_sculpting.model.preprocessing import FEATURE_TRANSFORMS, SCALERS
from latent_sculpting.model.stage1.encoders import ATTENTION_ENCODERS, ENCODERS
from latent_sculpting.model.stage1.losses import LOSSES

__all__ = [
    "CALIBRATIONS",
    "PARAMETER_CONSTRAINTS",
    "RUN_PARAMETERS",
    "SELECTIONS",
    "Parameters",
    "check_params",
    "check_spec_context",
]

#: Where thresholds and p-values come from (see :class:`~latent_sculpting.LatentSculpting`).
CALIBRATIONS = ("train", "holdout")
#: How Stage 1 picks its best epoch.
SELECTIONS = ("centroid_f1", "distance_auroc")
#: Parameters that say how to run a fit, not what to fit; presets leave them out.
RUN_PARAMETERS = ("random_state", "device", "n_jobs", "verbose")


def _ints(low: int) -> list:
    return [Interval(Integral, low, None, closed="left")]


def _reals(low: float, high: float | None = None, closed: str = "left") -> list:
    return [Interval(Real, low, high, closed=closed)]


PARAMETER_CONSTRAINTS: dict[str, list] = {
    "feature_transform": [StrOptions(set(FEATURE_TRANSFORMS))],
    "scaler": [StrOptions(set(SCALERS))],
    "stage1": ["boolean"],
    "encoder": [StrOptions(set(ENCODERS))],
    "latent_dim": _ints(1),
    "d_model": _ints(1),
    "n_heads": _ints(1),
    "n_layers": _ints(1),
    "d_ffn": _ints(1),
    "dropout": _reals(0, 1),
    "loss": [StrOptions(set(LOSSES))],
    "alpha": _reals(0),
    "beta": _reals(0),
    "gamma": _reals(0),
    "margin": _reals(0),
    "input_noise": _reals(0),
    "lr": _reals(0, closed="neither"),
    "weight_decay": _reals(0),
    # Stage 1 skips one-row batches, so a batch size of 1 would never train.
    "batch_size": _ints(2),
    "epochs": _ints(1),
    "grad_clip": _reals(0, closed="neither"),
    "validation_fraction": _reals(0, 1, closed="neither"),
    "selection": [StrOptions(set(SELECTIONS))],
    "undersample_benign": ["boolean"],
    "flow_transforms": _ints(0),
    "flow_hidden": _ints(1),
    "flow_hidden_layers": _ints(1),
    "flow_lr": _reals(0, closed="neither"),
    "flow_epochs": _ints(1),
    "flow_batch_size": _ints(1),
    "flow_standardize": ["boolean"],
    "svdd_dim": _ints(0),
    "forest_trees": _ints(0),
    "boost_iter": _ints(0),
    "knn_prototypes": _ints(0),
    "stack_folds": _ints(0),
    "stack_neighbours": _ints(0),
    "max_benign_rows": [*_ints(1), None],
    "score": [StrOptions(set(FUSIONS))],
    "percentile": _reals(0, 100, closed="neither"),
    "calibration": [StrOptions(set(CALIBRATIONS))],
    "calibration_fraction": _reals(0, 1, closed="neither"),
    "target_fpr": [*_reals(0, 1, closed="neither"), None],
    "coarse_threshold": ["boolean"],
    "context": [str],
    "random_state": [*_ints(0), None],
    "device": [str],
    # scikit-learn's convention: None is one worker, -1 one per CPU.
    "n_jobs": [Options(Integral, {-1}), *_ints(1), None],
    "verbose": ["boolean"],
}


def check_params(params: Mapping[str, Any], *, caller: str = "LatentSculpting") -> None:
    """Check every parameter's value, then the combinations.

    Parameters
    ----------
    params : mapping
        Every parameter of :data:`PARAMETER_CONSTRAINTS` (``get_params()``).
    caller : str
        Name used in the messages.

    Raises
    ------
    ValueError
        The first value that a parameter does not accept (scikit-learn's
        ``InvalidParameterError``, also a ``TypeError``), else every combination that does not
        hold, in one message.
    """
    validate_parameter_constraints(PARAMETER_CONSTRAINTS, dict(params), caller_name=caller)
    problems = []
    try:
        parse_context(params["context"])
    except ValueError as error:
        problems.append(str(error))
    score = params["score"]
    fusion = FUSIONS[score]
    channels = enabled_channels(params)
    if fusion.needs_stage1 and not params["stage1"]:
        problems.append(
            f"score={score!r} needs stage1=True (its nearest-centroid rule); "
            "use score='nll' or 'fisher' without Stage 1"
        )
    if fusion.needs_reference and params["calibration"] != "holdout":
        problems.append(
            f"score={score!r} needs calibration='holdout' for its reference rows, held out of "
            f"every fit; got calibration={params['calibration']!r}"
        )
    switches = " or ".join(f"{cls.parameter} >= 1" for cls in SIDE_CHANNELS.values())
    if fusion.uses_side_channels and not channels:
        problems.append(f"score={score!r} fuses the flow with side channels: set {switches}")
    if not fusion.uses_side_channels:
        for name in channels:
            parameter = SIDE_CHANNELS[name].parameter
            problems.append(
                f"{parameter}={params[parameter]} fits a {name} channel that score={score!r} "
                f"does not use: set {parameter}=0, or score='fisher'"
            )
    if params["stack_neighbours"] and not params["stack_folds"]:
        problems.append(
            f"stack_neighbours={params['stack_neighbours']} leaves families out of the "
            "pseudo-zero-day folds' refits; with stack_folds=0 there are none: set stack_folds"
        )
    if params["stack_folds"] and not fusion.needs_folds:
        problems.append(
            f"stack_folds={params['stack_folds']} holds out families for a rule that learns "
            f"from them; score={score!r} does not: set stack_folds=0, or score='stacked'"
        )
    if fusion.needs_folds and params["stage1"]:
        # Stage 1 learns from the known attacks, so every pseudo-zero-day fold would have to
        # refit it (and the flow on its codes) without the held-out family.
        problems.append(
            f"score={score!r} learns its weights on folds that refit the supervised channels; "
            "Stage 1 is supervised too and is not refitted per fold: set stage1=False"
        )
    if params["flow_transforms"] == 0:
        # No flow: what reads it or only feeds it has nothing to do.
        if not fusion.uses_side_channels:
            problems.append(
                f"score={score!r} scores with the flow, which flow_transforms=0 leaves out: "
                "use score='fisher' or 'stacked' with side channels"
            )
        if params["calibration"] == "train":
            problems.append(
                "calibration='train' sets thresholds on the flow's NLL, which "
                "flow_transforms=0 leaves out: use calibration='holdout'"
            )
        for name, reason, off in (
            ("stage1", "Stage 1's codes", "False"),
            ("svdd_dim", "the embedding", "0"),
        ):
            if params[name]:
                problems.append(
                    f"{name}={params[name]}: {reason} only feed the flow, which "
                    f"flow_transforms=0 leaves out: set {name}={off}"
                )
    if params["target_fpr"] is not None and params["calibration"] != "holdout":
        problems.append(
            f"target_fpr={params['target_fpr']} needs calibration='holdout': the conformal "
            "guarantee holds for flows held out of training"
        )
    if (
        params["stage1"]
        and params["encoder"] in ATTENTION_ENCODERS
        and params["d_model"] % params["n_heads"]
    ):
        problems.append(
            f"encoder={params['encoder']!r} splits d_model={params['d_model']} over "
            f"n_heads={params['n_heads']} attention heads: d_model must be a multiple of n_heads"
        )
    if params["device"] != "auto":
        import torch

        try:
            torch.device(params["device"])
        except RuntimeError as error:
            problems.append(f"device={params['device']!r} is not a torch device: {error}")
    if problems:
        raise ValueError(f"{caller} parameters do not fit together: " + "; ".join(problems))


def check_spec_context(context: str, spec: Any, *, named: bool = False) -> None:
    """Refuse a fit (or a model file) whose ``context`` parameter and input spec disagree: the
    context features are computed where records are read
    (:func:`latent_sculpting.io.table.read_flows` with ``context=parse_context(context)``),
    and a model must say what its inputs hold. A fit on a DataFrame (``named``) without a
    spec would store a plain table's spec, without context: refused with context on. A fit
    on an array stores no spec; its caller supplies every column.

    Raises
    ------
    ValueError
        Naming both settings.
    """
    wanted = parse_context(context)
    if spec is None:
        if named and wanted is not None:
            raise ValueError(
                f"context={context!r}: a model with context features needs the input spec its "
                "records were read with (fit(X, y, spec=table.spec))"
            )
        return
    if spec.context != wanted:
        raise ValueError(
            f"context={context!r}, but the input spec's records were read with "
            f"context={context_option(spec.context)!r}: read them with the model's setting "
            "(read_flows(..., context=parse_context(context)))"
        )


class Parameters(BaseEstimator):
    """The parameters of :class:`~latent_sculpting.LatentSculpting`, which documents them.

    scikit-learn's convention: the constructor stores each parameter as given, under its own
    name, and nothing else; :meth:`_validate_params` (scikit-learn's hook, which ``fit`` calls)
    checks them with :func:`check_params`.
    """

    _parameter_constraints: ClassVar[dict[str, list]] = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        *,
        feature_transform: str = "log1p",
        scaler: str = "standard",
        stage1: bool = False,
        encoder: str = "mlp",
        latent_dim: int = 32,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ffn: int = 256,
        dropout: float = 0.1,
        loss: str = "binary_sculpting",
        alpha: float = 0.1,
        beta: float = 0.1,
        gamma: float = 1.0,
        margin: float = 5.0,
        input_noise: float = 0.1,
        lr: float = 3e-4,
        weight_decay: float = 1e-2,
        batch_size: int = 512,
        epochs: int = 10,
        grad_clip: float = 1.0,
        validation_fraction: float = 0.1,
        selection: str = "distance_auroc",
        undersample_benign: bool = True,
        flow_transforms: int = 5,
        flow_hidden: int = 128,
        flow_hidden_layers: int = 1,
        flow_lr: float = 5e-4,
        flow_epochs: int = 20,
        flow_batch_size: int = 512,
        flow_standardize: bool = False,
        svdd_dim: int = 0,
        forest_trees: int = 0,
        boost_iter: int = 100,
        knn_prototypes: int = 1024,
        stack_folds: int = 8,
        stack_neighbours: int = 0,
        max_benign_rows: int | None = 262_144,
        score: str = "stacked",
        percentile: float = 95.0,
        calibration: str = "holdout",
        calibration_fraction: float = 0.2,
        target_fpr: float | None = None,
        coarse_threshold: bool = False,
        context: str = "off",
        random_state: int | None = None,
        device: str = "auto",
        n_jobs: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.feature_transform = feature_transform
        self.scaler = scaler
        self.stage1 = stage1
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.d_ffn = d_ffn
        self.dropout = dropout
        self.loss = loss
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.margin = margin
        self.input_noise = input_noise
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.grad_clip = grad_clip
        self.validation_fraction = validation_fraction
        self.selection = selection
        self.undersample_benign = undersample_benign
        self.flow_transforms = flow_transforms
        self.flow_hidden = flow_hidden
        self.flow_hidden_layers = flow_hidden_layers
        self.flow_lr = flow_lr
        self.flow_epochs = flow_epochs
        self.flow_batch_size = flow_batch_size
        self.flow_standardize = flow_standardize
        self.svdd_dim = svdd_dim
        self.forest_trees = forest_trees
        self.boost_iter = boost_iter
        self.knn_prototypes = knn_prototypes
        self.stack_folds = stack_folds
        self.stack_neighbours = stack_neighbours
        self.max_benign_rows = max_benign_rows
        self.score = score
        self.percentile = percentile
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.target_fpr = target_fpr
        self.coarse_threshold = coarse_threshold
        self.context = context
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _validate_params(self) -> None:
        check_params(self.get_params(deep=False), caller=type(self).__name__)
