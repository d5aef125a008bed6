"""The context stage's state: bounded entity tables and the flows of the latest instant.

A state is plain arrays and JSON (:meth:`ContextState.get_state`), read back with every value
checked (:meth:`ContextState.from_state`): a model file is untrusted data, never unpickled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latent_sculpting.io.context.config import ContextConfig
from latent_sculpting.io.context.kernel import (
    N_STATS,
    PAIR_BM,
    PAIR_BS,
    PAIR_GM,
    PAIR_GS,
    PAIR_GW,
    PAIR_GW2,
    PAIR_W,
    PAIR_W2,
    PAIR_WF,
    SRC_BM,
    SRC_BS,
    SRC_DH,
    SRC_DP,
    SRC_PM,
    SRC_PS,
    SRC_W,
    SRC_WF,
    SVC_BM,
    SVC_BS,
    SVC_W,
    SVC_WF,
)
from latent_sculpting.io.context.tables import BORN, LAST, LINK, STATS, rebuild_index

__all__ = ["STATE_VERSION", "TABLES", "ContextState"]

STATE_VERSION = 1
#: The entity tables: source hosts, host pairs, destination services, and the (source,
#: destination port, protocol) entries behind a source's distinct destination ports.
TABLES = ("src", "pair", "service", "src_port")
_STATS = dict(zip(TABLES, N_STATS, strict=True))
#: Slots a table starts with; it doubles as entities arrive, up to ``max_entities``.
_FIRST_CAPACITY = 1024
#: The flows of the latest instant, kept until a later flow arrives (see ContextState).
_PENDING = ("time", "keys", "failed", "bytes", "packets")
# A tolerance for the checks of a loaded state's sums: they are rounded, not exact.
_SLACK = 1e-6


class _Table:
    """One entity table: slot records and an index half full at most (see :mod:`.tables`)."""

    def __init__(self, n_stats: int, n_scales: int, capacity: int) -> None:
        self.n_stats, self.n_scales = n_stats, n_scales
        self.keys = np.zeros(capacity, np.int64)
        self.rows = np.zeros((capacity, STATS + n_scales * n_stats), np.float64)
        self.used = np.zeros(capacity, np.uint8)
        self.free = np.zeros(capacity, np.int64)
        # Slots freed by eviction (a stack, none yet), and the first slot never used.
        self.meta = np.zeros(2, np.int64)
        self._index(capacity)

    def _index(self, capacity: int) -> None:
        size = 1 << max(4, (2 * capacity - 1).bit_length())
        self.index = np.zeros((size, 2), np.int64)
        rebuild_index(self.index, self.keys, self.used)

    @property
    def capacity(self) -> int:
        return len(self.keys)

    def __len__(self) -> int:
        return int(self.meta[1] - self.meta[0])

    def reserve(self, new: int, limit: int) -> None:
        """Grow so that ``new`` more entities fit without eviction, up to ``limit`` slots."""
        available = int(self.meta[0]) + self.capacity - int(self.meta[1])
        if available >= new or self.capacity >= limit:
            return
        capacity = min(limit, max(2 * self.capacity, len(self) + new))
        # Fresh zeros are mapped lazily: only the copied part and what is written later is
        # touched (a concatenation would write all of it at once).
        for name in ("keys", "rows", "used", "free"):
            old = getattr(self, name)
            grown = np.zeros((capacity, *old.shape[1:]), old.dtype)
            grown[: len(old)] = old
            setattr(self, name, grown)
        self._index(capacity)

    def as_tuple(self) -> tuple:
        return (self.index, self.keys, self.rows, self.used, self.free, self.meta)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """The used slots, by key (keys are the int64 bit patterns of the uint64 hashes)."""
        slots = np.flatnonzero(self.used)
        slots = slots[np.argsort(self.keys[slots], kind="stable")]
        rows = self.rows[slots]
        return {
            f"{name}.keys": self.keys[slots],
            f"{name}.last": rows[:, LAST].copy(),
            f"{name}.born": rows[:, BORN].astype(np.int64),
            f"{name}.link": rows[:, LINK].astype(np.int64),
            # Contiguous: a writer that takes an array's buffer as it lies (safetensors) would
            # otherwise store a strided view's memory, not its values.
            f"{name}.stats": np.ascontiguousarray(
                rows[:, STATS:].reshape(len(slots), self.n_scales, self.n_stats)
            ),
        }

    @classmethod
    def load(cls, name: str, arrays: dict[str, np.ndarray], n_scales: int, limit: int) -> _Table:
        n_stats = _STATS[name]
        keys = _array(arrays, f"{name}.keys", np.int64, 1)
        n = len(keys)
        if n > limit:
            raise ValueError(f"context state table {name!r} holds {n} entities, over {limit}")
        last = _array(arrays, f"{name}.last", np.float64, 1, n)
        born = _array(arrays, f"{name}.born", np.int64, 1, n)
        link = _array(arrays, f"{name}.link", np.int64, 1, n)
        stats = _array(arrays, f"{name}.stats", np.float64, 3)
        if stats.shape != (n, n_scales, n_stats):
            raise ValueError(
                f"context state {name}.stats has shape {stats.shape}, expected "
                f"({n}, {n_scales}, {n_stats})"
            )
        if len(np.unique(keys)) != n:
            raise ValueError(f"context state table {name!r} holds a key twice")
        # Serials are kept as float64 in the records: exact below 2**53.
        if (born < 0).any() or (link < -1).any() or (born >= 2**53).any() or (link >= 2**53).any():
            raise ValueError(f"context state table {name!r}: serials out of range")
        table = cls(n_stats, n_scales, min(limit, max(_FIRST_CAPACITY, n)))
        table.keys[:n] = keys
        table.rows[:n, LAST] = last
        table.rows[:n, BORN] = born
        table.rows[:n, LINK] = link
        table.rows[:n, STATS:] = stats.reshape(n, n_scales * n_stats)
        table.used[:n] = 1
        table.meta[:] = (0, n)
        table._index(table.capacity)
        return table

    def column(self, part: int) -> np.ndarray:
        """One record column (LAST, BORN or LINK) of the used slots."""
        return self.rows[self.used.astype(bool), part]

    def stats(self) -> np.ndarray:
        """The statistics of the used slots, (n, scales, stats)."""
        rows = self.rows[self.used.astype(bool), STATS:]
        return rows.reshape(len(rows), self.n_scales, self.n_stats)


def _array(
    arrays: dict[str, np.ndarray], key: str, dtype: type, ndim: int, length: int | None = None
) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"context state lacks the array {key!r}")
    value = np.asarray(arrays[key])
    if value.dtype != dtype or value.ndim != ndim:
        raise ValueError(
            f"context state array {key!r} must be {ndim}-D {np.dtype(dtype)}, got "
            f"{value.ndim}-D {value.dtype}"
        )
    if length is not None and len(value) != length:
        raise ValueError(f"context state array {key!r} has {len(value)} rows, expected {length}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError(f"context state array {key!r} holds non-finite values")
    return value


class ContextState:
    """Per-entity context of the flows seen so far, bounded by ``config.max_entities`` per table.

    The flows of the latest instant (``time``) are held back as *pending*, not yet in the
    tables: flows that start at the same instant do not see each other, and a later batch may
    still bring more flows of that instant. They enter the tables when a later flow arrives.

    Parameters
    ----------
    config : ContextConfig, optional
        The default configuration when None.

    Attributes
    ----------
    config : ContextConfig
    time : float
        Start time (seconds) of the latest flow seen; ``-inf`` before the first.
    """

    def __init__(self, config: ContextConfig | None = None) -> None:
        self.config = ContextConfig() if config is None else config
        n_scales = len(self.config.windows_s)
        first = min(_FIRST_CAPACITY, self.config.max_entities)
        self.tables = {name: _Table(_STATS[name], n_scales, first) for name in TABLES}
        self.time = -math.inf
        self.serial = np.zeros(1, np.int64)
        self.pending = _empty_pending()

    def entities(self) -> dict[str, int]:
        """Entities tracked per table (the pending flows not counted)."""
        return {name: len(table) for name, table in self.tables.items()}

    def nbytes(self) -> int:
        """Bytes held by the tables' arrays and indexes."""
        return sum(sum(a.nbytes for a in table.as_tuple()) for table in self.tables.values()) + sum(
            a.nbytes for a in self.pending.values()
        )

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-ready configuration and scalars, and arrays (float64 and int64 only).

        The used slots of each table are written in key order, so two states that hold the
        same entities write the same arrays whatever their memory layout.
        """
        config = {
            "version": STATE_VERSION,
            "context": self.config.to_dict(),
            "time": None if self.time == -math.inf else float(self.time),
            "serial": int(self.serial[0]),
        }
        arrays: dict[str, np.ndarray] = {}
        for name, table in self.tables.items():
            arrays.update(table.arrays(name))
        arrays["pending.time"] = self.pending["time"].copy()
        arrays["pending.keys"] = self.pending["keys"].copy()
        arrays["pending.failed"] = self.pending["failed"].copy()
        arrays["pending.bytes"] = self.pending["bytes"].copy()
        arrays["pending.packets"] = self.pending["packets"].copy()
        return config, arrays

    @classmethod
    def from_state(cls, config: Any, arrays: Any) -> ContextState:
        """Rebuild a state from :meth:`get_state` output, checking every key and value.

        Raises
        ------
        ValueError
            Naming what is wrong: the version, a missing or unknown key or array, an array of
            the wrong type or shape, a non-finite value, a table over its budget or holding a
            key twice, a serial out of range, a negative weight or sum of squares, a failed
            count above the flow count, an entity or pending flow later than the state's time.
        """
        if not isinstance(config, dict):
            raise ValueError(f"context state config must be a dict, got {type(config).__name__}")
        if not isinstance(arrays, dict):
            raise ValueError(f"context state arrays must be a dict, got {type(arrays).__name__}")
        if config.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported context state version {config.get('version')!r}")
        expected = {"version", "context", "time", "serial"}
        if set(config) != expected:
            raise ValueError(
                f"context state config: unknown keys {sorted(set(config) - expected, key=str)},"
                f" missing keys {sorted(expected - set(config))}"
            )
        context = ContextConfig.from_dict(config["context"])
        known = {f"{t}.{part}" for t in TABLES for part in ("keys", "last", "born", "link")}
        known |= {f"{t}.stats" for t in TABLES} | {f"pending.{p}" for p in _PENDING}
        unknown = sorted(set(arrays) - known, key=str)
        if unknown:
            raise ValueError(f"context state holds unknown arrays {unknown}")
        time, serial = config["time"], config["serial"]
        if time is not None and (
            isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time)
        ):
            raise ValueError(f"context state time must be a finite number or null, got {time!r}")
        # Serials are held as float64 in the records: exact below 2**53.
        if isinstance(serial, bool) or not isinstance(serial, int) or not 0 <= serial < 2**53:
            raise ValueError(
                f"context state serial must be an integer in [0, 2**53), got {serial!r}"
            )
        state = cls(context)
        state.time = -math.inf if time is None else float(time)
        state.serial[0] = serial
        n_scales = len(context.windows_s)
        for name in TABLES:
            table = _Table.load(name, arrays, n_scales, context.max_entities)
            _check_table(name, table, state.time, serial)
            state.tables[name] = table
        for name in ("pair", "src_port"):
            if (state.tables[name].column(LINK) >= serial).any():
                raise ValueError(f"context state table {name!r} links to a future serial")
        state.pending = _load_pending(arrays, state.time)
        return state


def _check_table(name: str, table: _Table, time: float, serial: int) -> None:
    n = len(table)
    if n and time == -math.inf:
        raise ValueError(f"context state table {name!r} holds entities but the state saw no flow")
    if n and (table.column(LAST) > time).any():
        raise ValueError(f"context state table {name!r}: an entity's last flow is after {time}")
    if (table.column(BORN) >= serial).any():
        raise ValueError(f"context state table {name!r}: a serial at or above {serial}")
    stats = table.stats()
    if name == "src":
        w = stats[..., SRC_W]
        nonneg = [SRC_W, SRC_WF, SRC_BS, SRC_PS]
        nonneg += [SRC_DH, SRC_DP, SRC_BM, SRC_PM]
        failed = stats[..., SRC_WF]
    elif name == "pair":
        w = stats[..., PAIR_W]
        nonneg = [PAIR_W, PAIR_W2, PAIR_WF, PAIR_BM, PAIR_BS]
        nonneg += [PAIR_GW, PAIR_GW2, PAIR_GM, PAIR_GS]
        failed = stats[..., PAIR_WF]
    elif name == "service":
        w = stats[..., SVC_W]
        nonneg = [SVC_W, SVC_WF, SVC_BM, SVC_BS]
        failed = stats[..., SVC_WF]
    else:
        return
    if (stats[..., nonneg] < 0).any():
        raise ValueError(f"context state table {name!r}: a negative weight, mean or spread")
    # Every tracked entity has had a flow, which weighs 1 at its time.
    if (w < 1.0 - _SLACK).any():
        raise ValueError(f"context state table {name!r}: a flow weight below 1")
    if (failed > w * (1 + _SLACK)).any():
        raise ValueError(f"context state table {name!r}: more failed flows than flows")


def _empty_pending() -> dict[str, np.ndarray]:
    return {
        "time": np.zeros(0),
        "keys": np.zeros((4, 0), np.int64),
        "failed": np.zeros(0),
        "bytes": np.zeros(0),
        "packets": np.zeros(0),
    }


def _load_pending(arrays: dict[str, np.ndarray], time: float) -> dict[str, np.ndarray]:
    t = _array(arrays, "pending.time", np.float64, 1)
    n = len(t)
    keys = _array(arrays, "pending.keys", np.int64, 2)
    if keys.shape != (4, n):
        raise ValueError(f"context state pending.keys has shape {keys.shape}, expected (4, {n})")
    failed = _array(arrays, "pending.failed", np.float64, 1, n)
    nbytes = _array(arrays, "pending.bytes", np.float64, 1, n)
    packets = _array(arrays, "pending.packets", np.float64, 1, n)
    if n and (t != time).any():
        raise ValueError(f"context state: a pending flow is not at the state's time {time}")
    if not np.isin(failed, (0.0, 1.0)).all():
        raise ValueError("context state pending.failed must hold 0 or 1")
    if (nbytes < 0).any() or (packets < 0).any():
        raise ValueError("context state: a pending flow with negative bytes or packets")
    return {
        "time": t.copy(),
        "keys": keys.copy(),
        "failed": failed.copy(),
        "bytes": nbytes.copy(),
        "packets": packets.copy(),
    }
