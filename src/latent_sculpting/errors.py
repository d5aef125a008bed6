"""Exceptions the library raises for damaged inputs it reads, so that callers can catch them."""

from __future__ import annotations

__all__ = ["ModelFileError"]


class ModelFileError(ValueError):
    """A model file, or the state read from one, is damaged or was not written by this library.

    The message names the part, the position and the offending value, e.g. ``forest tree 3
    node 17: left child 1000000000 outside the tree (nodes 0-210)``. It is a
    :class:`ValueError`, so code that catches ``ValueError`` around loading keeps working.
    """
