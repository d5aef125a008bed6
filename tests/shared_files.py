"""The project's shared real data for tests: ``../shared`` beside the repository (or the folder
``$SCULPT_SHARED`` names). A test that needs a file skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCULPT_SHARED") or ROOT.parent / "shared")


def shared(*parts: str) -> Path:
    """``SHARED/parts...``, or skip the test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path
