"""Atomic output: every file the package writes is renamed into place once complete.

One rule for every writer (model files, scored flows, results, reports, figures, ONNX graphs,
Parquet extracts): write a hidden temporary file beside the target, on the same file system,
and rename it over the target only once it is whole; on any failure (an error, Ctrl-C,
SIGTERM turned into an exit) the temporary file is deleted and the target is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "publish", "temporary_path", "write_bytes", "write_json", "write_text"]


def temporary_path(path: str | Path) -> Path:
    """A new empty temporary file beside ``path`` (hidden, same file system), for a writer
    that stays open across calls and ends with :func:`publish` or by deleting it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file ordinary permissions and rename it to ``path``.

    ``tempfile.mkstemp`` creates files readable by their owner only (0600); the output of a
    command is an ordinary file, so it gets ``0666`` less the process's umask, as ``open`` would
    give it. The rename is atomic on one file system: readers see the old file or the new one.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file to write ``path``'s content to: renamed to ``path`` when the block
    ends normally, deleted when it raises (anything, ``KeyboardInterrupt`` included)."""
    tmp = temporary_path(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(text: str, path: str | Path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(data: bytes, path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy values and paths as JSON)."""
    return write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
