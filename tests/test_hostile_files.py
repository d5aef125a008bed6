"""Careless and hostile use of the command line's files: nothing lost, nothing half-written."""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.cli import main
from latent_sculpting.data import load_cicids2017, sample_path
from latent_sculpting.experiment import cap_per_class


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
