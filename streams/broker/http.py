"""Alpaca's REST API over aiohttp: what alpaca-py's `RESTClient._request` sends, without threads.

alpaca-py's `TradingClient` is blocking (requests): every call used to hop to a thread, and
requests/urllib3/http.client's per-call work fought the event loop for the GIL. This client sends
the same requests from the event loop itself:

- the same URL (`url_override` or alpaca-py's paper/live URL, then `/v2`, then the path), the
  same headers (alpaca-py's own: `APCA-API-KEY-ID`, `APCA-API-SECRET-KEY`, `User-Agent`), the
  same query strings (encoded as requests encodes `params`: `None` left out, `False` as "False")
  and the same JSON bodies (`json.dumps` of alpaca-py's request models' `to_request_fields()`,
  as requests encodes `json=`); redirects are not followed (alpaca-py: `allow_redirects=False`);
- the answer as alpaca-py returns it with `raw_data=True`: the parsed JSON (dicts and lists;
  money stays decimal strings), `None` for an empty body; an answer >= 400 raises the classified
  `BrokerError` (`errors.from_response`); transport failures raise aiohttp's exceptions raw (the
  caller classifies them);
- the environment read as the requests session did, once, for the account's base URL
  (`HttpEnvironment.for_url`): the proxy from `HTTP(S)_PROXY`/`ALL_PROXY` unless `NO_PROXY`
  excludes the host, the CA bundle from `REQUESTS_CA_BUNDLE`/`CURL_CA_BUNDLE` (else certifi's, as
  requests), basic auth from `~/.netrc` for the host. The session itself then ignores the
  environment (`trust_env=False`). Only http(s) proxies: a socks proxy is refused at start.

One `ClientSession` per account, made on the first call in the running loop (never at import,
never outside a loop) with a keep-alive pool as large as the account's concurrency; `close()`
closes it. Nothing is ever resent (aiohttp's resend of an idempotent request on a reused
connection found closed is turned off: `compat.without_connection_retry`). The caller bounds
each call's time (`asyncio.timeout`): the session has no timeouts of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import certifi
import requests
from requests.utils import get_netrc_auth, select_proxy
from yarl import URL

from streams.broker.errors import from_response
from streams.compat import without_connection_retry

# An idle connection is kept this long (aiohttp's default is 15 s): a lane quiet for a minute
# still finds its connection (no new TCP and TLS handshake before its next order), and it is
# let go before the usual 60 s idle timeout of the load balancers in front of an API.
KEEPALIVE_SECONDS = 50.0
_JSON = {"Content-Type": "application/json"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def query_string(params: Mapping[str, Any] | None) -> str:
    """`params` encoded as requests encodes them (its `RequestEncodingMixin._encode_params`)."""
    if not params:
        return ""
    pairs: list[tuple[str, Any]] = []
    for key, values in params.items():
        if isinstance(values, str | bytes) or not hasattr(values, "__iter__"):
            values = [values]
        pairs.extend((key, value) for value in values if value is not None)
    return urlencode(pairs, doseq=True)


def json_body(fields: Any) -> bytes:
    """`fields` encoded as requests encodes `json=` (`json.dumps(..., allow_nan=False)`)."""
    return json.dumps(fields, allow_nan=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class HttpEnvironment:
    """What requests would take from the environment for one base URL, read once."""

    proxy: str | None = None
    verify: bool | str = True  # True: certifi's bundle, as requests; a str: a CA file or dir
    netrc_auth: tuple[str, str] | None = None

    @classmethod
    def for_url(cls, base_url: str) -> HttpEnvironment:
        session = requests.Session()
        try:
            settings = session.merge_environment_settings(base_url, {}, None, None, None)
        finally:
            session.close()
        proxy = select_proxy(base_url, settings["proxies"])
        if proxy is not None and urlsplit(proxy).scheme not in ("http", "https"):
            raise ValueError(
                "the aiohttp broker client supports http(s) proxies only; "
                "set TORGHUT_BROKER_HTTP=alpaca-py to use this proxy"
            )
        auth = get_netrc_auth(base_url)
        verify = settings["verify"]
        return cls(
            proxy=proxy,
            verify=verify if isinstance(verify, str) else True,
            netrc_auth=(auth[0], auth[1]) if auth else None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The verification requests would do: certifi's bundle, or the configured one."""
        if isinstance(self.verify, str) and os.path.isdir(self.verify):
            return ssl.create_default_context(capath=self.verify)
        cafile = self.verify if isinstance(self.verify, str) else certifi.where()
        return ssl.create_default_context(cafile=cafile)


class TlsContexts:
    """SSL contexts shared by the accounts of one broker pool, one per CA setting (loading a CA
    bundle costs milliseconds; a hundred accounts would load it a hundred times)."""

    def __init__(self) -> None:
        self._contexts: dict[bool | str, ssl.SSLContext] = {}

    def get(self, environment: HttpEnvironment) -> ssl.SSLContext:
        context = self._contexts.get(environment.verify)
        if context is None:
            context = environment.ssl_context()
            self._contexts[environment.verify] = context
        return context


class AlpacaHttp:
    """One account's REST calls over one aiohttp session (see the module's docstring)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        *,
        pool_size: int,
        environment: HttpEnvironment,
        tls: TlsContexts | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._pool_size = pool_size
        self._environment = environment
        self._ssl: ssl.SSLContext | bool = True
        if urlsplit(self._base).scheme == "https" or (
            environment.proxy is not None and environment.proxy.startswith("https")
        ):
            self._ssl = (tls or TlsContexts()).get(environment)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed and self._loop is loop:
            return session
        if session is not None and not session.closed:
            # Made in another loop (tests that run a broker in several loops): let it go.
            session.detach()
        auth = self._environment.netrc_auth
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, ssl=self._ssl, keepalive_timeout=KEEPALIVE_SECONDS
        )
        self._session = without_connection_retry(
            aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                proxy=self._environment.proxy,
                auth=aiohttp.BasicAuth(auth[0], auth[1]) if auth else None,
                timeout=aiohttp.ClientTimeout(),  # the caller bounds the whole call
                trust_env=False,
            )
        )
        self._loop = loop
        return self._session

    def prepare(
        self, method: str, path: str, data: Mapping[str, Any] | None = None
    ) -> tuple[str, bytes | None]:
        """The URL and body of `RESTClient._request(method, path, data)`: `data` is the query of
        a GET or DELETE, the JSON body of the others."""
        url = self._base + path
        if method in _BODY_METHODS:
            return url, None if data is None else json_body(data)
        if data:
            return f"{url}?{query_string(data)}", None
        return url, None

    @property
    def headers(self) -> dict[str, str]:
        """The headers every request carries (besides aiohttp's own `Accept*` and `Host`)."""
        return dict(self._headers)

    async def request(self, method: str, path: str, data: Mapping[str, Any] | None = None) -> Any:
        """One call as alpaca-py's `RESTClient.get/post/patch/delete(path, data)` makes it."""
        url, body = self.prepare(method, path, data)
        session = self._session_now()
        async with session.request(
            method,
            URL(url, encoded=True),
            data=body,
            headers=_JSON if body is not None else None,
            allow_redirects=False,
        ) as response:
            raw = await response.read()
            status = response.status
        if status >= 400:
            raise from_response(status, raw)
        if not raw:
            return None
        return json.loads(raw)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
