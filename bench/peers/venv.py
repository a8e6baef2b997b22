"""The Quix Streams peer's own virtual environment: `python -m bench.peers.venv` (stack/bench.sh).

Created under `.cache/peers/quix-venv` from `bench/peers/requirements-quix.txt` (exact pins,
installed with --no-deps) and reused while that file is unchanged (a stamp holds its hash).
The project's own environment is added behind the venv's packages (`site.addsitedir` in a .pth
file, written here at install time), so that the peer imports the project's decode, strategy and
fan-out code with the project's pinned pydantic, fastavro and friends, while quixstreams and the
packages only it needs come from the venv (see the requirements file for why).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.support.stack import ROOT

REQUIREMENTS = ROOT / "bench" / "peers" / "requirements-quix.txt"
VENV = ROOT / ".cache" / "peers" / "quix-venv"
PTH = "torghut-project.pth"


def python() -> Path:
    return VENV / "bin" / "python"


def _stamp() -> Path:
    digest = hashlib.sha1(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    return VENV / f".installed-{digest}"


def _site_packages(interpreter: Path) -> Path:
    out = subprocess.run(
        [str(interpreter), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def ensure() -> Path:
    """The venv's python, installing or refreshing the venv when needed."""
    if _stamp().exists() and python().exists():
        return python()
    if not python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    for stale in VENV.glob(".installed-*"):
        stale.unlink()
    pip = [str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "-r", str(REQUIREMENTS)], check=True)
    project_site = sysconfig.get_paths()["purelib"]
    line = f"import site; site.addsitedir({project_site!r})\n"
    (_site_packages(python()) / PTH).write_text(line)
    _stamp().touch()
    return python()


def main() -> None:
    print(ensure())


if __name__ == "__main__":
    main()
