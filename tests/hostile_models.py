"""A small model file with every part, and its raw contents, for the hostile-file tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from small import FUSED_FAST

from latent_sculpting import LatentSculpting
from latent_sculpting.data import load_cicids2017
from latent_sculpting.io.table import cap_per_class


def training_table():
    """150 rows per class of the embedded sample."""
    return cap_per_class(load_cicids2017(), 150, seed=0)


def every_part_model(folder: Path, table=None) -> Path:
    """A model of the fast preset with every part (encoder, Deep SVDD, flow scaling, forest,
    Fisher's tails, spec, drift reference, benign profile), saved in ``folder``."""
    table = training_table() if table is None else table
    model = LatentSculpting(**FUSED_FAST, random_state=0)
    model.fit(table.frame(), table.y, groups=table.labels, spec=table.spec)
    return model.save(folder / "model.sculpt")


def read_model_file(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a model file, as written."""
    with safe_open(str(path), "pt") as handle:
        return dict(handle.metadata()), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118


def tamper(source: Path, target: Path, edit) -> Path:
    """A copy of ``source`` after ``edit(params, fitted, tensors)`` changed its parts; the edit
    may return metadata strings to write as they are."""
    meta, tensors = read_model_file(source)
    params, fitted = json.loads(meta["params"]), json.loads(meta["fitted"])
    raw = edit(params, fitted, tensors) or {}
    meta.update(params=json.dumps(params), fitted=json.dumps(fitted))
    meta.update(raw)
    save_file(tensors, str(target), metadata=meta)
    return target
