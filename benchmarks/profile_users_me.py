"""Where a GET /users/me (or, with `--scenario refresh`, a refresh) spends its time: py-spy samples a real
`user-service serve` while wrk loads it.

    .venv/bin/python benchmarks/profile_users_me.py [--seconds 10] [--database sqlite|postgresql] [--scenario refresh]

Server pinned to one core and wrk (plus py-spy) to another, as in run.py. Each stack sample is attributed to
the deepest frame that belongs to a known layer (JWT, database driver, SQLAlchemy, pydantic, logging, thread
hops, middleware, FastAPI/Starlette, uvicorn, user_service itself), so the layers add up to 100 %. Writes the
collapsed stacks and a JSON summary next to run.py's results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from load import Wrk
from servers import ServerPool
from setup_env import HERE, ensure_tools_venv, ensure_wrk
from systems import SYSTEMS, Launcher, PostgresDatabase, postgres_reachable

RESULTS = HERE / "results"

# (layer, test on "function (file:line)"); the first layer found walking from the leaf toward the root wins.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("JWT decode and verify (PyJWT, hmac)", ("/jwt/", "hmac.py")),
    (
        "DB connection per request: open, PRAGMAs, close",
        ("DefaultDialect.connect (", "_on_connect (", "DefaultDialect.do_close ("),
    ),
    (
        "DB driver: execute/fetch (sqlite3, psycopg)",
        ("do_execute (", "/psycopg/", "/sqlite3/", "fetchall (", "fetchone ("),
    ),
    (
        "DB transaction: begin/commit/rollback",
        ("do_commit (", "do_rollback (", "do_begin (", "_commit_impl", "_rollback_impl"),
    ),
    ("SQLAlchemy connection pool", ("/sqlalchemy/pool/",)),
    ("SQLAlchemy ORM/Core (statement, compile, session, rows)", ("/sqlalchemy/",)),
    ("pydantic (model build, validation, serialization)", ("/pydantic/", "/pydantic_core/")),
    ("logging (access log, events)", ("/logging/",)),
    (
        "thread pool hop (anyio, asyncio, threading)",
        ("/anyio/", "/asyncio/", "threading.py", "/concurrent/", "queue.py"),
    ),
    ("middleware (RequestGuard, Starlette middleware)", ("user_service/api/middleware.py", "/starlette/middleware/")),
    ("FastAPI/Starlette routing and dependencies", ("/fastapi/", "/starlette/")),
    ("uvicorn HTTP protocol (httptools)", ("/uvicorn/", "httptools")),
    ("user_service code", ("/user_service/",)),
)
# Helpers that any layer calls: a sample inside one belongs to the nearest known layer above it.
GENERIC: tuple[tuple[str, tuple[str, ...]], ...] = (("JSON (json module)", ("/json/",)),)
OTHER = "other (stdlib, uuid, datetime, ...)"


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _searchable(frame: str) -> str:
    """`name (pkg/mod.py:12)` -> `name (/pkg/mod.py:12)`, so that `/pkg/` needles match at any depth."""
    name, sep, where = frame.partition(" (")
    return f"{name}{sep}/{where}" if sep else frame


def layer_of(frames: Sequence[str]) -> str:
    generic = None
    for frame in reversed(frames):
        text = _searchable(frame)
        for layer, needles in LAYERS:
            if any(needle in text for needle in needles):
                return layer
        for layer, needles in GENERIC:
            if generic is None and any(needle in text for needle in needles):
                generic = layer
    return generic or OTHER


IDLE_LEAVES = ("Condition.wait (", "Queue.get (", "Event.wait (", "_wait_for_tstate_lock (", "Runner.run (")


def is_idle(frames: Sequence[str]) -> bool:
    """A worker waiting for work, or the event loop inside uvloop's C code (waiting in epoll, mostly)."""
    return bool(frames) and frames[-1].startswith(IDLE_LEAVES)


def short(frame: str) -> str:
    """`function (path/to/site-packages/pkg/mod.py:12)` -> `function (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "lib/python3.", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            if marker == "lib/python3.":
                where = "stdlib/" + where.split("/", 1)[1]
            break
    return f"{name} ({where}" if where else name


def thread_kind(frames: Sequence[str]) -> str:
    joined = ";".join(frames[:6])
    return "worker threads (sync routes, dependencies)" if "_bootstrap" in joined else "event loop thread"


def analyse(stacks: list[tuple[list[str], int]], *, drop_idle: bool) -> dict[str, object]:
    if drop_idle:
        stacks = [(frames, count) for frames, count in stacks if not is_idle([f for f in frames if " (" in f])]
    total = sum(count for _, count in stacks) or 1
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        body = [frame for frame in frames if " (" in frame]  # drop the process/thread labels
        layers[layer_of(body)] += count
        threads[thread_kind(body)] += count
        if body:
            leaves[short(body[-1])] += count
        for frame in set(body):
            inclusive[short(frame)] += count

    def share(counter: Counter[str], limit: int) -> list[dict[str, object]]:
        return [{"name": name, "percent": round(100 * n / total, 1)} for name, n in counter.most_common(limit)]

    return {
        "samples": total,
        "threads": share(threads, 4),
        "layers": share(layers, len(LAYERS) + len(GENERIC) + 1),
        "top_self": share(leaves, 20),
        "top_inclusive": share(inclusive, 40),
    }


PASSES = (
    (
        "gil",
        "Pass 1, --gil: only the thread holding the interpreter lock (where the Python CPU time of the core goes)",
        ["--gil"],
        False,
    ),
    (
        "threads",
        "Pass 2, every thread that is not idle (adds work done without the lock, such as SQLite's own C code, "
        "and time spent waiting for the lock or the core)",
        [],
        True,
    ),
)


def print_pass(title: str, summary: dict[str, object]) -> None:
    print(f"\n=== {title}: {summary['samples']} samples")
    for heading, key in (
        ("Threads", "threads"),
        ("Layers (each sample goes to the deepest frame of a known layer)", "layers"),
        ("Top self time (leaf frames)", "top_self"),
        ("Top inclusive (frames anywhere on the stack)", "top_inclusive"),
    ):
        print(f"\n{heading}")
        rows = summary[key]
        assert isinstance(rows, list)
        for row in rows[:25]:
            print(f"  {row['percent']:5.1f} %  {row['name']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, choices=range(3, 121), metavar="3..120", help="per pass")
    parser.add_argument("--rate", type=int, default=200, help="samples per second (default 200)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--scenario", choices=("me", "refresh"), default="me")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--log-level", choices=("info", "warning"), default="info")
    args = parser.parse_args(argv)

    wrk_path = ensure_wrk()
    py_spy = ensure_tools_venv() / "py-spy"
    usable = sorted(os.sched_getaffinity(0))
    server_cpus = [usable[0]] if len(usable) >= 2 else None
    load_cpus = [usable[-1]] if len(usable) >= 2 else None
    pool = ServerPool()
    workdir = Path(tempfile.mkdtemp(prefix="us-profile-"))
    postgres = None
    try:
        key = "us-sqlite"
        if args.database == "postgresql":
            if not postgres_reachable(args.postgres_url):
                print("error: no PostgreSQL answers at --postgres-url", file=sys.stderr)
                return 1
            postgres, key = PostgresDatabase(args.postgres_url), "us-pg"
        launcher = Launcher(pool, workdir, peer_python=None, postgres=postgres, log_level=args.log_level)
        target = launcher.start(SYSTEMS[key], server_cpus)
        target.create_account("me")
        wrk = Wrk(wrk_path, cpus=load_cpus, script_dir=workdir / "lua")
        if args.scenario == "me":
            script, url, title = "get.lua", target.url + "/users/me", "GET /users/me"
            token = target.log_in("me")[0]

            def load_args(_run: str) -> list[str]:
                return [token]
        else:
            assert target.refresh_path is not None
            script, url, title = "refresh.lua", target.url + target.refresh_path, "POST /auth/refresh"

            def load_args(run: str) -> list[str]:
                # Each refresh token is good once: a chain per connection, each answer's token feeding the next.
                pairs = target.log_in_many("me", args.connections + 4)
                tokens = workdir / f"refresh-{run}.txt"
                tokens.write_text("".join(f"{refresh}\n" for _, refresh in pairs if refresh))
                return [str(tokens), "1"]

        plain_args = load_args("plain")
        before = target.server.cpu_seconds()
        unprofiled = wrk.run(script, url, plain_args, connections=args.connections, seconds=args.seconds)
        cpu_ms = (target.server.cpu_seconds() - before) * 1000 / max(unprofiled.requests, 1)
        load_seconds = len(PASSES) * (args.seconds + 2) + 3
        background = wrk.start(script, url, load_args("sampled"), connections=args.connections, seconds=load_seconds)
        time.sleep(1)
        pin = ["taskset", "-c", ",".join(map(str, load_cpus))] if load_cpus else []
        results: dict[str, dict[str, object]] = {}
        RESULTS.mkdir(parents=True, exist_ok=True)
        for name, _title, options, drop_idle in PASSES:
            collapsed = RESULTS / f"profile-{args.scenario}-{args.database}-{name}.collapsed"
            record = [*pin, str(py_spy), "record", "--pid", str(target.server.process.pid), "--rate", str(args.rate)]
            record += ["--duration", str(args.seconds), "--format", "raw", "--threads", "--nonblocking", *options]
            record += ["--output", str(collapsed)]
            spy = subprocess.run(record, capture_output=True, text=True, timeout=args.seconds + 60, check=False)
            if spy.returncode != 0 or not collapsed.exists():
                background.kill()
                background.wait()
                print(f"error: py-spy failed ({spy.returncode}):\n{spy.stdout}{spy.stderr}", file=sys.stderr)
                return 1
            results[name] = analyse(parse_collapsed(collapsed.read_text()), drop_idle=drop_idle)
            results[name]["samples_possible_per_thread"] = args.rate * args.seconds
        profiled = Wrk.finish(background, load_seconds).summary()
        plain = unprofiled.summary()
        print(
            f"\n{title}, {args.connections} connections, server pinned to one core: {plain['ok_per_s']} ok/s "
            f"without the profiler (p50 {plain['p50_ms']} ms, p99 {plain['p99_ms']} ms, server CPU {cpu_ms:.3f} ms per "
            f"request); {profiled['ok_per_s']} ok/s while sampled"
        )
        gil = results["gil"]
        held = 100 * int(gil["samples"]) / int(gil["samples_possible_per_thread"])
        print(
            f"the interpreter lock was held at {held:.0f} % "
            "of the sampling instants (the rest: GIL-free C code such as SQLite's, or the core busy elsewhere)"
        )
        for name, title, _options, _drop in PASSES:
            print_pass(title, results[name])
        document = {
            "database": args.database,
            "scenario": args.scenario,
            "rate_hz": args.rate,
            "seconds_per_pass": args.seconds,
            "load_unprofiled": plain,
            "server_cpu_ms_per_request_unprofiled": round(cpu_ms, 4),
            "load_profiled": profiled,
            "passes": {name: {"title": title, **results[name]} for name, title, _o, _d in PASSES},
        }
        out = RESULTS / f"profile-{args.scenario}-{args.database}.json"
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwritten: {out}, and the collapsed stacks beside it (for any flame graph viewer)")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        pool.close()
        if postgres is not None:
            postgres.drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
