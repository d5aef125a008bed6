"""Write a SYNTHETIC full-size CIC-IDS-2017 in the ORIGINAL release's schema, for load tests.

The original MachineLearningCSV release (2,830,743 rows in 8 day files) is not available here,
so this script resamples the real rows of the embedded improved-release sample into 8 CSV files
of the same total size, written the way the original release is: a header with leading spaces,
``Destination Port`` first, the duplicated ``Fwd Header Length.1`` column, ``Infinity`` and
``NaN`` cells in the rate columns, CRLF line ends, and cp1252 labels (the 0x96 dash of the
web-attack labels). About 80 % of rows are benign, as in the original release.

Every file name starts with ``SYNTHETIC-``. The files go under /tmp by default, never into the
repository (about 1.2 GB in all).

Usage::

    python benchmarks/speed/make_scale_data.py [--rows 2830743] [--out /tmp/cicids2017-synthetic]
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd

from latent_sculpting.data import load_cicids2017
from latent_sculpting.io.formats.cicids2017 import CANONICAL_FEATURES

DAYS = (
    "Monday-WorkingHours.pcap_ISCX",
    "Tuesday-WorkingHours.pcap_ISCX",
    "Wednesday-workingHours.pcap_ISCX",
    "Thursday-WorkingHours-Morning-WebAttacks.pcap_ISCX",
    "Thursday-WorkingHours-Afternoon-Infilteration.pcap_ISCX",
    "Friday-WorkingHours-Morning.pcap_ISCX",
    "Friday-WorkingHours-Afternoon-PortScan.pcap_ISCX",
    "Friday-WorkingHours-Afternoon-DDos.pcap_ISCX",
)
# Original-release spelling of canonical labels; the en dash is written as cp1252 byte 0x96.
ORIGINAL_LABELS = {
    "Web Attack - Brute Force": "Web Attack \u2013 Brute Force",
    "Web Attack - XSS": "Web Attack \u2013 XSS",
    "Web Attack - Sql Injection": "Web Attack \u2013 Sql Injection",
    "DoS slowloris": "DoS slowloris",
    "Infiltration - Portscan": "Infiltration",  # improved-only class; the original has none
}
BENIGN_SHARE = 0.80
NONFINITE_SHARE = 0.001  # share of rows with Infinity / NaN rates (about 0.1 % in the original)


def pool_lines(seed: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Every sample row as one cp1252 CSV line, its label, and the header line."""
    rng = np.random.default_rng(seed)
    table = load_cicids2017(engineered=False)
    features = pd.DataFrame(table.X, columns=table.feature_names)
    frame = pd.DataFrame({"Destination Port": table.identifiers["Dst Port"].astype("int64")})
    names = list(CANONICAL_FEATURES)
    for i, name in enumerate(names):
        column = features[name]
        integral = np.all(np.mod(column.to_numpy(), 1) == 0)
        frame[name] = column.astype("int64") if integral else column.astype("float64")
        if i == 54:
            frame["Fwd Header Length.1"] = frame["Fwd Header Length"]
    labels = np.array([ORIGINAL_LABELS.get(lab, lab) for lab in table.labels], dtype=object)
    frame["Label"] = labels
    for column in ("Flow Bytes/s", "Flow Packets/s"):
        frame[column] = frame[column].astype(object)
    bad = rng.random(len(frame)) < NONFINITE_SHARE
    text = rng.choice(["Infinity", "NaN"], size=int(bad.sum()))
    frame.loc[bad, "Flow Bytes/s"] = text
    frame.loc[bad, "Flow Packets/s"] = text
    buffer = io.StringIO()
    frame.to_csv(buffer, header=False, index=False, lineterminator="\r\n")
    lines = np.array(
        [line.encode("cp1252") + b"\r\n" for line in buffer.getvalue().split("\r\n")[:-1]],
        dtype=object,
    )
    header = ",".join([frame.columns[0]] + [" " + c for c in frame.columns[1:]]) + "\r\n"
    return lines, np.asarray(table.labels), header.encode("cp1252")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_830_743)
    parser.add_argument("--out", default="/tmp/cicids2017-synthetic")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    lines, labels, header = pool_lines(args.seed)
    benign = labels == "BENIGN"
    weights = np.where(benign, BENIGN_SHARE / benign.sum(), (1 - BENIGN_SHARE) / (~benign).sum())
    rng = np.random.default_rng(args.seed + 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_file = np.diff(np.linspace(0, args.rows, len(DAYS) + 1).astype(int))
    total = 0
    for day, n in zip(DAYS, per_file, strict=True):
        rows = rng.choice(len(lines), size=n, p=weights)
        path = out / f"SYNTHETIC-{day}.csv"
        path.write_bytes(header + b"".join(lines[rows]))
        total += path.stat().st_size
    print(
        f"wrote {args.rows:,} SYNTHETIC rows (resampled real sample rows) in {len(DAYS)} files, "
        f"{total / 2**30:.2f} GiB, to {out} in {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
