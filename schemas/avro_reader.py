"""A schemaless Avro reader compiled once from a schema: the TA signal decode hot path.

`fastavro.schemaless_reader` re-walks the schema on every call and reads field by field; for one
small record per signal that was the largest single cost of the signals agent (py-spy, bench B2).
This reader is built once into closures; a record whose fields are all doubles is read with one
`struct` call. It covers the Avro types our schemas use (null, boolean, int, long, float, double,
string, bytes, record, union, named references); `compile_reader` raises `UnsupportedSchema` for
anything else, and the caller keeps using fastavro. Decoded values equal fastavro's (a property
test checks it), except that a negative union index is an error here instead of wrapping around.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

Reader = Callable[[bytes, int], tuple[Any, int]]


class UnsupportedSchema(ValueError):
    pass


class AvroReadError(ValueError):
    pass


def _read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Zigzag varint (int and long share the encoding)."""
    byte = buf[pos]
    pos += 1
    value = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
    return (value >> 1) ^ -(value & 1), pos


def _read_null(buf: bytes, pos: int) -> tuple[None, int]:
    return None, pos


def _read_boolean(buf: bytes, pos: int) -> tuple[bool, int]:
    return buf[pos] != 0, pos + 1  # as fastavro: any non-zero byte is true


def _fixed(fmt: str) -> Reader:
    packed = struct.Struct(fmt)
    unpack, size = packed.unpack_from, packed.size

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    return read


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    head = buf[pos]
    if head < 0x80:  # a length below 64 fits in one byte
        length, pos = (head >> 1) ^ -(head & 1), pos + 1
    else:
        length, pos = _read_long(buf, pos)
    end = pos + length
    if length < 0 or end > len(buf):
        raise AvroReadError("bytes length outside the record")
    return buf[pos:end], end


def _read_string(buf: bytes, pos: int) -> tuple[str, int]:
    raw, end = _read_bytes(buf, pos)
    return raw.decode(), end


_PRIMITIVES: dict[str, Reader] = {
    "null": _read_null,
    "boolean": _read_boolean,
    "int": _read_long,
    "long": _read_long,
    "float": _fixed("<f"),
    "double": _fixed("<d"),
    "bytes": _read_bytes,
    "string": _read_string,
}


def compile_reader(schema: Any) -> Callable[[bytes], tuple[Any, int]]:
    """A reader of one record: `read(body) -> (value, bytes consumed)`."""
    read = _compile(schema, {}, "")
    return lambda body: read(body, 0)


def _compile(schema: Any, named: dict[str, Reader], namespace: str) -> Reader:
    if isinstance(schema, list):
        return _union([_compile(s, named, namespace) for s in schema])
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        full = schema if "." in schema else f"{namespace}.{schema}".lstrip(".")
        if full in named:
            return named[full]
        raise UnsupportedSchema(f"unknown type {schema!r}")
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record" and "logicalType" not in schema:
            return _record(schema, named, namespace)
        if isinstance(kind, str) and kind in _PRIMITIVES and "logicalType" not in schema:
            return _PRIMITIVES[kind]
    raise UnsupportedSchema(f"unsupported schema {schema!r:.80}")


def _union(branches: list[Reader]) -> Reader:
    count = len(branches)
    if count == 2 and branches[0] is _read_null:
        return _optional(branches[1])

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        index, pos = _read_long(buf, pos)
        if not 0 <= index < count:
            raise AvroReadError("union index out of range")
        return branches[index](buf, pos)

    return read


def _optional(read_value: Reader) -> Reader:
    """`["null", X]`, the usual optional field: index byte 0 (null) or 2 (X)."""

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        index = buf[pos]
        if index == 0:
            return None, pos + 1
        if index == 2:
            return read_value(buf, pos + 1)
        raise AvroReadError("union index out of range")

    return read


def _record(schema: dict[str, Any], named: dict[str, Reader], namespace: str) -> Reader:
    name = str(schema["name"])
    namespace = str(schema.get("namespace", namespace if "." not in name else ""))
    full = name if "." in name else f"{namespace}.{name}".lstrip(".")
    fields = schema["fields"]
    names = [str(f["name"]) for f in fields]
    if fields and all(f["type"] == "double" for f in fields):
        read = _doubles(names)  # e.g. Macd, Imbalance: one struct call for the whole record
    else:
        readers: list[tuple[str, Reader]] = []
        read = _fields(readers)
        named[full] = read  # before the fields: a field may refer to its own record
        readers.extend(
            (n, _compile(f["type"], named, namespace)) for n, f in zip(names, fields, strict=True)
        )
    named[full] = read
    return read


def _doubles(names: list[str]) -> Reader:
    packed = struct.Struct(f"<{len(names)}d")
    unpack, size = packed.unpack_from, packed.size

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        return dict(zip(names, unpack(buf, pos), strict=True)), pos + size

    return read


def _fields(readers: list[tuple[str, Reader]]) -> Reader:
    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        record: dict[str, Any] = {}
        for name, read_field in readers:
            record[name], pos = read_field(buf, pos)
        return record, pos

    return read
