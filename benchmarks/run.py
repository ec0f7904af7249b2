"""Benchmark user-service against fastapi-users and the physical ceilings, on real servers driven by wrk.

    .venv/bin/python benchmarks/run.py                       # every system and scenario, 2 rounds of 5 s runs
    .venv/bin/python benchmarks/run.py --rounds 3 --duration 10 --scenarios me,login --systems us-sqlite,fau,ceiling

Systems are measured alternately (A B A B ...) within one run, and medians over the rounds are reported, so that
drift on a shared machine hits every system alike. Prints a table and writes benchmarks/results/latest.json.
See benchmarks/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import report
from load import Wrk, WrkResult
from servers import RssSampler, Server, ServerPool, http
from setup_env import (
    HERE,
    PEER_PACKAGES,
    PROJECT_PACKAGES,
    SetupError,
    ensure_peer_venv,
    ensure_wrk,
    machine_info,
    package_versions,
    project_bin,
)
from systems import (
    ACCESS_TOKEN_TTL_SECONDS,
    BCRYPT_ROUNDS,
    SYSTEMS,
    Launcher,
    PostgresDatabase,
    PrepareError,
    Target,
    make_png,
    multipart,
    on_users,
    postgres_reachable,
    upload_accounts,
)

DEFAULT_OUTPUT = HERE / "results" / "latest.json"
AVATAR_BYTES = 2 * 1024 * 1024  # AVATAR_MAX_BYTES' default: the largest avatar user-service accepts
UPLOAD_CONNECTIONS = 16
PROBE_DELAY_MS = 10
PROBE_CONNECTIONS = 2
IDLE_PROBE_SECONDS = 2
STORM_LEAD_SECONDS = 1
REFRESH_SPARE_TOKENS = 4
SETTLE_SECONDS = 0.3
MAX_ROUNDS = 20
MAX_DURATION = 120
MAX_USERS = 10_000_000
# PostgreSQL through PgBouncer in transaction mode, and PostgreSQL directly without prepared statements (what the
# pooler setting also turns off): their ratios to direct PostgreSQL split the pooler's cost from the statements'.
POOLED = ("us-pgbouncer", "us-pg-noprep")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    systems: tuple[str, ...]
    # Server on every core: bcrypt is meant to use them all, and wrk's share of these runs is tiny.
    all_cores: bool
    ratio_label: str


SCENARIOS: dict[str, Scenario] = {
    scenario.key: scenario
    for scenario in (
        Scenario(
            "me",
            "(a) GET /users/me with a valid token (ceiling: bare GET /ping)",
            ("us-sqlite", "us-pg", *POOLED, "fau", "fau-pg", "ceiling"),
            False,
            "ok/s over fastapi-users' and over the bare endpoint's",
        ),
        Scenario(
            "login",
            f"(b) login with valid credentials, bcrypt cost {BCRYPT_ROUNDS} "
            "(ceiling: one bcrypt check in the thread pool)",
            ("us-sqlite", "us-pg", *POOLED, "fau", "fau-pg", "ceiling"),
            True,
            "ok/s over fastapi-users' and over the bcrypt endpoint's",
        ),
        Scenario(
            "health_storm",
            "(c) GET /health during a login storm: p50/p99 of /health (ceiling: /ping under a /bcrypt storm); "
            "ok/s = logins/s of the storm",
            ("us-sqlite", "us-pg", "fau", "fau-pg", "ceiling"),
            True,
            "/health p99 over the peer's and over the ceiling's (lower is better)",
        ),
        Scenario(
            "register",
            "(d) registration of unique users",
            ("us-sqlite", "us-pg", "fau", "fau-pg"),
            True,
            "ok/s over fastapi-users' and over the bcrypt endpoint's (from (b))",
        ),
        Scenario(
            "refresh",
            "(e) refresh, each token spent once (fastapi-users has none)",
            ("us-sqlite", "us-pg", *POOLED),
            False,
            "ok/s over fastapi-users' login, its closest equivalent (from (b)), and over the bare endpoint's",
        ),
        Scenario(
            "upload",
            f"(f) {UPLOAD_CONNECTIONS} concurrent 2 MiB avatar uploads, fresh server each round "
            "(ceiling: multipart read and dropped; fastapi-users has no uploads)",
            ("us-sqlite", "us-pg", "us-s3", "ceiling"),
            False,
            "ok/s over the ceiling's; RSS = the server's peak RSS, RSS+ = peak over its idle RSS",
        ),
        Scenario(
            "scale",
            "multi-worker scaling: GET /users/me, serve --workers 2 vs 1 worker, server on every core",
            ("us-sqlite", "us-sqlite-2w"),
            True,
            "2 workers over 1 worker",
        ),
        Scenario(
            "metrics",
            "GET /users/me with serve --metrics-port (Prometheus metrics counted) vs without",
            ("us-sqlite", "us-sqlite-metrics"),
            False,
            "metrics on over metrics off",
        ),
    )
}


def _csv(choices: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items

    return parse


def bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"between {low} and {high}")
        return number

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=bounded(1, MAX_ROUNDS), default=2, help="rounds A B A B (default 2)")
    parser.add_argument(
        "--duration", type=bounded(1, MAX_DURATION), default=5, help="seconds per measurement (default 5)"
    )
    parser.add_argument("--warmup", type=bounded(0, 30), default=1, help="seconds of warm-up before each (default 1)")
    parser.add_argument(
        "--systems", type=_csv(list(SYSTEMS)), default=list(SYSTEMS), help=f"default: {','.join(SYSTEMS)}"
    )
    parser.add_argument(
        "--scenarios", type=_csv(list(SCENARIOS)), default=list(SCENARIOS), help=f"default: {','.join(SCENARIOS)}"
    )
    parser.add_argument("--connections", type=bounded(1, 1024), default=16, help="wrk connections for (a), (e)")
    parser.add_argument(
        "--bcrypt-connections", type=bounded(1, 256), default=8, help="wrk connections for (b), (c), (d)"
    )
    parser.add_argument("--scale-connections", type=bounded(1, 1024), default=32, help="wrk connections, scaling")
    parser.add_argument(
        "--bcrypt-cores",
        choices=("all", "pinned"),
        default="all",
        help="in (b), (c), (d) and scaling the server may use every core (all, default) or stays on its one",
    )
    parser.add_argument("--no-pin", action="store_true", help="pin nothing (for machines where taskset is refused)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: the benchmark creates and drops its own database there",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the systems on PostgreSQL")
    parser.add_argument(
        "--users",
        type=bounded(0, MAX_USERS),
        default=0,
        help="users seeded by SQL into each system's database before the run (default 0)",
    )
    parser.add_argument(
        "--compare-users",
        type=bounded(1, MAX_USERS),
        default=None,
        metavar="N",
        help="in GET /users/me, login and refresh, also run user-service on SQLite and on PostgreSQL on a database of "
        "their own seeded with N users, alternated with the --users systems in every round, and report N's "
        "figures over theirs (the target: within 10 %%)",
    )
    parser.add_argument("--log-level", choices=("info", "warning"), default="info", help="servers' log level")
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="no access log on any system (user-service: serve --no-access-log; the others: uvicorn's)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results (default %(default)s)")
    parser.add_argument("--upgrade-peers", action="store_true", help="reinstall the latest fastapi-users first")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (logs, databases)")
    return parser.parse_args(argv)


def headline(result: WrkResult, cpu_seconds: float | None = None, server: Server | None = None) -> dict[str, Any]:
    """One measurement: wrk's figures plus the server's CPU time per request and its RSS right after the run."""
    summary = result.summary()
    summary["loadavg_1m"] = os.getloadavg()[0]
    if server is not None:
        summary["rss_mib"] = round(server.rss_kib() / 1024, 1)
    if cpu_seconds is not None:
        summary["server_cpu_s"] = round(cpu_seconds, 3)
        summary["cpu_ms_per_request"] = round(cpu_seconds * 1000 / max(result.requests, 1), 4)
    return summary


class Bench:
    """One benchmark run: the servers, the load generator and the measurements."""

    def __init__(self, args: argparse.Namespace, workdir: Path, pool: ServerPool) -> None:
        self.args = args
        self.workdir = workdir
        self.pool = pool
        usable = sorted(os.sched_getaffinity(0))
        if len(usable) >= 2 and not args.no_pin:
            self.server_cpus: list[int] | None = [usable[0]]
            self.load_cpus: list[int] | None = [usable[-1]]
            self.wide_cpus: list[int] | None = usable if args.bcrypt_cores == "all" else [usable[0]]
        else:
            self.server_cpus = self.load_cpus = self.wide_cpus = None
        self.scenarios = [SCENARIOS[key] for key in args.scenarios]
        wanted = set(args.systems)
        self.plan = {s.key: [k for k in s.systems if k in wanted] for s in self.scenarios}
        self.plan = {key: systems for key, systems in self.plan.items() if systems}
        if args.compare_users is not None:
            # Each system on the larger user base right after itself on the smaller one, in every round.
            for scenario in report.USER_BASE_ROWS:
                if scenario in self.plan:
                    self.plan[scenario] = [
                        variant
                        for key in self.plan[scenario]
                        for variant in (
                            (key, on_users(key, args.compare_users)) if key in report.USER_BASE_SYSTEMS else (key,)
                        )
                    ]
        self.postgres: PostgresDatabase | None = None
        self.postgres_note = ""
        self.targets: dict[str, Target] = {}
        self.round_tokens: dict[str, str] = {}
        self.runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.nonce = secrets.token_hex(3)
        self.launcher: Launcher | None = None
        self.wrk: Wrk | None = None
        self.upload_body: Path | None = None
        self.upload_type = ""
        self.small_upload: tuple[bytes, str] | None = None
        self.peer_python: Path | None = None

    # -- set-up ---------------------------------------------------------------------------------------------------

    def pinning(self) -> dict[str, Any]:
        if self.server_cpus is None:
            reason = "--no-pin" if self.args.no_pin else "fewer than 2 usable CPUs"
            return {"pinned": False, "description": f"nothing pinned ({reason}); server and wrk share every CPU"}
        wide = ",".join(map(str, self.wide_cpus or []))
        description = (
            f"each server started on CPUs {wide} (it sizes its bcrypt pool by the cores it starts with) and then "
            f"pinned to CPU {self.server_cpus[0]}; wrk (1 thread) pinned to CPU "
            f"{self.load_cpus[0] if self.load_cpus else '?'}; in the bcrypt scenarios (b), (c), (d) and in scaling "
            f"the server runs on CPUs {wide} (wrk's share there is a few dozen requests/s)"
        )
        return {
            "pinned": True,
            "server_cpus": self.server_cpus,
            "load_generator_cpus": self.load_cpus,
            "bcrypt_and_scaling_server_cpus": self.wide_cpus,
            "description": description,
        }

    def systems_needed(self) -> list[str]:
        return [key for key in SYSTEMS if any(key in systems for systems in self.plan.values())]

    def set_up(self, wrk_path: str) -> None:
        needed = self.systems_needed()
        if any(SYSTEMS[key].kind == "fastapi-users" for key in needed):
            self.peer_python = ensure_peer_venv(upgrade=self.args.upgrade_peers)
        if any(SYSTEMS[key].database == "postgresql" for key in needed):
            if self.args.no_postgres:
                self.postgres_note = "skipped (--no-postgres)"
            elif not postgres_reachable(self.args.postgres_url):
                self.postgres_note = "skipped: no PostgreSQL answers at the --postgres-url (or psycopg is missing)"
            else:
                self.postgres = PostgresDatabase(self.args.postgres_url)
                self.postgres_note = f"database {self.postgres.name} on PostgreSQL {self.postgres.server_version}"
            if self.postgres is None:
                print(f"PostgreSQL: {self.postgres_note}", flush=True)
                self.plan = {k: [s for s in v if SYSTEMS[s].database != "postgresql"] for k, v in self.plan.items()}
        self.launcher = Launcher(
            self.pool,
            self.workdir,
            peer_python=self.peer_python,
            postgres=self.postgres,
            log_level=self.args.log_level,
            access_log=not self.args.no_access_log,
            users=self.args.users,
        )
        self.wrk = Wrk(wrk_path, cpus=self.load_cpus, script_dir=self.workdir / "lua")
        if "upload" in self.plan:
            avatar = make_png(AVATAR_BYTES - 64)
            body, self.upload_type = multipart(avatar)
            self.upload_body = self.workdir / "avatar-upload.bin"
            self.upload_body.write_bytes(body)
            self.small_upload = multipart(make_png(16 * 1024, width=64))
            print(f"avatar: a {len(avatar):,} byte PNG of noise ({len(body):,} bytes as multipart)", flush=True)
        for key in self.systems_needed():
            if all(key not in systems for scenario, systems in self.plan.items() if scenario != "upload"):
                continue  # only uploads use it: those start a fresh server each round
            spec = SYSTEMS[key]
            cpus = self.server_cpus if spec.workers == 1 else self.wide_cpus
            print(f"starting {spec.label}", flush=True)
            target = self.launcher.start(spec, cpus, start_cpus=self.wide_cpus)
            self.targets[key] = target
            for account in ("me", "storm"):
                target.create_account(account)
            if spec.kind == "user-service" and key in self.plan.get("upload", []):
                for account in upload_accounts():
                    target.create_account(account)
        for key in self.plan.get("upload", []):
            if key not in self.targets and SYSTEMS[key].kind == "user-service":
                # Uploads only: create the accounts once through a server that is stopped again.
                target = self.launcher.start(SYSTEMS[key], self.server_cpus, start_cpus=self.wide_cpus, suffix="-setup")
                for account in upload_accounts():
                    target.create_account(account)
                self.pool.stop(target.server)

    def estimate_seconds(self) -> int:
        per_round = 0.0
        for scenario, systems in self.plan.items():
            each = {
                "me": self.args.warmup + self.args.duration + 1,
                "login": self.args.warmup + self.args.duration + 1,
                "health_storm": IDLE_PROBE_SECONDS + STORM_LEAD_SECONDS + self.args.duration + 3,
                "register": self.args.warmup + self.args.duration + 1,
                "refresh": self.args.duration + 3,
                "upload": self.args.duration + 6,
                "scale": self.args.warmup + self.args.duration + 1,
                "metrics": self.args.warmup + self.args.duration + 1,
            }[scenario]
            per_round += each * len(systems)
        return int(per_round * self.args.rounds + 10 * len(self.systems_needed()))

    # -- measurements -------------------------------------------------------------------------------------------

    def access_token(self, key: str) -> str:
        """A fresh access token of the `me` account, one per round (tokens live 15 minutes)."""
        if key not in self.round_tokens:
            self.round_tokens[key] = self.targets[key].log_in("me")[0]
        return self.round_tokens[key]

    def throughput(
        self, target: Target, script: str, path: str, args: Sequence[str], *, connections: int, wide: bool
    ) -> dict[str, Any]:
        assert self.wrk is not None
        url = target.url + path
        target.server.pin(self.wide_cpus if wide else None)
        try:
            if self.args.warmup:
                self.wrk.run(script, url, args, connections=connections, seconds=self.args.warmup)
            before = target.server.cpu_seconds()
            result = self.wrk.run(script, url, args, connections=connections, seconds=self.args.duration)
            cpu = target.server.cpu_seconds() - before
        finally:
            target.server.pin(target.server.cpus)
        return headline(result, cpu, target.server)

    def measure_me(self, key: str, round_no: int) -> dict[str, Any]:
        target = self.targets[key]
        token = self.access_token(key) if target.spec.kind != "ceiling" else ""
        return self.throughput(
            target, "get.lua", target.me_path, [token], connections=self.args.connections, wide=False
        )

    def measure_login(self, key: str, round_no: int) -> dict[str, Any]:
        target = self.targets[key]
        assert target.login is not None
        login = target.login
        return self.throughput(
            target,
            "post.lua",
            login.path,
            [login.content_type, login.body],
            connections=self.args.bcrypt_connections,
            wide=True,
        )

    def measure_health_storm(self, key: str, round_no: int) -> dict[str, Any]:
        assert self.wrk is not None
        target = self.targets[key]
        assert target.login is not None
        health = target.url + target.health_path
        storm_seconds = self.args.duration + STORM_LEAD_SECONDS + 1
        target.server.pin(self.wide_cpus)
        try:
            idle = self.wrk.run(
                "probe.lua", health, [str(PROBE_DELAY_MS)], connections=PROBE_CONNECTIONS, seconds=IDLE_PROBE_SECONDS
            )
            storm = self.wrk.start(
                "post.lua",
                target.url + target.login.path,
                [target.login.content_type, target.login.body],
                connections=self.args.bcrypt_connections,
                seconds=storm_seconds,
            )
            try:
                time.sleep(STORM_LEAD_SECONDS)
                probe = self.wrk.run(
                    "probe.lua",
                    health,
                    [str(PROBE_DELAY_MS)],
                    connections=PROBE_CONNECTIONS,
                    seconds=self.args.duration,
                )
            except BaseException:
                storm.kill()
                storm.wait()
                raise
            storm_result = self.wrk.finish(storm, storm_seconds)
        finally:
            target.server.pin(target.server.cpus)
        probe_summary = probe.summary()
        storm_summary = storm_result.summary()
        return {
            "ok_per_s": storm_summary["ok_per_s"],
            "p50_ms": probe_summary["p50_ms"],
            "p99_ms": probe_summary["p99_ms"],
            "errors": probe.errors + storm_result.errors,
            "requests": probe.requests,
            "loadavg_1m": os.getloadavg()[0],
            "rss_mib": round(target.server.rss_kib() / 1024, 1),
            "probe": probe_summary,
            "idle_probe": idle.summary(),
            "storm": storm_summary,
        }

    def measure_register(self, key: str, round_no: int) -> dict[str, Any]:
        assert self.wrk is not None
        target = self.targets[key]
        assert target.register is not None
        post = target.register
        url = target.url + post.path
        prefix = f"r{self.nonce}-{round_no}-{key}-"
        target.server.pin(self.wide_cpus)
        try:
            if self.args.warmup:
                self.wrk.run(
                    "register.lua",
                    url,
                    [post.content_type, post.body, prefix + "w"],
                    connections=self.args.bcrypt_connections,
                    seconds=self.args.warmup,
                )
            before = target.server.cpu_seconds()
            result = self.wrk.run(
                "register.lua",
                url,
                [post.content_type, post.body, prefix + "m"],
                connections=self.args.bcrypt_connections,
                seconds=self.args.duration,
            )
            cpu = target.server.cpu_seconds() - before
        finally:
            target.server.pin(target.server.cpus)
        return headline(result, cpu, target.server)

    def measure_refresh(self, key: str, round_no: int) -> dict[str, Any]:
        assert self.wrk is not None
        target = self.targets[key]
        assert target.refresh_path is not None
        # Each refresh token is good once: one chain per connection, each answer's token feeds the next request.
        pairs = target.log_in_many("me", self.args.connections + REFRESH_SPARE_TOKENS)
        token_file = self.workdir / f"refresh-{key}-{round_no}.txt"
        token_file.write_text("".join(f"{refresh}\n" for _, refresh in pairs if refresh))
        before = target.server.cpu_seconds()
        result = self.wrk.run(
            "refresh.lua",
            target.url + target.refresh_path,
            [str(token_file), "1"],
            connections=self.args.connections,
            seconds=self.args.duration,
        )
        cpu = target.server.cpu_seconds() - before
        return headline(result, cpu, target.server)

    def measure_upload(self, key: str, round_no: int) -> dict[str, Any]:
        assert self.wrk is not None and self.launcher is not None
        assert self.upload_body is not None and self.small_upload is not None
        spec = SYSTEMS[key]
        # A fresh process each round: Python keeps freed memory, so a second run on one process shows no growth.
        target = self.launcher.start(spec, self.server_cpus, start_cpus=self.wide_cpus, suffix="-upload")
        try:
            assert target.upload_path is not None
            token_file = ""
            tokens: list[str] = []
            if spec.kind == "user-service":
                for account in upload_accounts():
                    tokens.append(target.log_in(account)[0])
                token_file = str(self.workdir / f"upload-tokens-{key}-{round_no}.txt")
                Path(token_file).write_text("".join(f"{token}\n" for token in tokens))
            small, small_type = self.small_upload
            status, body = http(
                "POST",
                target.url + target.upload_path,
                body=small,
                content_type=small_type,
                token=tokens[0] if tokens else None,
            )
            if status != 200:
                raise PrepareError(f"{spec.label}: a small warm-up upload answered {status}: {body[:300]!r}")
            time.sleep(SETTLE_SECONDS)
            idle_kib = target.server.rss_kib()
            hwm_reset = target.server.reset_hwm()
            sampler = RssSampler(target.server)
            before = target.server.cpu_seconds()
            with sampler.running():
                result = self.wrk.run(
                    "upload.lua",
                    target.url + target.upload_path,
                    [str(self.upload_body), self.upload_type, token_file],
                    connections=UPLOAD_CONNECTIONS,
                    seconds=self.args.duration,
                )
            cpu = target.server.cpu_seconds() - before
            peak_kib = max(sampler.peak_kib, target.server.hwm_kib() if hwm_reset else 0)
        finally:
            self.pool.stop(target.server)
        summary = headline(result, cpu)
        summary.update(
            {
                "rss_idle_mib": round(idle_kib / 1024, 1),
                "rss_mib": round(peak_kib / 1024, 1),
                "rss_growth_mib": round((peak_kib - idle_kib) / 1024, 1),
                "rss_method": "VmHWM reset before the run, and VmRSS sampled every 20 ms"
                if hwm_reset
                else "VmRSS sampled every 20 ms (VmHWM could not be reset)",
                "rss_samples": sampler.samples,
                "upload_mib_per_s": round(summary["ok_per_s"] * self.upload_body.stat().st_size / 2**20, 1),
            }
        )
        return summary

    def measure_scale(self, key: str, round_no: int) -> dict[str, Any]:
        target = self.targets[key]
        return self.throughput(
            target,
            "get.lua",
            target.me_path,
            [self.access_token(key)],
            connections=self.args.scale_connections,
            wide=True,
        )

    # -- the run ------------------------------------------------------------------------------------------------

    def run(self) -> None:
        measure: dict[str, Callable[[str, int], dict[str, Any]]] = {
            "me": self.measure_me,
            "login": self.measure_login,
            "health_storm": self.measure_health_storm,
            "register": self.measure_register,
            "refresh": self.measure_refresh,
            "upload": self.measure_upload,
            "scale": self.measure_scale,
            "metrics": self.measure_me,
        }
        for round_no in range(1, self.args.rounds + 1):
            self.round_tokens.clear()
            for scenario, systems in self.plan.items():
                for key in systems:
                    started = time.monotonic()
                    try:
                        result = measure[scenario](key, round_no)
                    except (PrepareError, RuntimeError, OSError) as error:
                        result = {"error": f"{type(error).__name__}: {error}"}
                        traceback.print_exc()
                    result["round"] = round_no
                    result["seconds"] = round(time.monotonic() - started, 1)
                    self.runs.setdefault(scenario, {}).setdefault(key, []).append(result)
                    print(
                        f"[round {round_no}/{self.args.rounds}] {scenario:12} {SYSTEMS[key].label:42} {_line(result)}",
                        flush=True,
                    )
                    time.sleep(SETTLE_SECONDS)


def _line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED {result['error'][:200]}"
    parts = [f"{result['ok_per_s']:9.1f} ok/s", f"p50 {result['p50_ms']:7.2f} ms", f"p99 {result['p99_ms']:8.2f} ms"]
    parts.append(f"errors {result['errors']}")
    if result.get("cpu_ms_per_request") is not None:
        parts.append(f"cpu {result['cpu_ms_per_request']:.3f} ms/req")
    if result.get("rss_growth_mib") is not None:
        parts.append(f"RSS +{result['rss_growth_mib']} MiB")
    if "storm" in result:
        parts.append(f"({result['requests']} probes; idle p99 {result['idle_probe']['p99_ms']:.2f} ms)")
    return "  ".join(parts)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every server is stopped on the way out.
    raise SystemExit(128 + signum)


def prepare() -> str | None:
    """Make SIGTERM unwind like Ctrl-C and find the tools; wrk's path, or None once it has said what is missing."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        wrk_path = ensure_wrk()
        project_bin("user-service")
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    return wrk_path


def tear_down(
    pool: ServerPool, launcher: Launcher | None, postgres: PostgresDatabase | None, workdir: Path, *, keep: bool
) -> None:
    """Stop every server (and PgBouncer), drop the run's databases and remove the temporary folder unless kept."""
    pool.close()
    if launcher is not None:
        launcher.close()
    if postgres is not None:
        try:
            postgres.drop()
        except Exception as error:
            print(f"could not drop PostgreSQL database {postgres.name}: {error}", file=sys.stderr)
    if keep:
        print(f"kept {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = datetime.now(UTC)
    clock = time.monotonic()
    wrk_path = prepare()
    if wrk_path is None:
        return 2
    machine = machine_info(wrk_path)
    pool = ServerPool()
    workdir = Path(tempfile.mkdtemp(prefix="us-bench-"))
    bench = Bench(args, workdir, pool)
    try:
        bench.set_up(wrk_path)
        pinning = bench.pinning()
        print(f"pinning: {pinning['description']}")
        print("user-service: RATE_LIMIT_ENABLED=false (the per-address rate limit is OFF for the benchmark; the")
        print(f"  account lockout stays on), BCRYPT_ROUNDS={BCRYPT_ROUNDS}, log level {args.log_level}")
        compared = f", and {args.compare_users:,} to compare" if args.compare_users is not None else ""
        print(
            f"access logs: {'off' if args.no_access_log else 'on'} on every system; "
            f"seeded users: {args.users:,}{compared}"
        )
        print(f"PostgreSQL: {bench.postgres_note or 'not requested'}")
        print(
            f"plan: {args.rounds} rounds of {args.duration} s runs; about {bench.estimate_seconds() // 60 + 1} min",
            flush=True,
        )
        bench.run()
        finished_at = datetime.now(UTC)
        document = build_document(bench, args, machine, started_at, finished_at, time.monotonic() - clock)
        print(document["_table"])
        del document["_table"]
        report.write_json(args.output, document)
        print(f"\nJSON: {args.output}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every server", file=sys.stderr)
        return 130
    except (SetupError, PrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        tear_down(pool, bench.launcher, bench.postgres, workdir, keep=args.keep_temp)


def build_document(
    bench: Bench,
    args: argparse.Namespace,
    machine: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    elapsed: float,
) -> dict[str, Any]:
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, systems in bench.runs.items():
        for key, runs in systems.items():
            good = [run for run in runs if "error" not in run]
            if good:
                summary.setdefault(scenario, {})[key] = report.medians(good)
    ratios = report.ratios(summary)
    targets = report.targets(summary, ratios, users=args.users)
    titles = {key: f"{s.title}" for key, s in SCENARIOS.items()}
    labels = {key: s.ratio_label for key, s in SCENARIOS.items()}
    text = report.table(titles, labels, summary, ratios) + "\n" + report.targets_table(targets)
    versions: dict[str, Any] = {"project": package_versions(sys.executable, PROJECT_PACKAGES)}
    if bench.peer_python is not None:
        versions["peer"] = package_versions(bench.peer_python, PEER_PACKAGES)
    if bench.postgres is not None:
        versions["postgresql"] = bench.postgres.server_version
    machine["loadavg_at_end"] = list(os.getloadavg())
    return {
        "benchmark": "user-service against fastapi-users and the ceilings",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": machine,
        "pinning": bench.pinning(),
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "bcrypt_connections": args.bcrypt_connections,
            "scale_connections": args.scale_connections,
            "upload_connections": UPLOAD_CONNECTIONS,
            "probe": f"{PROBE_CONNECTIONS} connections, each waiting {PROBE_DELAY_MS} ms between its requests",
            "bcrypt_rounds": BCRYPT_ROUNDS,
            "access_token_ttl_s": ACCESS_TOKEN_TTL_SECONDS,
            "rate_limit_enabled": False,
            "log_level": args.log_level,
            "access_log": not args.no_access_log,
            "users": args.users,
            "compare_users": args.compare_users,
            "seeding_s": bench.launcher.seeded if bench.launcher else {},
            "wrk": "1 thread, --timeout 10s",
            "postgresql": bench.postgres_note or "not requested",
        },
        "versions": versions,
        "systems": {key: SYSTEMS[key].label for key in bench.systems_needed()},
        "scenarios": {
            key: {
                "title": SCENARIOS[key].title,
                "ratios_compare": SCENARIOS[key].ratio_label,
                "runs": bench.runs.get(key, {}),
                "median": summary.get(key, {}),
            }
            for key in bench.plan
        },
        "ratios": ratios,
        "targets": targets,
        "_table": text,
    }


if __name__ == "__main__":
    sys.exit(main())
