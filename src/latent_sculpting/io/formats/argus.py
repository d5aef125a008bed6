"""Argus bidirectional flows (``.binetflow``): the CTU-13 and Stratosphere Laboratory format.

Argus's ``ra`` writes one line per bidirectional flow; the labelled captures of the CTU-13
dataset and the Stratosphere Laboratory's malware and normal captures keep these columns,
comma-separated (``ra -c ','``) or tab-separated (read either way:
:mod:`latent_sculpting.io.readers.delimited` detects the separator)::

    StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,
    SrcBytes,Label

and some captures add ``srcUdata``/``dstUdata``, the first bytes of each direction's payload.

Roles
-----
- identifiers (carried to the output, never features): ``StartTime`` (text such as
  ``2011/08/10 09:46:53.047277``), the addresses and ports (``Sport``/``Dport`` are decimal or
  hex text, ``0x0303`` for ICMP), and where present ``LastTime``, the MAC addresses, ``SrcId``,
  ``Seq``, ``Rank`` and the TTLs (which name the sending host's system and distance, as in
  :mod:`.netflow`).
- categorical features: ``Proto``, ``Dir`` (``->``, ``<->``, ``?>``, ...), ``State`` (Argus's
  per-direction TCP state or ICMP type, ``FSPA_FSPA``, ``CON``, ``ECO``, ...), ``sTos`` and
  ``dTos`` (ToS bytes: codes, not quantities; often unset), and ``Flgs`` where present.
- numeric features: ``Dur``, ``TotPkts``, ``TotBytes``, ``SrcBytes``, and any other numeric
  column ``ra`` was asked for (``SrcPkts``, ``DstBytes``, ``Load``, ...).
- left out: ``srcUdata``/``dstUdata`` (payload bytes: content, not a statistic of the flow, and
  nearly unique); the label.

Labels
------
CTU-13 labels name the flow's role, e.g. ``flow=From-Botnet-V42-TCP-CC6-Plain-HTTP``,
``flow=To-Normal-V42-UDP-NTP-server``, ``flow=Background-UDP-Established``. :meth:`labels`
reads any label that mentions ``Botnet`` as ``Botnet`` (an attack), else one that mentions
``Normal`` as ``Normal`` (benign: the flows of the capture's known normal hosts), else one that
mentions ``Background`` as ``Background``; other labels are kept as written. ``Background``
flows are *unlabelled*: the captures' authors did not know whether they are benign (most of a
CTU-13 capture is background). They are never learned from: training and adaptation leave them
out and count them (:data:`ArgusBinetflow.unlabelled_labels`), and a scored file's tally of
benign and attack flows leaves them out too; they are scored like every flow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from latent_sculpting.io.formats.base import FlowFormat, normalize_column_name

__all__ = ["ARGUS", "ArgusBinetflow"]

# Columns every CTU-13/Stratosphere binetflow file has; a file with all of them is one.
_SIGNATURE = (
    "StartTime",
    "Dur",
    "Proto",
    "SrcAddr",
    "Sport",
    "Dir",
    "DstAddr",
    "Dport",
    "State",
    "TotPkts",
    "TotBytes",
)
_PAYLOAD = (
    "payload bytes of the flow's first packets (Argus user data): content, not a statistic "
    "of the flow, and nearly unique"
)
# What a label mentions -> its canonical spelling, checked in this order (an attack first).
_ROLES = (("botnet", "Botnet"), ("normal", "Normal"), ("background", "Background"))


class ArgusBinetflow(FlowFormat):
    """Argus bidirectional flow records (CTU-13, Stratosphere ``.binetflow``)."""

    name = "argus"
    description = "Argus binetflow (CTU-13, Stratosphere): comma- or tab-separated ra output"
    label_column = "Label"
    benign_label = "Normal"
    #: Labels of flows nobody labelled: never learned from, neither benign nor attack.
    unlabelled_labels = ("Background",)
    identifier_columns = (
        "StartTime",
        "LastTime",
        "SrcAddr",
        "DstAddr",
        "Sport",
        "Dport",
        "SrcMac",
        "DstMac",
        "SrcId",
        "Seq",
        "Rank",
        "sTtl",
        "dTtl",
    )
    categorical_columns = ("Proto", "Dir", "State", "sTos", "dTos", "Flgs")
    ignored_columns = {
        "Label": "the label column (CTU-13's flow labels): as a feature it would give the "
        "answer away",
        "srcUdata": _PAYLOAD,
        "dstUdata": _PAYLOAD,
    }
    #: Canonical column of each role a flow's context is built from.
    endpoint_columns = {
        "time": "StartTime",
        "src": "SrcAddr",
        "dst": "DstAddr",
        "sport": "Sport",
        "dport": "Dport",
        "proto": "Proto",
        "state": "State",
        "duration": "Dur",
    }

    def matches(self, columns: Sequence[str]) -> bool:
        """A binetflow file: every column of :data:`_SIGNATURE` is present (any case)."""
        names = {normalize_column_name(c).casefold() for c in columns}
        return all(column.casefold() in names for column in _SIGNATURE)

    def labels(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """``Botnet``, ``Normal`` or ``Background`` for a label that mentions one (in that
        order, any case); other labels stripped and kept."""
        out = super().labels(column)
        canonical: dict[str, str] = {}  # a capture repeats few distinct labels
        for index, value in enumerate(out):
            if value is None:
                continue
            if value not in canonical:
                folded = value.casefold()
                canonical[value] = next((c for key, c in _ROLES if key in folded), value)
            out[index] = canonical[value]
        return out


#: The Argus binetflow format.
ARGUS = ArgusBinetflow()
