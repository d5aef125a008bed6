"""Full-scale training estimate of a preset: samples/s per stage on larger data, extrapolated.

Stage 1 is timed by a one-epoch fit on real embedded-sample rows resampled (with replacement)
to ``--stage1-rows``; Stage 2 by one flow epoch on ``--stage2-rows`` SYNTHETIC Gaussian codes
(the flow's cost per step does not depend on the values). Both at 1 and at all intra-op
threads. The rates are extrapolated to the full protocol sizes (620 k Stage-1 rows, 1.45 M
benign codes) and the preset's epochs.

Usage::

    python benchmarks/fullscale.py [--preset default] [--stage1-rows 40000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017
from latent_sculpting.stage2 import STAGE2_PARAMETERS, fit_flow

FULL_STAGE1_ROWS = 620_000
FULL_STAGE2_ROWS = 1_450_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--stage1-rows", type=int, default=40_000)
    parser.add_argument("--stage2-rows", type=int, default=100_000)
    args = parser.parse_args()
    params = {**preset(args.preset), "epochs": 1, "flow_epochs": 1}
    table = load_cicids2017()
    rng = np.random.default_rng(0)
    rows = rng.integers(len(table), size=args.stage1_rows)
    X, labels = table.X[rows], table.labels[rows]
    y = (labels != "BENIGN").astype(int)
    codes = rng.normal(size=(args.stage2_rows, params["latent_dim"])).astype(np.float32)
    saved = torch.get_num_threads()
    for threads in sorted({1, saved}):
        torch.set_num_threads(threads)
        model = LatentSculpting(**{**params, "undersample_benign": False}, random_state=0)
        model.fit(X, y, groups=labels)
        s1 = model.history_["n_stage1_train"] / model.history_["seconds"]["stage1"]
        t = time.perf_counter()
        fit_flow(codes, **{k: params[k] for k in STAGE2_PARAMETERS}, device=model.device_)
        s2 = len(codes) / (time.perf_counter() - t)
        e1, e2 = preset(args.preset)["epochs"], preset(args.preset)["flow_epochs"]
        m1 = FULL_STAGE1_ROWS * e1 / s1 / 60
        m2 = FULL_STAGE2_ROWS * e2 / s2 / 60
        print(
            f"{args.preset}, {threads} thread(s): Stage 1 {s1:,.0f} samples/s "
            f"({model.history_['n_stage1_train']:,} rows), Stage 2 {s2:,.0f} samples/s "
            f"({len(codes):,} SYNTHETIC codes) -> full scale Stage 1 {FULL_STAGE1_ROWS:,} x {e1} "
            f"epochs = {m1:.1f} min, Stage 2 {FULL_STAGE2_ROWS:,} x {e2} epochs = {m2:.1f} min, "
            f"total {m1 + m2:.1f} min"
        )
    torch.set_num_threads(saved)


if __name__ == "__main__":
    main()
