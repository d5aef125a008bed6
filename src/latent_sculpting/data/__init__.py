"""Datasets and protocols: flow files read into tables, CIC-IDS-2017, the zero-shot splits.

See ``docs/reference/data.md`` and Chhetri et al., "Latent Sculpting for Zero-Shot Generalization"
(arXiv:2512.22179).
"""

from latent_sculpting.data.cicids2017 import ATTEMPTED_POLICIES, load_cicids2017, sample_path
from latent_sculpting.data.protocol import DEFAULT_WITHHELD, Split, ZeroShotSplits, zero_shot_splits
from latent_sculpting.io.cleaning import CleaningReport
from latent_sculpting.io.formats.cicids2017 import (
    BENIGN,
    CANONICAL_FEATURES,
    CANONICAL_LABELS,
    ENGINEERED_FEATURES,
    IDENTIFIER_COLUMNS,
    canonical_label,
)
from latent_sculpting.io.readers import list_flow_files
from latent_sculpting.io.table import FlowTable, iter_flow_batches, read_flows

__all__ = [
    "ATTEMPTED_POLICIES",
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
    "iter_flow_batches",
    "list_flow_files",
    "load_cicids2017",
    "read_flows",
    "sample_path",
    "zero_shot_splits",
]
