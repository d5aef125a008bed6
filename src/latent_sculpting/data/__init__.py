"""CIC-IDS-2017 data layer: canonical schema, loading, cleaning and the zero-shot protocol.

See ``docs/data.md`` and Chhetri et al., "Latent Sculpting for Zero-Shot Generalization"
(arXiv:2512.22179).
"""

from .cleaning import CleaningReport, engineered_features, replace_nonfinite
from .loading import (
    FlowTable,
    iter_flow_batches,
    list_flow_files,
    load_cicids2017,
    load_flow_table,
    sample_path,
)
from .protocol import (
    DEFAULT_WITHHELD,
    Split,
    ZeroShotSplits,
    stage1_train,
    undersample_benign,
    zero_shot_splits,
)
from .schema import (
    BENIGN,
    CANONICAL_FEATURES,
    CANONICAL_LABELS,
    ENGINEERED_FEATURES,
    IDENTIFIER_COLUMNS,
    canonical_label,
    detect_schema,
)

__all__ = [
    "BENIGN",
    "CANONICAL_FEATURES",
    "CANONICAL_LABELS",
    "DEFAULT_WITHHELD",
    "ENGINEERED_FEATURES",
    "IDENTIFIER_COLUMNS",
    "CleaningReport",
    "FlowTable",
    "Split",
    "ZeroShotSplits",
    "canonical_label",
    "detect_schema",
    "engineered_features",
    "iter_flow_batches",
    "list_flow_files",
    "load_cicids2017",
    "load_flow_table",
    "replace_nonfinite",
    "sample_path",
    "stage1_train",
    "undersample_benign",
    "zero_shot_splits",
]
