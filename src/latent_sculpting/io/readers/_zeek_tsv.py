"""Zeek's TSV syntax (the ASCII writer): the ``#`` header (separators, unset and empty markers,
``#fields``, ``#types``, packed label fields) and the data lines, read in blocks by pyarrow's CSV
reader. See :mod:`latent_sculpting.io.readers.zeek`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers import _text
from latent_sculpting.io.readers._zeek_types import convert_typed, kind_of

__all__ = ["Header", "read_header", "strip_lead", "tsv_tables"]

_HEADER_LIMIT = 1 << 20
_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")


def strip_lead(head: bytes) -> bytes:
    """``head`` without what may come before a log's first line."""
    # A UTF-8 byte-order mark, or whitespace before the first '#' (Slips' copy of a real log
    # starts with a stray tab), is not part of the log.
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")


@dataclass(frozen=True)
class Header:
    """A TSV log's header, as :func:`read_header` reads it."""

    separator: str
    set_separator: str
    empty_field: str
    unset_field: str
    raw_fields: tuple[str, ...]  # as in #fields; a packed field holds several names
    raw_types: tuple[str, ...]  # as in #types
    names: tuple[str, ...]  # packed fields split
    types: tuple[str, ...]  # one per name
    packed: dict  # raw index -> number of names it holds
    data_offset: int  # byte offset of the first data line
    data_line: int  # its 1-based line number


def _unescape(value: str) -> str:
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), value)


def read_header(path: Path) -> Header:
    """The ``#`` header of the TSV log at ``path``, checked (an error names its line)."""
    with path.open("rb") as handle:
        head = handle.read(_HEADER_LIMIT)
    lead = len(head) - len(strip_lead(head))
    if not head[lead:].startswith(b"#separator"):
        raise FlowInputError(
            f"{path}, line 1: not a Zeek TSV log (it must start with '#separator')",
            path=path,
            line=1,
        )
    meta: dict[str, str] = {}
    meta_lines: dict[str, int] = {}
    offset, line = lead, 1
    separator = None
    while offset < len(head) and head[offset : offset + 1] == b"#":
        end = head.find(b"\n", offset)
        if end < 0:
            raise _text.error(
                path,
                f"header line longer than {_HEADER_LIMIT} bytes or the file ends inside the header",
                line=line,
            )
        text = head[offset:end].rstrip(b"\r").decode("utf-8", errors="replace")
        if separator is None:
            # '#separator \x09': the one header line whose key and value a space separates.
            separator = _unescape(text[len("#separator") :].strip(" "))
            if len(separator.encode()) != 1:
                raise _text.error(
                    path,
                    f"separator {separator!r} is not one byte; only "
                    "single-byte separators are supported",
                    line=line,
                )
        else:
            key, _, value = text.partition(separator)
            meta.setdefault(key, value)
            meta_lines.setdefault(key, line)
        offset, line = end + 1, line + 1
    for key in ("#fields", "#types"):
        if key not in meta:
            raise _text.error(
                path,
                f"the header has no {key} line; a Zeek log names its "
                "columns in '#fields' and their types in '#types'",
                line=line,
            )
    raw_fields = tuple(meta["#fields"].split(separator))
    raw_types = tuple(meta["#types"].split(separator))
    if len(raw_fields) != len(raw_types):
        raise _text.error(
            path,
            f"#types lists {len(raw_types)} types for {len(raw_fields)} #fields",
            line=meta_lines["#types"],
        )
    names: list[str] = []
    types: list[str] = []
    packed: dict[int, int] = {}
    for index, (field, ztype) in enumerate(zip(raw_fields, raw_types, strict=True)):
        sub_names, sub_types = field.split(), ztype.split()
        if len(sub_names) != len(sub_types):
            raise _text.error(
                path,
                f"field {field!r} packs "
                f"{len(sub_names)} names but its type {ztype!r} {len(sub_types)} types",
                line=meta_lines["#types"],
                column=field,
            )
        if len(sub_names) > 1:
            packed[index] = len(sub_names)
        names.extend(sub_names)
        types.extend(sub_types)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _text.error(
                path,
                f"#fields names {name!r} twice",
                line=meta_lines["#fields"],
                column=name,
            )
        seen.add(name)
    return Header(
        separator=separator,
        set_separator=_unescape(meta.get("#set_separator", ",")),
        empty_field=_unescape(meta.get("#empty_field", "(empty)")),
        unset_field=_unescape(meta.get("#unset_field", "-")),
        raw_fields=raw_fields,
        raw_types=raw_types,
        names=tuple(names),
        types=tuple(types),
        packed=packed,
        data_offset=offset,
        data_line=line,
    )


# ---------------------------------------------------------------------------------------------
# TSV


def tsv_tables(path: Path, block_bytes: int) -> Iterator[tuple[pa.Table, Callable]]:
    """The log in blocks of about ``block_bytes``: each block's table of Zeek-typed columns
    (packed fields split), and its row -> line function."""
    header = read_header(path)
    for block in _text.blocks(path, header.data_offset, header.data_line, block_bytes):
        _check_inner_header(path, header, block)
        if not block.data:
            continue
        raw = _parse_tsv(path, header, block)
        arrays, names = [], []
        for index, field in enumerate(header.raw_fields):
            column = raw.column(index).combine_chunks()
            if index in header.packed:
                parts = _split_packed(path, header, index, column, block)
                sub_names = field.split()
            else:
                parts, sub_names = [column], [field]
            for name, values in zip(sub_names, parts, strict=True):
                ztype = header.types[header.names.index(name)]
                arrays.append(_convert_text(path, header, name, ztype, values, block))
                names.append(name)
        yield pa.Table.from_arrays(arrays, names=names), block.line_of


def _check_inner_header(path: Path, header: Header, block: _text.Block) -> None:
    # A '#fields' or '#types' line inside the data (logs concatenated with cat) must repeat
    # the header's; other '#' lines (#close, #open of the next part) are skipped.
    for number, text in block.removed:
        line = text.rstrip(b"\r").decode("utf-8", errors="replace")
        key, _, value = line.partition(header.separator)
        expected = {
            "#fields": header.separator.join(header.raw_fields),
            "#types": header.separator.join(header.raw_types),
        }.get(key)
        if expected is not None and value != expected:
            raise _text.error(
                path,
                f"a second {key} line differs from the header's; "
                "split logs with different columns into separate files",
                line=number,
            )


def _parse_tsv(path: Path, header: Header, block: _text.Block) -> pa.Table:
    # No invalid_row_handler and no Python file object: Arrow may drop either on one of its
    # threads after the read returned, which aborts an exiting process (_text.arrow_buffer). A
    # row of the wrong width fails the read, and is then found here.
    fields = list(header.raw_fields)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(_text.arrow_buffer(block.data)),
            # pyarrow parses a block of lines fastest in pieces of about a megabyte.
            read_options=pacsv.ReadOptions(column_names=fields, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=header.separator,
                quote_char=False,
                escape_char=False,
                double_quote=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in fields},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except _text.ARROW_ERRORS as error:
        separator = header.separator.encode()
        row = _text.row_of_fields(block, separator, len(fields))
        if row is not None:
            text = block.data.split(b"\n")[row].rstrip(b"\r")
            count = text.count(separator) + 1
            shown = _text.preview(text.decode("utf-8", errors="replace"))
            raise _text.error(
                path,
                f"{count} fields where #fields names {len(fields)} (row {shown})",
                line=block.line_of(row),
            ) from None
        line = _text.first_undecodable_line(block)
        where = f", line {line}" if line is not None else ""
        raise FlowInputError(
            f"{path}{where}: cannot read the log ({error})", path=path, line=line
        ) from None
    return table


def _split_packed(
    path: Path, header: Header, index: int, column: pa.Array, block: _text.Block
) -> list[pa.Array]:
    count = header.packed[index]
    parts = pc.split_pattern_regex(column, pattern=r"\s+", max_splits=count - 1)
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != count)
    if bad.size:
        row = int(bad[0])
        line = block.line_of(row)
        raise _text.error(
            path,
            f"{_text.preview(column[row].as_py())} holds {lengths[row]} space-separated values "
            f"where the header packs {count}",
            line=line,
            column=header.raw_fields[index],
        )
    return [pc.list_element(parts, position) for position in range(count)]


def _convert_text(
    path: Path, header: Header, name: str, ztype: str, values: pa.Array, block: _text.Block
) -> pa.Array:
    """One column of Zeek text to its Arrow type; unset -> null, ``(empty)`` -> ''."""
    unset = pc.equal(values, header.unset_field)
    kind = kind_of(ztype)
    if kind == "string":
        text = pc.if_else(pc.equal(values, header.empty_field), "", values)
        return pc.if_else(unset, pa.scalar(None, pa.string()), text)
    present = pc.if_else(unset, pa.scalar(None, pa.string()), values)
    return convert_typed(path, name, ztype, present, block.line_of)
