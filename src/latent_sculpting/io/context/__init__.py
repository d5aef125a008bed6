"""Context of a flow: what its source, host pair and destination service did just before it.

See :mod:`.features` for the contract (causal, independent of batching) and :mod:`.kernel`
for how it is computed.
"""

from latent_sculpting.io.context.config import ENTITY_KINDS, ContextConfig, describe, feature_names
from latent_sculpting.io.context.features import context_features
from latent_sculpting.io.context.stage import ContextStage, flow_endpoints
from latent_sculpting.io.context.state import ContextState

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
