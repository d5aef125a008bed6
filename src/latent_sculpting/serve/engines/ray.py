"""Scoring many flow files on a Ray cluster: the ``--engine ray`` of ``sculpt score``.

A pool of actors, one CPU each, loads the model once per actor and scores whole files through
the local engine's own path (:func:`latent_sculpting.serve.engines.local.score_file_into`), so every
model and every input syntax the local engine scores, Ray scores, with the same numbers. Each
input file becomes one Parquet shard in the output folder, written under a temporary name and
renamed when complete. The run's summary holds the drift report of the files it scored, merged
from each worker's counts. See ``docs/guides/ray.md``.

The model travels to the workers as the bytes of its model file, never as a pickled estimator.

Failure semantics
-----------------
* A file that cannot be read or scored fails alone: it is reported by name with the error, and
  the others are scored (``fail_fast`` stops the run instead).
* An actor that dies (a worker process lost) is restarted and its file retried, a bounded
  number of times (:data:`MAX_RESTARTS`, :data:`MAX_TASK_RETRIES`).
* A rerun into the same folder skips the shards that exist and never sees a half-written one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latent_sculpting.atomic import write_text
from latent_sculpting.io.readers import list_flow_files

__all__ = ["MAX_RESTARTS", "MAX_TASK_RETRIES", "SUMMARY_FILE", "score_with_ray"]

PathLike = str | Path

#: Summary of the last run, written next to the shards.
SUMMARY_FILE = "_ray_summary.json"
#: Bounded retries: a worker that dies is restarted and its file retried this many times.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3


class FileScorer:
    """Ray actor: loads the model once, scores whole files into shards."""

    def __init__(self, model_bytes: bytes, batch_rows: int) -> None:
        from latent_sculpting.model.estimator import LatentSculpting
        from latent_sculpting.serve.scoring import Scorer, drift_monitor

        with tempfile.TemporaryDirectory(prefix="sculpt-model-") as tmp:
            path = Path(tmp) / "model.sculpt"
            path.write_bytes(model_bytes)
            model = LatentSculpting.load(path)
            self.scorer = Scorer(model, drift=drift_monitor(model))
        self.batch_rows = batch_rows

    def score(self, path: str, shard: str) -> dict[str, Any]:
        from latent_sculpting.serve.engines.local import score_file_into
        from latent_sculpting.serve.scoring import ScoreTally

        self.scorer.tally = ScoreTally()
        if self.scorer.drift is not None:
            self.scorer.drift.reset()
        try:
            rows = score_file_into(self.scorer, Path(path), Path(shard), self.batch_rows)
        except Exception as error:  # noqa: BLE001 - reported for this file only
            return {"path": path, "error": f"{type(error).__name__}: {error}"}
        if rows == 0:
            Path(shard).unlink(missing_ok=True)
            return {"path": path, "error": "file has no data rows"}
        drift = None if self.scorer.drift is None else self.scorer.drift.get_counts()
        tally = self.scorer.tally
        return {
            "path": path,
            "rows": rows,
            "flagged": tally.flagged,
            "labelled_rows": tally.labelled_rows,
            "drift": drift,
        }


def score_with_ray(
    model_path: PathLike,
    inputs: PathLike | Sequence[PathLike],
    output_dir: PathLike,
    *,
    address: str | None = None,
    num_workers: int | None = 2,
    batch_rows: int | None = 65536,
    fail_fast: bool = False,
    progress: bool = True,
) -> dict:
    """Score flow files on Ray, writing one Parquet shard per input file.

    Parameters
    ----------
    model_path : path
        Model file written by :meth:`LatentSculpting.save`; its bytes are shipped to the
        workers.
    inputs : path, glob pattern, or list of them
        Folders, files or patterns. On a cluster they must be readable at the same path from
        every worker (a shared file system).
    output_dir : path
        Folder for the shards (created); shard ``<stem>.parquet`` holds the scores of input
        ``<stem>.<suffix>`` in input row order, with the columns of the local engine.
    address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://HEAD:10001"``). None starts a local Ray
        instance with ``num_workers`` CPUs and stops it at the end. An already initialised Ray
        is used as is.
    num_workers : int, default 2
        Scoring actors (one CPU each).
    batch_rows : int, default 65536
    fail_fast : bool, default False
        Stop at the first failing file instead of reporting it and going on.
    progress : bool, default True
        One line per finished file on stderr.

    Returns
    -------
    dict
        ``files``, ``files_scored``, ``rows``, ``rows_flagged``, ``failed`` (``{path: error}``),
        ``shards_written``, ``shards_skipped``, ``output_dir``, ``seconds`` and ``drift`` (the
        drift report of the files scored in this run, as ``sculpt score`` writes it; None for
        a model file without drift bins); also written to ``output_dir/_ray_summary.json``.

    Raises
    ------
    ImportError
        If Ray is not installed (``pip install "latent-sculpting[ray]"``).
    ValueError
        For a bad argument, an unreadable model, or (with ``fail_fast``) a failing file.
    """
    started_at = time.perf_counter()
    num_workers = 2 if num_workers is None else num_workers
    batch_rows = 65536 if batch_rows is None else batch_rows
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    model_path = Path(model_path)
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.serve.scoring import drift_monitor, drift_summary

    monitor = drift_monitor(LatentSculpting.load(model_path))  # a bad model fails here
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as error:
        raise ImportError(
            'the Ray engine needs Ray: pip install "latent-sculpting[ray]"'
        ) from error

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    files = _resolve_inputs(inputs)
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output {output_dir} exists and is not a folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    shards = dict(zip(files, _shard_names(files), strict=True))
    skipped = [f for f in files if (output_dir / shards[f]).exists()]
    pending = [f for f in files if f not in skipped]
    if skipped:
        log(f"{len(skipped)} shard(s) already in {output_dir}, skipped")

    done: dict[str, dict] = {}
    failed: dict[str, str] = {}
    started = False
    try:
        if pending:
            if not ray.is_initialized():
                if address is None:
                    # Ray's usage statistics would phone home; opt out unless the user opted in.
                    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                    ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=progress)
                else:
                    ray.init(address=address, log_to_driver=progress)
                started = True
            actor = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS)(FileScorer)
            payload = model_path.read_bytes()
            pool = ActorPool(
                [
                    actor.options(max_task_retries=MAX_TASK_RETRIES).remote(payload, batch_rows)
                    for _ in range(min(num_workers, len(pending)))
                ]
            )
            jobs = [(str(f), str(output_dir / shards[f])) for f in pending]
            for result in pool.map_unordered(lambda a, job: a.score.remote(*job), jobs):
                path = result["path"]
                if "error" in result:
                    if fail_fast:
                        raise ValueError(f"{path}: scoring failed: {result['error']}")
                    failed[path] = result["error"]
                    log(f"failed {path}: {result['error']}")
                else:
                    done[path] = {"rows": result["rows"], "flagged": result["flagged"]}
                    done[path]["labelled_rows"] = result["labelled_rows"]
                    if monitor is not None:
                        monitor.add_counts(result["drift"])
                    log(f"scored {Path(path).name}: {result['rows']:,} rows")
    finally:
        if started:
            ray.shutdown()

    summary = {
        "files": len(files),
        "files_scored": len(done),
        "rows": sum(d["rows"] for d in done.values()),
        "rows_flagged": sum(d["flagged"] for d in done.values()),
        "failed": failed,
        "shards_written": sorted(shards[f] for f in pending if str(f) in done),
        "shards_skipped": sorted(shards[f] for f in skipped),
        "output_dir": str(output_dir),
        "seconds": round(time.perf_counter() - started_at, 3),
        "drift": None,
    }
    if monitor is not None:
        summary["drift"] = drift_summary(
            monitor,
            rows=summary["rows"],
            labelled_rows=sum(d["labelled_rows"] for d in done.values()),
        )
    target = output_dir / SUMMARY_FILE
    write_text(json.dumps(summary, indent=2) + "\n", target)
    return summary


def _resolve_inputs(inputs: PathLike | Sequence[PathLike]) -> list[Path]:
    """Folders, files and glob patterns to a sorted, de-duplicated list of files."""
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        if not Path(text).expanduser().exists() and glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern {text!r}")
            files.extend(list_flow_files(matches))
        else:
            files.extend(list_flow_files(text))
    unique: dict[Path, None] = {}
    for f in files:
        unique.setdefault(f.resolve(), None)
    return list(unique)


def _shard_names(files: list[Path]) -> list[str]:
    """``<stem>.parquet``; stems shared by several inputs get a short hash of the full path."""
    stems = [f.stem for f in files]
    names = []
    for f, stem in zip(files, stems, strict=True):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(str(f).encode()).hexdigest()[:8]}"
        names.append(f"{stem}.parquet")
    return names
