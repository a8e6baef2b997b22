"""Postgres over TLS with the password from a file: `sslmode=verify-full` against the stack's
Postgres (TLS on; the `torghut_tls` role may log in only over TLS with a password). Proven for
asyncpg (the repository pool) and SQLAlchemy/Alembic (`db upgrade`, `db check`)."""

from __future__ import annotations

import os
import secrets as pysecrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from streams.persistence.dsn import database_dsn
from streams.persistence.repository import Repository
from streams.settings import Settings
from tests.support.stack import ROOT, StackInfo

pytestmark = pytest.mark.integration

ROLE = "torghut_tls"


def stack_ca() -> Path:
    ca = Path(os.environ.get("TORGHUT_STACK_PG_CA", ""))
    assert ca.is_file(), "the stack's env file names the Postgres CA (TORGHUT_STACK_PG_CA)"
    return ca


@pytest.fixture
async def tls_env(pg_dsn: str, tmp_path: Path) -> dict[str, str]:
    """Environment of a TLS, password-file connection to a fresh database owned by ROLE."""
    password = "pw-" + pysecrets.token_hex(12)
    admin = await asyncpg.connect(pg_dsn)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", ROLE)
        verb = "ALTER" if exists else "CREATE"
        await admin.execute(f"{verb} ROLE {ROLE} LOGIN PASSWORD '{password}'")
        db = urlsplit(pg_dsn).path.lstrip("/")
        await admin.execute(f'ALTER DATABASE "{db}" OWNER TO {ROLE}')
        await admin.execute(f"ALTER SCHEMA public OWNER TO {ROLE}")
    finally:
        await admin.close()
    secret = tmp_path / "db-password"
    secret.write_text(password + "\n")
    parts = urlsplit(pg_dsn)
    return {
        "DATABASE_URL": f"postgresql://{ROLE}@{parts.hostname}:{parts.port}{parts.path}",
        "DATABASE_PASSWORD_FILE": str(secret),
        "DATABASE_SSLMODE": "verify-full",
        "DATABASE_SSL_ROOT_CERT_FILE": str(stack_ca()),
    }


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


async def test_asyncpg_pool_over_verified_tls(
    tls_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from(tls_env, monkeypatch)
    dsn = database_dsn(settings)
    repo = await Repository.connect(dsn, 2)
    try:
        await repo.ping()
    finally:
        await repo.close()
    conn = await asyncpg.connect(dsn)
    try:
        ssl_on = await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert ssl_on is True
        assert await conn.fetchval("SELECT current_user") == ROLE
    finally:
        await conn.close()


async def test_db_upgrade_and_check_over_tls(tls_env: dict[str, str]) -> None:
    env = {**os.environ, **tls_env, "TORGHUT_LOG_FORMAT": "text"}
    for action in ("upgrade", "check"):
        done = subprocess.run(
            [sys.executable, "-m", "faust", "-A", "streams.app", "db", action],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: database at 0003" in done.stdout


async def test_refused_without_tls_wrong_ca_or_wrong_password(
    tls_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stack: StackInfo
) -> None:
    # Without TLS the server refuses the role (pg_hba: hostssl only).
    plain = settings_from({**tls_env, "DATABASE_SSLMODE": "disable"}, monkeypatch)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(database_dsn(plain))
    # A CA that did not sign the server certificate: verification fails.
    sys.path.insert(0, str(ROOT / "stack"))
    try:
        import stack as stack_script  # stack/stack.py: the same certificate helper
    finally:
        sys.path.pop(0)
    other = stack_script.make_certs(tmp_path / "other-ca")
    wrong_ca = settings_from(
        {**tls_env, "DATABASE_SSL_ROOT_CERT_FILE": str(other["ca"])}, monkeypatch
    )
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await asyncpg.connect(database_dsn(wrong_ca))
    # A wrong password: refused, and the error does not contain it.
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-123")
    bad = settings_from(
        {**tls_env, "DATABASE_SSL_ROOT_CERT_FILE": tls_env["DATABASE_SSL_ROOT_CERT_FILE"],
         "DATABASE_PASSWORD_FILE": str(wrong)},
        monkeypatch,
    )  # fmt: skip
    with pytest.raises(asyncpg.InvalidPasswordError) as caught:
        await asyncpg.connect(database_dsn(bad))
    assert "not-the-password-123" not in str(caught.value)
