"""Careless and hostile use of the command line's files: nothing lost, nothing half-written."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.cli import main
from latent_sculpting.data import load_cicids2017, sample_path
from latent_sculpting.io.table import cap_per_class

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    table = cap_per_class(load_cicids2017(), 150, seed=0)
    model = LatentSculpting(**preset("fast"), random_state=0)
    model.fit(table.frame(), table.y, groups=table.labels, spec=table.spec)
    return model.save(tmp_path_factory.mktemp("model") / "m.sculpt")


@pytest.fixture(scope="module")
def flows_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("flows") / "flows.csv"
    pd.read_parquet(sample_path() / "monday.parquet").to_csv(path, index=False)
    return path


def _score(model_path, *args):
    return main(["score", str(model_path), *map(str, args), "--quiet"])


def test_the_input_is_never_overwritten(model_path, flows_csv, tmp_path, capsys):
    copy = tmp_path / "flows.csv"
    copy.write_bytes(flows_csv.read_bytes())
    before = copy.read_bytes()
    assert _score(model_path, copy, "-o", copy) == 2
    assert "is also an input" in capsys.readouterr().err
    assert copy.read_bytes() == before


def test_an_output_that_is_a_folder_fails_before_any_work(model_path, flows_csv, tmp_path, capsys):
    started = time.perf_counter()
    assert _score(model_path, flows_csv, "-o", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err
    assert time.perf_counter() - started < 5
    assert _score(model_path, flows_csv, "-o", tmp_path / "out.txt") == 2
    assert "unsupported suffix '.txt'" in capsys.readouterr().err


def test_a_model_file_cannot_be_written_over_its_training_data(tmp_path, flows_csv, capsys):
    data = tmp_path / "flows.csv"
    data.write_bytes(flows_csv.read_bytes())
    code = main(["train", "--data", str(data), "--preset", "fast", "-o", str(data), "--quiet"])
    assert code == 2 and "is also an input" in capsys.readouterr().err
    assert data.read_bytes() == flows_csv.read_bytes()


def test_compressed_csv_is_a_clear_error(model_path, flows_csv, tmp_path, capsys):
    packed = tmp_path / "flows.csv"
    packed.write_bytes(gzip.compress(flows_csv.read_bytes()))
    assert _score(model_path, packed, "-o", tmp_path / "out.parquet") == 2
    err = capsys.readouterr().err
    assert "gzip-compressed content; decompress it first" in err and "Traceback" not in err
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
def test_ctrl_c_while_sculpt_is_still_importing_says_interrupted(model_path, flows_csv, tmp_path):
    # The first seconds of `sculpt score` are imports (torch among them), and a SIGINT there
    # used to end in a KeyboardInterrupt traceback and death by the signal. Sent the moment
    # torch's library is mapped, it lands in the middle of them. The command line is the
    # `sculpt` script's own, with SIGINT as an interactive terminal has it.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from latent_sculpting.cli import main; sys.exit(main())"
    )
    argv = ["score", str(model_path), str(flows_csv), "-o", str(tmp_path / "out.csv")]
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stderr=subprocess.PIPE)
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + 120
    while "libtorch" not in maps.read_text():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "torch was never loaded"
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err.decode()) == (130, "sculpt score: interrupted\n")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_leaves_no_temporary_file(model_path, flows_csv, tmp_path, sig):
    big = tmp_path / "big.csv"
    frame = pd.read_csv(flows_csv)
    pd.concat([frame] * 60, ignore_index=True).to_csv(big, index=False)
    out = tmp_path / "out" / "scored.parquet"
    out.parent.mkdir()
    # A shell starts background jobs with SIGINT ignored, and a child inherits that; reset it
    # to Python's default, as an interactive terminal has it.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from latent_sculpting.cli import main; "
        f"sys.exit(main(['score', {str(model_path)!r}, {str(big)!r}, '-o', {str(out)!r}, "
        "'--batch-rows', '500', '--quiet']))"
    )
    # Once, in CI, a SIGINT was not acted on and the run finished normally (exit 0, its output
    # in place; cause not found, not reproduced in 7 local runs, idle and loaded; a second one
    # cannot be sent safely: it may land in the cleanup). A run the signal did not stop runs again,
    # once; a signal that stops no run, or a stopped run that leaves a file, fails.
    for attempt in range(2):
        proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not list(out.parent.glob(".scored.parquet.*")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "scoring never started"
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        if proc.returncode == 0 and attempt == 0:
            for path in out.parent.iterdir():
                path.unlink()
            continue
        break
    assert proc.returncode in (130, 143), proc.stderr.read().decode()
    assert list(out.parent.iterdir()) == []


# ------------------------------------------------------- values that are not numbers: never silent


def _table(n=600, seed=0):
    """A numeric flow table: benign rows and attacks far from them, labelled ok/bad."""
    rng = np.random.default_rng(seed)
    attack = np.arange(n) % 5 == 0
    frame = pd.DataFrame(
        rng.normal(size=(n, 4)) + 4 * attack[:, None], columns=list("f1 f2 f3 f4".split())
    )
    frame["verdict"] = np.where(attack, "bad", "ok")
    return frame


TRAIN = ["--label-column", "verdict", "--benign-label", "ok", "--preset", "fast", "--quiet"]


@pytest.fixture(scope="module")
def table_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("table")
    _table().to_csv(folder / "a.csv", index=False)
    assert (
        main(["train", "--data", str(folder / "a.csv"), *TRAIN, "-o", str(folder / "m.sculpt")])
        == 0
    )
    return folder / "m.sculpt"


@pytest.mark.parametrize(
    ("cell", "kind"), [("Infinity", "+inf"), ("NaN", "NaN or missing"), ("", "NaN or missing")]
)
def test_score_counts_each_value_it_replaces(table_model, tmp_path, capsys, cell, kind):
    path = tmp_path / "flows.csv"
    frame = _table(50, seed=1).astype({"f2": object})
    frame.loc[3, "f2"] = cell
    frame.to_csv(path, index=False)
    capsys.readouterr()
    assert _score(table_model, path, "-o", tmp_path / "out.csv", "--json") == 0
    captured = capsys.readouterr()
    assert (
        "sculpt score: warning: 1 missing or non-finite feature value(s) replaced by 0, which "
        f"the model reads as an ordinary value: 'f2' 1 {kind}" in captured.err
    )
    cleaning = json.loads(captured.out)["cleaning"]
    assert cleaning["values_replaced"] == 1
    key = "posinf_replaced" if kind == "+inf" else "nan_replaced"
    assert cleaning[key] == {"f2": 1}


def test_train_counts_each_value_it_replaces(tmp_path, capsys):
    frame = _table().astype({"f1": object, "f3": object})
    frame.loc[:299, "f1"] = "Infinity"
    frame.loc[300:, "f3"] = "NaN"
    frame.to_csv(tmp_path / "a.csv", index=False)
    out = tmp_path / "m.sculpt"
    assert main(["train", "--data", str(tmp_path / "a.csv"), *TRAIN, "-o", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert (
        "sculpt train: warning: 600 missing or non-finite feature value(s) replaced by 0, which "
        "the model reads as an ordinary value: 'f1' 300 +inf, 'f3' 300 NaN or missing"
        in captured.err
    )
    cleaning = json.loads(captured.out)["cleaning"]
    assert cleaning["posinf_replaced"] == {"f1": 300} and cleaning["nan_replaced"] == {"f3": 300}


def test_train_refuses_a_file_without_a_column_the_others_have(tmp_path, capsys):
    _table().to_csv(tmp_path / "a.csv", index=False)
    _table(seed=1).drop(columns="f4").to_csv(tmp_path / "b.csv", index=False)
    files = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert main(["train", "--data", *files, *TRAIN, "-o", str(tmp_path / "m.sculpt")]) == 2
    err = capsys.readouterr().err
    assert (
        f"sculpt train: error: {tmp_path / 'b.csv'}: 1 column(s) the model needs are missing: 'f4'"
        in err
    )
    assert not (tmp_path / "m.sculpt").exists()


@pytest.mark.parametrize("cell", ["NaN", "Infinity", ""])
def test_a_file_whose_column_holds_no_usable_value_is_refused(table_model, tmp_path, capsys, cell):
    good, bad = _table(), _table(seed=1).astype({"f4": object})
    bad["f4"] = cell
    good.to_csv(tmp_path / "a.csv", index=False)
    bad.to_csv(tmp_path / "b.csv", index=False)
    message = f"{tmp_path / 'b.csv'}: no usable value in column(s) 'f4': each of the 600 rows"
    files = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    assert main(["train", "--data", *files, *TRAIN, "-o", str(tmp_path / "m.sculpt")]) == 2
    assert message in capsys.readouterr().err
    assert _score(table_model, *files, "-o", tmp_path / "out.csv") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "m.sculpt").exists()


@pytest.mark.parametrize("cell", ["NaN", "Infinity"])
def test_adapt_refuses_benign_flows_with_no_usable_value(table_model, tmp_path, capsys, cell):
    benign = _table(seed=2).astype({f: object for f in ("f1", "f2", "f3", "f4")})
    benign = benign[benign["verdict"] == "ok"]
    benign[["f1", "f2", "f3", "f4"]] = cell
    benign.to_csv(tmp_path / "benign.csv", index=False)
    out = tmp_path / "adapted.sculpt"
    assert (
        main(["adapt", str(table_model), "--benign", str(tmp_path / "benign.csv"), "-o", str(out)])
        == 2
    )
    assert (
        f"{tmp_path / 'benign.csv'}: no usable value in column(s) 'f1', 'f2', 'f3', 'f4'"
        in capsys.readouterr().err
    )
    assert not out.exists()


def test_adapt_counts_each_value_it_replaces(table_model, tmp_path, capsys):
    benign = _table(1200, seed=3)
    benign = benign[benign["verdict"] == "ok"].astype({"f2": object}).reset_index(drop=True)
    benign.loc[:9, "f2"] = "Infinity"
    benign.to_csv(tmp_path / "benign.csv", index=False)
    out = tmp_path / "adapted.sculpt"
    args = ["adapt", str(table_model), "--benign", str(tmp_path / "benign.csv"), "-o", str(out)]
    assert main([*args, "--json"]) == 0
    captured = capsys.readouterr()
    assert (
        "sculpt adapt: warning: 10 missing or non-finite feature value(s) replaced by 0, which "
        "the model reads as an ordinary value: 'f2' 10 +inf" in captured.err
    )
    summary = json.loads(captured.out)
    assert summary["cleaning"]["posinf_replaced"] == {"f2": 10} and summary["rows"] == len(benign)
