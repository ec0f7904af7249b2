"""A real PgBouncer (the system's package) in transaction mode in front of the test PostgreSQL, started and stopped
by the tests and by the benchmark (which so runs the configuration the tests prove): its own configuration in a
temporary folder, a free loopback port, trust authentication.

PgBouncer refuses to run as root: under root it is started with `-u postgres`, which is why its folder is made
readable by that user. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
START_DEADLINE = 15.0
STOP_TIMEOUT = 10.0
POOL_SIZE = 4
# Settings that go with user-service behind a transaction pooler (README, Deploying): a request waiting for a
# server connection gives up within seconds (503) instead of PgBouncer's default two minutes, and a database that
# comes back is retried within a second.
SETTINGS = {
    "pool_mode": "transaction",
    "default_pool_size": str(POOL_SIZE),
    "max_client_conn": "1000",
    "query_wait_timeout": "3",
    "server_login_retry": "1",
    "server_connect_timeout": "3",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _config(folder: Path, port: int, target_port: int, extra: dict[str, str]) -> Path:
    users = folder / "users.txt"
    users.write_text('"postgres" ""\n', encoding="utf-8")
    lines = [
        "[databases]",
        f"* = host=127.0.0.1 port={target_port}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {users}",
        *(f"{name} = {value}" for name, value in {**SETTINGS, **extra}.items()),
    ]
    ini = folder / "pgbouncer.ini"
    ini.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for path in (users, ini):
        path.chmod(0o644)
    return ini


@contextlib.contextmanager
def running_pgbouncer(target_port: int, **extra: str) -> Iterator[int]:
    """PgBouncer on a free loopback port in front of PostgreSQL at `target_port`, for as long as the block runs;
    yields its port. `extra` adds or overrides pgbouncer.ini settings."""
    if not Path(PGBOUNCER).exists():
        raise RuntimeError(f"PgBouncer is not installed ({PGBOUNCER}); `apt-get install -y pgbouncer`")
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    # Readable by the postgres user that PgBouncer switches to.
    folder.chmod(0o755)
    port = _free_port()
    ini = _config(folder, port, target_port, extra)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []
    log = folder / "pgbouncer.log"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [PGBOUNCER, *user, str(ini)], stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not _answers(port):
            output = log.read_text(encoding="utf-8", errors="replace")
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"PgBouncer did not start on port {port}:\n{output}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
        shutil.rmtree(folder, ignore_errors=True)
