"""``sculpt train`` and ``sculpt score`` end to end on real rows of the embedded sample."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from latent_sculpting import LatentSculpting
from latent_sculpting.cli import main
from latent_sculpting.data import iter_flow_batches, sample_path
from latent_sculpting.serve.scoring import OUTPUT_COLUMNS, Scorer

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_rows() -> pd.DataFrame:
    """Real improved-release rows from two days (all labels of each, capped)."""
    frames = [pd.read_parquet(sample_path() / f"{day}.parquet") for day in ("tuesday", "friday")]
    frame = pd.concat(frames, ignore_index=True)
    parts = [
        frame[frame["Label"] == label].sample(frac=1.0, random_state=0).head(70)
        for label in sorted(frame["Label"].unique())
    ]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def cic_model(tmp_path_factory, sample_rows):
    folder = tmp_path_factory.mktemp("cic")
    sample_rows.to_parquet(folder / "train.parquet")
    out = folder / "model.sculpt"
    code = main(
        [
            "train",
            "--data",
            str(folder / "train.parquet"),
            "--preset",
            "fast",
            "--target-fpr",
            "0.1",
            "--calibration-fraction",
            "0.3",
            "-o",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def test_train_cic_writes_a_model_with_its_training_summary(cic_model, sample_rows, capsys):
    model = LatentSculpting.load(cic_model)
    info = model.training_info_
    assert model.spec_.format == "cicids2017"
    assert info["rows"] == len(sample_rows) and info["files"] == ["train.parquet"]
    assert info["label_counts"]["BENIGN"] == int((sample_rows["Label"] == "BENIGN").sum())
    assert model.spec_.label_column == "Label" and model.spec_.benign_label == "BENIGN"
    assert model.target_fpr == 0.1
    assert model.calibration == "holdout" and model.score == "stacked"
    assert model.spec_.feature_names == list(model.feature_names_in_)
    assert len(model.calibration_scores_) > 0


def test_score_names_the_stages_only_for_a_model_with_a_stage_1_rule(
    cic_model, sample_rows, tmp_path, capsys
):
    src = tmp_path / "flows.csv"
    sample_rows.head(50).to_csv(src, index=False)
    assert LatentSculpting.load(cic_model).stage1 is False
    assert main(["score", str(cic_model), str(src), "-o", str(tmp_path / "a.csv")]) == 0
    plain = capsys.readouterr().out
    assert "flagged " in plain and "stage 1" not in plain
    from latent_sculpting.cli.score import flagged_line

    summary = {"flagged": 1234, "flagged_share": 0.25, "flagged_by": {"stage1": 34, "stage2": 1200}}
    assert flagged_line(summary, stage1=False) == "flagged 1,234 (25.00 %)"
    assert (
        flagged_line(summary, stage1=True) == "flagged 1,234 (25.00 %): stage 1 34, stage 2 1,200"
    )


def test_score_streams_in_chunks_with_the_numbers_of_one_batch(cic_model, sample_rows, tmp_path):
    src = tmp_path / "flows.csv"
    sample_rows.to_csv(src, index=False)
    out = tmp_path / "scored.parquet"
    assert (
        main(["score", str(cic_model), str(src), "-o", str(out), "--batch-rows", "37", "--quiet"])
        == 0
    )
    scored = pd.read_parquet(out)
    assert len(scored) == len(sample_rows)
    assert list(scored.columns[-6:]) == [*OUTPUT_COLUMNS, "explanation", "Label"]
    # Flagged flows are explained, the others get an empty string.
    flagged = scored["is_attack"].to_numpy()
    assert flagged.any() and (scored["explanation"][flagged] != "").all()
    assert (scored["explanation"][~flagged] == "").all()
    assert {"Src IP", "Dst Port", "Timestamp"} <= set(scored.columns)
    assert "Flow Duration" not in scored.columns  # features are not copied

    model = LatentSculpting.load(cic_model)
    (batch,) = iter_flow_batches(model.spec_, src, 100_000)
    expected = Scorer(model).score(batch)
    np.testing.assert_allclose(scored["score"], expected["score"], rtol=1e-6)
    np.testing.assert_array_equal(scored["is_attack"], expected["is_attack"])
    np.testing.assert_array_equal(scored["flagged_by"], expected["flagged_by"])
    assert scored["Label"].tolist() == batch.labels.tolist()  # canonical labels ("Bot", ...)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "flows.csv",
        "scored.parquet",
        "scored.parquet.drift.json",
    ]


def test_score_writes_csv_and_several_inputs_with_source_file(cic_model, sample_rows, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    sample_rows.head(50).to_parquet(a)
    sample_rows.tail(30).to_csv(b, index=False)
    out = tmp_path / "out" / "scored.csv"
    assert main(["score", str(cic_model), str(a), str(b), "-o", str(out), "--quiet"]) == 0
    scored = pd.read_csv(out)
    assert len(scored) == 80
    assert scored["source_file"].value_counts().to_dict() == {"a.parquet": 50, "b.csv": 30}


def test_score_missing_columns_fail_cleanly_and_write_nothing(
    cic_model, sample_rows, tmp_path, capsys
):
    src = tmp_path / "broken.parquet"
    sample_rows.drop(columns=["Flow Duration", "Flow IAT Mean"]).to_parquet(src)
    out = tmp_path / "scored.parquet"
    assert main(["score", str(cic_model), str(src), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sculpt score: error:" in err and "Flow Duration" in err and "Flow IAT Mean" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet"]


@pytest.fixture(scope="module")
def generic_table(sample_rows) -> pd.DataFrame:
    """A non-CIC numeric flow table: real measurements under other names, its own labels."""
    columns = [
        "Flow Duration",
        "Total Fwd Packet",
        "Total Bwd packets",
        "Flow Bytes/s",
        "Flow Packets/s",
        "Flow IAT Mean",
        "Fwd Packet Length Max",
        "Packet Length Mean",
        "Bwd Packets/s",
        "Idle Mean",
    ]
    frame = sample_rows[columns].copy()
    frame.columns = [f"m{j}" for j in range(len(columns))]
    frame.insert(0, "sensor", "edge-1")
    frame.insert(1, "port", sample_rows["Dst Port"].to_numpy())
    frame["verdict"] = np.where(sample_rows["Label"] == "BENIGN", "normal", "bad")
    return frame


def test_train_and_score_a_generic_table(generic_table, tmp_path, capsys):
    src = tmp_path / "flows.csv"
    generic_table.to_csv(src, index=False)
    model_path = tmp_path / "m.sculpt"
    assert (
        main(
            [
                "train",
                "--data",
                str(src),
                "--label-column",
                "verdict",
                "--benign-label",
                "normal",
                "--drop",
                "port",
                "--preset",
                "fast",
                "--set",
                "calibration_fraction=0.3",
                "--set",
                "forest_trees=12",
                "-o",
                str(model_path),
                "--quiet",
            ]
        )
        == 0
    )
    # Ten measurements, and the text column "sensor" as a categorical feature (one value).
    assert "features: 12" in capsys.readouterr().out
    model = LatentSculpting.load(model_path)
    names = [f"m{j}" for j in range(10)]
    assert list(model.feature_names_in_) == [*names, "sensor=edge-1", "sensor=(other)"]
    assert model.spec_.format == "table" and model.spec_.label_column == "verdict"
    assert model.calibration_fraction == 0.3 and model.forest_trees == 12
    assert model.channels_["forest"].n_trees == 12

    out = tmp_path / "scored.parquet"
    assert main(["score", str(model_path), str(src), "-o", str(out), "--quiet"]) == 0
    scored = pd.read_parquet(out)
    assert list(scored.columns) == ["port", *OUTPUT_COLUMNS, "explanation", "verdict"]
    expected_X = generic_table[names].assign(**{"sensor=edge-1": 1.0, "sensor=(other)": 0.0})
    expected = model.decision_function(expected_X.to_numpy(np.float32))
    np.testing.assert_allclose(scored["score"], expected, rtol=1e-6)

    bad = generic_table.astype({"m3": object})
    bad.loc[5, "m3"] = "n/a-ish"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert (
        main(
            [
                "score",
                str(model_path),
                str(tmp_path / "bad.csv"),
                "-o",
                str(tmp_path / "bad.parquet"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'m3'" in err and "n/a-ish" in err
    assert not (tmp_path / "bad.parquet").exists()


def test_train_rejects_unknown_benign_label_and_drop_column(generic_table, tmp_path, capsys):
    src = tmp_path / "flows.parquet"
    generic_table.to_parquet(src)
    args = [
        "train",
        "--data",
        str(src),
        "--label-column",
        "verdict",
        "--preset",
        "fast",
        "-o",
        str(tmp_path / "m.sculpt"),
        "--quiet",
    ]
    assert main(args) == 2
    assert "name the benign label of column 'verdict'" in capsys.readouterr().err
    assert main([*args, "--benign-label", "BENIGN"]) == 2
    assert "'BENIGN' not found" in capsys.readouterr().err
    assert main([*args, "--benign-label", "normal", "--drop", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "m.sculpt").exists()


def test_train_refuses_a_target_fpr_the_calibration_set_cannot_support(
    generic_table, tmp_path, capsys
):
    src = tmp_path / "flows.parquet"
    generic_table.to_parquet(src)
    code = main(
        [
            "train",
            "--data",
            str(src),
            "--label-column",
            "verdict",
            "--benign-label",
            "normal",
            "--target-fpr",
            "0.001",
            "--preset",
            "fast",
            "-o",
            str(tmp_path / "m.sculpt"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "needs at least 999 calibration flows" in capsys.readouterr().err


def test_score_ray_engine_without_ray_says_how_to_install(cic_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "latent_sculpting.serve.engines.ray", None)  # import fails
    code = main(
        ["score", str(cic_model), str(tmp_path), "-o", str(tmp_path / "out"), "--engine", "ray"]
    )
    assert code == 2
    assert "latent-sculpting[ray]" in capsys.readouterr().err


def test_target_fpr_holds_on_fresh_benign_flows(tmp_path, capsys):
    """Split-conformal calibration: the false-alarm rate on new benign flows meets the target.

    Real benign flows of the embedded sample (all five days) are split at random into a
    training file (1,500 rows: 50 % fit the benign channels, 50 % held out: 375 place the tails
    of Fisher's sum, 375 calibrate) and fresh flows (the other ~6,000), so fresh and
    calibration flows are exchangeable. Benign-only data trains the benign side alone (the flow
    and the prototype distance). Conformal theory gives E[FPR] <= alpha; for one calibration set
    the FPR is Beta(n + 1 - k, k) with k = ceil((n + 1)(1 - alpha)), for n = 375, alpha = 0.05:
    mean 0.048, sd 0.011; the ~6,000 test flows add a binomial sd of 0.003. We allow alpha + 0.03
    (about 2.7 sd of finite-sample slack) and check the rate is not trivially zero
    (alpha - 0.03).
    """
    alpha = 0.05
    frame = pd.concat(
        [pd.read_parquet(p) for p in sorted(sample_path().glob("*.parquet"))], ignore_index=True
    )
    benign = frame[frame["Label"] == "BENIGN"].sample(frac=1.0, random_state=1)
    train, fresh = benign.iloc[:1500], benign.iloc[1500:]
    train.to_parquet(tmp_path / "benign_train.parquet")
    fresh.to_parquet(tmp_path / "benign_fresh.parquet")
    model_path = tmp_path / "benign.sculpt"
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "benign_train.parquet"),
                "--preset",
                "fast",
                "--target-fpr",
                str(alpha),
                "--calibration-fraction",
                "0.5",
                "--seed",
                "3",
                "-o",
                str(model_path),
                "--quiet",
            ]
        )
        == 0
    )
    assert "fitting the benign side alone" in capsys.readouterr().err
    model = LatentSculpting.load(model_path)
    assert not model.stage1 and model.score == "fisher" and model.boost_iter == 0
    assert list(model.channels_) == ["knn"]  # benign-only: no supervised channel
    # 750 held out: half place the tails of Fisher's sum, half set the threshold.
    assert len(model.calibration_scores_) == 375

    out = tmp_path / "fresh.parquet"
    assert (
        main(
            [
                "score",
                str(model_path),
                str(tmp_path / "benign_fresh.parquet"),
                "-o",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    scored = pd.read_parquet(out)
    fpr = scored["is_attack"].mean()
    assert alpha - 0.03 <= fpr <= alpha + 0.03, fpr
    # p-values of fresh benign flows are (super-)uniform: P(p <= alpha) <= alpha + slack.
    assert (scored["p_value"] <= alpha).mean() <= alpha + 0.03


def test_the_explanation_column_is_text_even_when_nothing_is_flagged(
    cic_model, sample_rows, tmp_path
):
    src = tmp_path / "flows.parquet"
    sample_rows.to_parquet(src)
    everything = tmp_path / "all.parquet"
    assert main(["score", str(cic_model), str(src), "-o", str(everything), "--quiet"]) == 0
    quiet = sample_rows[~pd.read_parquet(everything)["is_attack"].to_numpy()]
    quiet.to_parquet(src)
    for name in ("quiet.parquet", "quiet.csv"):
        out = tmp_path / name
        assert main(["score", str(cic_model), str(src), "-o", str(out), "--quiet"]) == 0
        if name.endswith(".csv"):
            # Written quoted (""): text to a reader that honours quotes.
            options = pacsv.ConvertOptions(quoted_strings_can_be_null=False)
            table = pacsv.read_csv(out, convert_options=options)
        else:
            table = pq.read_table(out)
        assert not any(table["is_attack"].to_pylist())
        assert table.schema.field("explanation").type in (pa.string(), pa.large_string())
        assert set(table["explanation"].to_pylist()) == {""}


def test_no_explain_and_a_model_without_profile_score_without_the_column(
    cic_model, sample_rows, tmp_path, capsys
):
    src = tmp_path / "flows.parquet"
    sample_rows.to_parquet(src)
    out = tmp_path / "plain.parquet"
    assert main(["score", str(cic_model), str(src), "-o", str(out), "--quiet", "--no-explain"]) == 0
    plain = pd.read_parquet(out)
    assert "explanation" not in plain.columns
    assert "note" not in capsys.readouterr().err

    # A model file written before benign profiles existed: scored, no column, one note.
    old = LatentSculpting.load(cic_model)
    old.benign_profile_ = None
    old_path = old.save(tmp_path / "old.sculpt")
    assert LatentSculpting.load(old_path).benign_profile_ is None
    out = tmp_path / "old.parquet"
    assert main(["score", str(old_path), str(src), "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("no benign profile") == 1 and "sculpt score: note:" in err
    scored = pd.read_parquet(out)
    assert "explanation" not in scored.columns
    pd.testing.assert_frame_equal(scored, plain)
