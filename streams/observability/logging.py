"""Log formatting: one JSON object per line (default) or plain text, both scrubbed of secrets.

Installed through faust's `logging_config` setting (see `logging_config()`), so the worker's own
logging setup uses it. Structured fields come from `extra={...}`; `account` is a first-class field.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from streams.domain.secrets import REDACTED
from streams.observability.scrub import scrub_text

TEXT_FORMAT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s"

# Attributes every LogRecord has; anything else on a record came from `extra`.
_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)
_SECRET_KEYS = ("secret", "password", "passwd", "token", "api_key", "apikey", "authorization")


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _SECRET_KEYS)


def _safe(value: Any, depth: int = 0) -> Any:
    """A JSON-able, scrubbed copy of an `extra` value."""
    if isinstance(value, SecretStr):
        return REDACTED
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict) and depth < 4:
        return {
            str(k): REDACTED if _is_secret_key(str(k)) else _safe(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset) and depth < 4:
        return [_safe(v, depth + 1) for v in value]
    return scrub_text(str(value))


def record_extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: REDACTED if _is_secret_key(key) else _safe(value)
        for key, value in vars(record).items()
        if key not in _RESERVED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "account"?, ...extra, "exc"?}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub_text(record.getMessage()),
        }
        extras = record_extras(record)
        if "account" in extras:
            payload["account"] = extras.pop("account")
        payload.update((k, v) for k, v in extras.items() if k not in payload)
        if record.exc_info:
            payload["exc"] = scrub_text(self.formatException(record.exc_info))
        elif record.exc_text:
            payload["exc"] = scrub_text(record.exc_text)
        if record.stack_info:
            payload["stack"] = scrub_text(self.formatStack(record.stack_info))
        return json.dumps(payload, ensure_ascii=False, default=str)


class ScrubbingTextFormatter(logging.Formatter):
    """The usual text format (plus `account=` when given), scrubbed of secrets."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own format, with the seconds part worked out once per second (it was a
        `strftime` per line, in every order's log line)."""
        if datefmt is not None or self.default_msec_format is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second[0]:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (second, stamp)
        return self.default_msec_format % (self._second[1], record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        account = getattr(record, "account", None)
        if account is not None and "\n" not in text:
            text = f"{text} account={account}"
        return scrub_text(text)


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """faust/mode `logging_config`: merged over the worker's defaults, replacing its handler."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format.lower() == "json"
        else {"()": f"{__name__}.ScrubbingTextFormatter"}
    )
    return {
        "merge": True,
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"torghut": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "torghut",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }


def install(log_format: str, level: str) -> None:
    """Apply the same configuration outside a faust worker (app CLI commands, scripts)."""
    import logging.config

    config = logging_config(log_format, level)
    config.pop("merge")
    logging.config.dictConfig(config)
