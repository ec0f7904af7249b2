"""What the benchmark needs besides the project itself: wrk, a separate virtual environment for the peer
(fastapi-users) and one for the profiler, and a description of the machine the numbers come from."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
PEER_VENV = WORK / "peer-venv"
TOOLS_VENV = WORK / "tools-venv"
# The peer's latest release, served by the same uvicorn stack (uvloop, httptools) as user-service.
# asyncpg: fastapi-users' documented PostgreSQL set-up (postgresql+asyncpg://).
PEER_REQUIREMENTS = ("fastapi-users[sqlalchemy]", "aiosqlite", "asyncpg", "uvicorn[standard]")
TOOLS_REQUIREMENTS = ("py-spy",)
INSTALL_TIMEOUT = 600

PROJECT_PACKAGES = (
    "user-service",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "bcrypt",
    "pyjwt",
    "psycopg",
    "anyio",
)
PEER_PACKAGES = (
    "fastapi-users",
    "fastapi-users-db-sqlalchemy",
    "pwdlib",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "aiosqlite",
    "asyncpg",
    "bcrypt",
    "pyjwt",
    "anyio",
)


class SetupError(RuntimeError):
    """Something the benchmark needs is missing and could not be installed."""


def project_bin(name: str) -> Path:
    """A console script of the project's virtual environment (the one running this harness, or ROOT/.venv)."""
    for folder in (Path(sys.executable).parent, ROOT / ".venv" / "bin"):
        candidate = folder / name
        if candidate.exists():
            return candidate
    raise SetupError(
        f"{name} not found next to {sys.executable} nor in {ROOT / '.venv/bin'}; follow the README quick start"
    )


def ensure_wrk() -> str:
    """The path of wrk, installed from Debian's packages when missing and this process is root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SetupError("wrk is not installed; install it (Debian/Ubuntu: `sudo apt-get install -y wrk`) and rerun")
    print("wrk not found: installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    if subprocess.run(install, env=env, check=False, timeout=INSTALL_TIMEOUT).returncode != 0:
        # A fresh machine's package lists may be empty or stale: refresh them once and try again.
        subprocess.run(["apt-get", "update"], env=env, check=False, timeout=INSTALL_TIMEOUT)
        subprocess.run(install, env=env, check=False, timeout=INSTALL_TIMEOUT)
    found = shutil.which("wrk")
    if not found:
        raise SetupError("apt-get could not install wrk; install it by hand and rerun")
    return found


def _ensure_venv(path: Path, requirements: tuple[str, ...], *, upgrade: bool) -> Path:
    """A virtual environment at `path` holding `requirements`; created once, upgraded only when asked."""
    marker = path / "benchmark-requirements.json"
    wanted = json.dumps(sorted(requirements))
    if not upgrade and marker.is_file() and marker.read_text() == wanted and (path / "bin" / "python").exists():
        return path / "bin" / "python"
    if not (path / "bin" / "python").exists():
        print(f"creating {path.relative_to(ROOT)}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=INSTALL_TIMEOUT)
    print(f"installing {' '.join(requirements)} into {path.relative_to(ROOT)}", flush=True)
    command = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--upgrade", *requirements]
    if subprocess.run(command, check=False, timeout=INSTALL_TIMEOUT).returncode != 0:
        raise SetupError(f"pip could not install {' '.join(requirements)} into {path}")
    marker.write_text(wanted)
    return path / "bin" / "python"


def ensure_peer_venv(*, upgrade: bool = False) -> Path:
    """The Python of the fastapi-users environment (never the project's own venv)."""
    return _ensure_venv(PEER_VENV, PEER_REQUIREMENTS, upgrade=upgrade)


def ensure_tools_venv(*, upgrade: bool = False) -> Path:
    """The bin folder of the profiler's environment."""
    return _ensure_venv(TOOLS_VENV, TOOLS_REQUIREMENTS, upgrade=upgrade).parent


def package_versions(python: Path | str, names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of `names` in the environment of `python` (None when absent)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n"
        "        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "print(json.dumps({'python': sys.version.split()[0], **{n: v(n) for n in sys.argv[1:]}}))\n"
    )
    result = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-300:]}
    versions: dict[str, str | None] = json.loads(result.stdout)
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def _wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False, timeout=10)
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine_info(wrk: str) -> dict[str, object]:
    """The machine, as far as the numbers depend on it."""
    return {
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_usable": sorted(os.sched_getaffinity(0)),
        "memory_mib": _memory_total_mib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "wrk": _wrk_version(wrk),
        "loadavg_at_start": list(os.getloadavg()),
    }
