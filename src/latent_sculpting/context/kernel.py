"""The numba kernels of the context stage: key hashing, bounded entity tables, the flow loop.

Everything here works on plain NumPy arrays, so that a state is a set of arrays (saved as
tensors in a model file, never pickled) and the loop runs at compiled speed on one thread.

**Keys.** An entity (a source host, a host pair, a destination service, a source's
destination port) is known by a 64-bit key: FNV-1a over the UTF-8 bytes of an address (or
the value of an integer column), finished with splitmix64's mixer, and parts combined with
:func:`_combine`. Two different entities share a key with probability about n^2 / 2^65 for n
entities (3e-8 for a million): they would then share their statistics. The hash is fixed
here, not taken from a library whose hash may change between versions, because keys are
stored in model files.

**Tables.** Each entity kind has its own table: open addressing with linear probing over a
power-of-two index at most half full, and backward-shift deletion (no tombstones, so a table
that evicts forever does not slow down). numba's typed ``Dict`` does the same job, but was
measured 9-16x slower here (1 M inserts and lookups: 0.83 s and 0.45 s against 0.05 s and
0.05 s). Entities live in *slots*: per-slot key, time of the last flow (``last``), a creation
serial (``born``), a link to the source entity's serial (``link``) and the statistics.

**Eviction.** A table holds at most its capacity. When a new entity finds no free slot, the
eighth of the table with the oldest last flow is evicted at once (ties broken by key), so the
cost is a partial sort per capacity / 8 new entities, and which entities go depends only on
the (key, last) pairs in the table, never on where they sit in memory.

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
import numpy as np

__all__ = [
    "N_FEATURES",
    "N_STATS",
    "combine_keys",
    "hash_integers",
    "hash_strings",
    "rebuild_index",
    "run",
]

_U1 = np.uint64(1)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)

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


@numba.njit(nogil=True, cache=True, inline="always")
def _mix(x):
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


@numba.njit(nogil=True, cache=True, inline="always")
def _combine(a, b):
    return _mix(a * _GOLDEN ^ b)


@numba.njit(nogil=True, cache=True)
def hash_strings(offsets, data):
    """Key of each string of an Arrow string array (``offsets``: n + 1 int64, ``data``: bytes)."""
    n = offsets.shape[0] - 1
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = _FNV_OFFSET
        for j in range(offsets[i], offsets[i + 1]):
            h ^= np.uint64(data[j])
            h *= _FNV_PRIME
        out[i] = _mix(h)
    return out


@numba.njit(nogil=True, cache=True)
def hash_integers(values):
    """Key of each integer (an integer column's values, e.g. ports)."""
    out = np.empty(values.shape[0], np.uint64)
    for i in range(values.shape[0]):
        out[i] = _mix(np.uint64(values[i]) ^ _GOLDEN)
    return out


@numba.njit(nogil=True, cache=True)
def combine_keys(src, dst, port, proto, seeds):
    """The four entity keys of each flow: source, pair, service (dst, port, proto) and source
    port (src, port, proto), each from its own seed so that kinds never share keys."""
    n = src.shape[0]
    out = np.empty((4, n), np.uint64)
    for i in range(n):
        out[0, i] = _combine(seeds[0], src[i])
        out[1, i] = _combine(_combine(seeds[1], src[i]), dst[i])
        out[2, i] = _combine(_combine(_combine(seeds[2], dst[i]), port[i]), proto[i])
        out[3, i] = _combine(_combine(_combine(seeds[3], src[i]), port[i]), proto[i])
    return out


# --- tables --------------------------------------------------------------------------------
# A table is a tuple (index_keys, index_slots, keys, last, born, link, stats, used, free, meta):
# index_slots[h] < 0 marks an empty index cell; meta[0] is the number of free slots, whose
# numbers are free[:meta[0]] (a stack).


@numba.njit(nogil=True, cache=True, inline="always")
def _find(ik, islot, key):
    mask = np.uint64(ik.shape[0] - 1)
    h = key & mask
    while True:
        s = islot[h]
        if s < 0:
            return -1
        if ik[h] == key:
            return s
        h = (h + _U1) & mask


@numba.njit(nogil=True, cache=True, inline="always")
def _insert(ik, islot, key, slot):
    mask = np.uint64(ik.shape[0] - 1)
    h = key & mask
    while islot[h] >= 0:
        h = (h + _U1) & mask
    ik[h] = key
    islot[h] = slot


@numba.njit(nogil=True, cache=True)
def _delete(ik, islot, key):
    """Remove ``key`` and shift the cells of its probe run back, so no tombstone is left."""
    mask = np.uint64(ik.shape[0] - 1)
    i = key & mask
    while ik[i] != key or islot[i] < 0:
        i = (i + _U1) & mask
    islot[i] = -1
    j = i
    while True:
        j = (j + _U1) & mask
        if islot[j] < 0:
            return
        home = ik[j] & mask
        # The entry at j may move back to i only if its home cell is not cyclically in (i, j].
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            ik[i] = ik[j]
            islot[i] = islot[j]
            islot[j] = -1
            i = j


@numba.njit(nogil=True, cache=True)
def rebuild_index(ik, islot, keys, used):
    """Index every used slot (after the slot arrays grew or were read from a state)."""
    islot[:] = -1
    for s in range(keys.shape[0]):
        if used[s]:
            _insert(ik, islot, keys[s], s)


@numba.njit(nogil=True, cache=True)
def _release(ik, islot, keys, used, free, meta, s):
    _delete(ik, islot, keys[s])
    used[s] = 0
    free[meta[0]] = s
    meta[0] += 1


@numba.njit(nogil=True, cache=True)
def _evict(ik, islot, keys, last, used, free, meta):
    """Free the eighth of a full table whose last flows are oldest (ties: smallest keys)."""
    cap = keys.shape[0]
    k = max(1, cap // 8)
    threshold = np.partition(last.copy(), k - 1)[k - 1]
    evicted = 0
    for s in range(cap):
        if last[s] < threshold:
            _release(ik, islot, keys, used, free, meta, s)
            evicted += 1
    if evicted < k:
        tied = np.flatnonzero(last == threshold)
        tied = tied[np.argsort(keys[tied], kind="mergesort")]
        for s in tied[: k - evicted]:
            _release(ik, islot, keys, used, free, meta, s)


# The hot path takes each table's arrays one by one: numba pays a reference count per array
# each time a tuple of them is unpacked, which measured 0.1 us per lookup with ten arrays.
@numba.njit(nogil=True, cache=True, inline="always")
def _acquire(ik, islot, keys, last, born, link, stats, used, free, meta, key, t, serial):
    """Slot of ``key``, created (statistics zero, born ``serial[0]``) when absent."""
    s = _find(ik, islot, key)
    if s >= 0:
        return s
    if meta[0] == 0:
        _evict(ik, islot, keys, last, used, free, meta)
    meta[0] -= 1
    s = free[meta[0]]
    keys[s] = key
    last[s] = t
    born[s] = serial[0]
    serial[0] += 1
    link[s] = -1
    used[s] = 1
    stats[s] = 0.0
    _insert(ik, islot, key, s)
    return s


# --- the loop --------------------------------------------------------------------------------


@numba.njit(nogil=True, cache=True, inline="always")
def _welford(stats, mean, squares, weight, x, decay):
    """West's weighted update of a mean and sum of squares with the past decayed by ``decay``;
    ``weight`` is the series' total weight after the update."""
    delta = x - stats[mean]
    stats[mean] += delta / weight
    # When a value dwarfs a fully decayed mean, rounding can leave a residue below zero.
    stats[squares] = max(stats[squares] * decay + delta * (x - stats[mean]), 0.0)


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
def _src_features(out, e, c, now, taus, s, last, stats):
    n_scales = taus.shape[0]
    for k in range(n_scales):
        d = math.exp(-(now - last[s]) / taus[k]) if s >= 0 else 0.0
        w = stats[s, k, SRC_W] if s >= 0 else 0.0
        if w * d >= MIN_WEIGHT:
            out[e, c + k] = w * d
            out[e, c + n_scales + k] = stats[s, k, SRC_DH] * d
            out[e, c + 2 * n_scales + k] = stats[s, k, SRC_DP] * d
            # Shares, means and spreads do not change as the weights decay together.
            out[e, c + 3 * n_scales + k] = stats[s, k, SRC_WF] / w
            out[e, c + 4 * n_scales + k] = stats[s, k, SRC_BM]
            out[e, c + 5 * n_scales + k] = math.sqrt(stats[s, k, SRC_BS] / w)
            out[e, c + 6 * n_scales + k] = stats[s, k, SRC_PM]
            out[e, c + 7 * n_scales + k] = math.sqrt(stats[s, k, SRC_PS] / w)
        else:
            for f in range(N_FEATURES[0]):
                out[e, c + f * n_scales + k] = 0.0


@numba.njit(nogil=True, cache=True, inline="always")
def _pair_features(out, e, c, now, taus, p, last, stats):
    n_scales = taus.shape[0]
    for k in range(n_scales):
        d = math.exp(-(now - last[p]) / taus[k]) if p >= 0 else 0.0
        w = stats[p, k, PAIR_W] if p >= 0 else 0.0
        if w * d >= MIN_WEIGHT:
            out[e, c + k] = w * d
            out[e, c + n_scales + k] = stats[p, k, PAIR_WF] / w
            gw = stats[p, k, PAIR_GW]
            out[e, c + 2 * n_scales + k] = stats[p, k, PAIR_GM] if gw > 0.0 else taus[k]
            out[e, c + 3 * n_scales + k] = _cv(
                stats[p, k, PAIR_GM], stats[p, k, PAIR_GS], gw, stats[p, k, PAIR_GW2]
            )
            out[e, c + 4 * n_scales + k] = _cv(
                stats[p, k, PAIR_BM], stats[p, k, PAIR_BS], w, stats[p, k, PAIR_W2]
            )
        else:
            out[e, c + k] = 0.0
            out[e, c + n_scales + k] = 0.0
            out[e, c + 2 * n_scales + k] = taus[k]
            out[e, c + 3 * n_scales + k] = 1.0
            out[e, c + 4 * n_scales + k] = 1.0


@numba.njit(nogil=True, cache=True, inline="always")
def _service_features(out, e, c, now, taus, v, last, stats):
    n_scales = taus.shape[0]
    for k in range(n_scales):
        d = math.exp(-(now - last[v]) / taus[k]) if v >= 0 else 0.0
        w = stats[v, k, SVC_W] if v >= 0 else 0.0
        if w * d >= MIN_WEIGHT:
            out[e, c + k] = w * d
            out[e, c + n_scales + k] = stats[v, k, SVC_WF] / w
            out[e, c + 2 * n_scales + k] = stats[v, k, SVC_BM]
            out[e, c + 3 * n_scales + k] = math.sqrt(stats[v, k, SVC_BS] / w)
        else:
            for f in range(N_FEATURES[2]):
                out[e, c + f * n_scales + k] = 0.0


@numba.njit(nogil=True, cache=True, inline="always")
def _update_src(stats, s, k, age, tau, x_failed, x_bytes, x_packets):
    d = math.exp(-age / tau)
    w = stats[s, k, SRC_W] * d + 1.0
    stats[s, k, SRC_W] = w
    stats[s, k, SRC_WF] = stats[s, k, SRC_WF] * d + x_failed
    _welford(stats[s, k], SRC_BM, SRC_BS, w, x_bytes, d)
    _welford(stats[s, k], SRC_PM, SRC_PS, w, x_packets, d)
    stats[s, k, SRC_DH] *= d
    stats[s, k, SRC_DP] *= d


@numba.njit(nogil=True, cache=True, inline="always")
def _update_pair(stats, p, k, gap, tau, fresh, x_failed, x_bytes):
    d = math.exp(-gap / tau)
    if not fresh:
        gw = stats[p, k, PAIR_GW] * d + 1.0
        stats[p, k, PAIR_GW] = gw
        stats[p, k, PAIR_GW2] = stats[p, k, PAIR_GW2] * d * d + 1.0
        _welford(stats[p, k], PAIR_GM, PAIR_GS, gw, gap, d)
    w = stats[p, k, PAIR_W] * d + 1.0
    stats[p, k, PAIR_W] = w
    stats[p, k, PAIR_W2] = stats[p, k, PAIR_W2] * d * d + 1.0
    stats[p, k, PAIR_WF] = stats[p, k, PAIR_WF] * d + x_failed
    _welford(stats[p, k], PAIR_BM, PAIR_BS, w, x_bytes, d)
    return d


@numba.njit(nogil=True, cache=True, inline="always")
def _update_service(stats, v, k, age, tau, x_failed, x_bytes):
    d = math.exp(-age / tau)
    w = stats[v, k, SVC_W] * d + 1.0
    stats[v, k, SVC_W] = w
    stats[v, k, SVC_WF] = stats[v, k, SVC_WF] * d + x_failed
    _welford(stats[v, k], SVC_BM, SVC_BS, w, x_bytes, d)


@numba.njit(nogil=True, cache=True, inline="always")
def _distinct(stats, s, k, column, counted, since, tau):
    """Replace a value's old contribution to a damped distinct count by 1."""
    if counted:
        stats[s, k, column] -= math.exp(-since / tau)
    # Subtracting a contribution can leave a rounding residue just below zero.
    stats[s, k, column] = max(stats[s, k, column], 0.0) + 1.0


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
    """Features of every flow with ``emit[r] >= 0`` into ``out[emit[r]]``, then the flows into
    the tables, one group of equal start times at a time, from row ``start`` on: a group's flows
    are featurised before any of them is applied, so flows that start together do not see
    each other. The last group is featurised but not applied (a later batch may hold more
    flows of that instant).

    ``t`` is non-decreasing (checked by the caller); the rows of a group are in the caller's
    canonical order, so the tables do not depend on the order flows of one instant came in.

    Returns
    -------
    position : int
        The last group's first row; or, when ``grow`` is set, the first row of the group that
        did not fit.
    grow : bool
        A table below ``limit`` slots has fewer free slots than the group has flows: the caller
        grows it and calls again from ``position`` (nothing of that group was done).
    """
    sik, sis, skeys, slast, sborn, slink, sst, sused, sfree, smeta = src
    pik, pis, pkeys, plast, pborn, plink, pst, pused, pfree, pmeta = pair
    vik, vis, vkeys, vlast, vborn, vlink, vst, vused, vfree, vmeta = svc
    qik, qis, qkeys, qlast, qborn, qlink, qst, qused, qfree, qmeta = port
    n_scales = taus.shape[0]
    n = t.shape[0]
    i = start
    while i < n:
        j = i + 1
        while j < n and t[j] == t[i]:
            j += 1
        size = j - i
        if j < n and (
            (smeta[0] < size and skeys.shape[0] < limit)
            or (pmeta[0] < size and pkeys.shape[0] < limit)
            or (vmeta[0] < size and vkeys.shape[0] < limit)
            or (qmeta[0] < size and qkeys.shape[0] < limit)
        ):
            return i, True
        for r in range(i, j):
            e = emit[r]
            if e < 0:
                continue
            now = t[r]
            if cols[0] >= 0:
                s = _find(sik, sis, keys[0, r])
                _src_features(out, e, cols[0], now, taus, s, slast, sst)
            if cols[1] >= 0:
                p = _find(pik, pis, keys[1, r])
                _pair_features(out, e, cols[1], now, taus, p, plast, pst)
            if cols[2] >= 0:
                v = _find(vik, vis, keys[2, r])
                _service_features(out, e, cols[2], now, taus, v, vlast, vst)
        if j == n:
            return i, False
        for r in range(i, j):
            now = t[r]
            x_failed, x_bytes, x_packets = failed[r], nbytes[r], npackets[r]
            s = _acquire(
                sik,
                sis,
                skeys,
                slast,
                sborn,
                slink,
                sst,
                sused,
                sfree,
                smeta,
                keys[0, r],
                now,
                serial,
            )
            age = now - slast[s]
            for k in range(n_scales):
                _update_src(sst, s, k, age, taus[k], x_failed, x_bytes, x_packets)
            slast[s] = now
            generation = sborn[s]

            # The pair: its own statistics, and the source's distinct destination hosts, where
            # the pair's previous flow (if it counted for this incarnation of the source) is
            # replaced.
            p = _find(pik, pis, keys[1, r])
            fresh = p < 0
            if fresh:
                p = _acquire(
                    pik,
                    pis,
                    pkeys,
                    plast,
                    pborn,
                    plink,
                    pst,
                    pused,
                    pfree,
                    pmeta,
                    keys[1, r],
                    now,
                    serial,
                )
            gap = now - plast[p]
            counted = not fresh and plink[p] == generation
            for k in range(n_scales):
                _update_pair(pst, p, k, gap, taus[k], fresh, x_failed, x_bytes)
                _distinct(sst, s, k, SRC_DH, counted, gap, taus[k])
            plast[p] = now
            plink[p] = generation

            # The source's distinct destination ports, from the (source, port, protocol) table.
            q = _find(qik, qis, keys[3, r])
            fresh = q < 0
            if fresh:
                q = _acquire(
                    qik,
                    qis,
                    qkeys,
                    qlast,
                    qborn,
                    qlink,
                    qst,
                    qused,
                    qfree,
                    qmeta,
                    keys[3, r],
                    now,
                    serial,
                )
            counted = not fresh and qlink[q] == generation
            since = now - qlast[q]
            for k in range(n_scales):
                _distinct(sst, s, k, SRC_DP, counted, since, taus[k])
            qlast[q] = now
            qlink[q] = generation

            v = _acquire(
                vik,
                vis,
                vkeys,
                vlast,
                vborn,
                vlink,
                vst,
                vused,
                vfree,
                vmeta,
                keys[2, r],
                now,
                serial,
            )
            age = now - vlast[v]
            for k in range(n_scales):
                _update_service(vst, v, k, age, taus[k], x_failed, x_bytes)
            vlast[v] = now
        i = j
    return n, False
