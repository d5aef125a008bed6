"""The Ray engine scores like the local engine, isolates a bad file and resumes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latent_sculpting import LatentSculpting
from latent_sculpting.data import load_cicids2017, sample_path
from latent_sculpting.model.presets import preset
from latent_sculpting.serve.engines.local import score_files
from latent_sculpting.serve.engines.ray import SUMMARY_FILE
from latent_sculpting.serve.scoring import OUTPUT_COLUMNS

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

# Ray reads this at import: a local instance then binds to 127.0.0.1 only.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip(
    "ray", reason="the Ray engine needs the optional extra: pip install '.[ray]'"
)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny model fitted on a stratified slice of the embedded sample."""
    table = load_cicids2017()
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [
            rng.permutation(np.flatnonzero(table.labels == label))[:150]
            for label in np.unique(table.labels)
        ]
    )
    model = LatentSculpting(**preset("fast"), random_state=0)
    part = table.subset(rows)
    model.fit(part.frame(), part.y, spec=table.spec)
    return model.save(tmp_path_factory.mktemp("model") / "model.safetensors")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs (loopback only, no dashboard) for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def flow_files(tmp_path_factory):
    """Four small improved-schema Parquet files cut from the embedded sample, one corrupt file."""
    folder = tmp_path_factory.mktemp("flows")
    for i, day in enumerate(["monday", "tuesday", "wednesday", "thursday"]):
        raw = pq.read_table(sample_path() / f"{day}.parquet")
        pq.write_table(raw.slice(100 * i, 300 + 50 * i), folder / f"{day}.parquet")
    (folder / "corrupt.parquet").write_bytes(b"PAR1 this is not a parquet file" * 10)
    return folder


def test_score_with_ray_matches_local_and_resumes(model_path, flow_files, tmp_path, local_ray):
    from latent_sculpting.serve.engines.ray import score_with_ray

    out = tmp_path / "scores"
    good = sorted(p for p in flow_files.glob("*.parquet") if p.name != "corrupt.parquet")
    summary = score_with_ray(
        model_path, flow_files, out, num_workers=1, batch_rows=128, progress=False
    )
    assert ray.is_initialized()  # a running instance is used, and left running
    corrupt = str(flow_files / "corrupt.parquet")
    assert list(summary["failed"]) == [corrupt]
    assert "corrupt.parquet" in summary["failed"][corrupt]
    assert summary["files"] == 5 and summary["files_scored"] == 4
    assert summary["shards_written"] == sorted(p.name for p in good)
    assert json.loads((out / SUMMARY_FILE).read_text())["failed"] == summary["failed"]

    model = LatentSculpting.load(model_path)
    rows = 0
    for path in good:
        shard = pd.read_parquet(out / path.name)
        # The local engine (sculpt score) on this one file, in other batch sizes.
        local_out = tmp_path / f"local-{path.stem}.parquet"
        score_files(model, path, local_out, batch_rows=97, progress=False)
        local = pd.read_parquet(local_out)
        assert list(shard.columns) == list(local.columns)
        assert list(shard.columns[-6:-1]) == [*OUTPUT_COLUMNS, "explanation"]
        assert shard.columns[-1] == "Label"
        # Same rows in input order, the same numbers. An explanation's search is sized by the
        # share of its batch that is flagged, so only which rows are explained is compared.
        pd.testing.assert_frame_equal(
            shard.drop(columns="explanation"), local.drop(columns="explanation")
        )
        assert ((shard["explanation"] != "") == shard["is_attack"]).all()
        assert ((local["explanation"] != "") == local["is_attack"]).all()
        rows += len(shard)
    assert summary["rows"] == rows == sum(pq.read_metadata(p).num_rows for p in good)
    assert summary["rows_flagged"] == sum(
        int(pd.read_parquet(out / p.name)["is_attack"].sum()) for p in good
    )
    assert not list(out.glob(".*tmp*"))
    # The workers' drift counts, merged, give the report of one local pass over the files.
    together = score_files(model, good, tmp_path / "together.parquet", progress=False)
    assert summary["drift"] == together["drift"] and summary["drift"]["n_flows"] > 0

    # A rerun skips the finished shards and reports the corrupt file again.
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    again = score_with_ray(model_path, flow_files, out, num_workers=2, progress=False)
    assert again["shards_skipped"] == sorted(p.name for p in good)
    assert again["shards_written"] == [] and again["rows"] == 0
    assert list(again["failed"]) == [corrupt]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == before


def test_fail_fast_names_the_file(model_path, flow_files, tmp_path):
    from latent_sculpting.serve.engines.ray import score_with_ray

    with pytest.raises(ValueError, match="corrupt.parquet"):
        score_with_ray(model_path, flow_files, tmp_path / "out", fail_fast=True, progress=False)


def test_bad_arguments(model_path, flow_files, tmp_path):
    from latent_sculpting.serve.engines.ray import score_with_ray

    with pytest.raises(ValueError, match="num_workers must be >= 1, got 0"):
        score_with_ray(model_path, flow_files, tmp_path, num_workers=0)
    with pytest.raises(FileNotFoundError, match="no file matches"):
        score_with_ray(model_path, str(tmp_path / "nothing-*.parquet"), tmp_path / "out")


def test_bad_values_fail_their_file_only(model_path, flow_files, tmp_path, local_ray):
    """One file holds a bad value; it fails alone, named, and the other still finishes."""
    from latent_sculpting.serve.engines.ray import score_with_ray

    folder = tmp_path / "in"
    folder.mkdir()
    good = pq.read_table(flow_files / "monday.parquet")
    pq.write_table(good, folder / "a.parquet")
    bad = good.set_column(
        good.column_names.index("Flow Duration"),
        "Flow Duration",
        pa.array(["not a number"] * good.num_rows),
    )
    pq.write_table(bad, folder / "b.parquet")
    summary = score_with_ray(model_path, folder, tmp_path / "out", num_workers=1, progress=False)
    assert summary["shards_written"] == ["a.parquet"]
    assert list(summary["failed"]) == [str(folder / "b.parquet")]
    assert "not a number" in summary["failed"][str(folder / "b.parquet")]


def test_context_each_file_is_a_run_of_its_own_on_ray(tmp_path, local_ray):
    """With context features each Ray actor scores a file from an empty state: as the local
    engine scores that file alone. What is lost against one local run over the files (the
    state of the files before it) shows in the second file's scores."""
    from test_context_model import TINY, capture, close

    from latent_sculpting.serve.engines.ray import score_with_ray
    from latent_sculpting.train import fit_training_data, read_training_data

    frame = capture()
    (tmp_path / "in").mkdir()
    whole = tmp_path / "whole.csv"
    frame.to_csv(whole, index=False)
    first, second = tmp_path / "in" / "a.csv", tmp_path / "in" / "b.csv"
    frame.iloc[:450].to_csv(first, index=False)
    frame.iloc[450:].to_csv(second, index=False)
    model = fit_training_data(read_training_data([whole], context="on"), overrides=TINY)
    path = model.save(tmp_path / "context.sculpt")
    score_with_ray(path, tmp_path / "in", tmp_path / "out", num_workers=2, progress=False)
    together = tmp_path / "together.parquet"
    score_files(model, [first, second], together, progress=False, drift=False)
    one_run = pd.read_parquet(together)["score"].to_numpy()
    for name, rows in (("a", slice(0, 450)), ("b", slice(450, None))):
        shard = pd.read_parquet(tmp_path / "out" / f"{name}.parquet")["score"].to_numpy()
        alone = tmp_path / f"alone-{name}.parquet"
        score_files(model, tmp_path / "in" / f"{name}.csv", alone, progress=False, drift=False)
        assert close(shard, pd.read_parquet(alone)["score"])
        assert close(shard, one_run[rows]) == (name == "a")
