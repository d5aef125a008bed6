"""Safe model files: weights as tensors in one safetensors file, everything else as JSON.

A ``.sculpt`` file is a safetensors file. Its tensors are the encoder's and the flow's state
dicts, the Stage-1 centroids, the preprocessor's arrays, the sorted calibration scores and, when
the model has them, the flow input's scaling, the Deep SVDD channel's weights, the forest's node
arrays and the fusion's reference scores; its
string metadata holds the format name and version, the estimator's parameters and its fitted
scalars as JSON. Loading parses JSON and copies tensors: nothing is unpickled, so a model file
from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._atomic import publish
from .deep_sad import DeepSAD
from .encoders import build_encoder
from .flows import LatentDensity
from .flowspec import FlowSpec, legacy_spec, model_spec
from .forest import AttackForest
from .fusion import TailPValue
from .preprocessing import FeaturePreprocessor

if TYPE_CHECKING:
    from .estimator import LatentSculpting

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_model", "save_model"]

FORMAT_NAME = "latent-sculpting"
#: Bumped whenever the file layout changes; files of other versions than READABLE are refused.
FORMAT_VERSION = 2
#: Version 2 added the optional Deep SVDD, forest and fusion parts; a version-1 file is a
#: version-2 file without them.
READABLE_VERSIONS = (1, 2)


def save_model(model: LatentSculpting, path: str | Path) -> Path:
    """Write ``model`` to ``path``: to a temporary file first, then renamed into place."""
    from . import __version__

    if not hasattr(model, "flow_"):
        raise ValueError("the model is not fitted; call fit before save")
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("encoder.", model.encoder_), ("flow.", model.flow_)):
        if module is not None:
            for key, value in module.state_dict().items():
                tensors[prefix + key] = value.detach().cpu().contiguous().clone()
    if model.stage1:
        tensors["center_benign"] = model.center_benign_.detach().cpu().clone()
        tensors["center_attack"] = model.center_attack_.detach().cpu().clone()
    tensors["calibration_scores"] = torch.from_numpy(model.calibration_scores_.copy())
    pre_config, pre_arrays = model.preprocessor_.get_state()
    for key, value in pre_arrays.items():
        tensors["preprocessor." + key] = torch.from_numpy(np.ascontiguousarray(value).copy())
    parts: dict[str, dict] = {}
    if getattr(model, "flow_scaler_", None) is not None:
        parts["flow_scaler"], scaler_arrays = model.flow_scaler_.get_state()
        for key, value in scaler_arrays.items():
            tensors[f"flow_scaler.{key}"] = torch.from_numpy(np.ascontiguousarray(value).copy())
    if getattr(model, "svdd_", None) is not None:
        parts["svdd"], svdd_tensors = model.svdd_.get_state()
        tensors.update({f"svdd.{k}": v.cpu().contiguous() for k, v in svdd_tensors.items()})
    if getattr(model, "forest_", None) is not None:
        parts["forest"], forest_arrays = model.forest_.get_state()
        tensors.update({f"forest.{k}": torch.from_numpy(v) for k, v in forest_arrays.items()})
    parts["tails"] = {}
    for name, tail in getattr(model, "tails_", {}).items():
        parts["tails"][name], tail_arrays = tail.get_state()
        tensors.update({f"tail.{name}.{k}": torch.from_numpy(v) for k, v in tail_arrays.items()})

    fitted = {
        "n_features_in_": model.n_features_in_,
        "feature_names_in_": (
            [str(c) for c in model.feature_names_in_]
            if hasattr(model, "feature_names_in_")
            else None
        ),
        "thresholds_": {str(k): v for k, v in model.thresholds_.items()},
        "threshold_": model.threshold_,
        "score_stats_": model.score_stats_,
        "history_": model.history_,
        "preprocessor": pre_config,
        **parts,
        "spec": model_spec(model).to_dict() if hasattr(model, "feature_names_in_") else None,
        "training_info": getattr(model, "training_info_", {}),
    }
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "package_version": __version__,
        "params": json.dumps(model.get_params()),
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


def load_model(path: str | Path, *, device: str = "cpu") -> LatentSculpting:
    """Read a model written by :func:`save_model`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a latent-sculpting model, is truncated or corrupt, or was written in
        another format version.
    """
    from .estimator import LatentSculpting

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

    model = LatentSculpting(**params)
    model.device_ = torch.device(device)
    model.n_features_in_ = fitted["n_features_in_"]
    if fitted["feature_names_in_"] is not None:
        model.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
    model.thresholds_ = {float(k): v for k, v in fitted["thresholds_"].items()}
    model.threshold_ = fitted["threshold_"]
    model.score_stats_ = fitted["score_stats_"]
    model.history_ = fitted["history_"]
    model.training_info_ = fitted.get("training_info") or {}
    try:
        if fitted.get("spec") is not None:
            model.spec_ = FlowSpec.from_dict(fitted["spec"])
        elif fitted["feature_names_in_"] is not None:
            # Written before the spec was stored: rebuild it from the feature names.
            model.spec_ = legacy_spec(fitted["feature_names_in_"], fitted.get("extra") or {})
    except ValueError as error:
        raise ValueError(f"{path}: damaged input spec: {error}") from None
    model.calibration_scores_ = tensors.pop("calibration_scores").numpy()
    pre_arrays = {
        key.removeprefix("preprocessor."): tensors.pop(key).numpy()
        for key in [k for k in tensors if k.startswith("preprocessor.")]
    }
    model.preprocessor_ = FeaturePreprocessor.from_state(fitted["preprocessor"], pre_arrays)
    width = int(np.sum(model.preprocessor_.support_))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

    if model.stage1:
        model.encoder_ = build_encoder(
            params["encoder"],
            width,
            latent_dim=params["latent_dim"],
            d_model=params["d_model"],
            n_heads=params["n_heads"],
            n_layers=params["n_layers"],
            d_ffn=params["d_ffn"],
            dropout=params["dropout"],
        )
        _load_state(model.encoder_, part("encoder."), path, "encoder")
        model.encoder_.to(model.device_).eval()
        model.center_benign_ = tensors["center_benign"].to(model.device_)
        model.center_attack_ = tensors["center_attack"].to(model.device_)
        latent = params["latent_dim"]
    else:
        model.encoder_ = None
        model.center_benign_ = model.center_attack_ = None
        latent = width
    try:
        model.svdd_ = model.forest_ = model.flow_scaler_ = None
        if "svdd" in fitted:
            model.svdd_ = DeepSAD.from_state(fitted["svdd"], part("svdd."))
            latent += model.svdd_.rep_dim
        if "flow_scaler" in fitted:
            arrays = {k: v.numpy() for k, v in part("flow_scaler.").items()}
            model.flow_scaler_ = FeaturePreprocessor.from_state(fitted["flow_scaler"], arrays)
            latent = int(np.sum(model.flow_scaler_.support_))
        if "forest" in fitted:
            arrays = {k: v.numpy() for k, v in part("forest.").items()}
            model.forest_ = AttackForest.from_state(fitted["forest"], arrays)
        model.tails_ = {
            name: TailPValue.from_state(config, {"reference": tensors[f"tail.{name}.reference"]})
            for name, config in fitted.get("tails", {}).items()
        }
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: damaged flow input or fusion channels: {error!r}") from None
    model.flow_ = LatentDensity(
        latent,
        transforms=params["flow_transforms"],
        hidden_features=params["flow_hidden"],
        hidden_layers=params["flow_hidden_layers"],
    )
    _load_state(model.flow_, part("flow."), path, "flow")
    model.flow_.to(model.device_).eval()
    return model


def _load_state(module: torch.nn.Module, state: dict, path: Path, name: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{path}: the {name} weights do not match its configuration: {error}"
        ) from None
