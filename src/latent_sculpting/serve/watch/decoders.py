"""Turning a source's undecoded records into Arrow tables, with the readers' own rules.

A decoder is called by the sensor's loop on a batch of records; it raises
:class:`~latent_sculpting.errors.FlowInputError` for records it cannot read, and the loop then
narrows the batch down to the records that fail (:mod:`.loop`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.encoding import numeric_types
from latent_sculpting.io.flowspec import FlowSpec
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.readers import delimited, pcap, zeek

__all__ = ["CsvDecoder", "Decoder", "JsonDecoder", "NfstreamDecoder", "ZeekTsvDecoder"]


class Decoder:
    """Turns a source's undecoded records into one Arrow table of raw columns.

    ``columns`` are the raw column names every record has, when the source knows them before
    any record (a capture, a CSV header, a Zeek header); None when each record brings its own
    (JSON lines).
    """

    columns: list[str] | None = None

    def decode(self, records: list, spec: FlowSpec, origin: str) -> pa.Table:
        raise NotImplementedError


class NfstreamDecoder(Decoder):
    """nfstream's flow values (:func:`~latent_sculpting.io.readers.pcap.flow_values`)."""

    def __init__(self) -> None:
        self.columns = pcap.columns()

    def decode(self, records: list, spec: FlowSpec, origin: str) -> pa.Table:
        types = numeric_types(spec, self.columns)
        return pa.Table.from_batches([pcap.values_batch(origin, records, types)])


class CsvDecoder(Decoder):
    """Lines of delimited text under one header line (read as a CSV file is)."""

    def __init__(self, header: bytes, origin: str) -> None:
        self.header = header if header.endswith(b"\n") else header + b"\n"
        self.columns = delimited.header_names(self.header, source=origin)

    def decode(self, records: list, spec: FlowSpec, origin: str) -> pa.Table:
        data = self.header + b"".join(r if r.endswith(b"\n") else r + b"\n" for r in records)
        return delimited.parse_bytes(data, numeric_types(spec, self.columns), source=origin)


class JsonDecoder(Decoder):
    """JSON lines, one flow object per line with flat keys.

    As in Zeek's JSON logs (and as the Zeek reader reads a whole JSON log), a key a record
    leaves out is an unset value: null, which the model's policy for missing values then
    handles and the run's cleaning summary counts. A record with none of the model's numeric
    inputs is not a flow record: it is refused (and set aside by the loop).
    """

    def decode(self, records: list, spec: FlowSpec, origin: str) -> pa.Table:
        fmt = get_format(spec.format)
        numeric = {name.casefold() for name in spec.numeric}
        rows = []
        for line in records:
            try:
                row = json.loads(line)
            except (ValueError, UnicodeDecodeError) as error:
                raise FlowInputError(f"{origin}: not JSON ({error})") from None
            if not isinstance(row, dict):
                raise FlowInputError(f"{origin}: a JSON {type(row).__name__}, not an object")
            canonical = fmt.canonical_columns(list(row), source=origin).values()
            if not any(name.casefold() in numeric for name in canonical):
                raise FlowInputError(
                    f"{origin}: none of the model's {len(numeric)} numeric inputs "
                    f"(e.g. {spec.numeric[0]!r}) in the record"
                )
            rows.append(row)
        table = pa.Table.from_pylist(rows)
        have = {c.casefold() for c in fmt.canonical_columns(table.column_names).values()}
        for name in spec.required_columns():
            if name.casefold() not in have:
                kind = pa.float64() if name in spec.numeric else pa.string()
                table = table.append_column(name, pa.nulls(table.num_rows, kind))
        types = numeric_types(spec, table.column_names)
        for name, wanted in types.items():
            index = table.column_names.index(name)
            column = table.column(index)
            if column.type != wanted:
                try:
                    column = column.cast(wanted)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                    raise FlowInputError(
                        f"{origin}, column {name!r}: not a number ({error})", column=name
                    ) from None
                table = table.set_column(index, name, column)
        return table


class ZeekTsvDecoder(Decoder):
    """Lines of a Zeek TSV log under its ``#`` header, read by the Zeek reader itself (through
    a small file of the header and the lines, so that types, unset markers and packed label
    fields are read exactly as ``sculpt score`` reads the whole log)."""

    def __init__(self, header: bytes, origin: str, folder: Path) -> None:
        self.header = header
        self.folder = folder
        probe = folder / "header.log"
        probe.write_bytes(header)
        self.columns = zeek.columns(probe)

    def decode(self, records: list, spec: FlowSpec, origin: str) -> pa.Table:
        part = self.folder / f"part-{threading.get_ident()}.log"
        part.write_bytes(self.header + b"".join(records))
        try:
            batches = list(zeek.batches(part, 1 << 30, numeric_types(spec, self.columns)))
        except FlowInputError as error:
            raise FlowInputError(str(error).replace(str(part), origin)) from None
        finally:
            part.unlink(missing_ok=True)
        return pa.Table.from_batches(batches) if batches else pa.table({})
