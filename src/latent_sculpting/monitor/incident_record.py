"""An incident as the grouper reports it (:mod:`latent_sculpting.monitor.incidents`): a record
of plain values, written as one JSON object by ``sculpt score --incidents``, ``sculpt watch``
and ``sculpt serve``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from latent_sculpting.monitor.incident_text import iso_time

__all__ = ["Incident"]


@dataclass
class Incident:
    """One incident: a burst of flagged flows of one source (or host pair).

    Attributes
    ----------
    id : str
        Stable for the same flows: a hash of the key and the start time.
    key : str
        ``"source"`` or ``"pair"``.
    source, destination : str, str or None
        The source host; the destination host for a pair (None when grouped by source).
    start, end : float
        Times (epoch seconds) of the first and the latest flagged flow.
    n_flows, n_flagged : int
        Flows of the key between start and end, and flagged ones among them.
    n_destinations, n_ports : int
        Distinct destination hosts and ports of the flagged flows (at least, when
        ``distinct_capped``).
    top_destinations, top_ports : list of [value, count]
        The most frequent ones, most frequent first (at most 5).
    score : float
        Evidence of the flagged flows (:mod:`latent_sculpting.monitor.incidents` says how it is
        summed).
    max_flow_score : float
        The highest flow score among them.
    evidence : dict
        ``channels``: flagged flows per rule that flagged them (``stage1``/``stage2``, when
        the flows say); ``features``: how often each feature was named in their explanations,
        most often first; ``context_features``: the context features among them.
    explanation : str
        One readable sentence.
    flow_indices : list of int
        Stream positions (0-based, counted over every flow handed to the grouper) of the
        first ``max_flow_indices`` flagged flows; ``flow_indices_truncated`` when there were
        more.
    calibrated : bool
        Whether ``rate`` comes from a calibration.
    rate : float or None
        False incidents per benign host-day that score at least as high (calibrated only).
    rate_resolution : float or None
        The calibration's smallest nonzero rate: a ``rate`` of 0 means "below this".
    evicted : bool
        Closed early because the budget of open incidents was full.
    """

    id: str
    key: str
    source: str
    destination: str | None
    start: float
    end: float
    n_flows: int
    n_flagged: int
    n_destinations: int
    n_ports: int
    top_destinations: list[list[Any]]
    top_ports: list[list[Any]]
    score: float
    max_flow_score: float
    evidence: dict[str, Any]
    explanation: str
    flow_indices: list[int]
    flow_indices_truncated: bool = False
    distinct_capped: bool = False
    calibrated: bool = False
    rate: float | None = None
    rate_resolution: float | None = None
    evicted: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: plain numbers, strings and lists, ``start_utc`` and ``end_utc``
        added as ISO 8601 text."""
        out = asdict(self)
        out["start_utc"] = iso_time(self.start)
        out["end_utc"] = iso_time(self.end)
        out["duration_s"] = self.duration
        return out
