"""Context features of a batch of flows from plain arrays: the entry point under the stage.

:func:`context_features` takes one batch of flows in start-time order and a
:class:`~latent_sculpting.io.context.state.ContextState`, returns each flow's features and
advances the state. Its contract:

- **Causal.** A flow's features come from the flows that started strictly before it (and
  from nothing else: not from its own record, not from a later flow). Flows that start at
  the same instant do not see each other, so their features do not depend on their order.
- **Independent of batching.** A time-ordered stream cut into batches anywhere (between
  flows of one instant too) gives the same features, to the bit, as the whole stream in one
  call: the state holds back the flows of the latest instant until a later one arrives, and
  the flows of one instant enter the tables in a canonical order (by key, then by value).
- **Time order is the caller's.** A batch whose start times decrease, or that starts before
  the state's latest flow, is refused with the offending row; nothing is sorted here.
  (:class:`~latent_sculpting.io.context.stage.ContextStage` sorts a table and puts the rows
  back.)

What a flow's record gives is used as a whole: the statistics of a flow that started earlier
include its bytes, packets and outcome even when it ended after the flow being featurised
started. For logs scored after the fact that is what is known; a live sensor that sees a
record only when its flow ends knows less, and must feed records by start time with a delay
of up to the longest flow, or accept that difference.

Source ports and durations are not used: a source port is an ephemeral identity, and every
feature here is about flows that started before, whatever their length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.io.context.config import ENTITY_KINDS, KIND_FEATURES
from latent_sculpting.io.context.kernel import run
from latent_sculpting.io.context.state import TABLES, ContextState
from latent_sculpting.io.context.tables import combine_keys, hash_integers, hash_strings

__all__ = ["context_features", "entity_hashes"]

# One seed per key kind (source, pair, service, source port): the digits of pi, e and sqrt 2.
_SEEDS = np.array(
    [0x243F6A8885A308D3, 0x13198A2E03707344, 0xB7E151628AED2A6A, 0x6A09E667F3BCC908],
    dtype=np.uint64,
)


def entity_hashes(values: Any, what: str) -> np.ndarray:
    """64-bit key of each value of an identity column (addresses, ports, protocols).

    Text is hashed by its UTF-8 bytes, integers by their value (see :mod:`.tables`); a
    float column is taken as integers when every value is one (a CSV port column with
    ``80.0``).

    Raises
    ------
    ValueError
        On an empty value (the message names ``what`` and the first such row) or a float that
        is not a whole number.
    TypeError
        On a column that is neither text nor numbers.
    """
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"{what}: row {row} is empty; every flow needs one")
    kind = array.type
    if pa.types.is_dictionary(kind):
        return entity_hashes(array.dictionary, what)[array.indices.to_numpy()]
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encoded = pc.dictionary_encode(array)
        return _string_hashes(encoded.dictionary)[encoded.indices.to_numpy()]
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        return hash_integers(array.cast(pa.int64()).to_numpy())
    if pa.types.is_floating(kind):
        numbers = array.to_numpy()
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise ValueError(f"{what}: row {row} holds {numbers[row]!r}, not a whole number")
        return hash_integers(numbers.astype(np.int64))
    raise TypeError(f"{what}: a column of {kind} cannot name an entity (text or integers only)")


def _string_hashes(array: pa.Array) -> np.ndarray:
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets, data = array.buffers()
    first = array.offset
    offsets = np.frombuffer(offsets, dtype=offset_type)[first : first + len(array) + 1]
    data = np.zeros(0, np.uint8) if data is None else np.frombuffer(data, dtype=np.uint8)
    return hash_strings(offsets.astype(np.int64), data)


def _numbers(values: Any, what: str, n: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{what} has shape {array.shape}, expected ({n},)")
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: row {row} holds {array[row]!r}; a finite count >= 0 is needed")
    return array


def _columns(config_entities: Sequence[str], n_scales: int) -> np.ndarray:
    """First output column of each kind's features (-1: not output)."""
    cols, at = [], 0
    for kind in ENTITY_KINDS:
        if kind in config_entities:
            cols.append(at)
            at += len(KIND_FEATURES[kind]) * n_scales
        else:
            cols.append(-1)
    return np.asarray(cols, np.int64)


def context_features(
    state: ContextState,
    time: Any,
    src: Any,
    dst: Any,
    dport: Any,
    proto: Any,
    nbytes: Any,
    npackets: Any,
    failed: Any = None,
) -> tuple[np.ndarray, list[str]]:
    """Context features of one batch of flows, in start-time order; advances ``state``.

    Parameters
    ----------
    state : ContextState
        The flows seen before this batch; updated in place.
    time : array-like of float
        Start time of each flow in seconds (any origin; only differences matter),
        non-decreasing, none before ``state.time``.
    src, dst : array-like
        Source and destination host of each flow (text, or integers): identities only.
    dport, proto : array-like
        Destination port and protocol (text or integers): identities only.
    nbytes, npackets : array-like of float
        Bytes and packets of each flow (both directions), finite and >= 0.
    failed : array-like of bool, optional
        Whether each flow failed or went unanswered; None when the records do not say, which
        makes every failed share 0.

    Returns
    -------
    features : ndarray of float64, shape (n_flows, n_features)
        In Fortran order: each feature's column is contiguous.
    names : list of str
        ``state.config.feature_names``.

    Raises
    ------
    ValueError
        On start times that are not finite, that decrease (the first such row named), or that
        start before the state's latest flow; on inputs of other lengths; on an empty
        identity or a negative or non-finite count.
    """
    config = state.config
    names = config.feature_names
    t = np.asarray(time, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"time must be 1-D, got shape {t.shape}")
    n = len(t)
    if n == 0:
        return np.zeros((len(names), 0)).T, names
    if not np.isfinite(t).all():
        row = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"time: row {row} holds {t[row]!r}; start times must be finite")
    down = np.flatnonzero(t[1:] < t[:-1])
    if len(down):
        row = int(down[0]) + 1
        raise ValueError(
            f"time: row {row} starts at {t[row]!r}, before row {row - 1} ({t[row - 1]!r}); "
            "context needs flows in start-time order (sort them first)"
        )
    if t[0] < state.time:
        raise ValueError(
            f"time: the batch starts at {t[0]!r}, before the latest flow already seen "
            f"({state.time!r}); batches must follow each other in time"
        )
    hashes = []
    for values, what in ((src, "src"), (dst, "dst"), (dport, "dport"), (proto, "proto")):
        h = entity_hashes(values, what)
        if len(h) != n:
            raise ValueError(f"{what} has {len(h)} values for {n} start times")
        hashes.append(h)
    # The kernel compares the keys' bits as int64.
    keys = combine_keys(*hashes, _SEEDS).view(np.int64)
    nbytes = _numbers(nbytes, "bytes", n)
    npackets = _numbers(npackets, "packets", n)
    if failed is None:
        flags = np.zeros(n)
    else:
        flags = np.asarray(failed)
        if flags.shape != (n,) or flags.dtype.kind not in "biu":
            raise ValueError(f"failed must be {n} booleans, got {flags.dtype} {flags.shape}")
        flags = (flags != 0).astype(np.float64)

    pending = state.pending
    held = len(pending["time"])
    t = np.concatenate([pending["time"], t])
    keys = np.concatenate([pending["keys"], keys], axis=1)
    flags = np.concatenate([pending["failed"], flags])
    nbytes = np.concatenate([pending["bytes"], nbytes])
    npackets = np.concatenate([pending["packets"], npackets])
    emit = np.concatenate([np.full(held, -1, np.int64), np.arange(n, dtype=np.int64)])
    order = _canonical_order(t, keys, flags, nbytes, npackets)
    if order is not None:
        t, keys, flags = t[order], keys[:, order], flags[order]
        nbytes, npackets, emit = nbytes[order], npackets[order], emit[order]

    # Feature-major, returned transposed: each feature's values are contiguous (an Arrow column
    # without a copy).
    out = np.empty((len(names), n))
    taus = np.asarray(config.windows_s, np.float64)
    cols = _columns(config.entities, len(taus))
    tables = state.tables
    position, limit = 0, config.max_entities
    while True:
        position, grow = run(
            t,
            keys,
            flags,
            nbytes,
            npackets,
            emit,
            out,
            taus,
            cols,
            *(tables[name].as_tuple() for name in TABLES),
            state.serial,
            position,
            limit,
        )
        if not grow:
            break
        size = int(np.searchsorted(t, t[position], side="right")) - position
        for table in tables.values():
            table.reserve(size, limit)
    state.pending = {
        "time": t[position:].copy(),
        "keys": keys[:, position:].copy(),
        "failed": flags[position:].copy(),
        "bytes": nbytes[position:].copy(),
        "packets": npackets[position:].copy(),
    }
    state.time = float(t[-1])
    return out.T, names


def _canonical_order(
    t: np.ndarray, keys: np.ndarray, flags: np.ndarray, nbytes: np.ndarray, npackets: np.ndarray
) -> np.ndarray | None:
    """A permutation that sorts the flows of each instant shared by several flows by key and
    value (None when no two flows share an instant): the tables then see them in one order,
    whatever order they came in."""
    same = t[1:] == t[:-1]
    if not same.any():
        return None
    tied = np.zeros(len(t), bool)
    tied[1:] |= same
    tied[:-1] |= same
    rows = np.flatnonzero(tied)
    # np.lexsort sorts by the last key first: time, then the keys, then the values.
    within = np.lexsort((npackets[rows], nbytes[rows], flags[rows], *keys[::-1, rows], t[rows]))
    order = np.arange(len(t))
    order[rows] = rows[within]
    return order
