"""One scorer: the local engine, the HTTP service and the Ray engine give identical scores for
the same rows, for a CIC-IDS-2017 model and for a table-format model with a text column."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import read_flows, sample_path
from latent_sculpting.serve.engines.local import score_files

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _rows() -> pd.DataFrame:
    frame = pd.read_parquet(sample_path() / "friday.parquet")
    parts = [frame[frame["Label"] == lab].head(120) for lab in sorted(frame["Label"].unique())]
    return pd.concat(parts, ignore_index=True)


def _table_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Real measurements under other names, a text column (categorical) and an identifier."""
    out = pd.DataFrame({f"m{j}": rows.iloc[:, 8 + j].astype(float) for j in range(12)})
    out.insert(0, "src_ip", rows["Src IP"])
    out["proto"] = np.where(rows["Protocol"] == 6, "tcp", "udp")
    out["verdict"] = np.where(rows["Label"] == "BENIGN", "normal", "attack")
    return out


@pytest.fixture(scope="module", params=["cicids2017", "table"])
def case(request, tmp_path_factory):
    """(model path, input file) for each kind of model."""
    folder = tmp_path_factory.mktemp(request.param)
    rows = _rows()
    if request.param == "table":
        rows = _table_rows(rows)
    data = folder / "flows.csv"
    rows.to_csv(data, index=False)
    options = (
        {}
        if request.param == "cicids2017"
        else {"label_column": "verdict", "benign_label": "normal"}
    )
    table = read_flows(data, **options)
    assert table.spec.format == request.param
    if request.param == "table":
        assert [c.column for c in table.spec.categorical] == ["proto"]
    model = LatentSculpting(**preset("fast"), random_state=0)
    model.fit(table.frame(), table.y, groups=table.labels, spec=table.spec)
    return model.save(folder / "model.sculpt"), data


def _local(model_path, data, tmp_path) -> pd.DataFrame:
    # One batch, as the service scores one request: float32 matrix products may round
    # differently at other batch sizes (tests/test_estimator.py checks that such differences
    # stay at rounding level).
    out = tmp_path / "local.parquet"
    score_files(LatentSculpting.load(model_path), data, out, progress=False)
    return pd.read_parquet(out)


def test_the_service_scores_as_the_local_engine(case, tmp_path):
    from fastapi.testclient import TestClient

    from latent_sculpting.serve.service import create_app

    model_path, data = case
    local = _local(model_path, data, tmp_path)
    app = create_app(LatentSculpting.load(model_path))
    with TestClient(app) as client:
        body = data.read_bytes()
        csv = client.post("/v1/score", content=body, headers={"Content-Type": "text/csv"})
        records = pd.read_csv(data).to_dict(orient="records")
        as_json = client.post("/v1/score", json=records)
    for response in (csv, as_json):
        assert response.status_code == 200, response.text
        got = pd.DataFrame(response.json())
        np.testing.assert_array_equal(got["score"].to_numpy(), local["score"].to_numpy())
        np.testing.assert_array_equal(got["p_value"].to_numpy(), local["p_value"].to_numpy())
        assert got["is_attack"].tolist() == local["is_attack"].tolist()


def test_the_ray_engine_scores_as_the_local_engine(case, tmp_path):
    pytest.importorskip("ray", reason="the Ray engine needs the optional extra")
    from latent_sculpting.serve.engines.ray import score_with_ray

    model_path, data = case
    local = _local(model_path, data, tmp_path)
    summary = score_with_ray(model_path, data, tmp_path / "ray", num_workers=1, progress=False)
    assert summary["files_scored"] == 1, summary
    shard = pd.read_parquet(tmp_path / "ray" / "flows.parquet")
    pd.testing.assert_frame_equal(shard, local)
