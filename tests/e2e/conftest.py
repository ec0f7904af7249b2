"""Real processes: `user-service serve` on a loopback port it binds itself (port 0, the real one read from uvicorn's
start-up line, so no other process can take it between a pick and the bind), polled until healthy, always stopped.

Every wait is bounded: a server that does not answer /health within START_DEADLINE fails the test with its
output, and teardown escalates from SIGTERM to SIGKILL of the server's whole process group.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import PASSWORD

VENV_BIN = Path(sys.executable).parent
USER_SERVICE = VENV_BIN / "user-service"
START_DEADLINE = 30.0
POLL_INTERVAL = 0.1
STOP_TIMEOUT = 20.0
COMMAND_TIMEOUT = 60.0


# uvicorn names the port it bound, also when asked for port 0; with LOG_FORMAT=json the line is inside a field.
RUNNING_ON = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def process_env(**settings: str) -> dict[str, str]:
    """This process's environment (already stripped of every setting by the root conftest) plus `settings`."""
    return {**os.environ, **settings}


def run_command(
    args: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion within `timeout` seconds, capturing its output as text."""
    return subprocess.run(
        [str(arg) for arg in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Server:
    """A running `user-service serve`, the file its output goes to and, once it has bound, its base URL."""

    process: subprocess.Popen[bytes]
    log: Path
    base_url: str = ""

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_until_healthy(self) -> None:
        """Until the server has said which port it bound and answers /health there, within START_DEADLINE."""
        self.wait_for_output("Uvicorn running on")
        found = RUNNING_ON.search(self.output())
        assert found is not None, self.output()
        self.base_url = f"http://127.0.0.1:{found.group(1)}"
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode} before answering:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/health", timeout=2.0).status_code == 200:
                    return
            # Waiting on the process doubles as the poll interval and notices an early exit at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(POLL_INTERVAL)
        raise AssertionError(f"serve did not answer /health within {START_DEADLINE} s:\n{self.output()}")

    def wait_for_output(self, text: str, count: int = 1) -> None:
        """Until `text` appears `count` times in the server's output, within START_DEADLINE."""
        deadline = time.monotonic() + START_DEADLINE
        while self.output().count(text) < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"{text!r} did not appear {count} times:\n{self.output()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(POLL_INTERVAL)

    def stop(self) -> int:
        """SIGTERM, as a process manager sends it; SIGKILL to the process group if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        # The server leads its own process group (start_new_session), so this reaches its workers too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)


StartServe = Callable[..., Server]


def launch_serve(*args: str, env: dict[str, str], cwd: Path, log: Path, executable: Path = USER_SERVICE) -> Server:
    """Start `serve` on a loopback port it picks itself, in its own process group, its output going to `log`; its
    base URL is known once `wait_until_healthy` returns."""
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [str(executable), "serve", "--host", "127.0.0.1", "--port", "0", *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(process, log)


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[StartServe]:
    """Start `serve` on a port of its own and wait for /health; every server started is stopped at teardown."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str], cwd: Path, executable: Path = USER_SERVICE) -> Server:
        log = tmp_path / f"serve-{len(servers)}.log"
        server = launch_serve(*args, env=env, cwd=cwd, log=log, executable=executable)
        servers.append(server)
        server.wait_until_healthy()
        return server

    yield start
    for server in servers:
        server.stop()
        server.kill()


def round_trip(base_url: str, *, namespace: str = "e2e", username: str = "alice") -> None:
    """Register, log in, read the profile, refresh and use the new access token, over real HTTP."""
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        account = {"namespace": namespace, "username": username, "password": PASSWORD}
        created = http.post("/auth/register", json={**account, "email": f"{username}@example.com"})
        assert created.status_code == 201, created.text
        assert created.json()["username"] == username

        login = http.post("/auth/login", json=account)
        assert login.status_code == 200, login.text
        assert login.headers["cache-control"] == "no-store"
        pair = login.json()

        me = http.get("/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"})
        assert me.status_code == 200, me.text
        assert me.json()["id"] == created.json()["id"]

        refreshed = http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text
        new_pair = refreshed.json()
        assert new_pair["refresh_token"] != pair["refresh_token"]
        me_again = http.get("/users/me", headers={"Authorization": f"Bearer {new_pair['access_token']}"})
        assert me_again.status_code == 200, me_again.text
        assert me_again.json()["username"] == username
