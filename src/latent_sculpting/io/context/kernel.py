"""The numba loop of the context stage: each flow's features, then the flow into the tables.

Everything here works on plain NumPy arrays (the tables of :mod:`.tables`), so that a state is
a set of arrays (saved as tensors in a model file, never pickled) and the loop runs at compiled
speed on one thread.

**Statistics.** Per entity and time scale tau, each flow's weight decays as exp(-age / tau)
(Kitsune's AfterImage uses 2^(-lambda age), the same family). A decayed count of flows then
equals the number of flows in the last tau seconds for a steady rate. Means and spreads are
West's weighted incremental mean and sum of squares with the past weights decayed, which is
numerically stable (no sum of squares minus squared sum). Distinct destinations are damped
distinct counts: the sum, over distinct values, of the decayed weight of each value's latest
flow; a repeat replaces its old contribution by 1.
"""

from __future__ import annotations

import math

import numba

from latent_sculpting.io.context.tables import BORN, LAST, LINK, STATS, acquire, find, short

__all__ = ["MIN_EFFECTIVE", "MIN_WEIGHT", "N_FEATURES", "N_STATS", "run"]

# Per-slot statistics, per time scale, of each table.
# Source host: decayed flows, failed flows, bytes mean and sum of squares, packets mean and sum
# of squares, distinct destination hosts, distinct destination ports.
SRC_W, SRC_WF, SRC_BM, SRC_BS, SRC_PM, SRC_PS, SRC_DH, SRC_DP = range(8)
# Host pair: flows, their squared weights, failed flows, bytes mean and sum of squares, gap
# weight, gap squared weights, gap mean and sum of squares.
PAIR_W, PAIR_W2, PAIR_WF, PAIR_BM, PAIR_BS, PAIR_GW, PAIR_GW2, PAIR_GM, PAIR_GS = range(9)
# Destination service: flows, failed flows, bytes mean and sum of squares.
SVC_W, SVC_WF, SVC_BM, SVC_BS = range(4)
#: Statistics per slot and time scale: source, pair, service, source port (last time only).
N_STATS = (8, 9, 4, 0)
#: Features per time scale of each kind: source, pair, service.
N_FEATURES = (8, 5, 4)
#: A coefficient of variation is reported once the gaps or sizes weigh as much as this many
#: equally weighted ones (W^2 / sum of w^2); before that it is the neutral 1.
MIN_EFFECTIVE = 2.0
#: At a time scale where an entity's decayed flow weight is below this (its last flow more
#: than about 7 scales ago), the entity reads as unseen: features describe recent traffic, and
#: a mean of flows long gone says nothing about it.
MIN_WEIGHT = 1e-3


# --- the loop --------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True, inline="always")
def _welford(rows, s, mean, squares, weight, x, decay):
    """West's weighted update of a mean and sum of squares with the past decayed by ``decay``;
    ``weight`` is the series' total weight after the update."""
    delta = x - rows[s, mean]
    rows[s, mean] += delta / weight
    # When a value dwarfs a fully decayed mean, rounding can leave a residue below zero.
    rows[s, squares] = max(rows[s, squares] * decay + delta * (x - rows[s, mean]), 0.0)


@numba.njit(nogil=True, cache=True, inline="always")
def _cv(mean, squares, weight, weight2):
    """Coefficient of variation of a weighted series (reliability weights: the variance is
    unbiased for the effective number of values); the neutral 1 until the series weighs as
    much as MIN_EFFECTIVE equal values, 0 for a series of zeros."""
    if weight2 <= 0.0 or weight * weight < MIN_EFFECTIVE * weight2:
        return 1.0
    if mean <= 0.0:
        return 0.0
    variance = squares / (weight - weight2 / weight)
    return math.sqrt(max(variance, 0.0)) / mean


@numba.njit(nogil=True, cache=True, inline="always")
def _src_features(out, e, c, now, taus, s, rows):
    n_scales = taus.shape[0]
    for k in range(n_scales):
        b = STATS + k * N_STATS[0]
        d = math.exp(-(now - rows[s, LAST]) / taus[k]) if s >= 0 else 0.0
        w = rows[s, b + SRC_W] if s >= 0 else 0.0
        if w * d >= MIN_WEIGHT:
            out[c + k, e] = w * d
            out[c + n_scales + k, e] = rows[s, b + SRC_DH] * d
            out[c + 2 * n_scales + k, e] = rows[s, b + SRC_DP] * d
            # Shares, means and spreads do not change as the weights decay together.
            out[c + 3 * n_scales + k, e] = rows[s, b + SRC_WF] / w
            out[c + 4 * n_scales + k, e] = rows[s, b + SRC_BM]
            out[c + 5 * n_scales + k, e] = math.sqrt(rows[s, b + SRC_BS] / w)
            out[c + 6 * n_scales + k, e] = rows[s, b + SRC_PM]
            out[c + 7 * n_scales + k, e] = math.sqrt(rows[s, b + SRC_PS] / w)
        else:
            for f in range(N_FEATURES[0]):
                out[c + f * n_scales + k, e] = 0.0


@numba.njit(nogil=True, cache=True, inline="always")
def _pair_features(out, e, c, now, taus, p, rows):
    n_scales = taus.shape[0]
    for k in range(n_scales):
        b = STATS + k * N_STATS[1]
        d = math.exp(-(now - rows[p, LAST]) / taus[k]) if p >= 0 else 0.0
        w = rows[p, b + PAIR_W] if p >= 0 else 0.0
        if w * d >= MIN_WEIGHT:
            out[c + k, e] = w * d
            out[c + n_scales + k, e] = rows[p, b + PAIR_WF] / w
            gw = rows[p, b + PAIR_GW]
            out[c + 2 * n_scales + k, e] = rows[p, b + PAIR_GM] if gw > 0.0 else taus[k]
            out[c + 3 * n_scales + k, e] = _cv(
                rows[p, b + PAIR_GM], rows[p, b + PAIR_GS], gw, rows[p, b + PAIR_GW2]
            )
            out[c + 4 * n_scales + k, e] = _cv(
                rows[p, b + PAIR_BM], rows[p, b + PAIR_BS], w, rows[p, b + PAIR_W2]
            )
        else:
            out[c + k, e] = 0.0
            out[c + n_scales + k, e] = 0.0
            out[c + 2 * n_scales + k, e] = taus[k]
            out[c + 3 * n_scales + k, e] = 1.0
            out[c + 4 * n_scales + k, e] = 1.0


@numba.njit(nogil=True, cache=True, inline="always")
def _service_features(out, e, c, now, taus, v, rows):
    n_scales = taus.shape[0]
    for k in range(n_scales):
        b = STATS + k * N_STATS[2]
        d = math.exp(-(now - rows[v, LAST]) / taus[k]) if v >= 0 else 0.0
        w = rows[v, b + SVC_W] if v >= 0 else 0.0
        if w * d >= MIN_WEIGHT:
            out[c + k, e] = w * d
            out[c + n_scales + k, e] = rows[v, b + SVC_WF] / w
            out[c + 2 * n_scales + k, e] = rows[v, b + SVC_BM]
            out[c + 3 * n_scales + k, e] = math.sqrt(rows[v, b + SVC_BS] / w)
        else:
            for f in range(N_FEATURES[2]):
                out[c + f * n_scales + k, e] = 0.0


@numba.njit(nogil=True, cache=True, inline="always")
def _update_src(rows, s, b, age, tau, x_failed, x_bytes, x_packets):
    d = math.exp(-age / tau)
    w = rows[s, b + SRC_W] * d + 1.0
    rows[s, b + SRC_W] = w
    rows[s, b + SRC_WF] = rows[s, b + SRC_WF] * d + x_failed
    _welford(rows, s, b + SRC_BM, b + SRC_BS, w, x_bytes, d)
    _welford(rows, s, b + SRC_PM, b + SRC_PS, w, x_packets, d)
    rows[s, b + SRC_DH] *= d
    rows[s, b + SRC_DP] *= d


@numba.njit(nogil=True, cache=True, inline="always")
def _update_pair(rows, p, b, gap, tau, fresh, x_failed, x_bytes):
    d = math.exp(-gap / tau)
    if not fresh:
        gw = rows[p, b + PAIR_GW] * d + 1.0
        rows[p, b + PAIR_GW] = gw
        rows[p, b + PAIR_GW2] = rows[p, b + PAIR_GW2] * d * d + 1.0
        _welford(rows, p, b + PAIR_GM, b + PAIR_GS, gw, gap, d)
    w = rows[p, b + PAIR_W] * d + 1.0
    rows[p, b + PAIR_W] = w
    rows[p, b + PAIR_W2] = rows[p, b + PAIR_W2] * d * d + 1.0
    rows[p, b + PAIR_WF] = rows[p, b + PAIR_WF] * d + x_failed
    _welford(rows, p, b + PAIR_BM, b + PAIR_BS, w, x_bytes, d)


@numba.njit(nogil=True, cache=True, inline="always")
def _update_service(rows, v, b, age, tau, x_failed, x_bytes):
    d = math.exp(-age / tau)
    w = rows[v, b + SVC_W] * d + 1.0
    rows[v, b + SVC_W] = w
    rows[v, b + SVC_WF] = rows[v, b + SVC_WF] * d + x_failed
    _welford(rows, v, b + SVC_BM, b + SVC_BS, w, x_bytes, d)


@numba.njit(nogil=True, cache=True, inline="always")
def _distinct(rows, s, column, counted, since, tau):
    """Replace a value's old contribution to a damped distinct count by 1."""
    if counted:
        rows[s, column] -= math.exp(-since / tau)
    # Subtracting a contribution can leave a rounding residue just below zero.
    rows[s, column] = max(rows[s, column], 0.0) + 1.0


@numba.njit(nogil=True, cache=True)
def run(
    t,
    keys,
    failed,
    nbytes,
    npackets,
    emit,
    out,
    taus,
    cols,
    src,
    pair,
    svc,
    port,
    serial,
    start,
    limit,
):
    """Features of every flow with ``emit[r] >= 0`` into ``out[:, emit[r]]`` (one row per
    feature, so that each feature's column is contiguous for Arrow), then the flows into
    the tables, one group of equal start times at a time, from row ``start`` on: a group's flows
    are featurised before any of them is applied, so flows that start together do not see
    each other. The last group is featurised but not applied (a later batch may hold more
    flows of that instant).

    ``t`` is non-decreasing (checked by the caller); the rows of a group are in the caller's
    canonical order, so the tables do not depend on the order flows of one instant came in.
    ``keys`` are int64 (the bits of the uint64 keys).

    Returns
    -------
    position : int
        The last group's first row; or, when ``grow`` is set, the first row of the group that
        did not fit.
    grow : bool
        A table below ``limit`` slots has fewer free slots than the group has flows: the caller
        grows it and calls again from ``position`` (nothing of that group was done).
    """
    s_index, s_keys, s_rows, s_used, s_free, s_meta = src
    p_index, p_keys, p_rows, p_used, p_free, p_meta = pair
    v_index, v_keys, v_rows, v_used, v_free, v_meta = svc
    q_index, q_keys, q_rows, q_used, q_free, q_meta = port
    n_scales = taus.shape[0]
    n = t.shape[0]
    i = start
    while i < n:
        j = i + 1
        while j < n and t[j] == t[i]:
            j += 1
        size = j - i
        if j < n and (
            short(s_keys, s_meta, size, limit)
            or short(p_keys, p_meta, size, limit)
            or short(v_keys, v_meta, size, limit)
            or short(q_keys, q_meta, size, limit)
        ):
            return i, True
        for r in range(i, j):
            e = emit[r]
            if e < 0:
                continue
            now = t[r]
            if cols[0] >= 0:
                _src_features(out, e, cols[0], now, taus, find(s_index, keys[0, r]), s_rows)
            if cols[1] >= 0:
                _pair_features(out, e, cols[1], now, taus, find(p_index, keys[1, r]), p_rows)
            if cols[2] >= 0:
                _service_features(out, e, cols[2], now, taus, find(v_index, keys[2, r]), v_rows)
        if j == n:
            return i, False
        for r in range(i, j):
            now = t[r]
            x_failed, x_bytes, x_packets = failed[r], nbytes[r], npackets[r]
            s = acquire(s_index, s_keys, s_rows, s_used, s_free, s_meta, keys[0, r], now, serial)
            age = now - s_rows[s, LAST]
            for k in range(n_scales):
                b = STATS + k * N_STATS[0]
                _update_src(s_rows, s, b, age, taus[k], x_failed, x_bytes, x_packets)
            s_rows[s, LAST] = now
            generation = s_rows[s, BORN]

            # The pair: its own statistics, and the source's distinct destination hosts, where
            # the pair's previous flow (if it counted for this incarnation of the source) is
            # replaced.
            p = find(p_index, keys[1, r])
            fresh = p < 0
            if fresh:
                p = acquire(
                    p_index, p_keys, p_rows, p_used, p_free, p_meta, keys[1, r], now, serial
                )
            gap = now - p_rows[p, LAST]
            counted = not fresh and p_rows[p, LINK] == generation
            for k in range(n_scales):
                b = STATS + k * N_STATS[1]
                _update_pair(p_rows, p, b, gap, taus[k], fresh, x_failed, x_bytes)
                _distinct(s_rows, s, STATS + k * N_STATS[0] + SRC_DH, counted, gap, taus[k])
            p_rows[p, LAST] = now
            p_rows[p, LINK] = generation

            # The source's distinct destination ports, from the (source, port, protocol) table.
            q = find(q_index, keys[3, r])
            fresh = q < 0
            if fresh:
                q = acquire(
                    q_index, q_keys, q_rows, q_used, q_free, q_meta, keys[3, r], now, serial
                )
            counted = not fresh and q_rows[q, LINK] == generation
            since = now - q_rows[q, LAST]
            for k in range(n_scales):
                _distinct(s_rows, s, STATS + k * N_STATS[0] + SRC_DP, counted, since, taus[k])
            q_rows[q, LAST] = now
            q_rows[q, LINK] = generation

            v = acquire(v_index, v_keys, v_rows, v_used, v_free, v_meta, keys[2, r], now, serial)
            age = now - v_rows[v, LAST]
            for k in range(n_scales):
                b = STATS + k * N_STATS[2]
                _update_service(v_rows, v, b, age, taus[k], x_failed, x_bytes)
            v_rows[v, LAST] = now
        i = j
    return n, False
