"""Local stack without Docker: Apache Kafka (KRaft, Maven Central jars) and a throwaway PostgreSQL.

Usage: python stack/stack.py up [--fresh]|down|status|env

- `up` is idempotent: a running component is left alone, a stale PID file is cleared.
  `up --fresh` first wipes the data of stopped components (the test suite's throwaway stack).
- `down` stops only the processes this script started, by their recorded PIDs.
- Readiness is real: Kafka answers a metadata request, Postgres answers `SELECT 1`.
- Everything lives in `.cache/` (ignored): jars, the Maven repository, Kafka logs, the PG cluster.
- `env` prints the connection settings as shell exports; `up` writes them to `.cache/stack/env`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
# TORGHUT_STACK_DIR relocates a whole second stack (the stack script's own tests use one).
STATE_DIR = Path(os.environ.get("TORGHUT_STACK_DIR") or CACHE / "stack").resolve()
STATE_FILE = STATE_DIR / "state.json"
ENV_FILE = STATE_DIR / "env"
# The broker version: 3.9.1 by default; `TORGHUT_KAFKA_VERSION=4.x.y` runs a Kafka 4 broker (its
# jars in their own cache folder; `make test-kafka-compat` runs the integration suite on it).
DEFAULT_KAFKA_VERSION = "3.9.1"
KAFKA_VERSION = os.environ.get("TORGHUT_KAFKA_VERSION") or DEFAULT_KAFKA_VERSION
KAFKA_LIBS = CACHE / "kafka" / KAFKA_VERSION / "libs"
KAFKA_DIR = STATE_DIR / "kafka"
PG_DIR = STATE_DIR / "pg"
PG_VERSION = os.environ.get("TORGHUT_PG_VERSION", "15")
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
PG_DATABASE = "torghut"
# A role that may only log in over TLS with a password (the TLS test's; everything else: trust).
PG_TLS_ROLE = "torghut_tls"

# Topic name → (partitions env var, default partitions, cleanup policy). Names come from the
# same environment variables the app reads, so the stack and the app always agree.
TOPICS: dict[str, tuple[str, str]] = {
    "TORGHUT_SIGNALS_TOPIC": ("torghut.ta.signals.v1", "delete"),
    "TRADING_ORDER_FEED_TOPIC": ("torghut.trade-updates.v1", "delete"),
    "TRADING_ORDER_FEED_TOPIC_V2": ("torghut.trade-updates.v2", "delete"),
    "TORGHUT_DECISIONS_TOPIC": ("torghut.trade-decisions.v1", "delete"),
    "TORGHUT_DLQ_TOPIC": ("torghut.trading.dlq.v1", "delete"),
    "TORGHUT_CONTROL_TOPIC": ("torghut.control.v1", "compact"),
}


def log(msg: str) -> None:
    print(f"[stack] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def load_state() -> dict[str, int]:
    if STATE_FILE.exists():
        return dict(json.loads(STATE_FILE.read_text()))
    return {}


def save_state(state: dict[str, int]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2))


def pid_alive(pid: int, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if stat[0] == "Z":  # a zombie is not running
            return False
    except (FileNotFoundError, IndexError):
        return False
    return marker in cmdline


def read_pid(pid_file: Path, marker: str) -> int | None:
    if not pid_file.exists():
        return None
    try:
        pid = int(pid_file.read_text().split()[0])
    except (ValueError, IndexError):
        pid = -1
    if pid > 0 and pid_alive(pid, marker):
        return pid
    log(f"removing stale PID file {pid_file.name}")
    pid_file.unlink(missing_ok=True)
    return None


def stop_pid(pid: int, marker: str, timeout: float = 30.0) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return
        time.sleep(0.1)
    log(f"pid {pid} ignored SIGTERM for {timeout:.0f}s; killing")
    os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------------ TLS


def make_certs(folder: Path, common_name: str = "127.0.0.1") -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (openssl
    CLI). Returns {"ca": ca.pem, "cert": server.crt, "key": server.key (PKCS#8),
    "keystore": server.pem (key + chain, Kafka's PEM keystore)}. Kept when present."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "ca": folder / "ca.pem",
        "cert": folder / "server.crt",
        "key": folder / "server.key",
        "keystore": folder / "server.pem",
    }
    if all(p.exists() for p in paths.values()):
        return paths

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, cwd=folder, capture_output=True)

    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "30", "-subj", "/CN=torghut throwaway CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={common_name}",
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", "server.ext",
    )  # fmt: skip
    paths["keystore"].write_text(paths["key"].read_text() + paths["cert"].read_text())
    return paths


# ---------------------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class Kafka:
    port: int
    controller_port: int
    # A second broker (e.g. the SASL_SSL one of the security test) lives in its own folder
    # with its own config overrides and `kafka-storage format` arguments (SCRAM users).
    home: Path = KAFKA_DIR
    overrides: tuple[tuple[str, str], ...] = ()
    format_args: tuple[str, ...] = ()

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def marker(self) -> str:
        return str(self.config_file)

    def ensure_jars(self) -> None:
        if (KAFKA_LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
            return
        log(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (first run only)")
        subprocess.run(
            [
                "mvn", "-q", "-B", "-f", str(ROOT / "stack" / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={KAFKA_VERSION}",
                f"-DoutputDirectory={KAFKA_LIBS}",
                f"-Dmaven.repo.local={CACHE / 'm2'}",
            ],
            check=True,
        )  # fmt: skip

    def write_config(self) -> None:
        data = self.home / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.hours": "24",
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "2",
            "delete.topic.enable": "true",
            **dict(self.overrides),
        }
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j.properties").write_text(
            "log4j.rootLogger=WARN, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.home / 'server.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\n"
            "log4j.logger.org.apache.kafka=WARN\n"
        )

    def java(self, *args: str, heap: str = "512m") -> list[str]:
        return [
            "java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
            "-cp", f"{KAFKA_LIBS}/*", *args,
        ]  # fmt: skip

    def start(self) -> None:
        if read_pid(self.pid_file, self.marker):
            log(f"kafka already running on 127.0.0.1:{self.port}")
            return
        self.ensure_jars()
        self.write_config()
        data = self.home / "data"
        if not (data / "meta.properties").exists():
            shutil.rmtree(data, ignore_errors=True)
            cluster_id = uuid.uuid4().hex[:22]
            subprocess.run(
                self.java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                          "-c", str(self.config_file), *self.format_args, heap="128m"),
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        with open(self.home / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self.java("kafka.Kafka", str(self.config_file)),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        # Popen returns once exec began; /proc/PID/cmdline (what `pid_alive` matches) stays empty
        # until the kernel has laid out the new program's arguments. A readiness check in that
        # moment took the new broker for dead and removed its PID file (a restart under load).
        deadline = time.monotonic() + 10
        while proc.poll() is None and not pid_alive(proc.pid, self.marker):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        log(f"kafka starting (pid {proc.pid}) on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        pid = read_pid(self.pid_file, self.marker)
        if pid is None:
            log("kafka not running")
            return
        stop_pid(pid, self.marker)
        self.pid_file.unlink(missing_ok=True)
        log(f"kafka stopped (pid {pid})")

    async def wait_ready(self, timeout: float = 90.0, **client: Any) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not read_pid(self.pid_file, self.marker):
                logs = [self.home / "stdout.log", self.home / "server.log"]
                tail = "".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())
                raise SystemExit(f"kafka exited during startup:\n{tail}")
            admin = AIOKafkaAdminClient(
                bootstrap_servers=f"127.0.0.1:{self.port}", request_timeout_ms=3000, **client
            )
            try:
                await admin.start()
                await admin.describe_cluster()  # a metadata request answered
                return
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
            finally:
                await admin.close()
            await asyncio.sleep(0.3)
        raise SystemExit(f"kafka not ready after {timeout:.0f}s: {last!r}")

    async def create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        partitions = int(os.environ.get("TORGHUT_TOPIC_PARTITIONS", "8"))
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{self.port}")
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = []
            for env_name, (default, policy) in TOPICS.items():
                name = os.environ.get(env_name) or default
                if name in existing:
                    continue
                configs = {"cleanup.policy": policy}
                if policy == "compact":
                    configs["min.cleanable.dirty.ratio"] = "0.1"
                    configs["segment.ms"] = "600000"
                wanted.append(NewTopic(name, partitions, 1, topic_configs=configs))
            if wanted:
                await admin.create_topics(wanted)
                log("created topics: " + ", ".join(t.name for t in wanted))
        finally:
            await admin.close()


# ------------------------------------------------------------------------------------- Postgres


@dataclass(frozen=True)
class Postgres:
    port: int

    @property
    def data(self) -> Path:
        return PG_DIR / "data"

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def ensure_installed(self) -> None:
        if (PG_BIN / "initdb").exists():
            return
        if os.geteuid() != 0:
            raise SystemExit(f"PostgreSQL {PG_VERSION} is missing; install the postgresql package")
        log(f"installing PostgreSQL {PG_VERSION} from Debian packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", f"postgresql-{PG_VERSION}"], check=True, env=env
        )
        # Debian starts a default cluster on 5432; this project runs its own throwaway one.
        subprocess.run(["service", "postgresql", "stop"], check=False, env=env)

    def certs(self) -> dict[str, Path]:
        """Server certificate of the cluster (TLS is on; clients choose with `sslmode`)."""
        paths = make_certs(PG_DIR / "tls")
        if os.geteuid() == 0:
            for path in (PG_DIR / "tls", *paths.values()):
                shutil.chown(path, "postgres", "postgres")
        paths["key"].chmod(0o600)
        return paths

    def running_pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        try:
            pid = int(pid_file.read_text().split()[0])
        except (ValueError, IndexError, PermissionError):
            return None
        return pid if pid_alive(pid, "postgres") else None

    def start(self) -> None:
        self.ensure_installed()
        if self.running_pid():
            log(f"postgres already running on 127.0.0.1:{self.port}")
            return
        PG_DIR.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(PG_DIR, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            shutil.rmtree(self.data, ignore_errors=True)
            subprocess.run(
                self._as_postgres(
                    [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8", "--no-sync"]
                ),
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            hba = self.data / "pg_hba.conf"
            hba.write_text(
                f"hostssl all {PG_TLS_ROLE} 127.0.0.1/32 scram-sha-256\n"
                f"host    all {PG_TLS_ROLE} 127.0.0.1/32 reject\n" + hba.read_text()
            )
        else:
            # A crashed cluster leaves postmaster.pid behind; pg_ctl refuses to start over it.
            (self.data / "postmaster.pid").unlink(missing_ok=True)
        tls = self.certs()
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {PG_DIR} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            f"-c shared_buffers=128MB -c ssl=on -c ssl_cert_file={tls['cert']} "
            f"-c ssl_key_file={tls['key']} -c password_encryption=scram-sha-256"
        )
        subprocess.run(
            self._as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(PG_DIR / "server.log"),
                 "-o", opts, "-w", "-t", "60", "start"]
            ),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        log(f"postgres started on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if not self.running_pid():
            log("postgres not running")
            return
        subprocess.run(
            self._as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        log("postgres stopped")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        import asyncpg

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", database="postgres"
                )
                try:
                    await conn.fetchval("SELECT 1")
                    exists = await conn.fetchval(
                        "SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE
                    )
                    if not exists:
                        await conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
                    return
                finally:
                    await conn.close()
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = exc
                await asyncio.sleep(0.2)
        raise SystemExit(f"postgres not ready after {timeout:.0f}s: {last!r}")


# ------------------------------------------------------------------------------------- commands


def components() -> tuple[Kafka, Postgres, dict[str, int]]:
    state = load_state()
    for key in ("kafka_port", "controller_port", "pg_port"):
        if key not in state:
            state[key] = free_port()
    return Kafka(state["kafka_port"], state["controller_port"]), Postgres(state["pg_port"]), state


def env_lines(state: dict[str, int]) -> list[str]:
    return [
        f"KAFKA_BROKERS=kafka://127.0.0.1:{state['kafka_port']}",
        f"DATABASE_URL=postgresql://postgres@127.0.0.1:{state['pg_port']}/{PG_DATABASE}",
        # One broker: one replica of everything (production: 3, the default).
        "TORGHUT_TOPIC_REPLICATION_FACTOR=1",
        f"TORGHUT_KAFKA_VERSION={KAFKA_VERSION}",
        # CA of the stack Postgres' server certificate (for `DATABASE_SSLMODE=verify-full`).
        f"TORGHUT_STACK_PG_CA={PG_DIR / 'tls' / 'ca.pem'}",
    ]


def rebind_if_taken(kafka: Kafka, pg: Postgres, state: dict[str, int]) -> tuple[Kafka, Postgres]:
    """A port saved from an earlier run may now belong to someone else: pick a new one."""
    if not read_pid(kafka.pid_file, kafka.marker):
        for key in ("kafka_port", "controller_port"):
            if not port_is_free(state[key]):
                state[key] = free_port()
        kafka = Kafka(state["kafka_port"], state["controller_port"])
    if not pg.running_pid() and not port_is_free(state["pg_port"]):
        state["pg_port"] = free_port()
        pg = Postgres(state["pg_port"])
    return kafka, pg


def wipe_stopped(kafka: Kafka, pg: Postgres) -> None:
    """Throw away the data of components that are not running (never of a running one)."""
    if not read_pid(kafka.pid_file, kafka.marker):
        shutil.rmtree(KAFKA_DIR / "data", ignore_errors=True)
    if not pg.running_pid():
        shutil.rmtree(pg.data, ignore_errors=True)


async def up(fresh: bool = False) -> None:
    kafka, pg, state = components()
    kafka, pg = rebind_if_taken(kafka, pg, state)
    if fresh:
        wipe_stopped(kafka, pg)
    save_state(state)
    started = time.monotonic()
    kafka.start()
    pg.start()
    await asyncio.gather(kafka.wait_ready(), pg.wait_ready())
    await kafka.create_topics()
    ENV_FILE.write_text("".join(f"export {line}\n" for line in env_lines(state)))
    log(f"ready in {time.monotonic() - started:.1f}s: " + " ".join(env_lines(state)))


def down() -> None:
    kafka, pg, _ = components()
    kafka.stop()
    pg.stop()


def status() -> int:
    kafka, pg, _ = components()
    k = read_pid(kafka.pid_file, kafka.marker)
    p = pg.running_pid()
    print("kafka    " + (f"up (pid {k}) 127.0.0.1:{kafka.port}" if k else "down"))
    print("postgres " + (f"up (pid {p}) 127.0.0.1:{pg.port}" if p else "down"))
    return 0 if (k and p) else 3


def main(argv: list[str]) -> int:
    import logging

    # aiokafka logs every refused connection while the broker boots; readiness reports failures.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "up":
        asyncio.run(up(fresh="--fresh" in argv[2:]))
    elif cmd == "down":
        down()
    elif cmd == "status":
        return status()
    elif cmd == "env":
        print("\n".join(f"export {line}" for line in env_lines(components()[2])))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
