"""Kafka client connection security in one place: every Kafka client of the project gets its
security settings from here (the faust app, CLI commands, the control feed, the forwarder, the
lag monitor, the bulk restore and its child processes, the demo feed).

- `aiokafka_kwargs(settings)`: keyword arguments for `AIOKafkaConsumer`, `AIOKafkaProducer` and
  `AIOKafkaAdminClient` (security protocol, SASL mechanism/user/password, TLS context).
- `faust_kwargs(settings)`: the faust `App` settings (`broker_credentials`).
- `check_connection(settings)`: one metadata round trip that turns an authentication or TLS
  failure into a `KafkaConfigError` that says what to check (never the password).

The password is read from `KAFKA_SASL_PASSWORD_FILE` whenever a client is built (a rotated
Secret is picked up on the next connect) and registered with the log scrubber.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import ssl
from typing import Any

from streams.domain import secrets
from streams.ownership import bootstrap_servers
from streams.settings import KafkaSecurityProtocol, Settings

SSL_PROTOCOLS = frozenset({KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL})
SASL_PROTOCOLS = frozenset({KafkaSecurityProtocol.SASL_PLAINTEXT, KafkaSecurityProtocol.SASL_SSL})


class KafkaConfigError(Exception):
    """Kafka connection settings that cannot work; the message names settings, never secrets."""


def sasl_password(settings: Settings) -> str:
    path = settings.kafka_sasl_password_file
    if path is None:
        raise KafkaConfigError(
            f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol.value} needs "
            "KAFKA_SASL_PASSWORD_FILE"
        )
    try:
        password = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise KafkaConfigError(
            f"KAFKA_SASL_PASSWORD_FILE {path} is unreadable: {type(exc).__name__}"
        ) from None
    if not password:
        raise KafkaConfigError(f"KAFKA_SASL_PASSWORD_FILE {path} is empty")
    secrets.register(password)
    return password


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Verifying TLS context (hostname checked) for SSL and SASL_SSL; None otherwise."""
    if settings.kafka_security_protocol not in SSL_PROTOCOLS:
        return None
    ca = settings.kafka_ssl_ca_file
    if ca is not None and not ca.is_file():
        raise KafkaConfigError(f"KAFKA_SSL_CA_FILE {ca} does not exist")
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _sasl(settings: Settings) -> tuple[str, str]:
    if not settings.kafka_sasl_username:
        raise KafkaConfigError(
            f"KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol.value} needs "
            "KAFKA_SASL_USERNAME"
        )
    return settings.kafka_sasl_username, sasl_password(settings)


def aiokafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for any aiokafka client."""
    s = settings
    protocol = s.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol.value}
    if protocol in SSL_PROTOCOLS:
        kwargs["ssl_context"] = ssl_context(s)
    if protocol in SASL_PROTOCOLS:
        username, password = _sasl(s)
        kwargs["sasl_mechanism"] = s.kafka_sasl_mechanism.value
        kwargs["sasl_plain_username"] = username
        kwargs["sasl_plain_password"] = password
    return kwargs


def faust_kwargs(settings: Settings) -> dict[str, Any]:
    """faust App settings for the same connection (faust passes them to its aiokafka clients)."""
    import faust

    protocol = settings.kafka_security_protocol
    if protocol is KafkaSecurityProtocol.PLAINTEXT:
        return {}
    if protocol is KafkaSecurityProtocol.SSL:
        return {"broker_credentials": faust.SSLCredentials(ssl_context(settings))}
    username, password = _sasl(settings)
    return {
        "broker_credentials": faust.SASLCredentials(
            username=username,
            password=password,
            ssl_context=ssl_context(settings),  # set: SASL_SSL, None: SASL_PLAINTEXT
            mechanism=settings.kafka_sasl_mechanism.value,
        )
    }


class _Captured(logging.Handler):
    """aiokafka logs why a bootstrap connection failed (e.g. SaslAuthenticationFailed) but
    raises only "Unable to bootstrap": keep those log lines to tell the causes apart."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # a line that cannot format is skipped
            self.lines.append(record.getMessage())


def describe_failure(settings: Settings, exc: BaseException, logged: str = "") -> str:
    """What a failed first connection most likely means, naming settings, never secrets."""
    protocol = settings.kafka_security_protocol.value
    text = f"{type(exc).__name__}: {exc}"
    chain: list[BaseException] = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        assert nxt is not None
        chain.append(nxt)
    names = " ".join(type(e).__name__ for e in chain) + " " + text + " " + logged
    if "Authentication" in names:
        hint = (
            f"Kafka authentication failed for user {settings.kafka_sasl_username!r} "
            f"({protocol}, {settings.kafka_sasl_mechanism.value}): check KAFKA_SASL_USERNAME "
            "and the password in KAFKA_SASL_PASSWORD_FILE"
        )
        text = f"{text}; {logged}" if logged else text
    elif any(isinstance(e, ssl.SSLError) for e in chain) or "CERTIFICATE" in names.upper():
        hint = (
            f"Kafka TLS handshake failed ({protocol}): check KAFKA_SSL_CA_FILE and that the "
            "broker certificate names the host in KAFKA_BROKERS"
        )
    else:
        hint = f"Kafka unreachable at {settings.kafka_brokers} ({protocol})"
    return secrets.scrub(f"{hint} [{text}]"[:500])


async def check_connection(settings: Settings, timeout: float = 30.0) -> None:
    """One metadata round trip with the configured security; `KafkaConfigError` on failure."""
    from aiokafka.admin import AIOKafkaAdminClient

    kwargs = aiokafka_kwargs(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers),
        request_timeout_ms=int(timeout * 1000),
        client_id=f"{settings.app_id}-preflight",
        **kwargs,
    )
    captured = _Captured()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addHandler(captured)
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.describe_cluster(), timeout)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear message
        logged = " | ".join(dict.fromkeys(captured.lines))[-1000:]
        raise KafkaConfigError(describe_failure(settings, exc, logged)) from None
    finally:
        aiokafka_log.removeHandler(captured)
        await admin.close()


def check_connection_blocking(settings: Settings, timeout: float = 30.0) -> None:
    """`check_connection` from synchronous code (faust's start-up hooks): in its own thread and
    event loop. Raises `KafkaConfigError`."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, check_connection(settings, timeout)).result()
