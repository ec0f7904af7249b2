"""Soak run: mixed traffic against `user-service serve --workers 2` on PostgreSQL for many minutes, measured minute
by minute, to see whether throughput, tail latency or the workers' memory drift.

    .venv/bin/python benchmarks/soak.py                 # 10 minutes
    .venv/bin/python benchmarks/soak.py --minutes 30 --connections 16

The traffic of one account, from wrk (lua/mixed.lua): 80 % GET /users/me, 10 % refresh (each refresh token spent
once), 5 % login, 5 % PATCH /users/me, on a fresh database of the run's own, RATE_LIMIT_ENABLED=false, access log
off. wrk runs one minute at a time; after each minute the workers' RSS is read from /proc. Prints a line a minute
and the targets, and writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import report
from load import LoadError, Wrk
from run import bounded, prepare, tear_down
from servers import Server, ServerPool, children_of, status_kib
from setup_env import HERE, PROJECT_PACKAGES, SetupError, machine_info, package_versions
from systems import BCRYPT_ROUNDS, Launcher, PostgresDatabase, PrepareError, SystemSpec, Target, postgres_reachable

DEFAULT_OUTPUT = HERE / "results" / "soak.json"
MINUTE_SECONDS = 60
MAX_MINUTES = 240
# Refresh tokens the script holds beyond one per connection, so that a refresh never waits for one.
SPARE_TOKENS = 4
# The run's own database is the launcher's "us-pg" one; two workers, as deployed on a 2-core machine.
SOAK = SystemSpec("us-pg", "user-service (PostgreSQL, serve --workers 2)", "user-service", "postgresql", workers=2)
MIX = {"GET /users/me": 0.8, "POST /auth/refresh": 0.1, "POST /auth/login": 0.05, "PATCH /users/me": 0.05}
# The targets: the last minute against minute 2 (minute 1 warms up).
BASELINE_MINUTE = 2
DRIFT = 0.10
RSS_GROWTH_MIB = 10.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=bounded(1, MAX_MINUTES), default=10, help="minutes of load (default 10)")
    parser.add_argument("--connections", type=bounded(1, 256), default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: the soak creates and drops its own database there",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin wrk to the last CPU")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default %(default)s)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (server log)")
    return parser.parse_args(argv)


def worker_pids(server: Server) -> list[int]:
    """The serve process's workers: its children started by multiprocessing's spawn (not its resource tracker)."""
    workers = []
    for pid in children_of(server.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            workers.append(pid)
    return sorted(workers)


def rss_mib(pid: int) -> float | None:
    kib = status_kib(pid, "VmRSS")
    return round(kib / 1024, 1) if kib else None


class Soak:
    """The server, the token pool and the minute-by-minute measurements."""

    def __init__(self, args: argparse.Namespace, workdir: Path, pool: ServerPool, wrk_path: str) -> None:
        self.args = args
        self.workdir = workdir
        self.pool = pool
        usable = sorted(os.sched_getaffinity(0))
        load_cpus = [usable[-1]] if len(usable) >= 2 and not args.no_pin else None
        self.wrk = Wrk(wrk_path, cpus=load_cpus, script_dir=workdir / "lua")
        self.postgres = PostgresDatabase(args.postgres_url)
        self.launcher = Launcher(
            pool, workdir, peer_python=None, postgres=self.postgres, log_level="info", access_log=False
        )
        self.tokens = workdir / "refresh-tokens.txt"
        self.tokens_left = workdir / "refresh-tokens-left.txt"
        self.pool_size = args.connections + SPARE_TOKENS
        self.minutes: list[dict[str, Any]] = []
        self.failure: str | None = None
        self.target: Target | None = None
        self.workers: list[int] = []

    def start(self) -> None:
        print(f"starting {SOAK.label} on database {self.postgres.name}", flush=True)
        self.target = target = self.launcher.start(SOAK, None)
        for account in ("me", "storm"):
            target.create_account(account)
        self.workers = worker_pids(target.server)
        print(f"workers: {', '.join(map(str, self.workers)) or 'none found'}", flush=True)

    def top_up_tokens(self) -> int:
        """Fill the refresh token file up to the pool's size with fresh logins (refreshes in flight when a minute
        ends spend their tokens without returning new ones); the number of logins."""
        assert self.target is not None
        held = [line for line in self.tokens.read_text().splitlines() if line] if self.tokens.exists() else []
        missing = max(0, self.pool_size - len(held))
        if missing:
            held += [refresh for _, refresh in self.target.log_in_many("me", missing) if refresh]
        self.tokens.write_text("".join(f"{token}\n" for token in held))
        return missing

    def minute(self, number: int) -> dict[str, Any]:
        assert self.target is not None and self.target.login is not None
        # A fresh access token each minute: the default lifetime (15 minutes) is shorter than a long soak.
        access = self.target.log_in("me")[0]
        logins = self.top_up_tokens()
        before = self.target.server.cpu_seconds()
        result = self.wrk.run(
            "mixed.lua",
            self.target.url + self.target.me_path,
            [access, str(self.tokens), str(self.pool_size), self.target.login.body, str(self.tokens_left)],
            connections=self.args.connections,
            seconds=MINUTE_SECONDS,
        )
        cpu = self.target.server.cpu_seconds() - before
        self.tokens_left.replace(self.tokens)
        workers = worker_pids(self.target.server)
        summary = result.summary()
        server_errors = sum(count for status, count in result.statuses.items() if status.startswith("5"))
        return {
            "minute": number,
            "ok_per_s": summary["ok_per_s"],
            "requests_per_s": summary["requests_per_s"],
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
            "errors": summary["errors"],
            "errors_5xx": server_errors,
            "statuses": summary["statuses"],
            "socket_errors": summary["socket_errors"],
            "cpu_ms_per_request": round(cpu * 1000 / max(result.requests, 1), 3),
            "worker_rss_mib": {str(pid): rss_mib(pid) for pid in workers},
            "supervisor_rss_mib": rss_mib(self.target.server.process.pid),
            "workers_restarted": workers != self.workers,
            "logins_to_top_up_tokens": logins,
            "loadavg_1m": os.getloadavg()[0],
        }

    def run(self) -> None:
        for number in range(1, self.args.minutes + 1):
            try:
                entry = self.minute(number)
            except (LoadError, PrepareError, OSError) as error:
                # The minutes measured so far are still written, with the failure.
                self.failure = f"minute {number}: {error}"
                print(f"[minute {number}/{self.args.minutes}] FAILED {error}", flush=True)
                return
            self.minutes.append(entry)
            rss = " ".join(f"{pid}:{value}" for pid, value in entry["worker_rss_mib"].items())
            print(
                f"[minute {number}/{self.args.minutes}] {entry['ok_per_s']:8.1f} ok/s  p99 {entry['p99_ms']:8.2f} ms  "
                f"errors {entry['errors']} (5xx {entry['errors_5xx']})  worker RSS MiB {rss}  "
                f"load {entry['loadavg_1m']:.1f}",
                flush=True,
            )


def _within(value: float | None) -> bool:
    return abs(value - 1) <= DRIFT if value is not None else False


def targets(minutes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The soak's targets: the last minute against minute 2, and no server error at all."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": value, "goal": goal, "met": None if value is None else met})

    base = next((entry for entry in minutes if entry["minute"] == BASELINE_MINUTE), None)
    last = minutes[-1] if minutes else None
    compared = base is not None and last is not None
    label = f"minute {last['minute'] if last else '?'} / minute {BASELINE_MINUTE}"
    throughput = round(last["ok_per_s"] / base["ok_per_s"], 3) if compared and base["ok_per_s"] else None
    add(f"throughput, {label}", throughput, "within 10 %", _within(throughput))
    p99 = round(last["p99_ms"] / base["p99_ms"], 3) if compared and base["p99_ms"] else None
    add(f"p99, {label}", p99, "within 10 %", _within(p99))
    if compared:
        for pid, mib in base["worker_rss_mib"].items():
            now = last["worker_rss_mib"].get(pid)
            growth = round(now - mib, 1) if now is not None and mib is not None else None
            met = growth is not None and growth < RSS_GROWTH_MIB
            add(f"RSS growth of worker {pid}, MiB, {label}", growth, f"< {RSS_GROWTH_MIB:g}", met)
        restarted = any(entry["workers_restarted"] for entry in minutes)
        add("workers restarted during the run", int(restarted), "0", not restarted)
    server_errors = sum(entry["errors_5xx"] for entry in minutes)
    add("5xx responses, whole run", server_errors if minutes else None, "0", server_errors == 0)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk_path = prepare()
    if wrk_path is None:
        return 2
    if not postgres_reachable(args.postgres_url):
        print("error: no PostgreSQL answers at the --postgres-url (or psycopg is missing)", file=sys.stderr)
        return 2
    machine = machine_info(wrk_path)
    started_at = datetime.now(UTC)
    pool = ServerPool()
    workdir = Path(tempfile.mkdtemp(prefix="us-soak-"))
    soak: Soak | None = None
    try:
        soak = Soak(args, workdir, pool, wrk_path)
        soak.start()
        print(
            f"soak: {args.minutes} minutes of mixed traffic (80 % GET /users/me, 10 % refresh, 5 % login, "
            f"5 % PATCH /users/me), {args.connections} connections; RATE_LIMIT_ENABLED=false, access log off, "
            f"BCRYPT_ROUNDS={BCRYPT_ROUNDS}",
            flush=True,
        )
        soak.run()
        rows = targets(soak.minutes)
        print(report.targets_table(rows, "Soak targets: the last minute against minute 2, no 5xx"))
        document = {
            "benchmark": "user-service soak: mixed traffic on serve --workers 2, PostgreSQL",
            "started_at": started_at.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, *sys.argv],
            "machine": {**machine, "loadavg_at_end": list(os.getloadavg())},
            "settings": {
                "minutes": args.minutes,
                "connections": args.connections,
                "mix": MIX,
                "workers": SOAK.workers,
                "rate_limit_enabled": False,
                "access_log": False,
                "bcrypt_rounds": BCRYPT_ROUNDS,
                "postgresql": f"database {soak.postgres.name} on PostgreSQL {soak.postgres.server_version}",
            },
            "versions": package_versions(sys.executable, PROJECT_PACKAGES),
            "minutes": soak.minutes,
            "targets": rows,
            "failure": soak.failure,
        }
        report.write_json(args.output, document)
        print(f"\nJSON: {args.output}")
        return 1 if soak.failure else 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the server", file=sys.stderr)
        return 130
    except (SetupError, PrepareError, LoadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        launcher, postgres = (soak.launcher, soak.postgres) if soak is not None else (None, None)
        tear_down(pool, launcher, postgres, workdir, keep=args.keep_temp)


if __name__ == "__main__":
    sys.exit(main())
