"""The sensor's loop: micro-batches with a latency bound, set-aside corrupt records, signals.

A source thread (:mod:`.sources`) hands over undecoded records; the loop keeps them pending
and scores them when ``batch_rows`` flows are pending or the oldest has waited ``max_delay``
seconds, whichever comes first. At most ``max_pending`` flows wait at any time: a lossless
source then waits too, a live capture sheds and counts (:attr:`Watcher.shed`).

A batch that does not decode or encode is split in halves until the records that fail are
alone; each is counted, reported (stderr, and an ECS ``pipeline_error`` event) and set aside,
and the others are scored. One bad line costs a few extra decodes of its batch, not the stream.

Every scored batch goes to one place, :meth:`Watcher.deliver`: alerts (and every flow with
``all_flows``), the incident grouper when there is one, metrics, the drift verdict.

Signals (main thread only): SIGHUP reloads the model file between batches (the flows pending
then are scored by the new model; a file that does not load, or needs columns the source does
not have, is refused and the old model kept); SIGTERM and SIGINT stop reading, score what is
pending, flush the grouper and the output, and :meth:`Watcher.run` returns normally.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport
from latent_sculpting.io.encoding import FlowBatch, check_columns, encode
from latent_sculpting.io.formats import get_format
from latent_sculpting.serve.scoring import Scorer, drift_monitor
from latent_sculpting.serve.watch.delivery import Delivery, IncidentGrouper
from latent_sculpting.serve.watch.ecs import EventWriter, endpoint_frame
from latent_sculpting.serve.watch.metrics import WatchMetrics
from latent_sculpting.serve.watch.sources import Arrival, Decoder, Source

__all__ = ["WatchConfig", "Watcher"]


@dataclass
class WatchConfig:
    """How the loop batches, reports and bounds its memory.

    Attributes
    ----------
    batch_rows : int, default 1024
        Score as soon as this many flows are pending.
    max_delay : float, default 0.5
        Seconds the oldest pending flow may wait before its batch is scored anyway.
    max_pending : int, default 65536
        Flows read and not yet scored, at most (at least ``batch_rows``).
    drift_every_flows : int, default 100000
        A drift verdict after this many flows ...
    drift_every_seconds : float, default 600
        ... or this many seconds with flows, whichever comes first.
    drift_window : int, default 10000
        The verdict covers the last this many flows.
    explain : bool, default True
        Explain each alert (the model's benign profile).
    all_flows : bool, default False
        Write every scored flow (``event.kind: event``), not only the alerts.
    """

    batch_rows: int = 1024
    max_delay: float = 0.5
    max_pending: int = 65_536
    drift_every_flows: int = 100_000
    drift_every_seconds: float = 600.0
    drift_window: int = 10_000
    explain: bool = True
    all_flows: bool = False

    def check(self) -> None:
        if self.batch_rows < 1:
            raise ValueError(f"--batch-rows must be >= 1, got {self.batch_rows}")
        if not self.max_delay > 0:
            raise ValueError(f"--max-delay-ms must be > 0, got {self.max_delay * 1000:g}")
        if self.max_pending < self.batch_rows:
            raise ValueError(
                f"--max-pending ({self.max_pending}) must be at least --batch-rows "
                f"({self.batch_rows})"
            )
        if self.drift_every_flows < 1 or not self.drift_every_seconds > 0:
            raise ValueError("drift verdicts need a positive number of flows and seconds")


class Watcher:
    """Scores a source's flows as they come, until it ends or a signal stops it.

    Parameters
    ----------
    model_path : path
        The model file (read again on SIGHUP).
    source : Source
    writer : EventWriter
    config : WatchConfig, optional
    metrics : WatchMetrics, optional
        Default: a fresh set (not served).
    incidents : IncidentGrouper, optional
        Groups scored flows into incidents, written as ECS alerts.
    load : callable, default ``LatentSculpting.load``
        Reads a model file.
    log : callable, default print to stderr
        Takes one line of text for the operator.
    """

    def __init__(
        self,
        model_path: str | Path,
        source: Source,
        writer: EventWriter,
        *,
        config: WatchConfig | None = None,
        metrics: WatchMetrics | None = None,
        incidents: IncidentGrouper | None = None,
        load: Callable[[str], Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = WatchConfig() if config is None else config
        self.config.check()
        self.model_path = str(model_path)
        self.source, self.writer = source, writer
        self.metrics = WatchMetrics() if metrics is None else metrics
        if load is None:
            from latent_sculpting.model.estimator import LatentSculpting

            load = LatentSculpting.load
        self.load = load
        self.log = log or (lambda line: print(f"sculpt watch: {line}", file=sys.stderr))
        self._incidents = incidents
        self.scorer = self._scorer(self._load())
        self._check_source(self.scorer)
        if not self._calibration_holds(self.scorer.model):
            raise ValueError(
                f"the incident calibration was measured with another model than "
                f"{self.model_path} (or before it was adapted): calibrate it again with "
                "`sculpt incidents`"
            )
        self.report = CleaningReport()
        self.delivery = Delivery(
            writer,
            self.metrics,
            self.log,
            model_path=self.model_path,
            all_flows=self.config.all_flows,
            drift_every_flows=self.config.drift_every_flows,
            drift_every_seconds=self.config.drift_every_seconds,
            incidents=incidents,
        )
        self.counts = self.delivery.counts
        self.counts.update(shed=0, reloads=0, reloads_refused=0)
        self._room = threading.Condition()
        self._arrivals: deque[Arrival] = deque()
        self._queued = 0
        self._stop = threading.Event()
        self._reload = False
        self._source_done = threading.Event()
        self._source_error: BaseException | None = None

    # -- the model ------------------------------------------------------------------------

    def _load(self) -> Any:
        """The model file, loaded from a private copy.

        A model file's tensors stay mapped from the file they were loaded from; a file copied
        over in place (``cp new.sculpt model.sculpt``) would then be truncated under the
        running sensor, which dies of SIGBUS. The copy, unlinked once loaded, is never
        written to again.
        """
        with tempfile.TemporaryDirectory(prefix="sculpt-watch-model-") as folder:
            copy = Path(folder) / Path(self.model_path).name
            shutil.copyfile(self.model_path, copy)
            try:
                return self.load(str(copy))
            except ValueError as error:
                raise ValueError(str(error).replace(str(copy), self.model_path)) from None

    def _scorer(self, model: Any) -> Scorer:
        drift = drift_monitor(model, window=self.config.drift_window)
        # A model's first call pays for torch's and numba's first runs (0.3-0.6 s measured):
        # paid here, before any flow waits, not as the first batch's lag (it was the one
        # second over 1 s in the replay benchmark).
        n = getattr(model, "n_features_in_", None)
        if isinstance(n, int) and n > 0:
            model.decision_function(np.zeros((2, n), dtype=np.float32))
        # ... and the first alert for the explainer's numba kernel (placing values on the
        # benign profile's quantile grid).
        profile = getattr(model, "benign_profile_", None)
        if self.config.explain and profile is not None:
            profile.position(np.zeros((2, len(profile.feature_names_)), dtype=np.float32))
        return Scorer(model, explain=self.config.explain, drift=drift)

    def _calibration_holds(self, model: Any) -> bool:
        """Whether the incident grouper's calibration (if any) was measured with ``model``."""
        calibration = getattr(self._incidents, "calibration", None)
        if calibration is None:
            return True
        try:
            calibration.check_model(model)
        except ValueError:
            return False
        return True

    def _check_source(self, scorer: Scorer) -> None:
        columns = self.source.columns()
        if columns is not None:
            check_columns(scorer.spec, columns, source=self.source.name)

    def request_reload(self) -> None:
        """Reload the model file before the next batch (what SIGHUP does)."""
        self._reload = True

    def request_stop(self) -> None:
        """Score what is pending and return (what SIGTERM and SIGINT do)."""
        self._stop.set()
        with self._room:
            self._room.notify_all()

    def _reload_model(self) -> None:
        self._reload = False
        try:
            scorer = self._scorer(self._load())
            self._check_source(scorer)
        except (ValueError, OSError) as error:
            self.counts["reloads_refused"] += 1
            self.metrics.reloads.labels(result="refused").inc()
            self.log(f"reload refused, the model in use is kept: {error}")
            return
        self.scorer = scorer
        self.counts["reloads"] += 1
        self.metrics.reloads.labels(result="loaded").inc()
        self.log(f"reloaded {self.model_path}; the {self._queued} flows pending are scored by it")
        if not self._calibration_holds(scorer.model):
            self.log(
                "the incident calibration was measured with the previous model: the "
                "incidents' rates and --target-incidents are its, until `sculpt incidents` "
                "measures this one and the sensor restarts"
            )

    # -- the source's side ------------------------------------------------------------------

    def _emit(self, arrival: Arrival) -> bool:
        limit = self.config.max_pending
        with self._room:
            if self.source.lossless:
                while self._queued and self._queued + len(arrival) > limit:
                    if self._stop.is_set():
                        return False
                    self._room.wait(0.1)
            elif self._queued + len(arrival) > limit:
                self.counts["shed"] += len(arrival)
                self.metrics.shed.inc(len(arrival))
                if self.counts["shed"] == len(arrival) or self.counts["shed"] % 10_000 < len(
                    arrival
                ):
                    self.log(
                        f"scoring does not keep up: {self.counts['shed']:,} flows shed so far "
                        "(sculpt_watch_shed_flows_total)"
                    )
                return False
            self._arrivals.append(arrival)
            self._queued += len(arrival)
            self.metrics.pending.set(self._queued)
            self._room.notify_all()
        return True

    def _read(self) -> None:
        try:
            self.source.run(self._emit, self._stop)
        except BaseException as error:  # noqa: BLE001 - handed to the loop, which raises it
            self._source_error = error
        finally:
            self._source_done.set()
            with self._room:
                self._room.notify_all()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Watch until the source ends or a signal stops it; the run's counts."""
        started = time.monotonic()
        reader = threading.Thread(target=self._read, name="sculpt-watch-source", daemon=True)
        with _signals(self):
            reader.start()
            self.log(f"watching {self.source.describe()} with {self.model_path}")
            while True:
                if self._reload:
                    self._reload_model()
                batch, done = self._next_batch()
                if batch:
                    self._score(batch)
                if done:
                    break
            # The source stops within a poll; one still inside a read must not be at shutdown.
            reader.join(timeout=5)
            self.source.close()
        self.delivery.finish(self.scorer)
        if self._source_error is not None and not isinstance(self._source_error, KeyboardInterrupt):
            raise self._source_error
        stats = self.source.stats()
        return {
            **self.counts,
            **stats,
            "stopped_by": "signal" if self._stop.is_set() else "end of input",
            "seconds": time.monotonic() - started,
            "cleaning": self.report.to_dict(),
        }

    def _next_batch(self) -> tuple[list[Arrival], bool]:
        """The arrivals to score now (possibly none) and whether the loop is done after them."""
        config = self.config
        with self._room:
            while True:
                if self._reload:  # reload first: the pending flows are scored by the new model
                    return [], False
                ending = self._stop.is_set() or self._source_done.is_set()
                if self._queued >= config.batch_rows or ending:
                    break
                if self._arrivals:
                    wait = self._arrivals[0].arrived + config.max_delay - time.monotonic()
                    if wait <= 0:
                        break
                else:
                    wait = 0.1
                # Short waits: a signal's flag is seen within 0.1 s.
                self._room.wait(min(wait, 0.1))
            batch, rows = [], 0
            while self._arrivals and rows < config.batch_rows:
                arrival = self._arrivals.popleft()
                batch.append(arrival)
                rows += len(arrival)
            self._queued -= rows
            self.metrics.pending.set(self._queued)
            self._room.notify_all()
            done = ending and not self._arrivals
        return batch, done

    def _score(self, arrivals: list[Arrival]) -> None:
        began = time.monotonic()
        groups: list[list[Arrival]] = []
        for arrival in arrivals:
            if groups and groups[-1][-1].decoder is arrival.decoder:
                groups[-1].append(arrival)
            else:
                groups.append([arrival])
        for group in groups:
            records = [r for a in group for r in a.records]
            lines = [n for a in group for n in a.lines]
            origin = group[0].origin
            found = self._decode(group[0].decoder, records, lines, origin)
            if found is not None:
                self.delivery.deliver(self.scorer, *found)
        now = time.monotonic()
        self.metrics.batch_seconds.observe(now - began)
        self.metrics.lag.set(now - min(a.arrived for a in arrivals))
        stats = self.source.stats()
        if "capture_drops" in stats:
            self.metrics.capture_drops.set(stats["capture_drops"])

    def _decode(
        self, decoder: Decoder, records: list, lines: list[int], origin: str
    ) -> tuple[FlowBatch, pd.DataFrame] | None:
        """The records as a batch and their endpoints; the records that fail are set aside."""
        spec = self.scorer.spec
        try:
            table = decoder.decode(records, spec, origin)
            # Values are replaced (and counted) only after every check of the batch passed.
            batch = encode(spec, table, source=origin, report=self.report)
            endpoints = endpoint_frame(table, get_format(spec.format))
        except (FlowInputError, pa.ArrowException) as error:
            if len(records) == 1:
                self.delivery.corrupt(origin, lines[0], error)
                return None
            half = len(records) // 2
            parts = [
                self._decode(decoder, records[:half], lines[:half], origin),
                self._decode(decoder, records[half:], lines[half:], origin),
            ]
            parts = [p for p in parts if p is not None]
            if not parts:
                return None
            if len(parts) == 1:
                return parts[0]
            (a, ea), (b, eb) = parts
            return _joined(a, b), pd.concat([ea, eb], ignore_index=True)
        return batch, endpoints


def _joined(a: FlowBatch, b: FlowBatch) -> FlowBatch:
    labels = None
    if a.labels is not None and b.labels is not None:
        labels = np.concatenate([a.labels, b.labels])
    return FlowBatch(
        np.concatenate([a.X, b.X]),
        a.feature_names,
        pa.concat_tables([a.identifiers, b.identifiers], promote_options="permissive"),
        labels,
    )


@contextlib.contextmanager
def _signals(watcher: Watcher) -> Iterator[None]:
    """SIGHUP -> reload, SIGTERM/SIGINT -> stop, while the watcher runs (main thread only)."""
    kept: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {
            signal.SIGHUP: lambda *_: watcher.request_reload(),
            signal.SIGTERM: lambda *_: watcher.request_stop(),
            signal.SIGINT: lambda *_: watcher.request_stop(),
        }
        for number, handler in handlers.items():
            kept[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)
