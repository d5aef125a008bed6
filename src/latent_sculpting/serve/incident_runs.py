"""Incidents of scored files: the grouping beside ``sculpt score``, and the measurement of an
incident calibration on held-out benign files.

Both read flows as ``sculpt score`` does (:func:`~latent_sculpting.io.table.iter_flow_batches`
and :class:`~latent_sculpting.serve.scoring.Scorer`) and group them with
:class:`~latent_sculpting.monitor.incidents.IncidentGrouper`. Each input file is its own stream:
the grouper is flushed between files, because the files of a run need not follow each other
in time (the captures of a data set), so no incident spans two files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent_sculpting.io.formats import get_format
from latent_sculpting.monitor.incident_calibration import (
    HostTime,
    IncidentCalibration,
    model_fingerprint,
)
from latent_sculpting.monitor.incident_io import IncidentLog, incident_columns, incident_frame
from latent_sculpting.monitor.incidents import IncidentConfig, IncidentGrouper

__all__ = ["IncidentSink", "measure_calibration"]


class IncidentSink:
    """Groups the batches ``sculpt score`` writes into incidents, written as JSON lines.

    Call it with each scored frame and the file it came from (in the order the rows are
    written: stream positions are then output rows, 0-based); :meth:`close` flushes the open
    incidents and publishes the file, :meth:`discard` deletes it.

    Parameters
    ----------
    model : LatentSculpting
        The scoring model (its format names the endpoint columns).
    path : path
        The JSON-lines file to write.
    config : IncidentConfig, optional
    calibration : IncidentCalibration, optional
        Checked against ``model`` and ``config``.
    """

    def __init__(
        self,
        model: Any,
        path: str | Path,
        config: IncidentConfig | None = None,
        calibration: IncidentCalibration | None = None,
    ) -> None:
        if calibration is not None:
            calibration.check_model(model)
        self.format = model.spec_.format
        if not get_format(self.format).endpoint_columns:
            incident_columns(self.format, [])  # raises, naming the format
        self.grouper = IncidentGrouper(config, calibration)
        self.log = IncidentLog(path)
        self._file: Path | None = None
        self._roles: tuple[dict[str, str], str] | None = None

    def __call__(self, scored: pd.DataFrame, source: Path) -> None:
        if source != self._file:
            self.log.write(self.grouper.flush())
            self._file = source
            self._roles = incident_columns(self.format, list(scored.columns))
        self.log.write(self.grouper.add(incident_frame(scored, self.format, self._roles)))

    def close(self) -> dict[str, Any]:
        """Flush, publish the file; the summary (``file``, ``incidents``, ``calibrated``,
        ``threshold``, ``target_incidents`` and the grouper's counts)."""
        self.log.write(self.grouper.flush())
        path = self.log.close()
        return {
            "file": str(path),
            "incidents": self.log.written,
            "calibrated": self.grouper.calibrated,
            "threshold": self.grouper.threshold,
            "target_incidents": self.grouper.config.target_incidents,
            "grouping": self.grouper.config.grouping(),
            **self.grouper.stats,
        }

    def discard(self) -> None:
        self.log.discard()


def measure_calibration(
    model: Any,
    inputs: str | Path | Sequence[str | Path],
    *,
    config: IncidentConfig | None = None,
    window_s: float = 3600.0,
    batch_rows: int = 65_536,
) -> IncidentCalibration:
    """Score held-out benign flows, group them, and count the false incidents per benign
    host-day (:mod:`~latent_sculpting.monitor.incident_calibration`).

    Labelled files may hold attacks: a row not labelled benign is left out, and so is every
    flow of a source host that sent one (an infected host's other flows are not a benign
    host's); both are counted in ``excluded``. The files must not have been used to train
    ``model``: scores of its own training flows would make benign hosts look quieter.

    Parameters
    ----------
    model : LatentSculpting
    inputs : path or list of paths
        Flow files (or folders) with start times and endpoints.
    config : IncidentConfig, optional
        The grouping to calibrate (``target_incidents`` plays no part).
    window_s : float, default 3600.0
        Length of a host-window.
    batch_rows : int, default 65536

    Raises
    ------
    ValueError
        If the format has no time and endpoints, no benign host is left, or ``window_s`` is
        not positive.
    """
    from latent_sculpting.io.readers import list_flow_files
    from latent_sculpting.io.table import iter_flow_batches
    from latent_sculpting.serve.scoring import Scorer

    if not window_s > 0:
        raise ValueError(f"window_s must be positive, got {window_s!r}")
    config = IncidentConfig() if config is None else config
    # No budget evictions and no target: every benign incident is counted as it is.
    config = IncidentConfig(**config.grouping(), max_open=1 << 30)
    scorer = Scorer(model, explain=False)
    spec = scorer.spec
    unlabelled = set(get_format(spec.format).unlabelled_labels)
    files = list_flow_files(inputs)
    scores: dict[str, list[float]] = {}
    host_time = HostTime(window_s)
    attackers: set[str] = set()
    excluded = {"attack_flows": 0, "unlabelled_flows": 0, "attack_hosts": 0}
    counts: dict[str, list[int]] = {}
    for path in files:
        grouper = IncidentGrouper(config)
        roles = None
        found = []
        span = [np.inf, -np.inf]
        for batch in iter_flow_batches(spec, path, batch_rows):
            if not len(batch):
                continue
            scored = scorer.score(batch)
            roles = roles or incident_columns(spec.format, list(scored.columns))
            frame = incident_frame(scored, spec.format, roles)
            times = frame["time"].to_numpy(dtype=np.float64)
            if np.isfinite(times).any():
                span = [min(span[0], np.nanmin(times)), max(span[1], np.nanmax(times))]
            if batch.labels is not None:
                labels = batch.labels.astype(str)
                benign = labels == spec.benign_label
                unknown = np.isin(labels, list(unlabelled))
                excluded["unlabelled_flows"] += int(unknown.sum())
                excluded["attack_flows"] += int((~benign & ~unknown).sum())
                attackers.update(frame["source"][~benign & ~unknown].tolist())
                frame = frame[benign]
            per_host = frame.groupby("source", sort=False)["flagged"].agg(["size", "sum"])
            for source, (n, k) in zip(per_host.index, per_host.to_numpy().tolist(), strict=True):
                total = counts.setdefault(source, [0, 0])
                total[0] += int(n)
                total[1] += int(k)
            host_time.add_flows(frame["source"].tolist(), frame["time"])
            found += grouper.add(frame)
        found += grouper.flush()
        # The span is of every flow of the capture, the attacks' too: the hosts were watched
        # for all of it.
        host_time.end_capture((span[0], span[1]))
        for incident in found:
            scores.setdefault(incident.source, []).append(incident.score)
    hosts = host_time.hosts()
    excluded["attack_hosts"] = len(attackers & hosts)
    benign_hosts = sorted(hosts - attackers)
    n_windows, seconds = host_time.windows(attackers), host_time.seconds(attackers)
    if not n_windows:
        raise ValueError(
            f"no benign host left to calibrate on in {', '.join(str(f) for f in files)} "
            f"(left out: {excluded})"
        )
    if not seconds > 0:
        raise ValueError(
            f"the benign flows of {', '.join(str(f) for f in files)} all start at one instant: "
            "no host-time to count false incidents over"
        )
    kept = sorted(s for h in benign_hosts for s in scores.get(h, []))
    return IncidentCalibration(
        grouping=config.grouping(),
        model=model_fingerprint(model),
        scores=tuple(float(s) for s in kept),
        host_days=seconds / 86_400.0,
        hosts=len(benign_hosts),
        windows=n_windows,
        window_s=float(window_s),
        flows=sum(counts[h][0] for h in benign_hosts),
        flagged=sum(counts[h][1] for h in benign_hosts),
        excluded=excluded,
        sources=[f.name for f in files],
    )
