"""Avro codec for every salesops Kafka value.

Wire format: **Avro single-object encoding** (Avro specification, "Single object
encoding"): the two bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of
the writer schema's Parsing Canonical Form, then the Avro binary body.  A consumer that
holds only the ``.avsc`` can decode it (compute the fingerprint, check it, read the
body), no registry service needed; the fingerprint also tells which schema version wrote
a record, so a reader with a newer schema resolves old records (schema evolution).

Two implementations produce the same bytes: the reference ``avro`` package (the
contract, and the fingerprint) and ``fastavro`` on the hot path, because the reference
one decodes several times slower (see ``make bench``); ``tests/unit/test_codec.py``
checks byte equality both ways.

Hot path.  :meth:`Codec.decode` returns logical types as Python objects (``datetime``,
``date``, ``Decimal``), as the reference does; the worker calls :meth:`Codec.decode_plain`
instead, which reads the body with the logical types stripped (the same bytes and
fingerprint: the canonical form has no logical types) and converts the few fields the
core needs as objects directly: ``timestamp-millis`` stays the exact integer epoch
milliseconds it is on the wire (what ``streams/`` works in; no ``datetime`` built and
taken apart again), ``date`` becomes a ``date`` and ``decimal`` a ``Decimal`` rounded
to the field's precision exactly as the reference does.  ``tests/unit/test_codec.py``
checks that both give the same values over many random records of every contract.

Versions.  ``<Name>.avsc`` is the current version of a contract; earlier versions that
readers must still accept are kept next to it as ``<Name>.v<N>.avsc`` and registered as
writer versions of :meth:`Codec.for_record` (and :meth:`ReferenceCodec.for_record`).  A
change that keeps the Parsing Canonical Form (such as a wider decimal precision with the
same scale: the canonical form strips logical types, and the bytes are the same two's
complement unscaled integer) keeps the fingerprint: its old records simply read as the new
version.
"""

from __future__ import annotations

import decimal
import io
import json
import re
from collections.abc import Callable, Iterable
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import fastavro

SCHEMA_DIR = Path(__file__).parent
MAGIC = b"\xc3\x01"
HEADER_LEN = 10
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class DecodeError(ValueError):
    """Bytes that are not a single-object-encoded record of a known schema version."""


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.avsc"


@cache
def load_schema_json(name: str) -> str:
    """The ``.avsc`` text of a salesops schema by record name (``DealEvent``, ...)."""
    return schema_path(name).read_text()


def writer_versions(name: str) -> list[str]:
    """The ``.avsc`` texts of the earlier versions of ``name`` (``<name>.v<N>.avsc``),
    oldest first: every version a reader of the current one must still accept."""
    pattern = re.compile(rf"{re.escape(name)}\.v(\d+)\.avsc")
    found = [(int(m.group(1)), p) for p in SCHEMA_DIR.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p.read_text() for _, p in sorted(found)]


def fingerprint(schema_json: str) -> bytes:
    """CRC-64-AVRO of the Parsing Canonical Form, little-endian, as the spec's header uses."""
    return avro.schema.parse(schema_json).fingerprint("CRC-64-AVRO")


class Codec:
    """Encode with one schema, decode records written by it or by older versions.

    ``writer_versions`` lists the ``.avsc`` texts of earlier versions this reader still
    accepts; their records are resolved into the reader's shape (added fields take their
    defaults), the Avro resolution rules.
    """

    def __init__(self, schema_json: str, writer_versions: Iterable[str] = ()) -> None:
        self.schema_json = schema_json
        self._schema = json.loads(schema_json)
        self._parsed = fastavro.parse_schema(self._schema)
        self._header = MAGIC + fingerprint(schema_json)
        self._old = [(fingerprint(old), json.loads(old)) for old in writer_versions]
        # a version with the current canonical form is read as the current one (None)
        self._writers: dict[bytes, Any] = {fp: fastavro.parse_schema(old) for fp, old in self._old}
        self._writers[self._header[2:]] = None
        self._plain: _PlainReader | None = None
        self.name: str = self._schema["name"]

    @classmethod
    def for_record(cls, name: str) -> Codec:
        """The current version of ``name``, reading every registered earlier version too."""
        return cls(load_schema_json(name), writer_versions(name))

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self._parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """Decode one value; raise :class:`DecodeError` saying why when it cannot."""
        return self._read(data, self._parsed, self._writers, ())

    def decode_plain(self, data: bytes) -> dict[str, Any]:
        """:meth:`decode` without the logical-type objects the core would take apart again:
        ``timestamp-millis`` fields are the int epoch ms of the wire, ``date`` and
        ``decimal`` fields are converted directly (see the module doc).  Raises
        :class:`DecodeError` like :meth:`decode`."""
        plain = self._plain
        if plain is None:
            plain = self._plain = _PlainReader(self._schema, self._old, self._header[2:])
        return self._read(data, plain.reader, plain.writers, plain.conversions)

    def _read(
        self,
        data: bytes,
        reader: Any,
        writers: dict[bytes, Any],
        conversions: Iterable[tuple[str, Callable[[Any], Any]]],
    ) -> dict[str, Any]:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (missing C3 01 header)")
        fp = data[2:HEADER_LEN]
        if fp not in writers:
            raise DecodeError(f"unknown writer schema fingerprint {fp.hex()} for {self.name}")
        writer = writers[fp]
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        record: Any
        try:
            if writer is None:
                record = fastavro.schemaless_reader(buf, reader)
            else:
                record = fastavro.schemaless_reader(buf, writer, reader)
            for name, convert in conversions:
                value = record[name]
                if value is not None:
                    record[name] = convert(value)
        except Exception as exc:  # fastavro raises several unrelated types on truncated bodies
            raise DecodeError(f"corrupt Avro body for {self.name}: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(data):
            raise DecodeError(f"{len(data) - buf.tell()} trailing bytes after the {self.name} record")
        assert isinstance(record, dict)
        return record


def _without_logical_types(schema: Any) -> Any:
    """``schema`` with every ``logicalType`` removed: how its values are on the wire."""
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(x) for x in schema]
    return schema


def _mentions_logical_type(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "logicalType" in schema or any(_mentions_logical_type(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_mentions_logical_type(x) for x in schema)
    return False


def _date_from_days(days: int) -> date:
    return date.fromordinal(_EPOCH_ORDINAL + days)


def _decimal_from_bytes(precision: int, scale: int) -> Callable[[bytes], decimal.Decimal]:
    # the reference's arithmetic: the unscaled two's-complement integer, scaled in a
    # context of the field's precision
    context = decimal.Context(prec=precision)

    def convert(data: bytes) -> decimal.Decimal:
        return context.create_decimal(int.from_bytes(data, "big", signed=True)).scaleb(-scale, context)

    return convert


class _PlainReader:
    """What :meth:`Codec.decode_plain` reads with: the schemas without logical types and
    the conversions of the top-level fields that keep an object type.  TypeError for a
    logical type it does not convert (none in the salesops contracts)."""

    def __init__(self, schema: dict[str, Any], old: list[tuple[bytes, Any]], current: bytes) -> None:
        self.reader = fastavro.parse_schema(_without_logical_types(schema))
        self.writers: dict[bytes, Any] = {
            fp: fastavro.parse_schema(_without_logical_types(s)) for fp, s in old
        }
        self.writers[current] = None
        self.conversions: list[tuple[str, Callable[[Any], Any]]] = []
        for f in schema["fields"]:
            t = f["type"]
            if isinstance(t, list) and len(t) == 2 and "null" in t:
                t = t[1] if t[0] == "null" else t[0]
            where = f"{schema['name']}.{f['name']}"
            if not isinstance(t, dict) or "logicalType" not in t:
                if _mentions_logical_type(t):
                    raise TypeError(f"decode_plain converts top-level logical types only, not {where}")
                continue
            logical = t["logicalType"]
            if logical == "timestamp-millis" and t["type"] == "long":
                continue  # the plain value is what the core uses
            if logical == "date" and t["type"] == "int":
                self.conversions.append((f["name"], _date_from_days))
            elif logical == "decimal" and t["type"] == "bytes":
                self.conversions.append((f["name"], _decimal_from_bytes(t["precision"], t.get("scale", 0))))
            else:
                raise TypeError(f"decode_plain does not convert {logical} ({where})")


class ReferenceCodec:
    """The same wire format written and read with the reference ``avro`` package.

    Used by tests to prove the hot-path codec is byte-compatible, and by anyone who wants
    the reference behaviour.  ``writer_versions`` as for :class:`Codec`.
    """

    def __init__(self, schema_json: str, writer_versions: Iterable[str] = ()) -> None:
        self._schema = avro.schema.parse(schema_json)
        self._header = MAGIC + self._schema.fingerprint("CRC-64-AVRO")
        self._writers: dict[bytes, avro.schema.Schema] = {}
        for old in writer_versions:
            parsed = avro.schema.parse(old)
            self._writers[parsed.fingerprint("CRC-64-AVRO")] = parsed
        self._writers[self._header[2:]] = self._schema

    @classmethod
    def for_record(cls, name: str) -> ReferenceCodec:
        return cls(load_schema_json(name), writer_versions(name))

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        avro.io.DatumWriter(self._schema).write(record, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = self._writers.get(data[2:HEADER_LEN]) if data[:2] == MAGIC else None
        if writer is None:
            raise DecodeError("header does not match this schema or an earlier version")
        buf = io.BytesIO(data[HEADER_LEN:])
        result = avro.io.DatumReader(writer, self._schema).read(avro.io.BinaryDecoder(buf))
        assert isinstance(result, dict)
        return result
