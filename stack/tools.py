"""Operator tools from Debian packages, installed when missing: the real programs the proofs run.

Usage: python stack/tools.py ensure prometheus|burrow|chromium|zookeeper [...]
       python stack/tools.py which NAME     # print the binary (or, for zookeeper, the jar folder)

- `prometheus`: `prometheus` and `promtool` (Debian `prometheus`, without its recommended node
  exporter).
- `burrow`: LinkedIn's consumer-lag evaluator (Debian `burrow`; its binary is `Burrow`).
- `chromium`: headless Chromium for the operator page's browser test (Debian `chromium`).
- `zookeeper`: Burrow keeps its own coordination in ZooKeeper. The Apache Kafka 3.9 jars
  (`.cache/kafka/3.9.1/libs`) contain ZooKeeper's server, so nothing is installed: the
  tests run `org.apache.zookeeper.server.ZooKeeperServerMain` from those jars on a free loopback
  port, under their own PID (Debian's `zookeeperd` would start a system-wide service).

Installs run `apt-get install -y --no-install-recommends` (noninteractive), with `apt-get update`
first only when a plain install fails. Package scripts must not start system services (they would
listen on every interface): a `policy-rc.d` that refuses service starts is put in place for the
install when the machine has none, and any service the package registered is stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# ZooKeeper's server ships with the Kafka 3.9 jars (Kafka 4 dropped it), whatever broker version
# the stack runs.
ZOOKEEPER_KAFKA_VERSION = "3.9.1"
KAFKA_LIBS = ROOT / ".cache" / "kafka" / ZOOKEEPER_KAFKA_VERSION / "libs"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


@dataclass(frozen=True)
class Tool:
    binaries: tuple[str, ...]
    packages: tuple[str, ...]
    services: tuple[str, ...] = ()


TOOLS: dict[str, Tool] = {
    "prometheus": Tool(("prometheus", "promtool"), ("prometheus",), ("prometheus",)),
    "burrow": Tool(("Burrow",), ("burrow",), ("burrow",)),
    "chromium": Tool(("chromium",), ("chromium", "fonts-dejavu-core")),
}


def log(msg: str) -> None:
    print(f"[tools] {msg}", file=sys.stderr, flush=True)


def which(binary: str) -> str | None:
    # Debian puts some daemons' binaries in sbin, which a non-login PATH may lack.
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return shutil.which(binary, path=path)


def _apt(args: list[str]) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, stdout=sys.stderr, check=False).returncode


def apt_install(packages: tuple[str, ...], services: tuple[str, ...]) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"missing {' '.join(packages)}: install the Debian package(s) as root")
    own_policy = not POLICY_RC_D.exists()
    if own_policy:
        POLICY_RC_D.write_text("#!/bin/sh\n# torghut stack/tools.py: no service starts\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        install = ["install", "-y", "-q", "--no-install-recommends", *packages]
        if _apt(install) != 0:
            log("install failed; refreshing the package lists and retrying")
            if _apt(["update", "-q"]) != 0 or _apt(install) != 0:
                raise SystemExit(f"apt-get install {' '.join(packages)} failed")
    finally:
        if own_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    for service in services:  # belt and braces: this project runs its own instances
        if shutil.which("service", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            subprocess.run(
                ["service", service, "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


def zookeeper_libs() -> Path:
    """The folder whose jars hold ZooKeeper's server (fetched with the Kafka jars)."""
    if not any(KAFKA_LIBS.glob("zookeeper-3*.jar")):
        # The stack script fetches the jars; run its fetch step alone.
        subprocess.run(
            [
                "mvn", "-q", "-B", "-f", str(ROOT / "stack" / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={ZOOKEEPER_KAFKA_VERSION}",
                f"-DoutputDirectory={KAFKA_LIBS}",
                f"-Dmaven.repo.local={ROOT / '.cache' / 'm2'}",
            ],
            check=True, stdout=sys.stderr,
        )  # fmt: skip
    if not any(KAFKA_LIBS.glob("zookeeper-3*.jar")):
        raise SystemExit(f"no ZooKeeper jar in {KAFKA_LIBS}")
    return KAFKA_LIBS


def ensure(name: str) -> str:
    """Install `name` if missing; return its main binary (zookeeper: the jar folder)."""
    if name == "zookeeper":
        return str(zookeeper_libs())
    tool = TOOLS.get(name)
    if tool is None:
        raise SystemExit(f"unknown tool {name!r}; known: {', '.join([*TOOLS, 'zookeeper'])}")
    if not all(which(b) for b in tool.binaries):
        log(f"installing {name} from Debian packages: {' '.join(tool.packages)}")
        apt_install(tool.packages, tool.services)
    missing = [b for b in tool.binaries if not which(b)]
    if missing:
        raise SystemExit(f"{name}: {', '.join(missing)} still missing after the install")
    return str(which(tool.binaries[0]))


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "ensure":
        for name in argv[2:]:
            print(ensure(name))
        return 0
    if len(argv) == 3 and argv[1] == "which":
        found = str(zookeeper_libs()) if argv[2] == "zookeeper" else which(argv[2])
        if not found:
            return 1
        print(found)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
