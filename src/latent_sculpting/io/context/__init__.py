"""Context of a flow: what its source, host pair and destination service did just before it.

See :mod:`.features` for the contract (causal, independent of batching) and :mod:`.kernel`
for how it is computed.

The names below are imported on first use: the configuration (:mod:`.config`) is read by
every input spec, the numba kernels only where context features are computed.
"""

from importlib import import_module
from typing import Any

__all__ = [
    "ENTITY_KINDS",
    "ContextConfig",
    "ContextStage",
    "ContextState",
    "context_features",
    "context_option",
    "describe",
    "feature_names",
    "flow_endpoints",
    "parse_context",
]

_HOME = {
    "ENTITY_KINDS": "config",
    "ContextConfig": "config",
    "context_option": "config",
    "describe": "config",
    "feature_names": "config",
    "parse_context": "config",
    "context_features": "features",
    "ContextStage": "stage",
    "flow_endpoints": "stage",
    "ContextState": "state",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{home}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
