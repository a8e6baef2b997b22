"""Bytes <-> models for every topic, and the faust codecs that wrap them.

Topics carry raw bytes (the app's serializers are `raw`): an agent decodes with these functions
so that a bad record raises `DecodeError` with a short machine `reason`, and becomes a dead letter
with its original bytes, instead of an exception inside faust. Every failure mode of untrusted
bytes (bad JSON, bad Avro, a valid document of the wrong shape) surfaces as `DecodeError`.

Hot path: JSON goes straight through `Model.model_validate_json`; Avro through a reader compiled
once from the schema (schemas/avro_reader.py; fastavro writes, and reads what that cannot).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Set
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import fastavro
from faust.serializers import codecs as faust_codecs
from pydantic import BaseModel, ValidationError

from schemas.avro_reader import UnsupportedSchema, compile_reader
from schemas.common import iso_millis
from schemas.control import ControlCommand
from schemas.dead_letter import DeadLetter
from schemas.decision import AccountDecision
from schemas.ta_signal import InvalidSignal, TaSignal, check_numbers
from schemas.trade_update import TradeUpdateEnvelope
from streams.domain.hashing import decision_hash

AVSC_PATH = Path(__file__).with_name("ta-signals.avsc")
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER = struct.Struct(">bI")
# The schema id under which `ta-signals.avsc` is registered for the project's producers (the
# Flink job's Confluent framing; the golden test bytes). Bare Avro needs no id.
DEFAULT_TA_SIGNAL_SCHEMA_IDS = frozenset({7})
# Fields of TaSignal that JSON producers may add but the Avro record does not have.
_JSON_ONLY_SIGNAL_FIELDS = frozenset({"price", "close"})
_WHITESPACE = frozenset(b" \t\r\n")
_MAX_DETAILS = 5

M = TypeVar("M", bound=BaseModel)


class DecodeError(Exception):
    """An undecodable or invalid record. `reason` is short and machine-readable.

    Reasons: `empty_value`, `json_invalid`, `schema_invalid`, `avro_decode_error`,
    `avro_trailing_bytes`, `decision_hash_mismatch`; TA signals also `invalid_number` (NaN,
    infinite, negative price, RSI outside 0..100), `unknown_schema_id`, `schema_incompatible`
    and `schema_registry_unavailable` (streams/signal_decoder.py). The message names fields and
    problems, never input values (a record may carry anything).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"


# ---------------------------------------------------------------- shared helpers


def _require_bytes(raw: bytes | None, what: str) -> bytes:
    if not raw:
        raise DecodeError("empty_value", f"{what}: empty or null value")
    return bytes(raw)


def _describe(exc: ValidationError) -> str:
    details = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
        for err in details[:_MAX_DETAILS]
    ]
    if len(details) > _MAX_DETAILS:
        parts.append(f"... {len(details) - _MAX_DETAILS} more")
    return "; ".join(parts)


def _validation_error(model: type[BaseModel], exc: ValidationError) -> DecodeError:
    is_json = any(err["type"] == "json_invalid" for err in exc.errors(include_url=False))
    reason = "json_invalid" if is_json else "schema_invalid"
    return DecodeError(reason, f"{model.__name__}: {_describe(exc)}")


def _from_json(model: type[M], raw: bytes | None) -> M:
    data = _require_bytes(raw, model.__name__)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise _validation_error(model, exc) from None


def _from_mapping(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(model, exc) from None


# ---------------------------------------------------------------- TA signals


@cache
def ta_signal_schema() -> Any:
    """The parsed Avro schema of `torghut.ta.TaSignal` (parsed once)."""
    return fastavro.parse_schema(json.loads(AVSC_PATH.read_text()))


def confluent_schema_id(raw: bytes) -> int | None:
    """The schema id of a Confluent wire-format record, None for anything else."""
    if len(raw) >= CONFLUENT_HEADER.size and raw[0] == CONFLUENT_MAGIC:
        return int(CONFLUENT_HEADER.unpack_from(raw)[1])
    return None


def _looks_like_json(raw: bytes) -> bool:
    # An Avro TaSignal starts with the zigzag length of `ingest_ts`; b"{" would be a negative
    # length, so a leading brace is never Avro.
    first = raw[0]
    return first == 0x7B or (first in _WHITESPACE and raw.lstrip()[:1] == b"{")


@cache
def ta_signal_reader() -> Callable[[bytes], tuple[Any, int]]:
    """The TaSignal record reader: compiled once (fastavro's when the schema needs it)."""
    try:
        return compile_reader(json.loads(AVSC_PATH.read_text()))
    except UnsupportedSchema:
        return _fastavro_reader


def _fastavro_reader(body: bytes) -> tuple[Any, int]:
    stream = io.BytesIO(body)
    return fastavro.schemaless_reader(stream, ta_signal_schema(), None), stream.tell()


def _read_avro(body: bytes) -> Any:
    try:
        record, consumed = ta_signal_reader()(body)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways
        raise DecodeError("avro_decode_error", f"TaSignal: {type(exc).__name__}") from None
    if consumed != len(body):
        raise DecodeError(
            "avro_trailing_bytes",
            f"TaSignal: {len(body) - consumed} bytes after the record (another writer schema?)",
        )
    return record


def _checked(sig: TaSignal) -> TaSignal:
    """The one numeric validity rule, applied to the decoded model on every path."""
    try:
        return check_numbers(sig)
    except InvalidSignal as exc:
        raise DecodeError(exc.reason, str(exc)) from None


def split_confluent(data: bytes) -> tuple[int, bytes]:
    """(schema id, Avro body) of a record starting with the Confluent magic byte."""
    if len(data) <= CONFLUENT_HEADER.size:
        raise DecodeError("avro_decode_error", "TaSignal: truncated Confluent header")
    return int(CONFLUENT_HEADER.unpack_from(data)[1]), data[CONFLUENT_HEADER.size :]


def unknown_schema_id(schema_id: int) -> DecodeError:
    return DecodeError("unknown_schema_id", f"TaSignal: schema id {schema_id} is not accepted")


def decode_ta_signal(
    raw: bytes | None, accepted_schema_ids: Set[int] = DEFAULT_TA_SIGNAL_SCHEMA_IDS
) -> TaSignal:
    """Decode a TA signal: Confluent wire format (magic 0 + schema id), bare Avro, or JSON.

    A Confluent record is read with `ta-signals.avsc` only when its schema id is one of
    `accepted_schema_ids`; another writer schema read as ours would give garbage that parses.
    """
    data = _require_bytes(raw, "TaSignal")
    if data[0] == CONFLUENT_MAGIC:
        schema_id, body = split_confluent(data)
        if schema_id not in accepted_schema_ids:
            raise unknown_schema_id(schema_id)
        return _checked(_from_mapping(TaSignal, _read_avro(body)))
    if _looks_like_json(data):
        return _checked(_from_json(TaSignal, data))
    return _checked(_from_mapping(TaSignal, _read_avro(data)))


def decode_ta_signal_with_writer(body: bytes, writer_schema: Any) -> TaSignal:
    """Decode an Avro body written with another (parsed) writer schema, resolved against
    `ta-signals.avsc` (fields the writer lacks take the reader's defaults, extra ones are
    skipped); the same model validation and numeric rule as every other path."""
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, writer_schema, ta_signal_schema())
    except fastavro.read.SchemaResolutionError as exc:
        raise DecodeError("schema_incompatible", f"TaSignal: {str(exc)[:200]}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways
        raise DecodeError("avro_decode_error", f"TaSignal: {type(exc).__name__}") from None
    if stream.tell() != len(body):
        raise DecodeError(
            "avro_trailing_bytes", f"TaSignal: {len(body) - stream.tell()} bytes after the record"
        )
    return _checked(_from_mapping(TaSignal, record))


def ta_signal_avro_record(sig: TaSignal) -> dict[str, Any]:
    """The Avro record of a signal (JSON-only fields dropped, times as ISO-8601 millis)."""
    record = sig.model_dump(exclude=set(_JSON_ONLY_SIGNAL_FIELDS))
    record["ingest_ts"] = iso_millis(sig.ingest_ts)
    record["event_ts"] = iso_millis(sig.event_ts)
    return record


def encode_ta_signal_avro(sig: TaSignal, confluent_schema_id: int | None = None) -> bytes:
    """Bare Avro binary, or the Confluent wire format when a schema id is given."""
    out = io.BytesIO()
    if confluent_schema_id is not None:
        out.write(CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, confluent_schema_id))
    fastavro.schemaless_writer(out, ta_signal_schema(), ta_signal_avro_record(sig))
    return out.getvalue()


def encode_ta_signal_json(sig: TaSignal) -> bytes:
    return sig.model_dump_json(exclude_none=True).encode()


# ---------------------------------------------------------------- decisions


def expected_decision_hash(d: AccountDecision) -> str:
    return decision_hash(
        account_label=d.account_label,
        symbol=d.symbol,
        timeframe=d.timeframe,
        event_ts=d.event_ts,
        action=d.action.value,
    )


def decode_decision(raw: bytes | None, *, verify_hash: bool = True) -> AccountDecision:
    """Decode an account decision; its hash must match its identity (it is the client order id)."""
    decision = _from_json(AccountDecision, raw)
    if verify_hash and expected_decision_hash(decision) != decision.decision_hash:
        raise DecodeError(
            "decision_hash_mismatch",
            "AccountDecision: decision_hash does not match "
            "(account_label, strategy_id, symbol, timeframe, event_ts, action)",
        )
    return decision


def encode_decision(d: AccountDecision) -> bytes:
    return d.model_dump_json().encode()


# ---------------------------------------------------------------- trade updates, control, DLQ


def decode_trade_update(raw: bytes | None) -> TradeUpdateEnvelope:
    return _from_json(TradeUpdateEnvelope, raw)


def encode_trade_update(env: TradeUpdateEnvelope) -> bytes:
    return env.model_dump_json(by_alias=True).encode()


def decode_control(raw: bytes | None) -> ControlCommand:
    return _from_json(ControlCommand, raw)


def encode_control(cmd: ControlCommand) -> bytes:
    return cmd.model_dump_json().encode()


def decode_dead_letter(raw: bytes | None) -> DeadLetter:
    return _from_json(DeadLetter, raw)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    return letter.model_dump_json().encode()


# ---------------------------------------------------------------- faust codecs


class ModelCodec(faust_codecs.Codec):
    """A faust codec over one decode/encode pair (`value_serializer="torghut_decision"`)."""

    def __init__(
        self,
        children: tuple[Any, ...] | None = None,
        *,
        decode: Callable[[bytes], Any],
        encode: Callable[[Any], bytes],
        **kwargs: Any,
    ) -> None:
        # decode/encode travel in kwargs so that faust's clone() and `|` keep them.
        super().__init__(children, decode=decode, encode=encode, **kwargs)

    def _loads(self, s: bytes) -> Any:
        return self.kwargs["decode"](s)

    def _dumps(self, s: Any) -> bytes:
        return bytes(self.kwargs["encode"](s))


CODECS: dict[str, ModelCodec] = {
    "torghut_ta_signal": ModelCodec(decode=decode_ta_signal, encode=encode_ta_signal_avro),
    "torghut_ta_signal_json": ModelCodec(decode=decode_ta_signal, encode=encode_ta_signal_json),
    "torghut_decision": ModelCodec(decode=decode_decision, encode=encode_decision),
    "torghut_trade_update": ModelCodec(decode=decode_trade_update, encode=encode_trade_update),
    "torghut_control": ModelCodec(decode=decode_control, encode=encode_control),
    "torghut_dead_letter": ModelCodec(decode=decode_dead_letter, encode=encode_dead_letter),
}
for _name, _codec in CODECS.items():
    faust_codecs.register(_name, _codec)
