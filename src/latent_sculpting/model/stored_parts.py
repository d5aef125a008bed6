"""The parts of a model file, read one by one: the glue between the envelope
(:mod:`latent_sculpting.model.persistence`) and each part's own ``from_state``.

Each part checks its own stored state (``FeaturePreprocessor.from_state``,
``LatentDensity.from_state``, ``DeepSAD.from_state``, each side channel's and score rule's,
:func:`~latent_sculpting.model.calibration.check_thresholds`, ...). What is checked here is how
the parts fit together: a part is present exactly when the parameters ask for it, reads the
width the part before it gives, and describes the model's own features. The loaders run in the
order of :data:`BEFORE_BUDGET` then :data:`AFTER_BUDGET`; :func:`named_part` names the part
whose check failed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from latent_sculpting.errors import ModelFileError
from latent_sculpting.io.flowspec import MAX_NAME_LENGTH, FlowSpec, legacy_spec
from latent_sculpting.model.calibration import check_calibration_scores, check_thresholds
from latent_sculpting.model.channels.deep_sad import DeepSAD
from latent_sculpting.model.channels.forest import MAX_FEATURES
from latent_sculpting.model.channels.registry import SIDE_CHANNELS, enabled_channels
from latent_sculpting.model.density.maf import LatentDensity, flow_layout
from latent_sculpting.model.fusion import FUSIONS
from latent_sculpting.model.params import check_spec_context
from latent_sculpting.model.preprocessing import FeaturePreprocessor
from latent_sculpting.model.stage1.encoders import (
    ENCODER_SIZES,
    encoder_from_state,
    encoder_layout,
)
from latent_sculpting.model.state import check_int, check_layout, check_tensor, few, shown
from latent_sculpting.monitor.drift import DriftReference
from latent_sculpting.monitor.profile import BenignProfile

__all__ = [
    "AFTER_BUDGET",
    "BEFORE_BUDGET",
    "MAX_INFO_BYTES",
    "DamagedPart",
    "Loading",
    "StoredTensors",
    "named_part",
]

#: Largest ``history_`` and ``training_info`` as JSON: both are informational only.
MAX_INFO_BYTES = 1 << 20
#: Descriptions of benign training traffic saved beside the score's parts (model files
#: written before they existed load without them: no drift report, no explanations).
_BENIGN_PARTS = {"drift_reference": DriftReference, "benign_profile": BenignProfile}

#: What a check of a damaged part may raise; each becomes one ModelFileError naming the part.
_ERRORS = (
    ModelFileError,
    KeyError,
    TypeError,
    ValueError,
    RuntimeError,
    AttributeError,
    IndexError,
    OverflowError,
    ZeroDivisionError,
)


class DamagedPart(Exception):
    """A failed check of the named part (the envelope turns it into a ModelFileError naming
    the file)."""

    def __init__(self, part: str, detail: str) -> None:
        super().__init__(detail)
        self.part, self.detail = part, detail


@contextlib.contextmanager
def named_part(name: str) -> Iterator[None]:
    """Name the part whose checks run inside, for the error message (an inner name wins)."""
    try:
        yield
    except _ERRORS as error:
        if isinstance(error, KeyError):
            detail = f"lacks {error.args[0]!r}" if error.args else "lacks a key"
        else:
            detail = str(error) or type(error).__name__
        raise DamagedPart(name, detail) from None


class StoredTensors:
    """The file's tensors, handed to the parts that claim them; the rest are refused."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self._all = tensors
        self._claimed: set[str] = set()

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Every tensor named ``prefix...``, by the rest of its name."""
        keys = [k for k in self._all if k.startswith(prefix)]
        self._claimed.update(keys)
        return {k.removeprefix(prefix): self._all[k] for k in keys}

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.group(prefix).items()}

    def one(self, key: str, dtype: torch.dtype, shape: tuple[int | None, ...]) -> torch.Tensor:
        """The tensor ``key``, of ``dtype`` and ``shape`` (``None``: any length), finite."""
        if key not in self._all:
            raise ValueError(f"the tensor {key!r} is missing")
        self._claimed.add(key)
        return check_tensor(self._all[key], repr(key), dtype, shape)

    def unclaimed(self) -> list[str]:
        return sorted(set(self._all) - self._claimed)


class Loading:
    """A file's parameters, fitted state and tensors, and the fitted attributes built from them
    so far (``out``), handed to each loader of :data:`BEFORE_BUDGET` and :data:`AFTER_BUDGET`
    in turn."""

    def __init__(self, params: dict, fitted: dict, tensors: StoredTensors, device: torch.device):
        self.params, self.fitted, self.tensors, self.device = params, fitted, tensors, device
        self.out: dict[str, Any] = {"device_": device}
        self.names: list[str] | None = None
        self.layouts: dict[str, dict] = {"encoder": {}, "embedding": {}, "flow": {}}
        self.width = self.inputs = 0

    @property
    def sizes(self) -> dict[str, Any]:
        return {name: self.params[name] for name in ENCODER_SIZES}


def _bounded(value: Any, what: str) -> dict:
    """An informational JSON object of at most :data:`MAX_INFO_BYTES`."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {shown(value)}")
    size = len(json.dumps(value))
    if size > MAX_INFO_BYTES:
        raise ValueError(f"{what} is {size} bytes of JSON; at most {MAX_INFO_BYTES}")
    return value


def _summary(load: Loading) -> None:
    load.out["training_info_"] = _bounded(load.fitted.get("training_info", {}), "training_info")
    load.out["history_"] = _bounded(load.fitted["history_"], "history_")


def _features(load: Loading) -> None:
    n = load.out["n_features_in_"] = check_int(
        load.fitted["n_features_in_"], "n_features_in_", 1, MAX_FEATURES
    )
    names = load.fitted["feature_names_in_"]
    if names is not None:
        if not isinstance(names, list) or len(names) != n:
            count = str(len(names)) if isinstance(names, list) else shown(names)
            raise ValueError(f"{count} feature names for {n} features")
        if not all(isinstance(name, str) and 0 < len(name) <= MAX_NAME_LENGTH for name in names):
            raise ValueError("feature names must be non-empty strings")
        if len(set(names)) != len(names):
            raise ValueError("feature names are not unique")
        load.out["feature_names_in_"] = np.asarray(names, dtype=object)
        load.names = names


def _spec(load: Loading) -> None:
    """The input spec (:meth:`FlowSpec.from_dict`), whose features must be the model's."""
    fitted, names = load.fitted, load.names
    if fitted.get("spec") is not None:
        spec = FlowSpec.from_dict(fitted["spec"])
    elif names is not None:
        # Written before specs were stored (format 1, 2): rebuilt from the feature names, then
        # checked as a stored one is.
        extra = fitted.get("extra") or {}
        if not isinstance(extra, dict) or not isinstance(extra.get("training_data") or {}, dict):
            raise ValueError("'extra' must be an object, its 'training_data' an object")
        spec = FlowSpec.from_dict(legacy_spec(names, extra).to_dict())
    else:
        return
    if names is None or spec.feature_names != list(names):
        raise ValueError("the input spec's features are not the model's")
    check_spec_context(load.params["context"], spec)
    load.out["spec_"] = spec


def _calibration(load: Loading) -> None:
    scores = load.tensors.one("calibration_scores", torch.float64, (None,)).numpy()
    load.out["calibration_scores_"] = check_calibration_scores(scores)


def _thresholds(load: Loading) -> None:
    p, fitted = load.params, load.fitted
    load.out["thresholds_"], load.out["threshold_"] = check_thresholds(
        fitted["thresholds_"],
        fitted["threshold_"],
        load.out["calibration_scores_"],
        p["percentile"],
        p["target_fpr"],
        coarse=p["coarse_threshold"],
    )


def _preprocessor_of(
    load: Loading, name: str, n_features: int, transform: str, scaler: str
) -> FeaturePreprocessor:
    """The preprocessor stored as ``name``, of the model's input width, transform and scaler."""
    pre = FeaturePreprocessor.from_state(load.fitted[name], load.tensors.arrays(f"{name}."))
    if (pre.feature_transform, pre.scaler) != (transform, scaler):
        raise ValueError(
            f"it transforms with {pre.feature_transform!r} and scales with {pre.scaler!r}; the "
            f"model's parameters say {transform!r}, {scaler!r}"
        )
    if pre.n_features_in_ != n_features:
        raise ValueError(f"{pre.n_features_in_} columns, expected {n_features}")
    return pre


def _preprocessor(load: Loading) -> None:
    p = load.params
    pre = _preprocessor_of(
        load, "preprocessor", load.out["n_features_in_"], p["feature_transform"], p["scaler"]
    )
    load.out["preprocessor_"], load.width = pre, int(np.sum(pre.support_))


def _encoder_layout(load: Loading) -> None:
    if load.params["stage1"]:
        layout = encoder_layout(load.params["encoder"], load.width, **load.sizes)
        load.layouts["encoder"] = layout


def _svdd_layout(load: Loading) -> None:
    dim, present = load.params["svdd_dim"], "svdd" in load.fitted
    if present != (dim > 0):
        raise ValueError(f"present={present}, but svdd_dim={dim}")
    if dim > 0:
        n_features, _, rep_dim = DeepSAD.check_config(load.fitted["svdd"])
        if rep_dim != dim:
            raise ValueError(f"width {rep_dim}, but svdd_dim={dim}")
        if n_features != load.width:
            raise ValueError(f"{n_features} inputs, the model has {load.width}")
        load.layouts["embedding"] = DeepSAD.layout(load.fitted["svdd"])


def _flow_scaler(load: Loading) -> None:
    p, present = load.params, "flow_scaler" in load.fitted
    load.inputs = (p["latent_dim"] if p["stage1"] else load.width) + p["svdd_dim"]
    load.out["flow_scaler_"] = None
    if present != p["flow_standardize"]:
        raise ValueError(f"present={present}, but flow_standardize={p['flow_standardize']}")
    if p["flow_standardize"]:
        scaler = _preprocessor_of(load, "flow_scaler", load.inputs, "none", "standard")
        load.out["flow_scaler_"], load.inputs = scaler, int(np.sum(scaler.support_))


def _flow_layout(load: Loading) -> None:
    p = load.params
    if p["flow_transforms"] > 0:
        sizes = (p["flow_transforms"], p["flow_hidden"], p["flow_hidden_layers"])
        load.layouts["flow"] = flow_layout(load.inputs, *sizes)


def _encoder(load: Loading) -> None:
    p, out, state = load.params, load.out, load.tensors.group("encoder.")
    out["encoder_"] = out["center_benign_"] = out["center_attack_"] = None
    if not p["stage1"]:
        check_layout({}, state)  # none: a stray encoder tensor is refused
        return
    encoder = encoder_from_state(p["encoder"], load.width, state, **load.sizes)
    out["encoder_"] = encoder.to(load.device)
    for key in ("center_benign", "center_attack"):
        center = load.tensors.one(key, torch.float32, (p["latent_dim"],))
        out[key + "_"] = center.to(load.device)


def _svdd(load: Loading) -> None:
    load.out["svdd_"] = None
    if load.params["svdd_dim"] > 0:
        load.out["svdd_"] = DeepSAD.from_state(load.fitted["svdd"], load.tensors.group("svdd."))


def _flow(load: Loading) -> None:
    p, state = load.params, load.tensors.group("flow.")
    load.out["flow_"] = None
    if p["flow_transforms"] == 0:
        check_layout({}, state)  # none: a stray flow tensor is refused
        return
    flow = LatentDensity.from_state(
        state,
        load.inputs,
        transforms=p["flow_transforms"],
        hidden_features=p["flow_hidden"],
        hidden_layers=p["flow_hidden_layers"],
    )
    load.out["flow_"] = flow.to(load.device)


def _channels(load: Loading) -> None:
    """The side channels the parameters switch on, in order, each of the model's size and
    input width (named ``<name> channel`` in errors)."""
    stored, wanted = load.fitted["channels"], enabled_channels(load.params)
    if not isinstance(stored, dict) or list(stored) != wanted:
        listed = list(stored) if isinstance(stored, dict) else shown(stored)
        raise ValueError(f"stored {listed}, parameters ask for {wanted}")
    load.out["channels_"] = {}
    for name, config in stored.items():
        with named_part(f"{name} channel"):
            cls = SIDE_CHANNELS[name]
            arrays = load.tensors.arrays(f"channel.{name}.")
            size = load.params[cls.parameter]
            channel = cls.from_state(config, arrays, size=size, n_features=load.width)
            load.out["channels_"][name] = channel


def _fusion(load: Loading) -> None:
    """The score rule, with a tail per channel when it has tails: the flow's first."""
    p, channels = load.params, list(load.out["channels_"])
    tailed = (["nll"] if p["flow_transforms"] > 0 else []) + channels
    arrays = load.tensors.arrays("fusion.")
    fusion = FUSIONS[p["score"]].from_state(load.fitted["fusion"], arrays, channels=tailed)
    load.out["fusion_"] = fusion


def _described(name: str, cls: Any) -> Callable[[Loading], None]:
    """A description of benign traffic, which checks itself; its features must be the model's."""

    def load_part(load: Loading) -> None:
        load.out[name + "_"] = None
        if name in load.fitted:
            described = cls.from_state(load.fitted[name], load.tensors.arrays(f"{name}."))
            n_features = load.out["n_features_in_"]
            model_names = [str(n) for n in (load.names or range(n_features))]
            if list(described.feature_names_) != model_names:
                raise ValueError("its features are not the model's")
            load.out[name + "_"] = described

    return load_part


def _unclaimed(load: Loading) -> None:
    unclaimed = load.tensors.unclaimed()
    if unclaimed:
        raise ValueError(f"no part of the model has the tensors {few(unclaimed)}")


#: The parts read before the size budget is checked: the input width they give, and the
#: layouts of the modules, computed without memory. By the name errors give them.
BEFORE_BUDGET: tuple[tuple[str, Callable[[Loading], None]], ...] = (
    ("training summary", _summary),
    ("features", _features),
    ("input spec", _spec),
    ("calibration scores", _calibration),
    ("thresholds", _thresholds),
    ("preprocessor", _preprocessor),
    ("encoder", _encoder_layout),
    ("Deep SVDD embedding", _svdd_layout),
    ("flow input scaling", _flow_scaler),
    ("flow", _flow_layout),
)
#: The parts built from the file's tensors once the budget allows them, then the tensors that
#: no part claimed.
AFTER_BUDGET: tuple[tuple[str, Callable[[Loading], None]], ...] = (
    ("encoder", _encoder),
    ("Deep SVDD embedding", _svdd),
    ("flow", _flow),
    ("side channels", _channels),
    ("score rule", _fusion),
    *((name.replace("_", " "), _described(name, cls)) for name, cls in _BENIGN_PARTS.items()),
    ("tensors", _unclaimed),
)
