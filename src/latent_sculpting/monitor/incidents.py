"""Incidents: flagged flows grouped by source host (or host pair) and time gap.

A per-flow detector at a 1 % false-alarm rate raises 100 k alerts a day on a network of 10 M
flows; a port scan or a password-guessing run is hundreds of them. :class:`IncidentGrouper`
turns a stream of scored flows into :class:`Incident` objects, one per source (or source and
destination) and burst of flagged flows: a flagged flow of a key joins the key's open incident
when it comes at most ``gap_s`` seconds after the incident's latest flagged flow, and opens a
new one otherwise. An incident closes once the stream's clock (the latest flow time seen) has
passed its latest flagged flow by more than ``gap_s + lateness_s``.

A live sensor cannot wait for that: a scan that goes on for an hour is an incident from its
first minutes. :meth:`IncidentGrouper.take_raised` gives each incident once, as soon as it is
reportable (``min_flagged`` flagged flows and, with a calibration's target, a score at the
threshold), while it is still open; it is given again when it closes, with the same ``id``.

The grouping depends only on the sequence of flows, never on how the stream is cut into
batches: the same flows in one batch or in many give the same incidents, in the same order.
Memory is bounded by ``max_open`` open incidents; opening one more evicts (closes early) the
incident whose deadline is nearest, and evictions are counted.

An incident's ``score`` is the evidence of its flagged flows: the sum over them of
``-log10(p_value)`` when the scored flows carry conformal p-values (``sculpt score`` writes
them), else their number. With ``window_s`` it is the most evidence its flagged flows gather
within any ``window_s`` seconds instead: a benign host that trips the detector now and then
keeps one incident open for as long as it is busy, and its whole-incident sum grows with that
time, so a calibration on long captures sets the bar by the busiest host's hours, above what a
scan gathers in its first half minute. A windowed score measures how dense the evidence is,
whatever the incident's length. Flows of one host are not independent, so the score is not read as a
probability: :mod:`latent_sculpting.monitor.incident_calibration` measures how often benign
hosts reach it, on held-out benign traffic, and gives each incident its rate of false
incidents per benign host-day.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from latent_sculpting.monitor.incident_record import Incident
from latent_sculpting.monitor.incident_text import (
    check_frame,
    explain_incident,
    port_value,
    reason_features,
)

__all__ = [
    "GROUP_KEYS",
    "Incident",
    "IncidentConfig",
    "IncidentGrouper",
]

#: What flows are grouped by: their source host, or their (source, destination) pair.
GROUP_KEYS = ("source", "pair")
#: The smallest p-value counted, so that one flow's evidence is finite.
P_FLOOR = 1e-12
#: A windowed score sums evidence in bins of ``window_s / WINDOW_BINS`` seconds, so that an
#: open incident keeps at most this many (plus one) bins whatever its flow rate.
WINDOW_BINS = 60

_CONTEXT_PREFIX = "ctx_"


@dataclass(frozen=True)
class IncidentConfig:
    """How flagged flows are grouped into incidents.

    Parameters
    ----------
    gap_s : float, default 300.0
        A flagged flow more than this many seconds after the latest flagged flow of its key
        starts a new incident.
    key : {"source", "pair"}, default "source"
        Group by source host, or by (source, destination) host pair.
    min_flagged : int, default 1
        Incidents with fewer flagged flows are dropped when they close (counted).
    lateness_s : float, default 0.0
        Extra seconds an incident stays open for flows that arrive out of time order (Zeek
        logs a connection when it ends, so its start time can lag the log's clock).
    max_open : int, default 10000
        Open incidents kept at most; one more evicts the one whose deadline is nearest.
    max_flow_indices : int, default 1000
        Stream positions of flagged flows kept per incident (the first ones).
    max_distinct : int, default 65536
        Distinct destinations and ports counted per incident; beyond, "at least".
    target_incidents : float or None, default None
        With a calibration: report only incidents whose score benign hosts reach at most this
        often (false incidents per benign host-day); the others are counted as suppressed.
    window_s : float or None, default None
        Score an incident by the most evidence its flagged flows gather within any
        ``window_s`` seconds (counted in bins of ``window_s / 60``), not by all of it (module
        docstring). None: all of it.
    """

    gap_s: float = 300.0
    key: str = "source"
    min_flagged: int = 1
    lateness_s: float = 0.0
    max_open: int = 10_000
    max_flow_indices: int = 1000
    max_distinct: int = 65_536
    target_incidents: float | None = None
    window_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("gap_s", "lateness_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number of seconds, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        if self.key not in GROUP_KEYS:
            raise ValueError(f"key must be one of {GROUP_KEYS}, got {self.key!r}")
        for name in ("min_flagged", "max_open", "max_flow_indices", "max_distinct"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        target = self.target_incidents
        if target is not None and (
            isinstance(target, bool)
            or not isinstance(target, int | float)
            or not math.isfinite(target)
            or target < 0
        ):
            raise ValueError(f"target_incidents must be a number >= 0, got {target!r}")
        window = self.window_s
        if window is not None and (
            isinstance(window, bool)
            or not isinstance(window, int | float)
            or not math.isfinite(window)
            or window <= 0
        ):
            raise ValueError(f"window_s must be a number of seconds > 0, got {window!r}")

    def grouping(self) -> dict[str, Any]:
        """The settings an incident's score depends on (a calibration must match them).
        ``window_s`` appears only when set, so calibrations measured before it existed (whole
        incidents) still match the same grouping."""
        out: dict[str, Any] = {
            "gap_s": float(self.gap_s),
            "key": self.key,
            "min_flagged": self.min_flagged,
            "lateness_s": float(self.lateness_s),
        }
        if self.window_s is not None:
            out["window_s"] = float(self.window_s)
        return out


class _Open:
    """The growing state of one open incident."""

    __slots__ = (
        "channels",
        "deadline",
        "destinations",
        "end",
        "evidence",
        "features",
        "first",
        "indices",
        "key",
        "max_score",
        "n_flagged",
        "bins",
        "n_flows",
        "pending",
        "ports",
        "raised",
        "seq",
        "start",
        "window_evidence",
    )

    def __init__(self, key: tuple[str, str | None], seq: int, time: float) -> None:
        self.key, self.seq = key, seq
        # The id hashes the first flagged flow's time: an out-of-order flow may move ``start``
        # earlier after the incident was raised, and the id must not change with it.
        self.start = self.end = self.first = time
        self.raised = False
        self.n_flows = self.n_flagged = self.pending = 0
        self.evidence = 0.0
        # Windowed scores only: evidence per time bin of the current window, and its sum.
        self.bins: dict[int, float] = {}
        self.window_evidence = 0.0
        self.max_score = -math.inf
        self.destinations: Counter = Counter()
        self.ports: Counter = Counter()
        self.channels: Counter = Counter()
        self.features: Counter = Counter()
        self.indices: list[int] = []
        self.deadline = 0.0


class IncidentGrouper:
    """Groups a stream of scored flows into incidents (module docstring).

    Parameters
    ----------
    config : IncidentConfig, optional
        The defaults when None.
    calibration : IncidentCalibration, optional
        Gives each incident its ``rate`` and, with ``config.target_incidents``, the score
        below which incidents are suppressed. Its grouping must equal ``config``'s.

    Attributes
    ----------
    stats : dict of str to int
        ``flows``, ``flagged``, ``opened``, ``raised`` (reportable while open),
        ``closed`` (returned), ``evicted``,
        ``below_min_flagged`` and ``suppressed`` (closed, not returned), ``late_flows``
        (flows older than the clock minus ``gap_s + lateness_s``: grouped all the same, but
        their incident may already have closed).
    threshold : float or None
        The incident score reported at least, from the calibration and the target.
    """

    def __init__(self, config: IncidentConfig | None = None, calibration: Any = None) -> None:
        self.config = IncidentConfig() if config is None else config
        self.calibration = calibration
        self.threshold = None
        if calibration is not None:
            calibration.check_grouping(self.config)
            if self.config.target_incidents is not None:
                self.threshold = calibration.threshold(self.config.target_incidents)
        self._open: dict[tuple[str, str | None], _Open] = {}
        self._heap: list[tuple[float, int, tuple[str, str | None]]] = []
        self._clock = -math.inf
        self._seq = 0
        self._position = 0
        self._raised: list[Incident] = []
        self.stats = dict.fromkeys(
            (
                "flows",
                "flagged",
                "opened",
                "raised",
                "closed",
                "evicted",
                "below_min_flagged",
                "suppressed",
                "late_flows",
            ),
            0,
        )

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def open_incidents(self) -> list[Incident]:
        """Snapshots of the open incidents, by start time (they stay open)."""
        states = sorted(self._open.values(), key=lambda s: (s.start, s.seq))
        return [self._incident(s, evicted=False) for s in states]

    def add(self, frame: pd.DataFrame) -> list[Incident]:
        """Group one batch of scored flows; the incidents that closed with it.

        Raises
        ------
        ValueError
            If a column is missing, or a time or score is not a finite number, or ``flagged``
            is not boolean (the row named, counted over the whole stream).
        """
        columns = check_frame(frame, self._position)
        n = len(frame)
        closed: list[Incident] = []
        if n == 0:
            return closed
        time, flagged = columns["time"], columns["flagged"]
        clock = np.maximum.accumulate(np.maximum(time, self._clock))
        window = self.config.gap_s + self.config.lateness_s
        before = np.concatenate(([self._clock], clock[:-1]))
        self.stats["late_flows"] += int((time < before - window).sum())
        sources = columns["source"]
        wanted = set(sources[flagged].tolist()) | {k[0] for k in self._open}
        relevant = np.flatnonzero(pd.Series(sources).isin(wanted).to_numpy())
        pair = self.config.key == "pair"
        destinations = columns["destination"]
        for i in relevant.tolist():
            self._close_until(clock[i] - window, closed)
            key = (sources[i], destinations[i] if pair else None)
            state = self._open.get(key)
            if not flagged[i]:
                if state is not None:
                    if time[i] <= state.end:
                        state.n_flows += 1
                    else:
                        state.pending += 1
                continue
            if state is None:
                if len(self._open) >= self.config.max_open:
                    self._evict(closed)
                state = _Open(key, self._seq, float(time[i]))
                self._seq += 1
                self._open[key] = state
                self.stats["opened"] += 1
            self._join(state, i, columns)
            if not state.raised and self._reportable(state):
                state.raised = True
                self.stats["raised"] += 1
                self._raised.append(self._incident(state, evicted=False))
            state.deadline = state.end + window
            heapq.heappush(self._heap, (state.deadline, state.seq, key))
        self._close_until(clock[-1] - window, closed)
        self._clock = float(clock[-1])
        self._position += n
        self.stats["flows"] += n
        self.stats["flagged"] += int(flagged.sum())
        return closed

    def take_raised(self) -> list[Incident]:
        """The incidents that became reportable since the last call, as they stood then (each
        once; it closes later with the same ``id``), in the order they did."""
        raised, self._raised = self._raised, []
        return raised

    def flush(self) -> list[Incident]:
        """Close every open incident (end of the stream); the clock is kept."""
        closed: list[Incident] = []
        self._close_until(math.inf, closed)
        return closed

    # ------------------------------------------------------------------ internals

    def _join(self, state: _Open, i: int, columns: dict[str, np.ndarray]) -> None:
        t = float(columns["time"][i])
        state.n_flows += 1 + state.pending
        state.pending = 0
        state.n_flagged += 1
        state.start = min(state.start, t)
        state.end = max(state.end, t)
        p = columns["p_value"]
        weight = 1.0 if p is None else -math.log10(max(float(p[i]), P_FLOOR))
        if self.config.window_s is None:
            state.evidence += weight
        else:
            self._add_windowed(state, t, weight)
        state.max_score = max(state.max_score, float(columns["score"][i]))
        cap = self.config.max_distinct
        for counter, value in (
            (state.destinations, columns["destination"][i]),
            (state.ports, port_value(columns["destination_port"][i])),
        ):
            if value in counter or len(counter) < cap:
                counter[value] += 1
        if columns["flagged_by"] is not None and columns["flagged_by"][i]:
            state.channels[str(columns["flagged_by"][i])] += 1
        if columns["reason"] is not None:
            state.features.update(reason_features(columns["reason"][i]))
        if len(state.indices) < self.config.max_flow_indices:
            state.indices.append(self._position + i)

    def _add_windowed(self, state: _Open, t: float, weight: float) -> None:
        """Add a flagged flow's evidence to its bin; the score is the largest sum over the
        latest :data:`WINDOW_BINS` bins seen. A flow older than the current window (out of
        time order) adds to no window: it depends only on the sequence of flows."""
        width = self.config.window_s / WINDOW_BINS
        latest = math.floor(state.end / width)
        oldest = latest - WINDOW_BINS + 1
        stale = [b for b in state.bins if b < oldest]
        for b in stale:
            state.window_evidence -= state.bins.pop(b)
        if not state.bins:
            state.window_evidence = 0.0  # no rounding left over from removed bins
        b = math.floor(t / width)
        if b >= oldest:
            state.bins[b] = state.bins.get(b, 0.0) + weight
            state.window_evidence += weight
        state.evidence = max(state.evidence, state.window_evidence)

    def _reportable(self, state: _Open) -> bool:
        """Enough flagged flows, and with a target, a score at the threshold (the one rule
        for raising an open incident and for reporting a closed one)."""
        if state.n_flagged < self.config.min_flagged:
            return False
        return self.threshold is None or state.evidence >= self.threshold

    def _close_until(self, limit: float, closed: list[Incident]) -> None:
        while self._heap and self._heap[0][0] < limit:
            deadline, seq, key = heapq.heappop(self._heap)
            state = self._open.get(key)
            if state is not None and state.seq == seq and state.deadline == deadline:
                self._finish(key, closed, evicted=False)

    def _evict(self, closed: list[Incident]) -> None:
        while self._heap:
            deadline, seq, key = heapq.heappop(self._heap)
            state = self._open.get(key)
            if state is not None and state.seq == seq and state.deadline == deadline:
                self.stats["evicted"] += 1
                self._finish(key, closed, evicted=True)
                return

    def _finish(
        self, key: tuple[str, str | None], closed: list[Incident], *, evicted: bool
    ) -> None:
        state = self._open.pop(key)
        if not self._reportable(state):
            below = state.n_flagged < self.config.min_flagged
            self.stats["below_min_flagged" if below else "suppressed"] += 1
            return
        incident = self._incident(state, evicted=evicted)
        self.stats["closed"] += 1
        closed.append(incident)

    def _incident(self, state: _Open, *, evicted: bool) -> Incident:
        source, destination = state.key
        cap = self.config.max_distinct
        capped = len(state.destinations) >= cap or len(state.ports) >= cap
        features = _ranked(state.features)
        evidence = {
            "channels": dict(_ranked(state.channels)),
            "features": [[name, count] for name, count in features],
            "context_features": [name for name, _ in features if name.startswith(_CONTEXT_PREFIX)],
        }
        ident = hashlib.sha256(
            f"{self.config.key}|{source}|{destination}|{state.first!r}".encode()
        ).hexdigest()[:16]
        incident = Incident(
            id=ident,
            key=self.config.key,
            source=source,
            destination=destination,
            start=state.start,
            end=state.end,
            n_flows=state.n_flows,
            n_flagged=state.n_flagged,
            n_destinations=len(state.destinations),
            n_ports=len(state.ports),
            top_destinations=[[v, c] for v, c in _ranked(state.destinations)[:5]],
            top_ports=[[v, c] for v, c in _ranked(state.ports)[:5]],
            score=state.evidence,
            max_flow_score=state.max_score,
            evidence=evidence,
            explanation="",
            flow_indices=list(state.indices),
            flow_indices_truncated=state.n_flagged > len(state.indices),
            distinct_capped=capped,
            calibrated=self.calibration is not None,
            rate=None if self.calibration is None else self.calibration.rate(state.evidence),
            rate_resolution=None if self.calibration is None else self.calibration.resolution,
            evicted=evicted,
        )
        incident.explanation = explain_incident(incident)
        return incident


def _ranked(counter: Counter) -> list[tuple[Any, int]]:
    """Most frequent first, ties by value's text (deterministic)."""
    return sorted(counter.items(), key=lambda item: (-item[1], str(item[0])))
