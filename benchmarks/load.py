"""The load generator: wrk (one thread, pinned to its own core) driven by the Lua scripts in lua/, each prefixed
with lua/common.lua, which counts statuses and prints a WRKJSON line that is parsed here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"
# A bcrypt-bound request can wait in a queue for seconds; a request is only a timeout error after this long.
WRK_TIMEOUT = "10s"
MARKER = "WRKJSON "


class LoadError(RuntimeError):
    """wrk failed or printed no summary."""


@dataclass
class WrkResult:
    """One wrk run, as measured by wrk itself."""

    duration_s: float
    requests: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    latency_ms: dict[str, float]
    raw_output: str = field(repr=False, default="")

    @property
    def ok(self) -> int:
        return sum(count for status, count in self.statuses.items() if status.startswith("2"))

    @property
    def non_2xx(self) -> int:
        return sum(count for status, count in self.statuses.items() if not status.startswith("2"))

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def summary(self) -> dict[str, object]:
        seconds = self.duration_s or 1.0
        return {
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "ok": self.ok,
            "ok_per_s": round(self.ok / seconds, 2),
            "requests_per_s": round(self.requests / seconds, 2),
            "p50_ms": self.latency_ms["p50"],
            "p90_ms": self.latency_ms["p90"],
            "p99_ms": self.latency_ms["p99"],
            "max_ms": self.latency_ms["max"],
            "errors": self.errors,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "statuses": self.statuses,
        }


class Wrk:
    """Builds and runs wrk commands; the scripts are assembled once into `script_dir`."""

    def __init__(self, executable: str, *, cpus: Sequence[int] | None, script_dir: Path) -> None:
        self.executable = executable
        self.cpus = cpus
        self.script_dir = script_dir
        script_dir.mkdir(parents=True, exist_ok=True)
        common = (LUA / "common.lua").read_text()
        for source in LUA.glob("*.lua"):
            if source.name != "common.lua":
                (script_dir / source.name).write_text(common + "\n" + source.read_text())

    def command(self, script: str, url: str, args: Sequence[str], *, connections: int, seconds: int) -> list[str]:
        prefix = ["taskset", "-c", ",".join(map(str, self.cpus))] if self.cpus is not None else []
        return [
            *prefix,
            self.executable,
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            WRK_TIMEOUT,
            "-s",
            str(self.script_dir / script),
            url,
            "--",
            *args,
        ]

    def start(
        self, script: str, url: str, args: Sequence[str] = (), *, connections: int, seconds: int
    ) -> subprocess.Popen[str]:
        """Start a run in the background (the login storm under the /health probe)."""
        return subprocess.Popen(
            self.command(script, url, args, connections=connections, seconds=seconds),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    @staticmethod
    def finish(process: subprocess.Popen[str], seconds: int) -> WrkResult:
        try:
            output, _ = process.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise LoadError("wrk did not finish in time") from None
        except BaseException:
            process.kill()
            process.wait()
            raise
        return parse(output, process.returncode)

    def run(self, script: str, url: str, args: Sequence[str] = (), *, connections: int, seconds: int) -> WrkResult:
        return self.finish(self.start(script, url, args, connections=connections, seconds=seconds), seconds)


def parse(output: str, returncode: int | None) -> WrkResult:
    lines = [line for line in output.splitlines() if line.startswith(MARKER)]
    if returncode != 0 or not lines:
        raise LoadError(f"wrk exited with {returncode} without a summary:\n{output[-2000:]}")
    data = json.loads(lines[-1][len(MARKER) :])
    latency = {key: round(value / 1000.0, 3) for key, value in data["latency_us"].items()}
    return WrkResult(
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        statuses={str(key): int(value) for key, value in data["statuses"].items()},
        socket_errors={key: int(value) for key, value in data["socket_errors"].items()},
        latency_ms=latency,
        raw_output=output,
    )
