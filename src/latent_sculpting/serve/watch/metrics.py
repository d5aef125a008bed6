"""The sensor's Prometheus metrics (prometheus-client), on their own registry.

=========================================== ======= ==========================================
metric                                      type    what
=========================================== ======= ==========================================
``sculpt_watch_flows_total``                counter flows scored
``sculpt_watch_alerts_total``               counter flows flagged (alert lines written)
``sculpt_watch_incidents_total``            counter incidents raised (written when reportable)
``sculpt_watch_corrupt_records_total``      counter records set aside as unreadable
``sculpt_watch_shed_flows_total``           counter flows a live capture had no room for
``sculpt_watch_capture_drops``              gauge   packets the kernel dropped (nfstream)
``sculpt_watch_pending_flows``              gauge   flows read, not yet scored
``sculpt_watch_lag_seconds``                gauge   read-to-scored time of the last batch's
                                                    oldest flow
``sculpt_watch_batch_seconds``              summary time to decode and score a batch
``sculpt_watch_drift``                      gauge   1 when the last drift verdict warns
``sculpt_watch_model_reloads_total``        counter SIGHUP reloads, by ``result``
=========================================== ======= ==========================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Summary, start_http_server

__all__ = ["WatchMetrics"]


class WatchMetrics:
    """The sensor's metrics; :meth:`serve` exposes them over HTTP.

    Attributes are the prometheus-client metric objects (see the module's table).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.flows = Counter("sculpt_watch_flows", "Flows scored", registry=r)
        self.alerts = Counter("sculpt_watch_alerts", "Flows flagged", registry=r)
        self.incidents = Counter("sculpt_watch_incidents", "Incidents raised", registry=r)
        self.corrupt = Counter(
            "sculpt_watch_corrupt_records", "Records set aside as unreadable", registry=r
        )
        self.shed = Counter(
            "sculpt_watch_shed_flows",
            "Flows a live capture had no room for (scoring did not keep up)",
            registry=r,
        )
        self.capture_drops = Gauge(
            "sculpt_watch_capture_drops", "Packets the kernel dropped (live capture)", registry=r
        )
        self.pending = Gauge("sculpt_watch_pending_flows", "Flows read, not scored", registry=r)
        self.lag = Gauge(
            "sculpt_watch_lag_seconds",
            "Seconds from reading the oldest flow of the last batch to its score",
            registry=r,
        )
        self.batch_seconds = Summary(
            "sculpt_watch_batch_seconds", "Seconds to decode and score a batch", registry=r
        )
        self.drift = Gauge(
            "sculpt_watch_drift", "1 when the last drift verdict warns, else 0", registry=r
        )
        self.reloads = Counter(
            "sculpt_watch_model_reloads", "Model reloads on SIGHUP", ["result"], registry=r
        )

    def serve(self, port: int, address: str = "127.0.0.1") -> None:
        """Expose ``/metrics`` on ``address:port`` from a daemon thread.

        Raises
        ------
        OSError
            If the port cannot be bound (in use, or below 1024 without the right).
        """
        if not 0 <= port <= 65535:
            raise ValueError(f"--metrics-port must be 0-65535, got {port}")
        start_http_server(port, addr=address, registry=self.registry)
