"""The generic table: any flow records whose meaning the package does not know in advance.

Numeric columns are features, text columns are categorical features, and columns whose *name*
says they identify a flow (addresses, ports, times, ids) are identifiers. The name rule is a
guess, so :func:`~latent_sculpting.io.flowspec.fit_spec` records each such decision with its reason
and ``sculpt train`` prints them; ``--drop``/``--keep`` override it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from latent_sculpting.io.formats.base import FlowFormat

__all__ = ["TABLE", "GenericTable", "looks_like_identifier"]

# A column name that, as a whole, names a flow's endpoints, time or row: ``Src IP``,
# ``dst_port``, ``id.orig_h``, ``IPV4_SRC_ADDR``, ``Timestamp``, ``id``. Anchored at both ends, so
# that features *about* ports or addresses (``ct_src_dport_ltm``, ``is_sm_ips_ports``) are not
# mistaken for them.
_SIDE = r"(?:src|dst|source|destination|orig|resp|client|server|s|d|sa|da|local|remote)"
_WHAT = r"(?:ip|ips|ipv4|ipv6|ip[\s_.]?addr|addr|address|port|mac|h|p|host|hostname)"
_IDENTIFIER_NAME = re.compile(
    rf"^(?:id|uid|ts|te|timestamp|time|date|datetime|stime|ltime|flow[\s_.]?id|row[\s_.]?id|"
    rf"(?:id[\s_.])?{_SIDE}[\s_.]?{_WHAT}|"
    rf"(?:ipv4|ipv6|l4|ip)[\s_.]?{_SIDE}[\s_.]?(?:addr|address|port)?|"
    rf"{_WHAT}[\s_.]?{_SIDE}|src|dst|sport|dport|dsport|sa|da)$",
    re.IGNORECASE,
)


def looks_like_identifier(name: str) -> bool:
    """Whether a column name reads like an identifier (``Src IP``, ``dst_port``, ``ts``, ``id``)."""
    return bool(_IDENTIFIER_NAME.match(name.strip()))


class GenericTable(FlowFormat):
    name = "table"
    description = "any table: numeric columns are features, text columns categorical"

    def matches(self, columns: Sequence[str]) -> bool:
        return True


TABLE = GenericTable()
