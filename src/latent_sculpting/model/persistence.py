"""Safe model files: weights as tensors in one safetensors file, everything else as JSON.

A ``.sculpt`` file is a safetensors file. Its tensors are the encoder's and the flow's state
dicts (``encoder.*``, ``flow.*``), the Stage-1 centroids, the preprocessor's arrays, the sorted
calibration scores and, when the model has them, the flow input's scaling (``flow_scaler.*``),
the Deep SVDD embedding (``svdd.*``), each side channel's arrays (``channel.<name>.*``), the
score rule's (``fusion.*``, the reference scores of Fisher's tails) and the descriptions of
benign training traffic (``drift_reference.*``, ``benign_profile.*``). Its string metadata holds
the format name and version, the estimator's parameters and its fitted scalars and part
configurations as JSON. Nothing is unpickled, so a model file cannot run code.

A model file is untrusted data (docs/reference/security.md), so :func:`load_model` checks all of it
before any of it is used, and a file that fails a check raises one
:class:`~latent_sculpting.errors.ModelFileError` naming the file, the part and the problem:

- the metadata: every key present and of its type, the parameters as ``fit`` checks them,
  every number finite where it must be, the informational objects (``history_``,
  ``training_info``) of bounded size;
- a size budget from the parameters alone (:data:`MAX_WIDTH`, :data:`MAX_LAYERS`,
  :data:`MAX_WEIGHTS`), before anything is built from them;
- every tensor's name, dtype and shape against the modules the parameters define, built on
  PyTorch's meta device (no memory) or, for the flow, whose masks zuko derives from data,
  from its layout; a module is then made from the file's own tensors, so no allocation is
  larger than what the file holds, and tensors no part claims are refused;
- every value: weights and statistics finite, the flow's masks, orders and base those its
  parameters define, scales positive, calibration scores sorted and non-empty, the
  thresholds those of the calibration scores;
- each part that checks its own state (the forest, the input spec, the drift reference and the
  benign profile), its error named after the part.

This module reads a file into checked parameters and fitted attributes;
:meth:`LatentSculpting.load` assembles the estimator from them.

It is long on purpose: every key, type, shape and value range of a model file is checked in this
one module, before anything is allocated or used, so that the rules a hostile file meets are
read in one place (docs/reference/security.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latent_sculpting.atomic import atomic_path
from latent_sculpting.errors import ModelFileError
from latent_sculpting.io.flowspec import MAX_NAME_LENGTH, FlowSpec, legacy_spec
from latent_sculpting.model.calibration import PERCENTILES, thresholds
from latent_sculpting.model.channels.deep_sad import BiasFreeEncoder, DeepSAD
from latent_sculpting.model.channels.forest import MAX_FEATURES, MAX_TREES
from latent_sculpting.model.channels.registry import SIDE_CHANNELS, ForestChannel, enabled_channels
from latent_sculpting.model.density.maf import LatentDensity
from latent_sculpting.model.fusion import FUSIONS, FisherFusion, StackedFusion
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS, check_params
from latent_sculpting.model.preprocessing import FEATURE_TRANSFORMS, SCALERS, FeaturePreprocessor
from latent_sculpting.model.stage1.encoders import ENCODER_SIZES, build_encoder
from latent_sculpting.monitor.drift import DriftReference
from latent_sculpting.monitor.profile import BenignProfile

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_INFO_BYTES",
    "MAX_LAYERS",
    "MAX_WEIGHTS",
    "MAX_WIDTH",
    "READABLE_VERSIONS",
    "load_model",
    "save_model",
]

FORMAT_NAME = "latent-sculpting"
#: Bumped whenever the file layout changes; files of other versions than READABLE are refused.
FORMAT_VERSION = 3
#: Version 2 added the Deep SVDD, forest and fusion parts; version 3 stores side channels and
#: the score rule generically (``channel.<name>.*``, ``fusion.*``) and drops the parameters and
#: statistics of removed options. Versions 1 and 2 are read by translating them (see
#: :func:`_upgrade`).
READABLE_VERSIONS = (1, 2, 3)

#: Size budget of a model file, checked from its parameters before anything is built. The
#: presets use widths up to 512 and at most 16 layers; the caps leave room for far larger
#: models and refuse what would only exhaust memory.
MAX_WIDTH = 65_536  # latent_dim, d_model, d_ffn, n_heads, flow_hidden, svdd_dim, SVDD widths
MAX_LAYERS = 64  # n_layers, flow_transforms, flow_hidden_layers, SVDD hidden layers
#: Weights of the encoder, the flow and the Deep SVDD embedding together (1 GiB of float32).
MAX_WEIGHTS = 2**28
#: Largest ``history_`` and ``training_info`` as JSON: both are informational only.
MAX_INFO_BYTES = 1 << 20
_SIZE_CAPS = {
    **dict.fromkeys(("latent_dim", "d_model", "d_ffn", "n_heads", "flow_hidden"), MAX_WIDTH),
    "svdd_dim": MAX_WIDTH,
    **dict.fromkeys(("n_layers", "flow_transforms", "flow_hidden_layers"), MAX_LAYERS),
    "forest_trees": MAX_TREES,
    "boost_iter": MAX_TREES,
    # Prototypes are rows of the scaled features: a million of them is far beyond any use.
    "knn_prototypes": 1 << 20,
    "stack_folds": 1 << 10,
    "stack_neighbours": 1 << 10,
}
#: Caps of parameters that may be None (checked when they are not).
_OPTIONAL_CAPS = {"n_jobs": 1 << 16, "max_benign_rows": 1 << 40}

#: Parameters added after format 1, with the value a model without them was fitted with.
_ADDED = {"selection": "centroid_f1", "flow_standardize": False, "svdd_dim": 0, "forest_trees": 0}
#: Parameters added to format 3 after it was first written, with the value a model without them
#: was fitted with (a side channel that did not exist was off; folds were fitted one at a time).
_ADDED_IN_3 = {
    "boost_iter": 0,
    "knn_prototypes": 0,
    "stack_folds": 0,
    "stack_neighbours": 0,
    "n_jobs": None,
    "max_benign_rows": None,
    "coarse_threshold": False,
}
#: Options that versions 1 and 2 allowed and this version does not.
_REMOVED = {
    "score": {"combined"},
    "selection": {"last"},
    "encoder": {"bias_free"},
    "scaler": {"minmax"},
}

#: Descriptions of benign training traffic saved beside the score's parts (model files
#: written before they existed load without them: no drift report, no explanations).
_BENIGN_PARTS = {"drift_reference": DriftReference, "benign_profile": BenignProfile}

#: The metadata keys of a file, and the keys of its ``fitted`` object: required, optional, and
#: those only files of versions 1 and 2 hold (read, checked and translated by :func:`_upgrade`).
_METADATA = {"format", "format_version", "params", "fitted"}
_METADATA_OPTIONAL = {"package_version"}
_FITTED = {"n_features_in_", "feature_names_in_", "thresholds_", "threshold_", "history_"}
_FITTED |= {"preprocessor", "channels", "fusion"}
_FITTED_OPTIONAL = {"spec", "training_info", "extra", "flow_scaler", "svdd", *_BENIGN_PARTS}
_FITTED_LEGACY = {"score_stats_", "forest", "tails"}
_PREPROCESSOR_PARAMS = {
    "feature_transform",
    "scaler",
    "variance_threshold",
    "quantile_subsample",
    "random_state",
}


def save_model(model: Any, path: str | Path) -> Path:
    """Write the fitted ``model`` (a LatentSculpting) to ``path``: to a temporary file first,
    then renamed into place."""
    from latent_sculpting import __version__

    if not hasattr(model, "flow_"):
        raise ValueError("the model is not fitted; call fit before save")
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}

    def put(prefix: str, arrays: dict[str, Any]) -> None:
        for key, value in arrays.items():
            value = (
                value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
            )
            tensors[prefix + key] = value.detach().cpu().contiguous().clone()

    fitted: dict[str, Any] = {
        "n_features_in_": model.n_features_in_,
        "feature_names_in_": (
            [str(c) for c in model.feature_names_in_]
            if hasattr(model, "feature_names_in_")
            else None
        ),
        "thresholds_": {str(k): v for k, v in model.thresholds_.items()},
        "threshold_": model.threshold_,
        "history_": model.history_,
        "spec": model.spec_.to_dict() if hasattr(model, "spec_") else None,
        "training_info": getattr(model, "training_info_", {}),
    }
    if model.encoder_ is not None:
        put("encoder.", model.encoder_.state_dict())
        put("", {"center_benign": model.center_benign_, "center_attack": model.center_attack_})
    if model.flow_ is not None:
        put("flow.", model.flow_.state_dict())
    put("", {"calibration_scores": model.calibration_scores_})
    fitted["preprocessor"], arrays = model.preprocessor_.get_state()
    put("preprocessor.", arrays)
    if model.flow_scaler_ is not None:
        fitted["flow_scaler"], arrays = model.flow_scaler_.get_state()
        put("flow_scaler.", arrays)
    if model.svdd_ is not None:
        fitted["svdd"], arrays = model.svdd_.get_state()
        put("svdd.", arrays)
    fitted["channels"] = {}
    for name, channel in model.channels_.items():
        fitted["channels"][name], arrays = channel.get_state()
        put(f"channel.{name}.", arrays)
    fitted["fusion"], arrays = model.fusion_.get_state()
    put("fusion.", arrays)
    for name in _BENIGN_PARTS:
        if getattr(model, name + "_", None) is not None:
            fitted[name], arrays = getattr(model, name + "_").get_state()
            put(f"{name}.", arrays)

    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "params": json.dumps(model.get_params(deep=False)),
        "fitted": json.dumps(fitted),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def load_model(path: str | Path, *, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Read and check a model written by :func:`save_model` (or by a version that wrote
    format 1 or 2); see the module docstring for what is checked.

    Returns
    -------
    params : dict
        The estimator's parameters, checked as ``fit`` checks them.
    fitted : dict
        Fitted attributes by name (``encoder_``, ``flow_``, ``threshold_``, ...), on ``device``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a latent-sculpting model, is truncated or corrupt, was written in
        another format version, uses an option this version removed, or any part of it fails a
        check; the message names the file, the part and the problem.
    ValueError
        If ``device`` is not a device this machine has.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    target = _device(device)
    metadata, tensors = _read(path)
    version, params, fitted = _metadata(metadata, path)
    if version < 3:
        params, fitted, tensors = _upgrade(params, fitted, tensors, path)
    params = {**_ADDED_IN_3, **params}
    part = "parameters"
    try:
        _check_params(params)
        # Building modules draws initial weights; loading must not move the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            return params, _fitted_parts(params, fitted, _Tensors(tensors), target)
    except _Damaged as error:
        raise ModelFileError(_one_line(f"{path}: damaged {error.part}: {error.detail}")) from None
    except _ERRORS as error:
        raise ModelFileError(_one_line(f"{path}: damaged {part}: {_detail(error)}")) from None


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


class _Damaged(Exception):
    """A failed check of the named part (becomes a ModelFileError naming the file)."""

    def __init__(self, part: str, detail: str) -> None:
        super().__init__(detail)
        self.part, self.detail = part, detail


@contextlib.contextmanager
def _part(name: str) -> Iterator[None]:
    """Name the part whose checks run inside, for the error message."""
    try:
        yield
    except _ERRORS as error:
        raise _Damaged(name, _detail(error)) from None


def _detail(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"lacks {error.args[0]!r}" if error.args else "lacks a key"
    return str(error) or type(error).__name__


def _one_line(message: str, limit: int = 2_000) -> str:
    # Parts' messages may quote arrays over several lines; the CLI prints one line.
    message = re.sub(r"\s*\n\s*", " ", message)
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _device(device: str) -> torch.device:
    """The torch device ``device``, if this machine has it."""
    try:
        target = torch.device(device)
        if target.type == "meta":
            raise ValueError("the meta device holds no data")
        torch.empty(0, device=target)
    except (RuntimeError, AssertionError, ValueError, TypeError) as error:
        raise ValueError(f"device {device!r} is not available here: {error}") from None
    return target


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a safetensors file (no more memory than the file holds)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:  # noqa: BLE001 - safetensors, OS and dtype errors alike
        raise ModelFileError(
            _one_line(f"{path} is not a readable model file (truncated or corrupt?): {error}")
        ) from None
    return metadata, tensors


def _metadata(metadata: dict[str, str], path: Path) -> tuple[int, dict, dict]:
    """The format version, parameters and fitted state of the file's metadata."""
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a latent-sculpting model file")
    version = metadata.get("format_version")
    if version not in [str(v) for v in READABLE_VERSIONS]:
        shown = version[:20] if isinstance(version, str) else version
        package = str(metadata.get("package_version"))[:40]
        raise ModelFileError(
            _one_line(
                f"{path} has model format version {shown}; this package reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Refit the model, or use the "
                f"package version that wrote it ({package})"
            )
        )
    unknown = sorted(set(metadata) - _METADATA - _METADATA_OPTIONAL)
    missing = sorted(_METADATA - set(metadata))
    if unknown or missing:
        raise ModelFileError(
            f"{path} has damaged metadata: keys missing {missing}, unknown {_few(unknown)}"
        )
    parsed = {}
    for key in ("params", "fitted"):
        try:
            parsed[key] = json.loads(metadata[key])
        except (ValueError, RecursionError) as error:
            raise ModelFileError(
                _one_line(f"{path} has damaged metadata: {key} is not JSON: {error}")
            ) from None
        if not isinstance(parsed[key], dict):
            raise ModelFileError(f"{path} has damaged metadata: {key} must be a JSON object")
    version = int(version)
    fitted = parsed["fitted"]
    allowed = _FITTED | _FITTED_OPTIONAL
    required = _FITTED
    if version < 3:
        allowed |= _FITTED_LEGACY
        required = _FITTED - {"channels", "fusion"}
    unknown, missing = sorted(set(fitted) - allowed), sorted(required - set(fitted))
    if unknown or missing:
        raise ModelFileError(
            f"{path} has damaged metadata: fitted state lacks {missing}, has unknown keys "
            f"{_few(unknown)}"
        )
    return version, parsed["params"], fitted


def _few(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(str(n)[:80]) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _upgrade(
    params: dict[str, Any], fitted: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """Read a format 1 or 2 file as format 3.

    Parameters added since format 1 take the value such a model had; ``radius`` (the Binary Latent
    Sculpting sphere, only ever 0) is gone; a ``forest_trees`` that the score ignored, so that no
    forest was fitted, reads as 0; the forest and Fisher's tails move to the generic side-channel
    and score-rule parts; the statistics of the removed ``combined`` score are dropped. A model
    that used a removed option cannot be read.
    """
    params = {**_ADDED, **params}
    for name, removed in _REMOVED.items():
        if params.get(name) in removed:
            raise ModelFileError(
                f"{path} was fitted with {name}={params[name]!r}, an option this version no "
                f"longer has; refit it, or use the package version that wrote it"
            )
    radius = params.pop("radius", 0.0)
    if radius != 0.0:
        raise ModelFileError(
            f"{path} was fitted with radius={radius!r}; this version's loss has no radius. "
            "Refit it, or use the package version that wrote it"
        )
    if "forest" not in fitted and params.get("score") != "fisher":
        params["forest_trees"] = 0
    fitted = dict(fitted)
    tensors = dict(tensors)
    if not isinstance(fitted.pop("score_stats_", {}), dict):
        raise ModelFileError(f"{path}: damaged metadata: score_stats_ must be an object")
    fitted["channels"] = {}
    if "forest" in fitted:
        config = {"n_trees": params.get("forest_trees"), "forest": fitted.pop("forest")}
        fitted["channels"]["forest"] = config
        for key in [k for k in tensors if k.startswith("forest.")]:
            tensors["channel.forest." + key.removeprefix("forest.")] = tensors.pop(key)
    tails = fitted.pop("tails", {})
    if not isinstance(tails, dict):
        raise ModelFileError(f"{path}: damaged score rule: tails must be an object")
    fitted["fusion"] = {"tails": tails} if tails else {}
    for name in tails:
        if f"tail.{name}.reference" not in tensors:
            raise ModelFileError(f"{path}: damaged score rule: the {name} tail has no reference")
        tensors[f"fusion.{name}.reference"] = tensors.pop(f"tail.{name}.reference")
    return params, fitted, tensors


def _check_params(params: dict[str, Any]) -> None:
    """The parameters as ``fit`` checks them, every float finite, every size within its cap."""
    unknown = sorted(set(params) ^ set(PARAMETER_CONSTRAINTS))
    if unknown:
        raise ModelFileError(f"parameters missing or unknown to this version: {_few(unknown)}")
    check_params(params)
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelFileError(f"{name}={value} is not a finite number")
    for name, cap in _SIZE_CAPS.items():
        if params[name] > cap:
            raise ModelFileError(f"{name}={params[name]} is beyond the cap of {cap}")
    for name, cap in _OPTIONAL_CAPS.items():
        if params[name] is not None and params[name] > cap:
            raise ModelFileError(f"{name}={params[name]} is beyond the cap of {cap}")


class _Tensors:
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
            raise ModelFileError(f"the tensor {key!r} is missing")
        self._claimed.add(key)
        return _tensor(self._all[key], repr(key), dtype, shape)

    def unclaimed(self) -> list[str]:
        return sorted(set(self._all) - self._claimed)


def _tensor(
    value: torch.Tensor, what: str, dtype: torch.dtype, shape: tuple[int | None, ...]
) -> torch.Tensor:
    if value.dtype != dtype:
        raise ModelFileError(f"{what} has dtype {value.dtype}, expected {dtype}")
    if len(value.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        expected = tuple("any" if s is None else s for s in shape)
        raise ModelFileError(f"{what} has shape {tuple(value.shape)}, expected {expected}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ModelFileError(f"{what} holds NaN or infinite values")
    return value


#: A module's state as (shape, dtype) by name.
_Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]


def _meta_layout(build: Any) -> _Layout:
    """The state layout of the module ``build()`` makes, built on the meta device (no memory)."""
    with torch.device("meta"):
        module = build()
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def _flow_layout(features: int, transforms: int, hidden: int, layers: int) -> _Layout:
    """The state layout of ``LatentDensity(features, ...)``: zuko's MAF, whose masks are
    computed from data and so cannot be built on the meta device. Each MADE maps the
    ``features`` inputs through ``layers`` masked hidden layers to a shift and a scale per
    feature; ``tests/test_model_files.py`` compares this layout with built flows."""
    layout: _Layout = {}
    sizes = [features, *[hidden] * layers, 2 * features]
    for t in range(transforms):
        prefix = f"maf.transform.transforms.{t}."
        layout[prefix + "order"] = ((features,), torch.int64)
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            # Layer i of the MADE's Sequential sits at 2 i, its activation at 2 i + 1.
            layer = f"{prefix}hyper.{2 * i}."
            layout[layer + "weight"] = ((n_out, n_in), torch.float32)
            layout[layer + "bias"] = ((n_out,), torch.float32)
            layout[layer + "mask"] = ((n_out, n_in), torch.bool)
    layout["maf.base.loc"] = ((features,), torch.float32)
    layout["maf.base.scale"] = ((features,), torch.float32)
    return layout


def _weights(layout: _Layout) -> int:
    return sum(math.prod(shape) for shape, dtype in layout.values() if dtype.is_floating_point)


def _check_state(layout: _Layout, state: dict[str, torch.Tensor]) -> None:
    """``state`` holds exactly the tensors of ``layout``, each of its shape and dtype, finite."""
    missing, unknown = sorted(set(layout) - set(state)), sorted(set(state) - set(layout))
    if missing or unknown:
        raise ModelFileError(
            f"its tensors are not those of its parameters: missing {_few(missing)}, unknown "
            f"{_few(unknown)}"
        )
    for key, (shape, dtype) in layout.items():
        _tensor(state[key], f"tensor {key!r}", dtype, shape)


def _assign(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``module`` (built on the meta device) holding the file's checked tensors."""
    module.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
        raise ModelFileError("a tensor of the module is not in the file")
    return module


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFileError(f"{what} must be an integer, got {_shown(value)}")
    if not low <= value <= high:
        raise ModelFileError(f"{what} {value} is outside {low}-{high}")
    return value


def _number(value: Any, what: str) -> float:
    """A finite number (JSON int or float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelFileError(f"{what} must be a number, got {_shown(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ModelFileError(f"{what} must be finite, got {value}")
    return value


def _object(
    value: Any, what: str, keys: set[str], optional: set[str] | frozenset[str] = frozenset()
) -> dict:
    """``value``, a JSON object with exactly ``keys`` (and perhaps some ``optional`` ones)."""
    if not isinstance(value, dict):
        raise ModelFileError(f"{what} must be an object, got {_shown(value)}")
    missing, unknown = sorted(keys - set(value)), sorted(set(value) - keys - optional)
    if missing or unknown:
        raise ModelFileError(f"{what} lacks {missing}, has unknown keys {_few(unknown)}")
    return value


def _bounded(value: Any, what: str) -> dict:
    """An informational JSON object of at most :data:`MAX_INFO_BYTES`."""
    if not isinstance(value, dict):
        raise ModelFileError(f"{what} must be an object, got {_shown(value)}")
    size = len(json.dumps(value))
    if size > MAX_INFO_BYTES:
        raise ModelFileError(f"{what} is {size} bytes of JSON; at most {MAX_INFO_BYTES}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fitted_parts(
    params: dict[str, Any], fitted: dict[str, Any], tensors: _Tensors, device: torch.device
) -> dict[str, Any]:
    """Every fitted attribute, each part checked against the parameters and the others."""
    out: dict[str, Any] = {"device_": device}
    with _part("training summary"):
        out["training_info_"] = _bounded(fitted.get("training_info", {}), "training_info")
        out["history_"] = _bounded(fitted["history_"], "history_")
    with _part("features"):
        n_features = _int(fitted["n_features_in_"], "n_features_in_", 1, MAX_FEATURES)
        out["n_features_in_"] = n_features
        names = fitted["feature_names_in_"]
        if names is not None:
            if not isinstance(names, list) or len(names) != n_features:
                raise ModelFileError(f"{_count(names)} feature names for {n_features} features")
            if not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME_LENGTH for n in names):
                raise ModelFileError("feature names must be non-empty strings")
            if len(set(names)) != len(names):
                raise ModelFileError("feature names are not unique")
            out["feature_names_in_"] = np.asarray(names, dtype=object)
    with _part("input spec"):
        spec = _spec(fitted, names)
        if spec is not None:
            out["spec_"] = spec
    with _part("calibration scores"):
        cal = tensors.one("calibration_scores", torch.float64, (None,)).numpy()
        if len(cal) == 0:
            raise ModelFileError("there are none")
        if np.any(np.diff(cal) < 0):
            raise ModelFileError("they are not sorted")
        out["calibration_scores_"] = cal
    with _part("thresholds"):
        out["thresholds_"], out["threshold_"] = _thresholds(fitted, cal, params)

    with _part("preprocessor"):
        pre = _preprocessor(
            fitted["preprocessor"],
            tensors.arrays("preprocessor."),
            n_features,
            params["feature_transform"],
            params["scaler"],
        )
        out["preprocessor_"] = pre
        width = int(np.sum(pre.support_))

    # The modules' layouts from the parameters, and their size, before any is built.
    with _part("encoder"):
        encoder_layout: _Layout = {}
        if params["stage1"]:
            sizes = {name: params[name] for name in ENCODER_SIZES}
            encoder_layout = _meta_layout(lambda: build_encoder(params["encoder"], width, **sizes))
    with _part("Deep SVDD embedding"):
        svdd_layout: _Layout = {}
        if ("svdd" in fitted) != (params["svdd_dim"] > 0):
            raise ModelFileError(f"present={'svdd' in fitted}, but svdd_dim={params['svdd_dim']}")
        if params["svdd_dim"] > 0:
            hidden = _svdd_config(fitted["svdd"], width, params["svdd_dim"])
            svdd_layout = _meta_layout(
                lambda: BiasFreeEncoder(width, latent_dim=params["svdd_dim"], hidden=hidden)
            )
    inputs = (params["latent_dim"] if params["stage1"] else width) + params["svdd_dim"]
    with _part("flow input scaling"):
        out["flow_scaler_"] = None
        if ("flow_scaler" in fitted) != params["flow_standardize"]:
            raise ModelFileError(
                f"present={'flow_scaler' in fitted}, but flow_standardize="
                f"{params['flow_standardize']}"
            )
        if params["flow_standardize"]:
            scaler = _preprocessor(
                fitted["flow_scaler"], tensors.arrays("flow_scaler."), inputs, "none", "standard"
            )
            out["flow_scaler_"] = scaler
            inputs = int(np.sum(scaler.support_))
    with _part("flow"):
        flow_layout: _Layout = {}
        if params["flow_transforms"] > 0:
            flow_sizes = (params["flow_transforms"], params["flow_hidden"])
            flow_layout = _flow_layout(inputs, *flow_sizes, params["flow_hidden_layers"])
    with _part("parameters"):
        layouts = {"encoder": encoder_layout, "embedding": svdd_layout, "flow": flow_layout}
        weights = {name: _weights(layout) for name, layout in layouts.items()}
        if sum(weights.values()) > MAX_WEIGHTS:
            raise ModelFileError(
                f"they ask for {sum(weights.values()):,} weights ({weights}); at most "
                f"{MAX_WEIGHTS:,}"
            )

    with _part("encoder"):
        out["encoder_"] = out["center_benign_"] = out["center_attack_"] = None
        state = tensors.group("encoder.")
        _check_state(encoder_layout, state)
        if params["stage1"]:
            encoder = _meta_module(lambda: build_encoder(params["encoder"], width, **sizes))
            out["encoder_"] = _assign(encoder, state).to(device).eval()
            for key in ("center_benign", "center_attack"):
                center = tensors.one(key, torch.float32, (params["latent_dim"],))
                out[key + "_"] = center.to(device)
    with _part("Deep SVDD embedding"):
        out["svdd_"] = None
        if params["svdd_dim"] > 0:
            state = tensors.group("svdd.")
            center = state.pop("center", None)
            if center is None:
                raise ModelFileError("the tensor 'svdd.center' is missing")
            _tensor(center, "'svdd.center'", torch.float32, (params["svdd_dim"],))
            net = {k.removeprefix("net."): v for k, v in state.items()}
            if any(not k.startswith("net.") for k in state):
                raise ModelFileError(f"unknown tensors {_few(sorted(state))}")
            _check_state(svdd_layout, net)
            for key, value in net.items():
                if key.endswith("running_var") and bool((value < 0).any()):
                    raise ModelFileError(f"{key} holds negative variances")
                if key.endswith("num_batches_tracked") and int(value) < 0:
                    raise ModelFileError(f"{key} is negative")
            out["svdd_"] = DeepSAD.from_state(fitted["svdd"], {"center": center, **state})
    with _part("flow"):
        out["flow_"] = None
        state = tensors.group("flow.")
        if params["flow_transforms"] > 0:
            out["flow_"] = _flow(params, inputs, state, flow_layout).to(device)
        else:
            _check_state(flow_layout, state)  # none: a stray flow tensor is refused

    with _part("side channels"):
        stored = fitted["channels"]
        if not isinstance(stored, dict) or list(stored) != enabled_channels(params):
            shown = list(stored) if isinstance(stored, dict) else _shown(stored)
            raise ModelFileError(f"stored {shown}, parameters ask for {enabled_channels(params)}")
    out["channels_"] = {}
    for name in stored:
        with _part(f"{name} channel"):
            out["channels_"][name] = _channel(
                name, stored[name], tensors.arrays(f"channel.{name}."), params, width
            )
    with _part("score rule"):
        tailed = (["nll"] if params["flow_transforms"] > 0 else []) + list(stored)
        out["fusion_"] = _fusion(
            params["score"], fitted["fusion"], tensors.arrays("fusion."), tailed
        )

    model_names = [str(n) for n in (names if names is not None else range(n_features))]
    for part_name, cls in _BENIGN_PARTS.items():
        with _part(part_name.replace("_", " ")):
            out[part_name + "_"] = None
            if part_name in fitted:
                described = cls.from_state(fitted[part_name], tensors.arrays(f"{part_name}."))
                if list(described.feature_names_) != model_names:
                    raise ModelFileError("its features are not the model's")
                out[part_name + "_"] = described

    with _part("tensors"):
        unclaimed = tensors.unclaimed()
        if unclaimed:
            raise ModelFileError(f"no part of the model has the tensors {_few(unclaimed)}")
    return out


def _count(value: Any) -> str:
    return str(len(value)) if isinstance(value, list) else _shown(value)


def _spec(fitted: dict[str, Any], names: list[str] | None) -> FlowSpec | None:
    """The input spec, checked by :meth:`FlowSpec.from_dict`; the features must be the model's."""
    if fitted.get("spec") is not None:
        spec = FlowSpec.from_dict(fitted["spec"])
    elif names is not None:
        # Written before specs were stored (format 1, 2): rebuilt from the feature names, then
        # checked as a stored one is.
        extra = fitted.get("extra") or {}
        if not isinstance(extra, dict) or not isinstance(extra.get("training_data") or {}, dict):
            raise ModelFileError("'extra' must be an object, its 'training_data' an object")
        spec = FlowSpec.from_dict(legacy_spec(names, extra).to_dict())
    else:
        return None
    if names is None or spec.feature_names != list(names):
        raise ModelFileError("the input spec's features are not the model's")
    return spec


def _thresholds(
    fitted: dict[str, Any], cal: np.ndarray, params: dict[str, Any]
) -> tuple[dict[float, float], float]:
    """The stored thresholds, which must be those the calibration scores give."""
    by_percentile, threshold = thresholds(
        cal, params["percentile"], params["target_fpr"], coarse=params["coarse_threshold"]
    )
    stored = fitted["thresholds_"]
    if not isinstance(stored, dict):
        raise ModelFileError(f"thresholds_ must be an object, got {_shown(stored)}")
    try:
        given = {float(k): v for k, v in stored.items()}
    except ValueError:
        raise ModelFileError(f"thresholds_ keys {_few(list(stored))} are not percentiles") from None
    if set(given) != set(by_percentile):
        raise ModelFileError(
            f"thresholds_ at percentiles {_few(sorted(given))}, expected "
            f"{sorted({*PERCENTILES, float(params['percentile'])})}"
        )
    for p, value in given.items():
        value = _number(value, f"the P{p:g} threshold")
        if not math.isclose(value, by_percentile[p], rel_tol=1e-9, abs_tol=1e-12):
            raise ModelFileError(
                f"the P{p:g} threshold {value!r} is not P{p:g} of the calibration scores "
                f"({by_percentile[p]!r})"
            )
    value = fitted["threshold_"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelFileError(f"threshold_ must be a number, got {_shown(value)}")
    # +inf is the conformal threshold when too few calibration scores guarantee target_fpr.
    if not (value == threshold or math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)):
        rule = (
            f"target_fpr={params['target_fpr']}"
            if params["target_fpr"] is not None
            else f"percentile={params['percentile']}"
        )
        raise ModelFileError(
            f"threshold_ {value!r} is not the threshold that {rule} gives on the calibration "
            f"scores ({threshold!r})"
        )
    return {p: float(v) for p, v in given.items()}, float(value)


def _preprocessor(
    config: Any, arrays: dict[str, np.ndarray], n_features: int, transform: str, scaler: str
) -> FeaturePreprocessor:
    """A :class:`FeaturePreprocessor` of ``n_features`` columns with the given transform and
    scaler, its state checked before :meth:`FeaturePreprocessor.from_state` reads it."""
    config = _object(config, "its config", {"version", "params", "n_features_in_"})
    settings = _object(config["params"], "its params", set(), _PREPROCESSOR_PARAMS)
    if settings.get("feature_transform", "none") not in FEATURE_TRANSFORMS:
        raise ModelFileError(f"feature_transform {_shown(settings['feature_transform'])}")
    if settings.get("scaler", "standard") not in SCALERS:
        raise ModelFileError(f"scaler {_shown(settings['scaler'])}")
    if (settings.get("feature_transform", "none"), settings.get("scaler", "standard")) != (
        transform,
        scaler,
    ):
        raise ModelFileError(
            f"it transforms with {settings.get('feature_transform')!r} and scales with "
            f"{settings.get('scaler')!r}; the model's parameters say {transform!r}, {scaler!r}"
        )
    _number(settings.get("variance_threshold", 0.0), "variance_threshold")
    _int(settings.get("quantile_subsample", 1), "quantile_subsample", 1, 2**62)
    if settings.get("random_state") is not None:
        _int(settings["random_state"], "random_state", 0, 2**32 - 1)
    if config["n_features_in_"] != n_features:
        raise ModelFileError(f"{_shown(config['n_features_in_'])} columns, expected {n_features}")
    needed = {"support", "variances", "center", "scale"}
    if transform == "quantile":
        needed |= {"quantiles", "references"}
    missing, unknown = sorted(needed - set(arrays)), sorted(set(arrays) - needed)
    if missing or unknown:
        raise ModelFileError(f"arrays missing {missing}, unknown {_few(unknown)}")
    support = _array(arrays, "support", np.bool_, (n_features,))
    kept = int(support.sum())
    if kept == 0:
        raise ModelFileError("it keeps no column")
    if bool((_array(arrays, "variances", np.float64, (n_features,)) < 0).any()):
        raise ModelFileError("negative variances")
    center = _array(arrays, "center", np.float64, (kept,))
    scale = _array(arrays, "scale", np.float64, (kept,))
    if not bool((scale > 0).all()):
        raise ModelFileError("scales must be positive")
    if scaler == "none" and not (bool((center == 0).all()) and bool((scale == 1).all())):
        raise ModelFileError("scaler='none' centres at 0 and scales by 1")
    if transform == "quantile":
        quantiles = _array(arrays, "quantiles", np.float64, (None, n_features))
        if not 2 <= len(quantiles) <= 1_000:
            raise ModelFileError(f"{len(quantiles)} quantiles; 2 to 1000 expected")
        if bool((np.diff(quantiles, axis=0) < 0).any()):
            raise ModelFileError("quantiles are not sorted")
        references = _array(arrays, "references", np.float64, (len(quantiles),))
        if not np.allclose(references, np.linspace(0, 1, len(quantiles))):
            raise ModelFileError("quantile references are not evenly spaced over [0, 1]")
    return FeaturePreprocessor.from_state(config, arrays)


def _array(
    arrays: dict[str, np.ndarray], key: str, dtype: type, shape: tuple[int | None, ...]
) -> np.ndarray:
    return _tensor(torch.from_numpy(arrays[key]), repr(key), _TORCH[dtype], shape).numpy()


_TORCH = {np.bool_: torch.bool, np.float64: torch.float64, np.float32: torch.float32}


def _svdd_config(config: Any, width: int, rep_dim: int) -> tuple[int, ...]:
    """The Deep SVDD embedding's hidden widths; its config must fit the model."""
    config = _object(config, "its config", {"n_features", "hidden", "rep_dim"})
    if config["rep_dim"] != rep_dim:
        raise ModelFileError(f"width {_shown(config['rep_dim'])}, but svdd_dim={rep_dim}")
    if config["n_features"] != width:
        raise ModelFileError(f"{_shown(config['n_features'])} inputs, the model has {width}")
    hidden = config["hidden"]
    if not isinstance(hidden, list) or len(hidden) > MAX_LAYERS:
        raise ModelFileError(f"hidden must be a list of at most {MAX_LAYERS} widths")
    return tuple(_int(h, "a hidden width", 1, MAX_WIDTH) for h in hidden)


def _meta_module(build: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return build()


def _flow(
    params: dict[str, Any], inputs: int, state: dict[str, torch.Tensor], layout: _Layout
) -> LatentDensity:
    """The flow from the file's tensors, checked against its layout, then built: its size is
    now that of the tensors. Its masks, orders and base are those its parameters define."""
    _check_state(layout, state)
    flow = LatentDensity(
        inputs,
        transforms=params["flow_transforms"],
        hidden_features=params["flow_hidden"],
        hidden_layers=params["flow_hidden_layers"],
    )
    for name, buffer in flow.named_buffers():
        if not torch.equal(buffer, state[name]):
            raise ModelFileError(f"{name} is not the one its parameters define")
    flow.load_state_dict(state, strict=True, assign=True)
    return flow.eval()


def _channel(
    name: str, config: Any, arrays: dict[str, np.ndarray], params: dict[str, Any], width: int
) -> Any:
    """A side channel from its state; the forest's size and inputs must be the model's."""
    cls = SIDE_CHANNELS[name]
    if cls is ForestChannel:
        config = _object(config, "its config", {"n_trees", "forest"})
        if config["n_trees"] != params["forest_trees"]:
            raise ModelFileError(
                f"{_shown(config['n_trees'])} trees, but forest_trees={params['forest_trees']}"
            )
    channel = cls.from_state(config, arrays)
    if cls is ForestChannel:
        forest = channel.forest_
        if forest.n_estimators != channel.n_trees:
            raise ModelFileError(f"{forest.n_estimators} trees stored for {channel.n_trees}")
        if forest.n_features_in_ != width:
            raise ModelFileError(
                f"it reads {forest.n_features_in_} features; the model has {width}"
            )
    return channel


_TAIL = {"tail", "max_extrapolation", "min_scale", "threshold_", "scale_"}


def _fusion(score: str, config: Any, arrays: dict[str, np.ndarray], channels: list[str]) -> Any:
    """The score rule; Fisher's tails, one per channel (``channels``: the flow's ``"nll"``
    first when the model has one, then the side channels), must be those their references
    give; the stacked rule's weights one of its allowed values per tail."""
    cls = FUSIONS[score]
    if not issubclass(cls, FisherFusion):
        _object(config, "its config", set())
        if arrays:
            raise ModelFileError(f"score={score!r} has no arrays, got {_few(sorted(arrays))}")
        return cls.from_state(config, arrays)
    if cls is StackedFusion:
        # The criterion's rates are "fprs"; files written before it took several hold "fpr".
        rates = "fprs" if isinstance(config, dict) and "fpr" not in config else "fpr"
        stacked = _object(config, "its config", {"tails", rates, "weights", "fold_scores"})
        fprs = stacked[rates] if rates == "fprs" else [stacked[rates]]
        if not isinstance(fprs, list) or not 1 <= len(fprs) <= 16:  # a handful in use
            raise ModelFileError(f"its fprs {_shown(fprs)} are not a short list")
        for value in fprs:
            _number(value, "its fpr")
            if not 0 < value < 1:
                raise ModelFileError(f"its fpr {value!r} is not in (0, 1)")
        config = {**{k: v for k, v in config.items() if k != "fpr"}, "fprs": fprs}
        scores = stacked["fold_scores"]
        if not isinstance(scores, list) or len(scores) > _SIZE_CAPS["stack_folds"]:
            raise ModelFileError(f"its fold scores {_shown(scores)} are not a short list")
        for value in scores:
            _number(value, "a fold score")
        tails = stacked["tails"]
    else:
        tails = _object(config, "its config", {"tails"})["tails"]
    if not isinstance(tails, dict) or list(tails) != channels:
        shown = list(tails) if isinstance(tails, dict) else _shown(tails)
        raise ModelFileError(f"tails of {shown}, channels {channels}")
    expected = {f"{name}.reference" for name in tails}
    if set(arrays) != expected:
        raise ModelFileError(f"arrays {_few(sorted(arrays))}, expected {sorted(expected)}")
    for name, tail in tails.items():
        tail = _object(tail, f"the {name} tail", _TAIL, {"interpolate"})
        for key in _TAIL:
            _number(tail[key], f"the {name} tail's {key}")
        if not isinstance(tail.get("interpolate", False), bool):
            raise ModelFileError(f"the {name} tail's interpolate is not true or false")
        _array(arrays, f"{name}.reference", np.float64, (None,))
    fusion = cls.from_state(config, arrays)
    for name, tail in fusion.tails_.items():
        refit = type(tail)(tail.tail, tail.max_extrapolation, tail.min_scale).fit(tail.reference_)
        for key in ("threshold_", "scale_"):
            stored, expected_value = getattr(tail, key), getattr(refit, key)
            if not math.isclose(stored, expected_value, rel_tol=1e-9, abs_tol=1e-12):
                raise ModelFileError(
                    f"the {name} tail's {key} {stored!r} is not its reference scores' "
                    f"({expected_value!r})"
                )
    return fusion
