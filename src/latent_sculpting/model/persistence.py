"""Safe model files: weights as tensors in one safetensors file, everything else as JSON.

A ``.sculpt`` file is a safetensors file. Its tensors are the encoder's and the flow's state
dicts (``encoder.*``, ``flow.*``), the Stage-1 centroids, the sorted calibration scores and
each part's arrays under its name (``preprocessor.*``, ``flow_scaler.*``, ``svdd.*``,
``channel.<name>.*``, ``fusion.*``, ``drift_reference.*``, ``benign_profile.*``). Its string
metadata holds the format name and version, the estimator's parameters, and its fitted scalars
and part configurations as JSON. Nothing is unpickled, so a model file cannot run code.

A model file is untrusted data (docs/reference/security.md). This module keeps the envelope: the
container, the metadata's keys and types, the format versions (files of versions 1 and 2 are
translated, :func:`_upgrade`), the parameters as ``fit`` checks them, a size budget from the
parameters alone (:data:`MAX_WIDTH`, :data:`MAX_LAYERS`, :data:`MAX_WEIGHTS`) checked before
anything is built, and the tensors that no part claims. Each part then checks its own state in
its ``from_state``, against the parameters and the parts before it
(:mod:`~latent_sculpting.model.stored_parts` lists them in order); any failure becomes one
:class:`~latent_sculpting.errors.ModelFileError` naming the file, the part and the problem.
:meth:`LatentSculpting.load` assembles the estimator from what :func:`load_model` returns.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latent_sculpting.atomic import atomic_path
from latent_sculpting.errors import ModelFileError
from latent_sculpting.model.channels.forest import MAX_TREES
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS, check_params
from latent_sculpting.model.state import MAX_LAYERS, MAX_WIDTH, few, layout_weights
from latent_sculpting.model.stored_parts import (
    AFTER_BUDGET,
    BEFORE_BUDGET,
    MAX_INFO_BYTES,
    DamagedPart,
    Loading,
    StoredTensors,
    named_part,
)

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
#: statistics of removed options. Versions 1 and 2 are read by translating them (:func:`_upgrade`).
READABLE_VERSIONS = (1, 2, 3)

#: Weights of the encoder, the flow and the Deep SVDD embedding together (1 GiB of float32).
MAX_WEIGHTS = 2**28
#: Caps of the parameters, checked before anything is built from them (MAX_WIDTH, MAX_LAYERS:
#: :mod:`latent_sculpting.model.state`).
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
    **dict.fromkeys(("boost_iter", "knn_prototypes", "stack_folds", "stack_neighbours"), 0),
    "n_jobs": None,
    "max_benign_rows": None,
    "coarse_threshold": False,
    "context": "off",
}
#: Options that versions 1 and 2 allowed and this version does not.
_REMOVED = {"score": {"combined"}, "selection": {"last"}, "encoder": {"bias_free"}}
_REMOVED["scaler"] = {"minmax"}

#: Descriptions of benign training traffic saved beside the score's parts (model files
#: written before they existed load without them: no drift report, no explanations).
_BENIGN_PARTS = ("drift_reference", "benign_profile")
#: Parts saved as ``(config, arrays)`` under their own name, when the model has them.
_STATEFUL = ("preprocessor", "flow_scaler", "svdd", "fusion", *_BENIGN_PARTS)

#: The metadata keys of a file, and the keys of its ``fitted`` object: required, optional, and
#: those only files of versions 1 and 2 hold (read, checked and translated by :func:`_upgrade`).
_METADATA = {"format", "format_version", "params", "fitted"}
_METADATA_OPTIONAL = {"package_version"}
_FITTED = {"n_features_in_", "feature_names_in_", "thresholds_", "threshold_", "history_"}
_FITTED |= {"preprocessor", "channels", "fusion"}
_FITTED_OPTIONAL = {"spec", "training_info", "extra", "flow_scaler", "svdd", *_BENIGN_PARTS}
_FITTED_LEGACY = {"score_stats_", "forest", "tails"}


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

    names = getattr(model, "feature_names_in_", None)
    fitted: dict[str, Any] = {
        "n_features_in_": model.n_features_in_,
        "feature_names_in_": None if names is None else [str(c) for c in names],
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
    for name in _STATEFUL:
        if getattr(model, name + "_", None) is not None:
            fitted[name], arrays = getattr(model, name + "_").get_state()
            put(f"{name}.", arrays)
    fitted["channels"] = {}
    for name, channel in model.channels_.items():
        fitted["channels"][name], arrays = channel.get_state()
        put(f"channel.{name}.", arrays)

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
    try:
        with named_part("parameters"):
            _check_params(params)
        loading = Loading(params, fitted, StoredTensors(tensors), target)
        # Building modules draws initial weights; loading must not move the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            for name, load in BEFORE_BUDGET:
                with named_part(name):
                    load(loading)
            with named_part("parameters"):
                _budget(loading)
            for name, load in AFTER_BUDGET:
                with named_part(name):
                    load(loading)
        return params, loading.out
    except DamagedPart as error:
        raise ModelFileError(_one_line(f"{path}: damaged {error.part}: {error.detail}")) from None


def _budget(loading: Loading) -> None:
    """The weights the parameters ask for, from the modules' layouts, before any is built."""
    weights = {name: layout_weights(layout) for name, layout in loading.layouts.items()}
    if sum(weights.values()) > MAX_WEIGHTS:
        raise ValueError(
            f"they ask for {sum(weights.values()):,} weights ({weights}); at most {MAX_WEIGHTS:,}"
        )


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
        shown_version = version[:20] if isinstance(version, str) else version
        raise ModelFileError(
            _one_line(
                f"{path} has model format version {shown_version}; this package reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}. Refit the model, or use the "
                f"package version that wrote it ({str(metadata.get('package_version'))[:40]})"
            )
        )
    damaged = f"{path} has damaged metadata:"
    unknown = sorted(set(metadata) - _METADATA - _METADATA_OPTIONAL)
    missing = sorted(_METADATA - set(metadata))
    if unknown or missing:
        raise ModelFileError(f"{damaged} keys missing {missing}, unknown {few(unknown)}")
    parsed = {}
    for key in ("params", "fitted"):
        try:
            parsed[key] = json.loads(metadata[key])
        except (ValueError, RecursionError) as error:
            raise ModelFileError(_one_line(f"{damaged} {key} is not JSON: {error}")) from None
        if not isinstance(parsed[key], dict):
            raise ModelFileError(f"{damaged} {key} must be a JSON object")
    version, fitted = int(version), parsed["fitted"]
    allowed, required = _FITTED | _FITTED_OPTIONAL, _FITTED
    if version < 3:
        allowed, required = allowed | _FITTED_LEGACY, _FITTED - {"channels", "fusion"}
    unknown, missing = sorted(set(fitted) - allowed), sorted(required - set(fitted))
    if unknown or missing:
        raise ModelFileError(
            f"{damaged} fitted state lacks {missing}, has unknown keys {few(unknown)}"
        )
    return version, parsed["params"], fitted


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
    fitted, tensors = dict(fitted), dict(tensors)
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
        raise ValueError(f"parameters missing or unknown to this version: {few(unknown)}")
    check_params(params)
    for name, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}={value} is not a finite number")
    caps = {**_SIZE_CAPS, **{k: v for k, v in _OPTIONAL_CAPS.items() if params[k] is not None}}
    for name, cap in caps.items():
        if params[name] > cap:
            raise ValueError(f"{name}={params[name]} is beyond the cap of {cap}")
