"""The account registry: which trading accounts run a lane, in which mode, against which broker.

Sources, in order:
- `TRADING_MULTI_ACCOUNT_ENABLED=true` and a registry (`TRADING_ACCOUNTS_JSON`, an array or
  `{"accounts": [...]}`, or `TRADING_ACCOUNTS_FILE`, YAML or JSON): one lane per enabled entry.
- otherwise: one lane synthesised from `APCA_API_KEY_ID`, `APCA_API_SECRET_KEY`,
  `APCA_API_BASE_URL`, `TRADING_ACCOUNT_LABEL` and `TRADING_MODE`.

A registry entry may override the pre-trade limits of its account (`limits`, see
`AccountLimits`); a limit not overridden is the setting's. An entry without `limits` is what it
always was.

Every problem is collected and raised at once (`AccountConfigError.errors`, each naming the entry
or variable and the field). Messages never contain a secret: key values are registered with
`streams.domain.secrets` before anything is validated, and no message quotes an input value.
This module only parses text it is given and reads the registry file named by the settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from schemas.common import LABEL_PATTERN, LABEL_RULE, check_label
from streams.domain import secrets
from streams.settings import Settings

PAPER_BASE_URL = "https://paper-api.alpaca.markets"
LIVE_BASE_URL = "https://api.alpaca.markets"
_BROKER_HOST_BY_MODE = {"paper": "paper-api.alpaca.markets", "live": "api.alpaca.markets"}
_SECRET_HINTS = ("key", "secret", "token", "password", "passwd")


class AccountMode(StrEnum):
    paper = "paper"
    live = "live"


class AccountConfigError(ValueError):
    """The account configuration is unusable; `errors` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = [secrets.scrub(e) for e in errors]
        super().__init__(
            "invalid account configuration:\n" + "\n".join(f"  - {e}" for e in self.errors)
        )


def validate_label(label: str) -> str:
    """A label usable as a Kafka key, metrics label and Flipt entity id; else ValueError."""
    return check_label(label)


class AccountLimits(BaseModel):
    """Per-account overrides of the pre-trade limits (registry entry field `limits`); a field
    left out (None) is the setting's default. Each takes the value its setting takes (0 disables
    the limit); negative values and unknown keys are configuration errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_order_qty: float | None = Field(None, ge=0)  # TRADING_MAX_ORDER_QTY
    max_notional_per_order: float | None = Field(None, ge=0)  # TRADING_MAX_NOTIONAL_PER_ORDER
    max_open_orders: int | None = Field(None, ge=0)  # TRADING_MAX_OPEN_ORDERS
    order_rate_per_second: int | None = Field(None, ge=0)  # TRADING_ORDER_RATE_PER_SECOND
    order_rate_per_minute: int | None = Field(None, ge=0)  # TRADING_ORDER_RATE_PER_MINUTE
    duplicate_intent_seconds: float | None = Field(None, ge=0)  # TRADING_DUPLICATE_INTENT_SECONDS
    daily_notional_cap: float | None = Field(None, ge=0)  # TRADING_DAILY_NOTIONAL_CAP
    price_collar_bps: float | None = Field(None, ge=0)  # TRADING_PRICE_COLLAR_BPS

    def overrides(self) -> dict[str, float | int]:
        """The fields set, by name (the names of the matching `Settings` fields)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Account(BaseModel):
    """One trading account (one execution lane). Secrets stay `SecretStr` until the broker call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    mode: AccountMode
    api_key: SecretStr
    secret_key: SecretStr
    base_url: str
    enabled: bool = True
    limits: AccountLimits = AccountLimits()

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        return validate_label(value)

    @property
    def broker_host(self) -> str:
        """`host[:port]` of the broker; never credentials."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host

    @property
    def is_live(self) -> bool:
        return self.mode is AccountMode.live

    @property
    def flag_entity(self) -> str:
        """The Flipt entity id of this lane."""
        return f"torghut:{self.label}"

    @property
    def has_credentials(self) -> bool:
        return bool(self.api_key.get_secret_value() and self.secret_key.get_secret_value())

    def public_view(self) -> dict[str, Any]:
        """What status pages and the CLI may show."""
        return {
            "label": self.label,
            "mode": self.mode.value,
            "enabled": self.enabled,
            "broker_host": self.broker_host,
        }


@dataclass(frozen=True)
class AccountRegistry:
    accounts: tuple[Account, ...]
    source: str
    multi_account: bool = False
    warnings: tuple[str, ...] = field(default=())

    def enabled(self) -> tuple[Account, ...]:
        return tuple(a for a in self.accounts if a.enabled)

    def get(self, label: str) -> Account | None:
        return next((a for a in self.accounts if a.label == label), None)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(a.label for a in self.accounts)

    def __iter__(self) -> Iterator[Account]:
        return iter(self.accounts)

    def __len__(self) -> int:
        return len(self.accounts)


# ---------------------------------------------------------------- registry entries


class _Entry(BaseModel):
    """One registry entry as written by an operator (unknown fields are typos: rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    mode: AccountMode = AccountMode.paper
    api_key: SecretStr
    secret_key: SecretStr
    base_url: str | None = None
    enabled: bool = True
    limits: AccountLimits = AccountLimits()


def _broker_url_errors(url: str, mode: AccountMode, where: str) -> tuple[str, list[str]]:
    """The normalised base URL (no trailing `/`) and the problems of `url` for an account."""
    normalized = url.strip().rstrip("/")
    try:
        parts = urlsplit(normalized)
        _ = parts.port  # a bad port raises only when read
    except ValueError:
        return normalized, [f"{where}: not a valid URL"]
    problems: list[str] = []
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{where}: must be an http(s) URL with a host")
    if parts.username or parts.password:
        problems.append(f"{where}: must not contain credentials")
    if parts.query or parts.fragment:
        problems.append(f"{where}: must not have a query or fragment")
    if parts.path.endswith("/v2"):
        problems.append(f"{where}: drop the trailing /v2 (the Alpaca client adds it)")
    other_mode = AccountMode.live if mode is AccountMode.paper else AccountMode.paper
    if parts.hostname == _BROKER_HOST_BY_MODE[other_mode.value]:
        problems.append(f"{where}: a {mode.value} account points at the {other_mode.value} broker")
    return normalized, problems


def _entry_name(index: int, raw: Any) -> str:
    label = raw.get("label") if isinstance(raw, Mapping) else None
    # Only a valid label is echoed: anything else might be a pasted key.
    if isinstance(label, str) and LABEL_PATTERN.fullmatch(label):
        return f"accounts[{index}] {label!r}"
    return f"accounts[{index}]"


def _register_entry_secrets(raw: Any) -> None:
    if isinstance(raw, Mapping):
        secrets.register(
            *(
                str(value)
                for name, value in raw.items()
                if isinstance(value, str | int)
                and any(h in str(name).lower() for h in _SECRET_HINTS)
            )
        )


def _entry_problems(name: str, raw: Mapping[str, Any]) -> list[str]:
    """Problems pydantic would report less clearly, or not at all (it stops at type errors)."""
    problems: list[str] = []
    label = raw.get("label")
    if isinstance(label, str) and LABEL_PATTERN.fullmatch(label) is None:
        problems.append(f"{name}: label: must be {LABEL_RULE}")
    for secret_field in ("api_key", "secret_key"):
        value = raw.get(secret_field)
        if isinstance(value, str) and not value.strip():
            problems.append(f"{name}: {secret_field}: must not be empty")
    return problems


def _message(err: Any) -> str:
    """pydantic's message, naming the known limits when an unknown one is given."""
    loc = err["loc"]
    if err["type"] == "extra_forbidden" and len(loc) == 2 and loc[0] == "limits":
        return f"unknown limit (known: {', '.join(AccountLimits.model_fields)})"
    return str(err["msg"])


def _parse_entry(index: int, raw: Any, live_enabled: bool) -> tuple[Account | None, list[str]]:
    name = _entry_name(index, raw)
    if not isinstance(raw, Mapping):
        return None, [f"{name}: must be an object with label, mode, api_key, secret_key, ..."]
    problems = _entry_problems(name, raw)
    try:
        entry = _Entry.model_validate(raw)
    except ValidationError as exc:
        return None, problems + [
            f"{name}: {'.'.join(str(p) for p in err['loc']) or '<entry>'}: {_message(err)}"
            for err in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
    if entry.mode is AccountMode.live and not live_enabled:
        problems.append(f"{name}: mode: live requires TRADING_LIVE_ENABLED=true")
    default_url = LIVE_BASE_URL if entry.mode is AccountMode.live else PAPER_BASE_URL
    base_url, url_problems = _broker_url_errors(
        entry.base_url or default_url, entry.mode, f"{name}: base_url"
    )
    problems += url_problems
    if problems:
        return None, problems
    account = Account(
        label=entry.label,
        mode=entry.mode,
        api_key=entry.api_key,
        secret_key=entry.secret_key,
        base_url=base_url,
        enabled=entry.enabled,
        limits=entry.limits,
    )
    return account, []


def _duplicate_label_errors(raw_entries: list[Any]) -> list[str]:
    """Duplicate labels are an error (not first-wins), whatever else is wrong with the entries."""
    problems: list[str] = []
    first_by_label: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        label = raw.get("label") if isinstance(raw, Mapping) else None
        if not isinstance(label, str):
            continue
        if label in first_by_label:
            name = _entry_name(index, raw)
            problems.append(f"{name}: label: duplicate of accounts[{first_by_label[label]}]")
        else:
            first_by_label[label] = index
    return problems


def _shared_key_errors(parsed: list[tuple[int, Account]]) -> list[str]:
    """One broker key under two labels would be two lanes trading one account."""
    problems: list[str] = []
    first_by_key: dict[tuple[str, str], int] = {}
    for index, account in parsed:
        key = (account.broker_host, account.api_key.get_secret_value())
        if key in first_by_key:
            problems.append(
                f"accounts[{index}] {account.label!r}: api_key: "
                f"same broker key as accounts[{first_by_key[key]}]"
            )
        else:
            first_by_key[key] = index
    return problems


def _entries_of(document: Any, source: str) -> tuple[list[Any], list[str]]:
    if isinstance(document, list):
        return document, []
    if isinstance(document, Mapping) and isinstance(document.get("accounts"), list):
        extra = sorted(str(k) for k in document if k != "accounts")
        if extra:
            return [], [f"{source}: unknown top-level field(s): {', '.join(extra)}"]
        return list(document["accounts"]), []
    return [], [f'{source}: expected an array of accounts or {{"accounts": [...]}}']


def parse_registry(document: Any, source: str, *, live_enabled: bool) -> AccountRegistry:
    """Build a registry from a parsed JSON/YAML document; AccountConfigError lists all problems."""
    raw_entries, problems = _entries_of(document, source)
    for raw in raw_entries:
        _register_entry_secrets(raw)
    if not problems and not raw_entries:
        problems.append(f"{source}: the registry has no accounts")
    parsed: list[tuple[int, Account]] = []
    for index, raw in enumerate(raw_entries):
        account, entry_problems = _parse_entry(index, raw, live_enabled)
        problems += entry_problems
        if account is not None:
            parsed.append((index, account))
    problems += _duplicate_label_errors(raw_entries) + _shared_key_errors(parsed)
    if problems:
        raise AccountConfigError(problems)
    accounts = tuple(a for _, a in parsed)
    return AccountRegistry(accounts=accounts, source=source, multi_account=True)


# ---------------------------------------------------------------- registry sources


def _yaml_error(exc: yaml.YAMLError) -> str:
    # YAML's own message quotes the source text around the problem: it may hold a key.
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}"


def _json_error(exc: json.JSONDecodeError) -> str:
    return f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"


def _read_registry_document(settings: Settings) -> tuple[Any, str]:
    """The parsed registry document and its source name; AccountConfigError when unreadable."""
    if settings.accounts_json is not None and settings.accounts_file is not None:
        raise AccountConfigError(
            ["TRADING_ACCOUNTS_JSON and TRADING_ACCOUNTS_FILE are both set: set only one"]
        )
    if settings.accounts_json is not None:
        text = settings.accounts_json.get_secret_value()
        try:
            return json.loads(text), "TRADING_ACCOUNTS_JSON"
        except json.JSONDecodeError as exc:
            raise AccountConfigError([f"TRADING_ACCOUNTS_JSON: {_json_error(exc)}"]) from None
    path = settings.accounts_file
    assert path is not None
    source = f"TRADING_ACCOUNTS_FILE ({path})"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = "file not found" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        raise AccountConfigError([f"{source}: {reason}"]) from None
    try:
        if Path(path).suffix.lower() == ".json":
            return json.loads(text), source
        return yaml.safe_load(text), source
    except json.JSONDecodeError as exc:
        raise AccountConfigError([f"{source}: {_json_error(exc)}"]) from None
    except yaml.YAMLError as exc:
        raise AccountConfigError([f"{source}: {_yaml_error(exc)}"]) from None


def registry_configured(settings: Settings) -> bool:
    return settings.accounts_json is not None or settings.accounts_file is not None


def load_registry_source(settings: Settings) -> AccountRegistry:
    """The registry named by `TRADING_ACCOUNTS_JSON` / `TRADING_ACCOUNTS_FILE` (must be set)."""
    document, source = _read_registry_document(settings)
    return parse_registry(document, source, live_enabled=settings.live_enabled)


def single_account(settings: Settings, *, strict: bool = True) -> AccountRegistry:
    """The one lane of single-account mode, from `APCA_*`, `TRADING_ACCOUNT_LABEL`, `TRADING_MODE`.

    Missing credentials are an error; with `strict=False` they become a warning and the lane is
    synthesised disabled, so that a worker can start and report it instead of failing.
    """
    problems: list[str] = []
    warnings: list[str] = []
    label = settings.account_label
    try:
        validate_label(label)
    except ValueError:
        problems.append(f"TRADING_ACCOUNT_LABEL: must be {LABEL_RULE}")
    try:
        mode = AccountMode(settings.trading_mode)
    except ValueError:
        problems.append("TRADING_MODE: must be paper or live")
        mode = AccountMode.paper
    if mode is AccountMode.live and not settings.live_enabled:
        problems.append("TRADING_MODE: live requires TRADING_LIVE_ENABLED=true")
    base_url, url_problems = _broker_url_errors(
        settings.apca_api_base_url, mode, "APCA_API_BASE_URL"
    )
    problems += url_problems
    api_key, secret_key = settings.apca_api_key_id, settings.apca_api_secret_key
    missing = [
        f"{name}: not set (required for the single-account lane)"
        for name, value in (("APCA_API_KEY_ID", api_key), ("APCA_API_SECRET_KEY", secret_key))
        if value is None or not value.get_secret_value()
    ]
    (problems if strict else warnings).extend(missing)
    if problems:
        raise AccountConfigError(problems)
    account = Account(
        label=label,
        mode=mode,
        api_key=api_key or SecretStr(""),
        secret_key=secret_key or SecretStr(""),
        base_url=base_url,
        enabled=not missing,
    )
    return AccountRegistry(
        accounts=(account,),
        source="APCA_* (single account)",
        multi_account=False,
        warnings=tuple(warnings),
    )


def load_registry(settings: Settings, *, strict: bool = True) -> AccountRegistry:
    """The accounts this deployment trades; AccountConfigError lists every problem at once."""
    secrets.register_model(settings)
    if not (settings.multi_account_enabled and registry_configured(settings)):
        return single_account(settings, strict=strict)
    registry = load_registry_source(settings)
    warnings: list[str] = []
    if registry.get(settings.account_label) is None:
        warnings.append(
            f"TRADING_ACCOUNT_LABEL {settings.account_label!r} is not in the registry: "
            "v1 trade updates that match no order fall back to an account without a lane"
        )
    if not registry.enabled():
        warnings.append(f"{registry.source}: no account is enabled: no lane will trade")
    return AccountRegistry(
        accounts=registry.accounts,
        source=registry.source,
        multi_account=True,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class ConfigReport:
    registry: AccountRegistry | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def _path_errors(settings: Settings) -> list[str]:
    # The registry file is checked by the registry loader itself.
    paths = {
        "TRADING_STRATEGIES_FILE": settings.strategies_file,
        "TRADING_FLAGS_FILE": settings.flags_file,
    }
    return [
        f"{name}: file not found ({path})"
        for name, path in paths.items()
        if path is not None and not Path(path).is_file()
    ]


def check_configuration(settings: Settings) -> ConfigReport:
    """Everything `accounts --check` validates: the active lanes, plus an inactive registry."""
    errors: list[str] = []
    warnings: list[str] = []
    registry: AccountRegistry | None = None
    try:
        registry = load_registry(settings)
        warnings += registry.warnings
    except AccountConfigError as exc:
        errors += exc.errors
    if registry_configured(settings) and not settings.multi_account_enabled:
        warnings.append(
            "a registry is set but TRADING_MULTI_ACCOUNT_ENABLED=false: the single APCA_* "
            "account trades; the registry is validated only"
        )
        try:
            load_registry_source(settings)
        except AccountConfigError as exc:
            errors += [f"(inactive registry) {e}" for e in exc.errors]
    errors += _path_errors(settings)
    return ConfigReport(registry=registry, errors=tuple(errors), warnings=tuple(warnings))
