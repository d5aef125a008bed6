"""Hostile model files: every kind of tampering is one clear error, before anything is built.

Each tampered file goes through :meth:`LatentSculpting.load` (a ``ModelFileError`` naming the
part), ``sculpt score`` and ``sculpt serve`` (exit code 2, one line on stderr, no traceback, no
output written).
"""

from __future__ import annotations

import math
import pickle
import struct
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from hostile_models import every_part_model, tamper, training_table

from latent_sculpting import LatentSculpting
from latent_sculpting.cli import main
from latent_sculpting.data import sample_path
from latent_sculpting.errors import ModelFileError
from latent_sculpting.model.density.maf import LatentDensity, flow_layout
from latent_sculpting.model.persistence import MAX_INFO_BYTES, MAX_WEIGHTS
from latent_sculpting.model.stage1.encoders import build_encoder
from latent_sculpting.model.state import assign, meta_layout

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

FLOW = "flow.maf.transform.transforms.0.hyper."


@pytest.fixture(scope="module")
def table():
    return training_table()


@pytest.fixture(scope="module")
def valid(tmp_path_factory, table):
    return every_part_model(tmp_path_factory.mktemp("model"), table)


@pytest.fixture(scope="module")
def flows_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("flows") / "flows.csv"
    pd.read_parquet(sample_path() / "monday.parquet").head(200).to_csv(path, index=False)
    return path


def _set(part, **values):
    def edit(params, fitted, tensors):
        {"params": params, "fitted": fitted}[part].update(values)

    return edit


def _tensor(key, change):
    def edit(params, fitted, tensors):
        tensors[key] = change(tensors[key].clone())

    return edit


def _nan_at(t):
    t.view(-1)[0] = math.nan
    return t


def _pop(*path):
    def edit(params, fitted, tensors):
        for key in path[:-1]:
            fitted = fitted[key]
        fitted.pop(path[-1])

    return edit


def _at(*path, value):
    def edit(params, fitted, tensors):
        for key in path[:-1]:
            fitted = fitted[key]
        fitted[path[-1]] = value(fitted[path[-1]]) if callable(value) else value

    return edit


def _meta(**values):
    return lambda params, fitted, tensors: values


def _extra_tensor(key):
    def edit(params, fitted, tensors):
        tensors[key] = torch.zeros(3)

    return edit


def _calibration(change):
    return _tensor("calibration_scores", change)


def _thresholds_plus_one(t):
    return {k: v + 1 if k == "95.0" else v for k, v in t.items()}


#: (id, edit, what the message must say)
TAMPERED = [
    ("missing key", _pop("threshold_"), r"lacks \['threshold_'\]"),
    ("wrong type", _set("fitted", n_features_in_="78"), "n_features_in_ must be an integer"),
    ("wrong type of history", _set("fitted", history_=[1, 2]), "history_ must be an object"),
    ("NaN threshold", _set("fitted", threshold_=math.nan), "threshold_ nan is not the threshold"),
    ("moved threshold", _at("threshold_", value=lambda v: v * 2), "threshold_ .* is not the"),
    ("inf threshold", _set("fitted", threshold_=math.inf), "threshold_ inf is not the threshold"),
    ("moved P95", _at("thresholds_", value=_thresholds_plus_one), "P95 threshold"),
    ("missing P99", _pop("thresholds_", "99.0"), "thresholds_ at percentiles"),
    (
        "empty calibration",
        _calibration(lambda t: t[:0]),
        "damaged calibration scores: there are none",
    ),
    (
        "unsorted calibration",
        _calibration(lambda t: t.flip(0)),
        "damaged calibration scores: they are not sorted",
    ),
    ("NaN calibration", _calibration(_nan_at), "calibration scores: .*NaN or infinite"),
    ("size beyond the cap", _set("params", d_model=10**9), "d_model=1000000000 is beyond the cap"),
    (
        "40 GB flow",
        _set("params", flow_hidden=65_536, flow_hidden_layers=2, flow_transforms=2),
        r"damaged parameters: they ask for 8,6\d{2},\d{3},\d{3} weights",
    ),
    (
        "large flow with small tensors",
        _set("params", flow_hidden=65_536, flow_transforms=30),
        r"damaged flow: its tensors are not those of its parameters: missing \[.*unknown \[\]",
    ),
    (
        "wrong dtype",
        _tensor("encoder.stem.weight", lambda t: t.double()),
        "damaged encoder: tensor 'stem.weight' has dtype torch.float64, expected torch.float32",
    ),
    (
        "wrong shape",
        _tensor("encoder.stem.weight", lambda t: t.T.contiguous()),
        r"tensor 'stem.weight' has shape \(72, 64\), expected \(64, 72\)",
    ),
    ("NaN weight", _tensor(FLOW + "0.weight", _nan_at), "damaged flow: .*NaN or infinite"),
    (
        "tampered mask",
        _tensor(FLOW + "0.mask", lambda t: torch.ones_like(t)),
        "hyper.0.mask is not the one its parameters define",
    ),
    (
        "tampered base",
        _tensor("flow.maf.base.scale", lambda t: t * 0),
        "maf.base.scale is not the one its parameters define",
    ),
    (
        "unknown tensor",
        _extra_tensor("payload"),
        r"no part of the model has the tensors \['payload'",
    ),
    ("unknown encoder tensor", _extra_tensor("encoder.extra"), r"unknown \['extra'\]"),
    (
        "spec disagrees with the feature names",
        _at("spec", "numeric", value=lambda names: names[::-1]),
        "damaged input spec: the input spec's features are not the model's",
    ),
    (
        "duplicate feature names",
        _at("feature_names_in_", value=lambda names: [names[0], *names[:-1]]),
        "feature names are not unique",
    ),
    (
        "negative variance in the embedding",
        _tensor("svdd.net.net.1.running_var", lambda t: -t),
        "damaged Deep SVDD embedding: net.1.running_var holds negative variances",
    ),
    (
        "zero scale",
        _tensor("preprocessor.scale", lambda t: t * 0),
        "damaged preprocessor: scales must be positive",
    ),
    (
        "preprocessor of another transform",
        _at("preprocessor", "params", "feature_transform", value="none"),
        "damaged preprocessor: it transforms with 'none'",
    ),
    (
        "forest reading other features",
        _at("channels", "forest", "forest", "n_features_in_", value=78),
        "damaged forest channel: it reads 78 features; the model has 72",
    ),
    (
        "forest node outside its tree",
        _tensor("channel.forest.left_child", lambda t: t.fill_(10**9)),
        "damaged forest channel: forest tree 0 node 0: left child 1000000000",
    ),
    (
        "moved tail",
        _at("fusion", "tails", "nll", "threshold_", value=lambda v: v + 1),
        "damaged score rule: the nll tail's threshold_ .* is not its reference scores'",
    ),
    (
        "NaN tail scale",
        _at("fusion", "tails", "forest", "scale_", value=math.nan),
        "the forest tail's scale_ must be finite",
    ),
    (
        "history beyond its size",
        _set("fitted", history_={"x": "a" * MAX_INFO_BYTES}),
        "history_ is .* bytes of JSON; at most",
    ),
    (
        "JSON nested too deep",
        _meta(fitted="[" * 100_000 + "]" * 100_000),
        "damaged metadata: fitted is not JSON",
    ),
    ("unknown metadata", _meta(evil="1"), r"unknown \['evil'\]"),
    ("unknown fitted key", _set("fitted", evil=1), r"has unknown keys \['evil'\]"),
    ("NaN parameter", _set("params", alpha=math.nan), "alpha"),
    (
        "drift reference of other features",
        _at("drift_reference", "feature_names", value=lambda names: names[::-1]),
        "damaged drift reference: its features are not the model's",
    ),
    (
        "benign profile of another version",
        _at("benign_profile", "version", value=99),
        "damaged benign profile: .*version 99",
    ),
    ("format of another program", _meta(format="other"), "is not a latent-sculpting model file"),
]


def _raw_header(path):
    # A safetensors header claiming 2**60 bytes of JSON.
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}" * 8)


def _truncated(path, valid):
    path.write_bytes(valid.read_bytes()[:-200])


def _pickle(path):
    path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))


def _random(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _empty(path):
    path.write_bytes(b"")


RAW = {
    "2**60 header length": _raw_header,
    "truncated": _truncated,
    "pickle renamed .sculpt": _pickle,
    "random bytes": _random,
    "empty file": _empty,
}


def _refused_everywhere(path, flows_csv, tmp_path, capsys, message):
    """``path`` is refused by load, ``sculpt score`` and ``sculpt serve`` alike."""
    with pytest.raises(ModelFileError, match=message):
        LatentSculpting.load(path)
    out = tmp_path / "out" / "scored.parquet"
    for argv in (
        ["score", str(path), str(flows_csv), "-o", str(out), "--quiet"],
        ["serve", str(path), "--port", "8765"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"sculpt {argv[0]}: error: ") and str(path) in err, err
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("edit", "message"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED]
)
def test_a_tampered_file_is_one_clear_error(valid, flows_csv, tmp_path, capsys, edit, message):
    path = tamper(valid, tmp_path / "bad.sculpt", edit)
    _refused_everywhere(path, flows_csv, tmp_path, capsys, message)


@pytest.mark.parametrize("kind", list(RAW))
def test_a_file_that_is_not_a_model_is_one_clear_error(valid, flows_csv, tmp_path, capsys, kind):
    path = tmp_path / "bad.sculpt"
    if kind == "truncated":
        _truncated(path, valid)
    else:
        RAW[kind](path)
    _refused_everywhere(path, flows_csv, tmp_path, capsys, "is not a readable model file")


def test_the_untampered_file_loads_and_scores(valid, table):
    model = LatentSculpting.load(valid)
    scores = model.decision_function(table.frame()[:100])
    assert np.isfinite(scores).all()


def test_an_infinite_threshold_is_read_where_the_conformal_rule_gives_one(valid, table, tmp_path):
    # 15 calibration scores cannot guarantee a 1 % false-alarm rate: the conformal threshold
    # is +inf, and such a file is valid; the same +inf under a percentile rule is not.
    path = tamper(valid, tmp_path / "inf.sculpt", _set("params", target_fpr=0.01))
    with pytest.raises(ModelFileError, match=r"target_fpr=0.01 gives on .* scores \(inf\)"):
        LatentSculpting.load(path)

    def conformal(params, fitted, tensors):
        params["target_fpr"] = 0.01
        fitted["threshold_"] = math.inf

    model = LatentSculpting.load(tamper(valid, tmp_path / "inf.sculpt", conformal))
    assert model.threshold_ == math.inf
    assert model.predict(table.frame()[:50]).sum() == 0


def test_a_folder_or_a_missing_file_is_exit_code_2(flows_csv, tmp_path, capsys):
    for path in (tmp_path, tmp_path / "missing.sculpt"):
        assert main(["score", str(path), str(flows_csv), "-o", str(tmp_path / "o.csv")]) == 2
        assert "model file not found" in capsys.readouterr().err


def test_an_unknown_device_is_a_usage_error(valid, flows_csv, tmp_path, capsys):
    with pytest.raises(ValueError, match="device 'warp-drive' is not available") as info:
        LatentSculpting.load(valid, device="warp-drive")
    assert not isinstance(info.value, ModelFileError)
    argv = ["score", str(valid), str(flows_csv), "-o", str(tmp_path / "o.csv"), "--device", "nope"]
    assert main(argv) == 2
    assert "device 'nope' is not available" in capsys.readouterr().err


_PEAK = """
import resource, sys
from latent_sculpting import LatentSculpting
from latent_sculpting.errors import ModelFileError
LatentSculpting.load(sys.argv[1])  # warm: imports, first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    LatentSculpting.load(sys.argv[2])
except ModelFileError:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_parameters_asking_for_a_large_flow_allocate_nothing(valid, tmp_path):
    """30 MADEs of width 65,536 are within the caps (about 1.2 GB with their masks), but the
    file holds 2 of width 32: refused from the layout, before a byte of them exists."""
    path = tamper(
        valid, tmp_path / "big.sculpt", _set("params", flow_hidden=65_536, flow_transforms=30)
    )
    run = subprocess.run(
        [sys.executable, "-c", _PEAK, str(valid), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    grown_mb = int(run.stdout.strip()) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"


def test_the_weight_budget_is_checked_from_the_parameters(valid, tmp_path):
    # The largest MLP encoder the width and depth caps allow is far beyond the budget.
    path = tamper(valid, tmp_path / "deep.sculpt", _set("params", d_model=65_536, n_layers=64))
    with pytest.raises(ModelFileError, match=f"at most {MAX_WEIGHTS:,}"):
        LatentSculpting.load(path)


@pytest.mark.parametrize(
    ("features", "transforms", "hidden", "layers"),
    [(2, 1, 3, 1), (5, 2, 8, 2), (7, 3, 4, 3), (40, 2, 32, 1)],
)
def test_the_flow_layout_is_the_built_flows(features, transforms, hidden, layers):
    flow = LatentDensity(
        features, transforms=transforms, hidden_features=hidden, hidden_layers=layers
    )
    built = {k: (tuple(v.shape), v.dtype) for k, v in flow.state_dict().items()}
    assert flow_layout(features, transforms, hidden, layers) == built


@pytest.mark.parametrize("kind", ["mlp", "ft_transformer", "cnn_transformer"])
def test_an_encoder_built_on_meta_holds_the_files_tensors(kind):
    sizes = {"latent_dim": 4, "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ffn": 16}
    torch.manual_seed(0)
    real = build_encoder(kind, 12, **sizes, dropout=0.0).eval()
    state = {k: v.clone() for k, v in real.state_dict().items()}

    def build():
        return build_encoder(kind, 12, **sizes, dropout=0.0)

    assert meta_layout(build) == {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    with torch.device("meta"):
        meta = build()
    loaded = assign(meta, state).eval()
    x = torch.randn(5, 12)
    torch.testing.assert_close(loaded(x), real(x), rtol=0, atol=0)


def test_loading_leaves_the_random_state_alone(valid):
    before = torch.get_rng_state()
    LatentSculpting.load(valid)
    assert torch.equal(before, torch.get_rng_state())


def test_a_file_the_system_refuses_is_exit_code_2(valid, flows_csv, tmp_path, capsys, monkeypatch):
    import latent_sculpting.serve.engines.local as local

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "o.parquet"))

    monkeypatch.setattr(local, "score_files", full_disk)
    assert main(["score", str(valid), str(flows_csv), "-o", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
