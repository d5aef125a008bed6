"""Context of a flow: what its source, host pair and destination service did just before it.

See :mod:`.features` for the contract (causal, independent of batching) and :mod:`.kernel`
for how it is computed.
"""

from .config import ENTITY_KINDS, ContextConfig, describe, feature_names
from .features import context_features
from .stage import ContextStage, flow_endpoints
from .state import ContextState

__all__ = [
    "ENTITY_KINDS",
    "ContextConfig",
    "ContextStage",
    "ContextState",
    "context_features",
    "describe",
    "feature_names",
    "flow_endpoints",
]
