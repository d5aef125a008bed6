"""The sensor's output side: every scored batch, corrupt record and incident goes out here.

:class:`Delivery` writes alerts (and every flow with ``all_flows``) as ECS events, hands the
scored flows to the incident grouper when there is one (the one place it plugs in), keeps
the counts and metrics, reports corrupt records (rate-limited) and writes a drift verdict every
so many flows or seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd

from latent_sculpting.io.encoding import FlowBatch
from latent_sculpting.monitor.incident_io import incident_frame
from latent_sculpting.serve.scoring import Scorer
from latent_sculpting.serve.watch.ecs import EventWriter, flow_events, incident_event
from latent_sculpting.serve.watch.metrics import WatchMetrics

__all__ = ["Delivery", "IncidentGrouper"]

#: Corrupt records reported one by one; after that, one line per this many.
REPORT_EACH = 20
REPORT_EVERY = 1000


class IncidentGrouper(Protocol):
    """What the loop needs of an incident grouper
    (``latent_sculpting.monitor.incidents.IncidentGrouper``): ``add`` takes the scored flows
    as :func:`~latent_sculpting.monitor.incident_io.incident_frame` gives them (the one rule
    ``sculpt score``, ``sculpt incidents`` and the service read them by, so that an incident
    scores the same everywhere and a calibration holds here) and returns the incidents it
    closed;
    ``take_raised`` returns those that became reportable while open; ``flush`` closes and
    returns the rest. Each incident has ``to_dict()``."""

    def add(self, frame: pd.DataFrame) -> list: ...

    def take_raised(self) -> list: ...

    def flush(self) -> list: ...


class Delivery:
    """Where scored flows go.

    Parameters
    ----------
    writer : EventWriter
    metrics : WatchMetrics
    log : callable
        One line of text for the operator.
    model_path : str
        Named in every event.
    all_flows : bool
        Write every scored flow, not only the alerts.
    drift_every_flows, drift_every_seconds : int, float
        How often a drift verdict is written.
    incidents : IncidentGrouper, optional

    Attributes
    ----------
    counts : dict of str to int
        ``flows``, ``alerts``, ``incidents``, ``corrupt`` so far.
    """

    def __init__(
        self,
        writer: EventWriter,
        metrics: WatchMetrics,
        log: Callable[[str], None],
        *,
        model_path: str,
        all_flows: bool = False,
        drift_every_flows: int = 100_000,
        drift_every_seconds: float = 600.0,
        incidents: IncidentGrouper | None = None,
    ) -> None:
        self.writer, self.metrics, self.log = writer, metrics, log
        self.model_path, self.all_flows = model_path, all_flows
        self.drift_every = (drift_every_flows, drift_every_seconds)
        self.incidents = incidents
        self.counts = dict.fromkeys(("flows", "alerts", "incidents", "corrupt"), 0)
        self._since_drift = (0, time.monotonic())

    def corrupt(self, origin: str, line: int, error: Exception) -> None:
        self.counts["corrupt"] += 1
        self.metrics.corrupt.inc()
        n = self.counts["corrupt"]
        detail = str(error).replace(f"{origin}, row 1, ", f"{origin}, ")
        if detail.startswith(origin):
            detail = detail[len(origin) :].lstrip(":, ")
        if n <= REPORT_EACH or n % REPORT_EVERY == 0:
            more = f" ({n:,} so far)" if n > REPORT_EACH else ""
            self.log(f"corrupt record set aside{more}: {origin}, line {line}: {detail}")
            self.writer.write(
                time.time(),
                {
                    "event.kind": "pipeline_error",
                    "event.dataset": "latent_sculpting.input",
                    "error.message": detail,
                    "log.file.path": origin,
                    "latent_sculpting": {"line": line, "corrupt_records": n},
                    "message": f"corrupt record set aside: {origin}, line {line}",
                },
            )

    def deliver(self, scorer: Scorer, batch: FlowBatch, endpoints: pd.DataFrame) -> None:
        """Score one batch with ``scorer`` and send it everywhere: alerts, incidents, metrics,
        drift."""
        scored = scorer.score(batch)
        flagged = scored["is_attack"].to_numpy(dtype=bool)
        rows = np.arange(len(scored)) if self.all_flows else np.flatnonzero(flagged)
        events = flow_events(
            scored,
            endpoints,
            rows=rows,
            threshold=float(scorer.model.threshold_),
            model=self.model_path,
        )
        for stamp, fields in events:
            self.writer.write(stamp, fields)
        self.counts["flows"] += len(scored)
        self.counts["alerts"] += int(flagged.sum())
        self.metrics.flows.inc(len(scored))
        self.metrics.alerts.inc(int(flagged.sum()))
        if self.incidents is not None:
            frame = incident_frame(scored, scorer.spec.format)
            closed = self.incidents.add(frame)
            self._write_incidents(self.incidents.take_raised(), phase="start")
            self._write_incidents(closed, phase="end")
        self.drift_verdict(scorer)
        # A batch's lines reach the reader together, within the batch's latency bound.
        self.writer.flush()

    def finish(self, scorer: Scorer) -> None:
        """Close the incidents still open, write a last drift verdict, flush the output."""
        if self.incidents is not None:
            self._write_incidents(self.incidents.flush(), phase="end")
        self.drift_verdict(scorer, force=True)
        self.writer.flush()

    def _write_incidents(self, incidents: list, *, phase: str) -> None:
        """One event per incident: ``start`` when it is raised while open, ``end`` when it
        closes. Every incident reported at its close was raised first (one rule decides both),
        so the raised ones are the ones counted."""
        for incident in incidents:
            stamp, fields = incident_event(incident.to_dict(), model=self.model_path, phase=phase)
            self.writer.write(stamp, fields)
        counted = len(incidents) if phase == "start" else 0
        self.counts["incidents"] += counted
        self.metrics.incidents.inc(counted)

    def drift_verdict(self, scorer: Scorer, *, force: bool = False) -> None:
        """A drift verdict (stderr and an ECS metric event) when one is due, or ``force``."""
        monitor = scorer.drift
        flows, since = self._since_drift
        total = self.counts["flows"]
        due = total - flows >= self.drift_every[0] or (
            time.monotonic() - since >= self.drift_every[1]
        )
        if monitor is None or total == flows or not (due or force):
            return
        self._since_drift = (total, time.monotonic())
        report = monitor.report().to_dict()
        self.metrics.drift.set(1 if report["warning"] else 0)
        what = "drift" if report["drifted"] else "many flows flagged" if report["warning"] else ""
        line = f"drift check (last {report['n_flows']:,} flows): {report['consequence']}"
        self.log(f"warning: {what}: {line}" if what else line)
        self.writer.write(
            time.time(),
            {
                "event.kind": "metric",
                "event.dataset": "latent_sculpting.drift",
                "message": report["consequence"],
                "latent_sculpting": {
                    "drift": {
                        key: report[key]
                        for key in (
                            "warning",
                            "drifted",
                            "flag_rate_exceeded",
                            "reasons",
                            "n_flows",
                            "n_flagged",
                            "flagged_share",
                            "target_fpr",
                        )
                    }
                },
            },
        )
