"""Dataset adapters: classes, families and column roles; no label or identifier is a feature."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from latent_sculpting.errors import FlowInputError
from latent_sculpting.research.benchmark import get_adapter, load_dataset

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unsw(shared_data):
    return load_dataset("unsw-nb15", shared_data / "unsw_nb15")


@pytest.fixture(scope="module")
def iot(shared_data):
    return load_dataset("iot-23", shared_data / "iot23_zeek")


def _feature_columns(spec) -> set[str]:
    return set(spec.numeric) | {c.column for c in spec.categorical}


def test_cic_sample_classes_families_and_natural_counts():
    cic = load_dataset("cicids2017")
    assert len(cic) == 56_277 and cic.counts["BENIGN"] == 7_492
    families = cic.family_map()
    assert families["PortScan"] == ("PortScan", "Infiltration - Portscan")
    assert families["Infiltration"] == ("Infiltration",)
    assert "Heartbleed" not in {c for f in families.values() for c in f}
    # The sample keeps 0.47 % of benign flows: prevalence comes from the full release.
    assert cic.natural["BENIGN"] == 1_582_566
    assert cic.prevalence(["Bot"]) == pytest.approx(736 / (736 + 1_582_566))
    spec = cic.adapter.fit_spec(cic.records)
    assert not _feature_columns(spec) & {"Label", "Src IP", "Dst Port", "Timestamp", "id"}


def test_unsw_classes_and_roles(unsw):
    assert len(unsw) == 82_332 and unsw.counts["Normal"] == 37_000
    assert unsw.counts["Worms"] == 44 and len(unsw.family_map()) == 9
    spec = unsw.adapter.fit_spec(unsw.records)
    features = _feature_columns(spec)
    assert not features & {"id", "label", "attack_cat"}
    assert {c.column for c in spec.categorical} == {"proto", "service", "state"}
    # Counters whose names read like identifiers stay features.
    assert {"ct_src_dport_ltm", "ct_dst_sport_ltm", "is_sm_ips_ports"} <= features
    assert unsw.prevalence(["Worms"]) == pytest.approx(44 / (44 + 37_000))


def test_iot23_classes_families_and_roles(iot):
    assert len(iot) == 46_662 and iot.counts["Benign"] == 1_956 + 15_200
    families = iot.family_map()
    assert set(families) == {"C&C", "DDoS", "PortScan", "FileDownload"}
    # A download over the C&C channel is both, so it is withheld (and tested) with either.
    assert "C&C-FileDownload" in families["C&C"] and "C&C-FileDownload" in families["FileDownload"]
    assert families["PortScan"] == ("PartOfAHorizontalPortScan",)
    spec = iot.adapter.fit_spec(iot.records)
    features = _feature_columns(spec)
    never = {"label", "detailed-label", "ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h"}
    assert not features & (never | {"id.resp_p", "tunnel_parents"})
    assert {"orig_ip_bytes", "resp_ip_bytes", "duration"} <= features
    assert {c.column for c in spec.categorical} == {"proto", "service", "conn_state", "history"}


def test_categorical_vocabulary_comes_from_the_rows_given(unsw):
    rows = np.flatnonzero(unsw.records.column("proto").to_numpy(zero_copy_only=False) == "tcp")
    spec = unsw.adapter.fit_spec(unsw.records.take(pa.array(rows[:500])))
    proto = next(c for c in spec.categorical if c.column == "proto")
    assert proto.values == ("tcp",)


def test_adapters_refuse_labels_they_do_not_know(tmp_path):
    path = tmp_path / "unsw.csv"
    path.write_text("id,dur,proto,service,state,attack_cat,label\n1,0.1,tcp,-,FIN,Nonsense,1\n")
    with pytest.raises(FlowInputError, match="row 1: unknown attack_cat 'Nonsense'"):
        load_dataset("unsw-nb15", path)
    path.write_text("id,dur,proto,service,state,attack_cat,label\n1,0.1,tcp,-,FIN,Normal,1\n")
    with pytest.raises(FlowInputError, match="label 1 disagrees with attack_cat 'Normal'"):
        load_dataset("unsw-nb15", path)
    iot = tmp_path / "iot.csv"
    iot.write_text("ts,uid,proto,duration,label,detailed-label\n1.0,C1,tcp,0.5,Benign,DDoS\n")
    with pytest.raises(FlowInputError, match="benign flow with detailed-label 'DDoS'"):
        load_dataset("iot-23", iot)


def test_missing_data_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download the partitioned"):
        load_dataset("unsw-nb15", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown dataset 'kdd'"):
        get_adapter("kdd")
