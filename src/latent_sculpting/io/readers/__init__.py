"""Reading flow files of any syntax as Arrow record batches: the one way files come in.

Every command that reads flows (train, score, serve, adapt, benchmark, the Ray engine) goes
through :func:`iter_batches`, which sniffs each file's syntax from its first bytes, not its
name, and hands it to one module per syntax:

========== ===================================================================================
syntax     module
========== ===================================================================================
parquet    :mod:`.parquet` (``PAR1`` magic)
csv        :mod:`.delimited` (delimited text with a header line: comma, tab, semicolon or pipe,
           detected from the content whatever the name; BOM and cp1252 tolerated)
zeek       :mod:`.zeek` (Zeek's own tab-separated log with ``#fields``/``#types``, or its JSON
           lines)
pcap       :mod:`.pcap` (pcap/pcapng packet captures, turned into flows by nfstream)
========== ===================================================================================

Each syntax module provides ``columns(path) -> list[str]`` (the raw column names) and
``batches(path, batch_rows, types) -> Iterator[pa.RecordBatch]`` where ``types`` maps raw column
names to the Arrow type wanted (numeric features are asked for as ``float64``, so that values
beyond float32's range are seen, not silently turned into infinities). What the columns *mean*
is the business of :mod:`latent_sculpting.io.formats`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from importlib import import_module
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from latent_sculpting.errors import FlowInputError

__all__ = ["SYNTAXES", "iter_batches", "list_flow_files", "read_columns", "sniff"]

PathLike = str | Path

#: File name suffixes a folder is searched for.
SUFFIXES = (
    ".csv",
    ".tsv",
    ".binetflow",
    ".parquet",
    ".pq",
    ".log",
    ".json",
    ".jsonl",
    ".labeled",
    ".pcap",
    ".pcapng",
    ".cap",
)

_MAGIC = {
    b"PAR1": "parquet",
    b"\xd4\xc3\xb2\xa1": "pcap",  # little-endian pcap
    b"\xa1\xb2\xc3\xd4": "pcap",  # big-endian pcap
    b"\x4d\x3c\xb2\xa1": "pcap",  # nanosecond pcap
    b"\xa1\xb2\x3c\x4d": "pcap",
    b"\x0a\x0d\x0d\x0a": "pcap",  # pcapng section header
}
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
}
SYNTAXES = ("parquet", "csv", "zeek", "pcap")


def list_flow_files(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Resolve a folder, a file, or a list of them to the flow files to read.

    A folder contributes the files directly inside it whose suffix is one of
    :data:`SUFFIXES`, sorted by name; a file named explicitly is read whatever its suffix.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    FlowInputError
        If a folder holds no flow file or nothing was given.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"flow data path does not exist: {path}")
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
            )
            if not found:
                raise FlowInputError(
                    f"folder {path} holds no flow file ({', '.join(SUFFIXES)})", path=path
                )
            files.extend(found)
        else:
            files.append(path)
    if not files:
        raise FlowInputError("no flow files given")
    return files


def sniff(path: PathLike) -> str:
    """The syntax of a flow file (one of :data:`SYNTAXES`), from its first bytes.

    Raises
    ------
    FlowInputError
        If the file is empty, compressed (the message says which compression: decompress it
        first), or not a flow file of a known syntax.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise FlowInputError(f"{path}: file is empty", path=path)
    for magic, syntax in _MAGIC.items():
        if head.startswith(magic):
            return syntax
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise FlowInputError(
                f"{path}: {kind}-compressed content; decompress it first "
                f"(e.g. `{'gunzip' if kind == 'gzip' else kind + ' -d'}`)",
                path=path,
            )
    if _module("zeek").sniff(head):
        return "zeek"
    if b"\x00" in head:
        raise FlowInputError(
            f"{path}: binary content that is not Parquet or a packet capture", path=path
        )
    return "csv"


_MODULES = {"parquet": "parquet", "csv": "delimited", "zeek": "zeek", "pcap": "pcap"}


def _module(syntax: str) -> ModuleType:
    # Imported on first use: reading a CSV file should not pay for the packet-capture stack.
    return import_module(f".{_MODULES[syntax]}", __name__)


def read_columns(path: PathLike) -> list[str]:
    """Raw column names of a flow file, as the file spells them."""
    path = Path(path)
    return _module(sniff(path)).columns(path)


def iter_batches(
    path: PathLike, batch_rows: int = 65_536, *, types: Mapping[str, pa.DataType] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream one flow file as record batches of about ``batch_rows`` rows.

    Parameters
    ----------
    path : path
        One file of any syntax in :data:`SYNTAXES`.
    batch_rows : int, default 65536
    types : mapping of str to pyarrow.DataType, optional
        Raw column name -> wanted type; a value that does not convert raises
        :class:`~latent_sculpting.errors.FlowInputError` naming the file, line and column.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path = Path(path)
    yield from _module(sniff(path)).batches(path, batch_rows, types or {})
