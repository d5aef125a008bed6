"""Small configurations for tests: seconds to fit, every code path of their preset.

``FUSED_FAST`` is the sculpted design (Stage 1, the flow on the sculpted code and a Deep SVDD
embedding, a forest, Fisher's rule) at a tenth of its size: the configuration tests of Stage 1,
the flow's fast path and the old score rules build on. ``preset("fast")`` is the small form of
today's ``default`` (no Stage 1, stacked rule).
"""

from latent_sculpting import preset

FUSED_FAST = {
    **preset("fused"),
    "d_model": 64,
    "n_layers": 1,
    "epochs": 2,
    "flow_transforms": 2,
    "flow_hidden": 32,
    "flow_epochs": 2,
    "svdd_dim": 8,
    "forest_trees": 10,
}
