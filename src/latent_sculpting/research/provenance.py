"""What benchmark scripts and reports print beside their figures: the commit measured and the
digests of the data files read."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

__all__ = ["commit", "sha256"]


def commit() -> str:
    """Short hash of the checkout's HEAD, or ``"unknown"`` outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
