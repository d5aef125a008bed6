"""Keys and bounded entity tables for the context stage, as numba functions on plain arrays.

**Keys.** An entity (a source host, a host pair, a destination service, a source's
destination port) is known by a 64-bit key: FNV-1a over the UTF-8 bytes of an address (or
the value of an integer column), finished with splitmix64's mixer, and parts combined in
:func:`combine_keys`. Two different entities share a key with probability about n^2 / 2^65 for
n entities (3e-8 for a million): they would then share their statistics. The hash is fixed
here, not taken from a library whose hash may change between versions, because keys are
stored in model files.

**Tables.** Each entity kind has its own table: open addressing with linear probing over a
power-of-two index at most half full, and backward-shift deletion (no tombstones, so a table
that evicts forever does not slow down). numba's typed ``Dict`` does the same job, but was
measured 9-16x slower here (1 M inserts and lookups: 0.83 s and 0.45 s against 0.05 s and
0.05 s). Entities live in *slots*, each one record: time of the last flow, a creation serial,
a link to the serial of the source it was last counted for, and the statistics; a flow reads
one index cell and one record per table, which is what a million entities that do not fit in
the cache cost.

**Eviction.** A table holds at most its capacity. When a new entity finds no free slot, the
eighth of the table with the oldest last flow is evicted at once (ties broken by key), so the
cost is a partial sort per capacity / 8 new entities, and which entities go depends only on
the (key, last) pairs in the table, never on where they sit in memory.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "BORN",
    "LAST",
    "LINK",
    "STATS",
    "acquire",
    "combine_keys",
    "find",
    "hash_integers",
    "hash_strings",
    "rebuild_index",
    "short",
]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)


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
# A table is a tuple (index, keys, rows, used, free, meta). ``index`` is int64 (size, 2): a
# key's bits and its slot + 1 (0: an empty cell, so that a fresh index is all zeros, which the
# system maps lazily), side by side so that a probe reads one cache line. ``rows`` holds one
# record per slot: the time of its last flow, its creation serial, the serial of the source it
# was last counted for, then its statistics per time scale; a record is a few adjacent cache
# lines. ``keys`` and ``used`` say which key a slot holds, for eviction and for writing a
# state. Slots from ``meta[1]`` on have never been used; slots freed by eviction are the stack
# ``free[:meta[0]]``. Arrays grow with zeros the system maps lazily, so memory is touched only
# as entities arrive.
LAST, BORN, LINK, STATS = 0, 1, 2, 3


@numba.njit(nogil=True, cache=True, inline="always")
def find(index, key):
    mask = index.shape[0] - 1
    h = key & mask
    while True:
        s = index[h, 1]
        if s == 0:
            return -1
        if index[h, 0] == key:
            return s - 1
        h = (h + 1) & mask


@numba.njit(nogil=True, cache=True, inline="always")
def _insert(index, key, slot):
    mask = index.shape[0] - 1
    h = key & mask
    while index[h, 1] != 0:
        h = (h + 1) & mask
    index[h, 0] = key
    index[h, 1] = slot + 1


@numba.njit(nogil=True, cache=True)
def _delete(index, key):
    """Remove ``key`` and shift the cells of its probe run back, so no tombstone is left."""
    mask = index.shape[0] - 1
    i = key & mask
    while index[i, 0] != key or index[i, 1] == 0:
        i = (i + 1) & mask
    index[i, 1] = 0
    j = i
    while True:
        j = (j + 1) & mask
        if index[j, 1] == 0:
            return
        home = index[j, 0] & mask
        # The entry at j may move back to i only if its home cell is not cyclically in (i, j].
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            index[i, 0] = index[j, 0]
            index[i, 1] = index[j, 1]
            index[j, 1] = 0
            i = j


@numba.njit(nogil=True, cache=True)
def rebuild_index(index, keys, used):
    """Index every used slot of an empty (all zero) index."""
    for s in range(keys.shape[0]):
        if used[s]:
            _insert(index, keys[s], s)


@numba.njit(nogil=True, cache=True)
def _release(index, keys, used, free, meta, s):
    _delete(index, keys[s])
    used[s] = 0
    free[meta[0]] = s
    meta[0] += 1


@numba.njit(nogil=True, cache=True)
def _evict(index, keys, rows, used, free, meta):
    """Free the eighth of a full table whose last flows are oldest (ties: smallest keys)."""
    cap = keys.shape[0]
    k = max(1, cap // 8)
    last = rows[:, LAST].copy()
    threshold = np.partition(last.copy(), k - 1)[k - 1]
    evicted = 0
    for s in range(cap):
        if last[s] < threshold and used[s]:
            _release(index, keys, used, free, meta, s)
            evicted += 1
    if evicted < k:
        tied = np.flatnonzero(last == threshold)
        tied = tied[np.argsort(keys[tied], kind="mergesort")]
        for s in tied[: k - evicted]:
            _release(index, keys, used, free, meta, s)


# The hot path takes each table's arrays one by one: numba pays a reference count per array
# each time a tuple of them is unpacked, which measured 0.1 us per lookup with ten arrays.
@numba.njit(nogil=True, cache=True, inline="always")
def acquire(index, keys, rows, used, free, meta, key, t, serial):
    """Slot of ``key``, created (statistics zero, born ``serial[0]``) when absent."""
    s = find(index, key)
    if s >= 0:
        return s
    if meta[0] == 0 and meta[1] == keys.shape[0]:
        _evict(index, keys, rows, used, free, meta)
    if meta[0] > 0:
        meta[0] -= 1
        s = free[meta[0]]
    else:
        s = meta[1]
        meta[1] += 1
    keys[s] = key
    used[s] = 1
    rows[s] = 0.0
    rows[s, LAST] = t
    rows[s, BORN] = serial[0]
    rows[s, LINK] = -1.0
    serial[0] += 1
    _insert(index, key, s)
    return s


@numba.njit(nogil=True, cache=True, inline="always")
def short(keys, meta, need, limit):
    """Whether a table has fewer than ``need`` free slots and may still grow."""
    cap = keys.shape[0]
    return meta[0] + cap - meta[1] < need and cap < limit
