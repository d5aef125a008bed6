"""What the context stage computes: its configuration, its feature names, and words for them."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONFIG_VERSION",
    "ENTITY_KINDS",
    "ContextConfig",
    "context_option",
    "describe",
    "describe_feature",
    "feature_names",
    "parse_context",
]

CONFIG_VERSION = 1
#: The entity kinds, in the order of their feature columns: the source host, the (source,
#: destination) host pair, the destination service (host, port, protocol).
ENTITY_KINDS = ("src", "pair", "service")
#: Each kind's features per time scale, in column order (the kernel writes them so).
KIND_FEATURES: dict[str, tuple[str, ...]] = {
    "src": (
        "flows",
        "dst_hosts",
        "dst_ports",
        "failed_share",
        "bytes_mean",
        "bytes_std",
        "packets_mean",
        "packets_std",
    ),
    "pair": ("flows", "failed_share", "gap_mean", "gap_cv", "bytes_cv"),
    "service": ("flows", "failed_share", "bytes_mean", "bytes_std"),
}
#: Bounds of the configuration (a model file is untrusted: these bound what it may ask for).
MAX_WINDOWS = 8
MIN_WINDOW_S = 1e-3
MAX_WINDOW_S = 30 * 86_400.0
MIN_ENTITIES = 8
MAX_ENTITIES = 1 << 27
_PREFIX = "ctx"


@dataclass(frozen=True)
class ContextConfig:
    """How the context of a flow is measured.

    Parameters
    ----------
    windows_s : tuple of float
        Time scales in seconds, strictly increasing. A flow ``a`` seconds older than the one
        being featurised weighs ``exp(-a / tau)`` at scale ``tau``, so at a steady rate the
        decayed flow count equals the number of flows in the last ``tau`` seconds.
    entities : tuple of str
        Kinds whose features are output, a subset of :data:`ENTITY_KINDS` in that order. Every
        table is kept whatever is output (a source's distinct destinations come from the pair
        table), so this changes the columns, not the cost.
    max_entities : int
        Most entities tracked per table (source hosts, host pairs, destination services, and a
        source's destination ports). A full table evicts the eighth of its entities whose last
        flow is oldest. Memory grows with the entities seen: about 0.7 KB for a source seen
        once, with its pair and port (``benchmarks/speed/bench_context.py``: 687 MiB of tables for a
        million sources).
    """

    windows_s: tuple[float, ...] = (10.0, 60.0, 600.0)
    entities: tuple[str, ...] = ENTITY_KINDS
    max_entities: int = 1_000_000

    def __post_init__(self) -> None:
        windows = self.windows_s
        if not isinstance(windows, tuple) or not 1 <= len(windows) <= MAX_WINDOWS:
            raise ValueError(
                f"windows_s must be a tuple of 1 to {MAX_WINDOWS} numbers, got {windows!r}"
            )
        for value in windows:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not MIN_WINDOW_S <= value <= MAX_WINDOW_S
            ):
                raise ValueError(
                    f"windows_s: each time scale must be a number of seconds in "
                    f"[{MIN_WINDOW_S}, {MAX_WINDOW_S:.0f}], got {value!r}"
                )
        if any(b <= a for a, b in zip(windows, windows[1:], strict=False)):
            raise ValueError(f"windows_s must be strictly increasing, got {windows!r}")
        object.__setattr__(self, "windows_s", tuple(float(v) for v in windows))
        kinds = self.entities
        if (
            not isinstance(kinds, tuple)
            or not kinds
            or any(not isinstance(k, str) or k not in ENTITY_KINDS for k in kinds)
            or list(kinds) != [k for k in ENTITY_KINDS if k in kinds]
        ):
            raise ValueError(
                f"entities must be a non-empty subset of {ENTITY_KINDS} in that order, "
                f"got {kinds!r}"
            )
        size = self.max_entities
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"max_entities must be an integer, got {size!r}")
        if not MIN_ENTITIES <= size <= MAX_ENTITIES:
            raise ValueError(
                f"max_entities must lie in [{MIN_ENTITIES}, {MAX_ENTITIES}], got {size}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values; :meth:`from_dict` reads them back."""
        return {
            "version": CONFIG_VERSION,
            "windows_s": list(self.windows_s),
            "entities": list(self.entities),
            "max_entities": self.max_entities,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ContextConfig:
        """A configuration from :meth:`to_dict` output, every key and value checked.

        Raises
        ------
        ValueError
            On a value that is not a dict, an unknown version, a missing or unknown key, or a
            value :class:`ContextConfig` refuses (the message names it).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"context config must be a dict, got {type(data).__name__}")
        if data.get("version") != CONFIG_VERSION:
            raise ValueError(f"unsupported context config version {data.get('version')!r}")
        expected = {"version", "windows_s", "entities", "max_entities"}
        unknown = sorted(set(data) - expected, key=str)
        missing = sorted(expected - set(data))
        if unknown or missing:
            raise ValueError(f"context config: unknown keys {unknown}, missing keys {missing}")
        for key in ("windows_s", "entities"):
            if not isinstance(data[key], list | tuple):
                raise ValueError(
                    f"context config {key} must be a list, got {type(data[key]).__name__}"
                )
        return cls(
            windows_s=tuple(data["windows_s"]),
            entities=tuple(data["entities"]),
            max_entities=data["max_entities"],
        )

    @property
    def feature_names(self) -> list[str]:
        """Names of the output columns, in order (see :func:`feature_names`)."""
        return feature_names(self)


#: The estimator's ``context`` parameter: no context features.
OFF = "off"
#: ... the default configuration (:class:`ContextConfig`'s defaults).
ON = "on"


def parse_context(value: Any) -> ContextConfig | None:
    """The configuration an estimator's ``context`` parameter asks for; None for ``"off"``.

    ``"off"``: no context features. ``"on"``: the default time scales. Otherwise time scales in
    seconds, comma-separated and increasing (``"10,60,600"``).

    Raises
    ------
    ValueError
        Naming the value, when it is none of these.

    Examples
    --------
    >>> parse_context("off") is None
    True
    >>> parse_context("30,300").windows_s
    (30.0, 300.0)
    """
    if not isinstance(value, str):
        raise ValueError(
            f"context must be text ('off', 'on' or seconds like '10,60,600'), got {value!r}"
        )
    text = value.strip().casefold()
    if text == OFF:
        return None
    if text == ON:
        return ContextConfig()
    try:
        windows = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"context={value!r}: expected 'off', 'on' or time scales in seconds, "
            "comma-separated (e.g. '10,60,600')"
        ) from None
    try:
        return ContextConfig(windows_s=windows)
    except ValueError as error:
        raise ValueError(f"context={value!r}: {error}") from None


def context_option(config: ContextConfig | None) -> str:
    """The ``context`` parameter's value for ``config`` (:func:`parse_context` reads it back
    to the same time scales)."""
    if config is None:
        return OFF
    if config.windows_s == ContextConfig().windows_s:
        return ON
    return ",".join(f"{w:g}" for w in config.windows_s)


def window_label(seconds: float) -> str:
    """``10`` -> ``"10s"``, ``600`` -> ``"10min"``, ``7200`` -> ``"2h"``, ``0.5`` -> ``"0.5s"``."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def feature_names(config: ContextConfig) -> list[str]:
    """``ctx_<kind>_<feature>_<window>`` for each output kind, feature and time scale, in the
    kernel's column order: kind, then feature, then scale (``ctx_src_flows_10s``,
    ``ctx_src_flows_1min``, ..., ``ctx_service_bytes_std_10min``)."""
    return [
        f"{_PREFIX}_{kind}_{feature}_{window_label(w)}"
        for kind in config.entities
        for feature in KIND_FEATURES[kind]
        for w in config.windows_s
    ]


# Explanations name the same few dozen features for every flagged flow: the name parsing and
# the window words are cached (a miss costs a walk over every name of the configuration).
@functools.lru_cache(maxsize=4096)
def parse_feature_name(name: str, config: ContextConfig) -> tuple[str, str, float]:
    """(kind, feature, window in seconds) of a context feature name.

    Raises
    ------
    ValueError
        If ``name`` is not one of ``config``'s feature names.
    """
    for kind in config.entities:
        for feature in KIND_FEATURES[kind]:
            for w in config.windows_s:
                if name == f"{_PREFIX}_{kind}_{feature}_{window_label(w)}":
                    return kind, feature, w
    raise ValueError(f"{name!r} is not a context feature of this configuration")


@functools.lru_cache(maxsize=256)
def _window_words(seconds: float) -> str:
    label = window_label(seconds)
    number = label.rstrip("hmins")
    unit = label[len(number) :]
    words = {"s": "s", "min": "min", "h": "h"}[unit]
    return f"{number} {words}"


_WHO = {"src": "this source", "pair": "this pair", "service": "this service"}


def describe(name: str, value: float, config: ContextConfig, entity: str | None = None) -> str:
    """Words for one context feature's value, for explanations.

    Parameters
    ----------
    name : str
        A feature name of ``config``.
    value : float
        Its value for one flow.
    config : ContextConfig
    entity : str, optional
        Who the feature is about, as :meth:`ContextStage.entities` writes it (``10.0.0.3``,
        ``10.0.0.3 -> 10.0.0.9``, ``10.0.0.9 port 80/tcp``); "this source" and the like when
        None.

    Examples
    --------
    >>> config = ContextConfig()
    >>> describe("ctx_src_dst_ports_1min", 387.2, config, "10.0.0.3")
    'about 387 distinct destination ports contacted by 10.0.0.3 in the last 1 min'
    >>> describe("ctx_pair_gap_cv_10min", 0.02, config, "10.0.0.3 -> 10.0.0.9")[:58]
    'gaps between flows of 10.0.0.3 -> 10.0.0.9 vary by 0.02 of'
    """
    kind, feature, window = parse_feature_name(name, config)
    return _words(kind, feature, window, value, entity)


def _words(kind: str, feature: str, window: float, value: float, entity: str | None) -> str:
    who = entity if entity is not None else _WHO[kind]
    within = f"in the last {_window_words(window)}"
    if feature == "flows":
        direction = {"src": "from", "pair": "of", "service": "to"}[kind]
        return f"about {value:,.0f} flows {direction} {who} {within}"
    if feature == "dst_hosts":
        return f"about {value:,.0f} distinct destination hosts contacted by {who} {within}"
    if feature == "dst_ports":
        return f"about {value:,.0f} distinct destination ports contacted by {who} {within}"
    if feature == "failed_share":
        return f"{value:.0%} of the flows of {who} {within} failed or went unanswered"
    if feature in ("bytes_mean", "packets_mean"):
        unit = feature.split("_")[0]
        return f"flows of {who} {within} carried {value:,.4g} {unit} on average"
    if feature in ("bytes_std", "packets_std"):
        unit = feature.split("_")[0]
        return f"{unit} per flow of {who} {within} varied by {value:,.4g} (standard deviation)"
    if feature == "gap_mean":
        return f"flows of {who} came every {value:,.4g} s on average ({within.split(' ', 1)[1]})"
    if feature == "gap_cv":
        return (
            f"gaps between flows of {who} vary by {value:.2g} of their mean (0: as regular as "
            f"a beacon; 1: random; last {_window_words(window)})"
        )
    return (
        f"sizes of the flows of {who} vary by {value:.2g} of their mean (0: all alike; "
        f"last {_window_words(window)})"
    )


def _label_seconds(label: str) -> float | None:
    """Seconds of a :func:`window_label` (``"10min"`` -> 600), None when it is not one."""
    for unit, size in (("min", 60.0), ("h", 3600.0), ("s", 1.0)):
        if label.endswith(unit):
            try:
                seconds = float(label[: -len(unit)]) * size
            except ValueError:
                return None
            return seconds if window_label(seconds) == label else None
    return None


def describe_feature(name: str, value: float, entity: str | None = None) -> str | None:
    """Words for a context feature known only by its name (an explanation sees the model's
    feature names, not its configuration); None when ``name`` is not one.

    Examples
    --------
    >>> describe_feature("ctx_src_flows_1min", 412.0)
    'about 412 flows from this source in the last 1 min'
    >>> describe_feature("duration", 3.0) is None
    True
    """
    parts = _any_feature_name(name)
    return None if parts is None else _words(*parts, value, entity)


@functools.lru_cache(maxsize=4096)
def _any_feature_name(name: str) -> tuple[str, str, float] | None:
    """(kind, feature, window in seconds) of a context feature name of any configuration;
    None when ``name`` is not one."""
    if not name.startswith(f"{_PREFIX}_"):
        return None
    for kind in ENTITY_KINDS:
        head = f"{_PREFIX}_{kind}_"
        if not name.startswith(head):
            continue
        for feature in KIND_FEATURES[kind]:
            rest = name[len(head) :]
            if rest.startswith(f"{feature}_"):
                seconds = _label_seconds(rest[len(feature) + 1 :])
                if seconds is None or not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
                    return None
                return kind, feature, seconds
    return None
