"""The generic table: any flow records whose meaning the package does not know in advance.

Numeric columns are features, text columns are categorical features, and columns whose *name*
says they identify a flow (addresses, ports, times, ids) are identifiers
(:func:`looks_like_identifier`); so are text columns whose *values* do
(:func:`identifier_by_values`): times written as text, long encoded byte strings (payloads,
hashes), and columns in which most values are distinct. These rules are guesses, so
:func:`~latent_sculpting.io.fitting.fit_spec` records each decision with the rule that made it,
``sculpt train`` prints them, and ``--drop``/``--keep`` override them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from latent_sculpting.io.formats.base import FlowFormat

__all__ = ["TABLE", "GenericTable", "identifier_by_values", "looks_like_identifier"]

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


# Times written as text: ISO 8601 and its common relatives (``2011/08/10 09:46:53.047277``,
# ``2017-07-03T08:55:58Z``), day or month first (CIC-IDS-2017's ``3/7/2017 8:55``), a time of day
# alone, and Unix times in seconds or milliseconds from 2000 to 2100 written as digits.
_DATE = r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm])?"
_ZONE = r"(?:\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?"
_TIME_TEXT = re.compile(rf"^(?:{_DATE}(?:[T\s]+{_CLOCK})?{_ZONE}|{_CLOCK}{_ZONE})$")
_EPOCH_TEXT = re.compile(r"^\d{9,13}(?:\.\d+)?$")
_EPOCH_SECONDS = (946_684_800, 4_102_444_800)  # 2000-01-01 to 2100-01-01
# Encoded bytes: long base64 or hex strings, after Argus's "s[N]=" user-data prefix if any.
_UDATA_PREFIX = re.compile(r"^[sd]\[\d+\]=")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_HEX = re.compile(r"^(?:0x)?[0-9A-Fa-f]+$")
_DIGITS = frozenset("0123456789+/")
#: Shortest string taken for encoded bytes (a port written in hex, ``0x0050``, is not).
ENCODED_MIN_LENGTH = 24
#: Share of a text column's distinct values (or rows) a rule must fit to decide.
_MOST = 0.9
#: A text column whose distinct values are at least this share of its rows is an identifier,
#: when it has at least :data:`DISTINCT_MIN_VALUES` of them (a few rows prove nothing).
DISTINCT_SHARE = 0.5
DISTINCT_MIN_VALUES = 20
# Distinct values examined by the time and encoding rules (the rules are about their form).
_SAMPLE = 1000


def identifier_by_values(values: Sequence[str], rows: int, *, distinct: bool = True) -> str | None:
    """Why a text column's values make it an identifier rather than a feature, or None.

    Parameters
    ----------
    values : sequence of str
        The column's distinct values (missing ones left out).
    rows : int
        Rows of the column that hold a value.
    distinct : bool, default True
        Apply the last rule (mostly distinct values); False asks about the form alone.

    Returns
    -------
    str or None
        The rule that applies, first of: the values read as times (dates, times of day, Unix
        times as digits); they look like encoded bytes (base64 or hex, at least
        :data:`ENCODED_MIN_LENGTH` characters); most of them are distinct
        (:data:`DISTINCT_SHARE` of the rows, at least :data:`DISTINCT_MIN_VALUES` values). The
        first two need nine in ten of the (first 1,000) distinct values to fit.
    """
    if not values:
        return None
    sample = [str(v).strip() for v in values[:_SAMPLE]]
    needed = _MOST * len(sample)
    times = [v for v in sample if _TIME_TEXT.match(v) or _is_epoch(v)]
    if len(times) >= needed:
        return f"its values read as times (e.g. {times[0]!r})"
    encoded = [v for v in sample if _is_encoded(v)]
    if len(encoded) >= needed:
        shown = encoded[0] if len(encoded[0]) <= 40 else encoded[0][:40] + "..."
        return f"its values look like encoded bytes, base64 or hex (e.g. {shown!r})"
    if distinct and len(values) >= DISTINCT_MIN_VALUES and len(values) >= DISTINCT_SHARE * rows:
        return (
            f"most of its values are distinct ({len(values):,} in {rows:,} rows): it names "
            "flows or hosts rather than a kind of flow"
        )
    return None


def _is_epoch(value: str) -> bool:
    if not _EPOCH_TEXT.match(value):
        return False
    seconds = float(value)
    if seconds > _EPOCH_SECONDS[1]:
        seconds /= 1000  # milliseconds
    return _EPOCH_SECONDS[0] <= seconds <= _EPOCH_SECONDS[1]


def _is_encoded(value: str) -> bool:
    value = _UDATA_PREFIX.sub("", value)
    if len(value) < ENCODED_MIN_LENGTH:
        return False
    if _HEX.match(value):
        return True
    # Base64 of bytes mixes cases and digits or symbols; a long word or name does not.
    mixed = not (value.isupper() or value.islower()) and any(c in _DIGITS for c in value)
    return bool(_BASE64.match(value)) and (mixed or value.endswith("="))


class GenericTable(FlowFormat):
    name = "table"
    description = "any table: numeric columns are features, text columns categorical"

    def matches(self, columns: Sequence[str]) -> bool:
        return True


TABLE = GenericTable()
