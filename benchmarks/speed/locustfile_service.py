"""Locust users for ``benchmarks/speed/bench_service.py load``: each posts prepared bodies of real
flows to ``POST /v1/score`` back to back.

The bodies come from the JSON file named by ``SCULPT_BENCH_BODIES`` (a list of texts, one request
body each), sent with the Content-Type ``SCULPT_BENCH_CONTENT_TYPE`` (default JSON), asking for
the answer type ``SCULPT_BENCH_ACCEPT`` (default JSON; ``text/csv`` for CSV answers), to the
path ``SCULPT_BENCH_PATH`` (default ``/v1/score``; ``/v1/score?explain=false`` turns explanations
off); ``SCULPT_BENCH_TOKEN``, when set, is sent as the bearer token. Run alone::

    locust -f benchmarks/speed/locustfile_service.py --headless -u 8 -r 8 -t 30s --host URL
"""

from __future__ import annotations

import itertools
import json
import os

from locust import FastHttpUser, constant, task

with open(os.environ["SCULPT_BENCH_BODIES"], encoding="utf-8") as _file:
    BODIES = [body.encode() for body in json.load(_file)]

HEADERS = {
    "Content-Type": os.environ.get("SCULPT_BENCH_CONTENT_TYPE", "application/json"),
    "Accept": os.environ.get("SCULPT_BENCH_ACCEPT", "application/json"),
}
PATH = os.environ.get("SCULPT_BENCH_PATH", "/v1/score")
if os.environ.get("SCULPT_BENCH_TOKEN"):
    HEADERS["Authorization"] = f"Bearer {os.environ['SCULPT_BENCH_TOKEN']}"


class ScoringClient(FastHttpUser):
    """Posts one body after another, without pause: the server's capacity is what is asked."""

    wait_time = constant(0)

    def on_start(self) -> None:
        # Users start at different bodies so that they do not send the same flows in step.
        self.bodies = itertools.islice(itertools.cycle(BODIES), id(self) % len(BODIES), None)

    @task
    def score(self) -> None:
        with self.client.post(
            PATH, data=next(self.bodies), headers=HEADERS, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
