"""The errors a user sees: bad flow input, bad model files, and a training that diverged.

All are ``ValueError`` subclasses, so code that catches ``ValueError`` keeps working; the CLI
turns each into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FlowInputError", "LossDivergedError", "ModelFileError"]


class FlowInputError(ValueError):
    """Flow records that cannot be read or scored; the message names what and where.

    Attributes
    ----------
    path : Path or None
        The file, when the records came from one.
    line : int or None
        1-based line (text files) or row (Parquet) of the first offending record.
    column : str or None
        The offending column.
    missing : list of str
        Columns the model needs that the records lack.
    syntax : bool
        The records are not readable at all (malformed text, not the file type it claims),
        as opposed to readable records with a bad value or column.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
        missing: list[str] | None = None,
        syntax: bool = False,
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.line = line
        self.column = column
        self.missing = list(missing or [])
        self.syntax = syntax


class ModelFileError(ValueError):
    """A model file, or the state read from one, is damaged or was not written by this library.

    The message names the part, the position and the offending value, e.g. ``forest tree 3
    node 17: left child 1000000000 outside the tree (nodes 0-210)``. Raised before anything in
    the file is used.
    """


class LossDivergedError(ValueError):
    """A training loss that kept exploding (or became non-finite) after every restart.

    Attributes
    ----------
    stage : str
        The training loop, e.g. ``stage 2 (flow)``.
    epoch : int
        1-based epoch that could not be trained.
    """

    def __init__(self, message: str, *, stage: str, epoch: int) -> None:
        super().__init__(message)
        self.stage = stage
        self.epoch = epoch
