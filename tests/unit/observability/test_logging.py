"""JSON/text log formatting: one object per line, the account field, never a secret."""

from __future__ import annotations

import io
import json
import logging
import logging.config

from pydantic import SecretStr

from streams.domain import secrets
from streams.observability.logging import JsonFormatter, ScrubbingTextFormatter, logging_config


def emit(formatter: logging.Formatter, msg: str, *args: object, **extra: object) -> str:
    record = logging.LogRecord("torghut.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return formatter.format(record)


def test_json_line_carries_account_and_extras() -> None:
    line = emit(JsonFormatter(), "submitted %s", "AAPL", account="acct-a", decision_hash="h1")
    payload = json.loads(line)
    assert payload["message"] == "submitted AAPL"
    assert payload["account"] == "acct-a"
    assert payload["decision_hash"] == "h1"
    assert payload["level"] == "INFO"
    assert payload["logger"] == "torghut.test"
    assert payload["ts"].endswith("+00:00")


def test_json_line_never_carries_a_secret() -> None:
    secrets.register("SKREGISTERED987")
    line = emit(
        JsonFormatter(),
        "auth failed with SKREGISTERED987 at %s",
        "postgresql://torghut:pgpass@db:5432/torghut",
        account="acct-a",
        api_key="AKLEAKED",
        settings={"secret_key": "nested-secret", "n": 1},
        wrapped=SecretStr("wrapped-secret"),
        header="APCA-API-SECRET-KEY: hdrsecret",
    )
    for leaked in (
        "SKREGISTERED987",
        "pgpass",
        "AKLEAKED",
        "nested-secret",
        "wrapped-secret",
        "hdrsecret",
    ):
        assert leaked not in line
    assert json.loads(line)["settings"]["n"] == 1


def test_exception_text_is_scrubbed() -> None:
    formatter = JsonFormatter()
    try:
        raise RuntimeError("connect failed: password=swordfish")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
        import sys

        record.exc_info = sys.exc_info()
    payload = json.loads(formatter.format(record))
    assert "RuntimeError" in payload["exc"]
    assert "swordfish" not in payload["exc"]


def test_text_format_appends_account_and_scrubs() -> None:
    line = emit(ScrubbingTextFormatter(), "token=abc123 refused", account="acct-b")
    assert line.endswith("account=acct-b")
    assert "abc123" not in line
    assert "[INFO]" in line


def test_logging_config_is_a_valid_dict_config_for_both_formats() -> None:
    for fmt in ("json", "text"):
        config = logging_config(fmt, "info")
        assert config.pop("merge") is True
        stream = io.StringIO()
        config["handlers"]["default"]["stream"] = stream
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        try:
            logging.config.dictConfig(config)
            logging.getLogger("torghut.cfg").info("[^Worker]: Ready", extra={"account": "a"})
        finally:
            root.handlers[:], _ = saved
            root.setLevel(saved[1])
        out = stream.getvalue().strip()
        assert "[^Worker]: Ready" in out
        if fmt == "json":
            assert json.loads(out)["account"] == "a"


def test_the_text_formatters_time_is_loggings_own() -> None:
    import logging as std

    from streams.observability.logging import ScrubbingTextFormatter

    ours, stock = ScrubbingTextFormatter(), std.Formatter()
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.5, 1_600_000_000.25):
        record = std.LogRecord("x", std.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.formatTime(record) == stock.formatTime(record)
