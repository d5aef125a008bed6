"""The generic table: any flow records whose meaning the package does not know in advance.

Numeric columns are features, text columns are categorical features, and columns whose *name*
says they identify a flow (addresses, ports, times, ids) are identifiers. The name rule is a
guess, so :func:`~latent_sculpting.flowspec.fit_spec` records each such decision with its reason
and ``sculpt train`` prints them; ``--drop``/``--keep`` override it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import FlowFormat

__all__ = ["TABLE", "GenericTable", "looks_like_identifier"]

# Whole words in a column name that mark it as identifying a flow rather than describing it.
_IDENTIFIER_WORDS = re.compile(
    r"(^|[\s_.\-/])(id|uid|ip|ips|ipv4|ipv6|addr|address|mac|port|sport|dport|timestamp|"
    r"time|date|datetime|ts|stime|ltime|host|hostname|src[\s_]?ip|dst[\s_]?ip|srcip|dstip|"
    r"flow[\s_]?id|saddr|daddr)($|[\s_.\-/])",
    re.IGNORECASE,
)


def looks_like_identifier(name: str) -> bool:
    """Whether a column name reads like an identifier (``Src IP``, ``dst_port``, ``ts``, ``id``)."""
    return bool(_IDENTIFIER_WORDS.search(name))


class GenericTable(FlowFormat):
    name = "table"
    description = "any table: numeric columns are features, text columns categorical"

    def matches(self, columns: Sequence[str]) -> bool:
        return True


TABLE = GenericTable()
