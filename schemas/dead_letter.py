"""A record that could not be processed, on `torghut.trading.dlq.v1`.

It keeps the source coordinates and the raw bytes (base64 in JSON) so that it can be inspected
and replayed to its source topic once the cause is fixed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import UtcDatetime, utc_now_millis

MAX_ERROR_CHARS = 2000
# Base64 grows data by a third: keep the DLQ record below Kafka's default 1 MB message limit.
MAX_RAW_BYTES = 512 * 1024


class DeadLetter(BaseModel):
    model_config = ConfigDict(
        extra="ignore", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    version: int = 1
    reason: str = Field(min_length=1, max_length=128)
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    key: bytes | None = None
    value: bytes | None = None
    value_size: int | None = None
    value_truncated: bool = False
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    app_id: str | None = None
    dead_lettered_at: UtcDatetime = Field(default_factory=utc_now_millis)
