"""Safe model files: weights as tensors in one safetensors file, everything else as JSON.

A ``.sculpt`` file is a safetensors file. Its tensors are the encoder's and the flow's state
dicts (``encoder.*``, ``flow.*``), the Stage-1 centroids, the preprocessor's arrays, the sorted
calibration scores and, when the model has them, the flow input's scaling (``flow_scaler.*``),
the Deep SVDD embedding (``svdd.*``), each side channel's arrays (``channel.<name>.*``) and the
score rule's (``fusion.*``, the reference scores of Fisher's tails). Its string metadata holds
the format name and version, the estimator's parameters and its fitted scalars and part
configurations as JSON. Loading parses JSON and copies tensors, and checks every part against
the parameters before use: nothing is unpickled, so a model file from an untrusted source cannot
run code.

This module reads a file into checked parameters and fitted attributes;
:meth:`LatentSculpting.load` assembles the estimator from them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._atomic import publish
from .channels import SIDE_CHANNELS, enabled_channels
from .deep_sad import DeepSAD
from .drift import DriftReference
from .encoders import ENCODER_SIZES, build_encoder
from .explain import BenignProfile
from .flows import LatentDensity
from .flowspec import FlowSpec, legacy_spec
from .fusion import FUSIONS
from .params import PARAMETER_CONSTRAINTS, check_params
from .preprocessing import FeaturePreprocessor

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "READABLE_VERSIONS", "load_model", "save_model"]

FORMAT_NAME = "latent-sculpting"
#: Bumped whenever the file layout changes; files of other versions than READABLE are refused.
FORMAT_VERSION = 3
#: Version 2 added the Deep SVDD, forest and fusion parts; version 3 stores side channels and
#: the score rule generically (``channel.<name>.*``, ``fusion.*``) and drops the parameters and
#: statistics of removed options. Versions 1 and 2 are read by translating them (see
#: :func:`_upgrade`).
READABLE_VERSIONS = (1, 2, 3)

#: Parameters added after format 1, with the value a model without them was fitted with.
_ADDED = {"selection": "centroid_f1", "flow_standardize": False, "svdd_dim": 0, "forest_trees": 0}
#: Parameters added to format 3 after it was first written, with the value a model without them
#: was fitted with (a side channel that did not exist was off).
_ADDED_IN_3 = {"boost_iter": 0}
#: Options that versions 1 and 2 allowed and this version does not.
_REMOVED = {
    "score": {"combined"},
    "selection": {"last"},
    "encoder": {"bias_free"},
    "scaler": {"minmax"},
}


#: Descriptions of benign training traffic saved beside the score's parts (model files
#: written before they existed load without them: no drift report, no explanations).
_BENIGN_PARTS = {"drift_reference": "drift_reference_", "benign_profile": "benign_profile_"}


def save_model(model: Any, path: str | Path) -> Path:
    """Write the fitted ``model`` (a LatentSculpting) to ``path``: to a temporary file first,
    then renamed into place."""
    from . import __version__

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
    for name, attribute in _BENIGN_PARTS.items():
        if getattr(model, attribute, None) is not None:
            fitted[name], arrays = getattr(model, attribute).get_state()
            put(f"{name}.", arrays)

    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "params": json.dumps(model.get_params(deep=False)),
        "fitted": json.dumps(fitted),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model(path: str | Path, *, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a model written by :func:`save_model` (or by a version that wrote format 1 or 2).

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
    ValueError
        If the file is not a latent-sculpting model, is truncated or corrupt, was written in
        another format version, uses an option this version removed, or a part disagrees with
        the parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(
            f"{path} is not a readable model file (truncated or corrupt?): {error}"
        ) from None
    if metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a latent-sculpting model file")
    version = metadata.get("format_version")
    if version not in [str(v) for v in READABLE_VERSIONS]:
        raise ValueError(
            f"{path} has model format version {version}; this package reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Refit the model, or use the package "
            f"version that wrote it ({metadata.get('package_version')})"
        )
    try:
        params = json.loads(metadata["params"])
        fitted = json.loads(metadata["fitted"])
    except (KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} has damaged metadata: {error}") from None
    if not isinstance(params, dict) or not isinstance(fitted, dict):
        raise ValueError(f"{path} has damaged metadata: parameters and state must be objects")
    if int(version) < 3:
        params, fitted, tensors = _upgrade(params, fitted, tensors, path)
    params = {**_ADDED_IN_3, **params}
    unknown = sorted(set(params) ^ set(PARAMETER_CONSTRAINTS))
    if unknown:
        raise ValueError(f"{path}: parameters missing or unknown to this version: {unknown}")
    try:
        check_params(params)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return params, _fitted_parts(params, fitted, tensors, path, torch.device(device))


def _upgrade(
    params: dict[str, Any], fitted: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor]]:
    """Read a format 1 or 2 file as format 3.

    Parameters added since format 1 take the value such a model had; ``radius`` (the Binary Latent
    Sculpting sphere, only ever 0) is gone; a ``forest_trees`` that the score ignored, so that no
    forest was fitted, reads as 0; the forest and Fisher's tails
    move to the generic side-channel and score-rule parts. A model that used a removed option
    cannot be read.
    """
    params = {**_ADDED, **params}
    for name, removed in _REMOVED.items():
        if params.get(name) in removed:
            raise ValueError(
                f"{path} was fitted with {name}={params[name]!r}, an option this version no "
                f"longer has; refit it, or use the package version that wrote it"
            )
    radius = params.pop("radius", 0.0)
    if radius != 0.0:
        raise ValueError(
            f"{path} was fitted with radius={radius}; this version's loss has no radius. "
            "Refit it, or use the package version that wrote it"
        )
    if "forest" not in fitted and params.get("score") != "fisher":
        params["forest_trees"] = 0
    fitted = dict(fitted)
    tensors = dict(tensors)
    fitted["channels"] = {}
    if "forest" in fitted:
        config = {"n_trees": params.get("forest_trees"), "forest": fitted.pop("forest")}
        fitted["channels"]["forest"] = config
        for key in [k for k in tensors if k.startswith("forest.")]:
            tensors["channel.forest." + key.removeprefix("forest.")] = tensors.pop(key)
    tails = fitted.pop("tails", {})
    fitted["fusion"] = {"tails": tails} if tails else {}
    for name in tails:
        tensors[f"fusion.{name}.reference"] = tensors.pop(f"tail.{name}.reference")
    return params, fitted, tensors


def _fitted_parts(
    params: dict[str, Any],
    fitted: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    path: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Every fitted attribute, each part checked against the parameters."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

    def arrays(prefix: str) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in part(prefix).items()}

    out: dict[str, Any] = {"device_": device}
    name = "input spec"
    try:
        info = fitted.get("training_info", {})
        if not isinstance(info, dict):
            raise ValueError("training_info must be an object")
        out["training_info_"] = info
        if fitted.get("spec") is not None:
            out["spec_"] = FlowSpec.from_dict(fitted["spec"])
        elif fitted.get("feature_names_in_") is not None:
            # Written before specs were stored (format 1, 2): rebuilt from the feature names.
            out["spec_"] = legacy_spec(fitted["feature_names_in_"], fitted.get("extra") or {})
        name = "thresholds"
        out["n_features_in_"] = int(fitted["n_features_in_"])
        names = fitted["feature_names_in_"]
        if names is not None:
            if len(names) != out["n_features_in_"]:
                raise ValueError(f"{len(names)} feature names for {out['n_features_in_']} features")
            out["feature_names_in_"] = np.asarray([str(n) for n in names], dtype=object)
            if "spec_" in out and out["spec_"].feature_names != list(out["feature_names_in_"]):
                raise ValueError("the input spec's features are not the model's")
        out["thresholds_"] = {float(k): float(v) for k, v in fitted["thresholds_"].items()}
        out["threshold_"] = float(fitted["threshold_"])
        out["history_"] = dict(fitted["history_"])
        cal = tensors["calibration_scores"].numpy().astype(np.float64)
        if cal.ndim != 1 or len(cal) == 0 or np.any(np.diff(cal) < 0):
            raise ValueError(f"calibration scores must be sorted, 1-D, non-empty: {cal.shape}")
        out["calibration_scores_"] = cal

        name = "preprocessor"
        pre = FeaturePreprocessor.from_state(fitted["preprocessor"], arrays("preprocessor."))
        if pre.n_features_in_ != out["n_features_in_"]:
            raise ValueError(f"{pre.n_features_in_} columns, model {out['n_features_in_']}")
        out["preprocessor_"] = pre
        width = int(np.sum(pre.support_))

        name = "encoder"
        out["encoder_"] = out["center_benign_"] = out["center_attack_"] = None
        if params["stage1"]:
            sizes = {name: params[name] for name in ENCODER_SIZES}
            encoder = build_encoder(params["encoder"], width, **sizes)
            encoder.load_state_dict(part("encoder."), strict=True)
            out["encoder_"] = encoder.to(device).eval()
            for key in ("center_benign", "center_attack"):
                center = tensors[key]
                if tuple(center.shape) != (params["latent_dim"],):
                    raise ValueError(f"{key} has shape {tuple(center.shape)}")
                out[key + "_"] = center.to(device)
        inputs = params["latent_dim"] if params["stage1"] else width

        name = "Deep SVDD embedding"
        out["svdd_"] = None
        if ("svdd" in fitted) != (params["svdd_dim"] > 0):
            raise ValueError(f"present={'svdd' in fitted}, but svdd_dim={params['svdd_dim']}")
        if params["svdd_dim"] > 0:
            svdd = DeepSAD.from_state(fitted["svdd"], part("svdd."))
            if svdd.rep_dim != params["svdd_dim"]:
                raise ValueError(f"width {svdd.rep_dim}, but svdd_dim={params['svdd_dim']}")
            out["svdd_"] = svdd
            inputs += svdd.rep_dim

        name = "flow input scaling"
        out["flow_scaler_"] = None
        if ("flow_scaler" in fitted) != params["flow_standardize"]:
            raise ValueError(f"present={'flow_scaler' in fitted}, but flow_standardize is not")
        if params["flow_standardize"]:
            scaler = FeaturePreprocessor.from_state(fitted["flow_scaler"], arrays("flow_scaler."))
            if scaler.n_features_in_ != inputs:
                raise ValueError(f"{scaler.n_features_in_} columns for {inputs} flow inputs")
            out["flow_scaler_"] = scaler
            inputs = int(np.sum(scaler.support_))

        name = "flow"
        flow = LatentDensity(
            inputs,
            transforms=params["flow_transforms"],
            hidden_features=params["flow_hidden"],
            hidden_layers=params["flow_hidden_layers"],
        )
        flow.load_state_dict(part("flow."), strict=True)
        out["flow_"] = flow.to(device).eval()

        name = "side channels"
        stored = list(fitted.get("channels", {}))
        if stored != enabled_channels(params):
            raise ValueError(f"stored {stored}, parameters ask for {enabled_channels(params)}")
        out["channels_"] = {}
        for channel_name in stored:
            name = f"{channel_name} channel"
            config = fitted["channels"][channel_name]
            channel = SIDE_CHANNELS[channel_name].from_state(
                config, arrays(f"channel.{channel_name}.")
            )
            out["channels_"][channel_name] = channel

        name = "score rule"
        fusion = FUSIONS[params["score"]].from_state(fitted["fusion"], arrays("fusion."))
        tails = getattr(fusion, "tails_", None)
        if tails is not None and list(tails) != ["nll", *stored]:
            raise ValueError(f"tails of {list(tails)}, channels {['nll', *stored]}")
        out["fusion_"] = fusion

        for part_name, attribute in _BENIGN_PARTS.items():
            name = part_name.replace("_", " ")
            out[attribute] = None
            if part_name in fitted:
                cls = DriftReference if part_name == "drift_reference" else BenignProfile
                described = cls.from_state(fitted[part_name], arrays(f"{part_name}."))
                if list(described.feature_names_) != [
                    str(n) for n in out.get("feature_names_in_", range(out["n_features_in_"]))
                ]:
                    raise ValueError("its features are not the model's")
                out[attribute] = described
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: damaged {name}: {error!r}") from None
    return out
