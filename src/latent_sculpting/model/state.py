"""Checks of a part's stored state: a model file is untrusted input (docs/reference/security.md).

Each part's ``from_state`` validates its own config (JSON) and arrays or tensors with these
before it uses them, and raises a :class:`ValueError` naming the key, tensor or value at fault;
:mod:`latent_sculpting.model.persistence` names the file and the part. Module states are
compared, name by name, with a layout computed without memory (:func:`meta_layout`) before
anything is built, and a module then holds the file's own tensors (:func:`assign`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "MAX_LAYERS",
    "MAX_WIDTH",
    "Layout",
    "assign",
    "check_array",
    "check_int",
    "check_layout",
    "check_number",
    "check_object",
    "check_tensor",
    "few",
    "layout_weights",
    "meta_layout",
    "meta_module",
    "shown",
]

#: Widest layer a stored module may ask for (``latent_dim``, ``d_model``, ``d_ffn``,
#: ``n_heads``, ``flow_hidden``, ``svdd_dim``, the Deep SVDD's hidden widths). The presets use
#: widths up to 512; the cap leaves room for far larger models and refuses what would only
#: exhaust memory.
MAX_WIDTH = 65_536
#: Deepest stack a stored module may ask for (``n_layers``, ``flow_transforms``,
#: ``flow_hidden_layers``, the Deep SVDD's hidden layers).
MAX_LAYERS = 64

#: A module's state as (shape, dtype) by name.
Layout = dict[str, tuple[tuple[int, ...], torch.dtype]]


def shown(value: Any) -> str:
    """``repr(value)``, shortened for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def few(names: list[Any], limit: int = 8) -> str:
    """The first ``limit`` of ``names``, for an error message."""
    listed = ", ".join(repr(str(n)[:80]) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{listed}{more}]"


def check_int(value: Any, what: str, low: int, high: int) -> int:
    """``value``, a JSON integer in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {shown(value)}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}-{high}")
    return value


def check_number(value: Any, what: str) -> float:
    """``value``, a finite JSON number (int or float), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {shown(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return value


def check_object(
    value: Any, what: str, keys: set[str], optional: set[str] | frozenset[str] = frozenset()
) -> dict:
    """``value``, a JSON object with exactly ``keys`` (and perhaps some ``optional`` ones)."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {shown(value)}")
    missing, unknown = sorted(keys - set(value)), sorted(set(value) - keys - optional)
    if missing or unknown:
        raise ValueError(f"{what} lacks {missing}, has unknown keys {few(unknown)}")
    return value


def check_tensor(
    value: torch.Tensor, what: str, dtype: torch.dtype, shape: tuple[int | None, ...]
) -> torch.Tensor:
    """``value``, of ``dtype`` and ``shape`` (``None``: any length), finite if floating."""
    if value.dtype != dtype:
        raise ValueError(f"{what} has dtype {value.dtype}, expected {dtype}")
    if len(value.shape) != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        expected = tuple("any" if s is None else s for s in shape)
        raise ValueError(f"{what} has shape {tuple(value.shape)}, expected {expected}")
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{what} holds NaN or infinite values")
    return value


_TORCH = {np.bool_: torch.bool, np.float64: torch.float64, np.float32: torch.float32}


def check_array(
    arrays: dict[str, np.ndarray], key: str, dtype: type, shape: tuple[int | None, ...]
) -> np.ndarray:
    """The array ``key`` of ``arrays``, checked as :func:`check_tensor` checks a tensor."""
    if key not in arrays:
        raise KeyError(key)
    value = np.asarray(arrays[key])
    if not value.flags.c_contiguous:  # torch reads no negative strides
        value = value.copy()
    if value.dtype.type not in _TORCH:
        raise ValueError(f"{key!r} has dtype {value.dtype}, expected {np.dtype(dtype)}")
    return check_tensor(torch.from_numpy(value), repr(key), _TORCH[dtype], shape).numpy()


def meta_module(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The module ``build()`` makes, on PyTorch's meta device (no memory)."""
    with torch.device("meta"):
        return build()


def meta_layout(build: Callable[[], torch.nn.Module]) -> Layout:
    """The state layout of the module ``build()`` makes, built on the meta device."""
    module = meta_module(build)
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def layout_weights(layout: Layout) -> int:
    """How many floating-point numbers a module of ``layout`` holds."""
    return sum(math.prod(shape) for shape, dtype in layout.values() if dtype.is_floating_point)


def check_layout(layout: Layout, state: dict[str, torch.Tensor]) -> None:
    """``state`` holds exactly the tensors of ``layout``, each of its shape and dtype, finite."""
    missing, unknown = sorted(set(layout) - set(state)), sorted(set(state) - set(layout))
    if missing or unknown:
        raise ValueError(
            f"its tensors are not those of its parameters: missing {few(missing)}, unknown "
            f"{few(unknown)}"
        )
    for key, (shape, dtype) in layout.items():
        check_tensor(state[key], f"tensor {key!r}", dtype, shape)


def assign(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``module`` (built on the meta device) holding the checked tensors of ``state``."""
    module.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
        raise ValueError("a tensor of the module is not in the file")
    return module
