"""Server processes under test: started on a free loopback port (pinned with taskset), polled until ready, watched
through /proc (CPU time, RSS) and always stopped, SIGTERM then SIGKILL of the whole process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

START_DEADLINE = 60.0
STOP_TIMEOUT = 20.0
HTTP_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    token: str | None = None,
    timeout: float = HTTP_TIMEOUT,
) -> tuple[int, bytes]:
    """One HTTP request with the standard library; returns the status and the body, errors included."""
    request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (loopback URLs built here)
    if content_type:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback URLs we build)
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post_json(url: str, payload: object, *, token: str | None = None) -> tuple[int, dict[str, object]]:
    status, raw = http("POST", url, body=json.dumps(payload).encode(), content_type="application/json", token=token)
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"raw": raw[:200].decode(errors="replace")}
    return status, parsed if isinstance(parsed, dict) else {"body": parsed}


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants that are alive now."""
    tree, queue = [], [pid]
    while queue and len(tree) < 256:
        current = queue.pop()
        if Path(f"/proc/{current}").exists():
            tree.append(current)
            queue.extend(children_of(current))
    return tree


def status_kib(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return int(fields[11]) + int(fields[12])


@dataclass
class Server:
    """One running system under test."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    ready_path: str
    log_path: Path
    cpus: Sequence[int] | None
    _log_handle: object = field(repr=False, default=None)

    def output_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.output_tail()}")
            with contextlib.suppress(OSError):
                status, _ = http("GET", self.base_url + self.ready_path, timeout=2.0)
                if status == 200:
                    return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.1)
        raise RuntimeError(
            f"{self.name} did not answer {self.ready_path} within {START_DEADLINE} s:\n{self.output_tail()}"
        )

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def pin(self, cpus: Sequence[int] | None) -> None:
        """Move every thread of every process of the server onto `cpus` (None: leave as started)."""
        if cpus is None:
            return
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(int(task.name), set(cpus))

    def cpu_seconds(self) -> float:
        return sum(_cpu_ticks(pid) for pid in self.pids()) / CLOCK_TICKS

    def rss_kib(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in self.pids())

    def hwm_kib(self) -> int:
        return sum(status_kib(pid, "VmHWM") for pid in self.pids())

    def reset_hwm(self) -> bool:
        """Reset the peak-RSS mark of each process (Linux: write 5 to clear_refs); False when not permitted."""
        done = True
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                done = False
        return done

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        else:
            # The leader is gone; make sure no worker of its group outlives it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        handle = self._log_handle
        if handle is not None:
            handle.close()  # type: ignore[attr-defined]
            self._log_handle = None


class ServerPool:
    """Every server started by this run; `close` stops them all (also on Ctrl-C or an error)."""

    def __init__(self) -> None:
        self.servers: list[Server] = []

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        port: int,
        ready_path: str,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        cpus: Sequence[int] | None,
        start_cpus: Sequence[int] | None = None,
    ) -> Server:
        """Start a server on `start_cpus` (default `cpus`) and pin it to `cpus` once it answers: a server sizes its
        pools for CPU-bound work (bcrypt) by the cores it starts with, as it would when deployed on them."""
        launch_cpus = start_cpus if start_cpus is not None else cpus
        prefix = ["taskset", "-c", ",".join(map(str, launch_cpus))] if launch_cpus is not None else []
        handle = log_path.open("ab")
        process = subprocess.Popen(
            [*prefix, *command],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(name, process, f"http://127.0.0.1:{port}", ready_path, log_path, cpus, handle)
        self.servers.append(server)
        try:
            server.wait_ready()
            server.pin(cpus)
        except BaseException:
            self.stop(server)
            raise
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        if server in self.servers:
            self.servers.remove(server)

    def close(self) -> None:
        while self.servers:
            self.stop(self.servers[-1])


class RssSampler:
    """Samples a server's RSS every `interval` seconds in a thread, keeping the peak."""

    def __init__(self, server: Server, interval: float = 0.02) -> None:
        self.server = server
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self.server.rss_kib())
            self.samples += 1
            self._stop.wait(self.interval)

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
