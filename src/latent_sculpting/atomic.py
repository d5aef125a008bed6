"""Atomic output: every file the package writes is renamed into place once complete."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["publish"]


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
