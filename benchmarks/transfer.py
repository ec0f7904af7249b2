"""Import, export and listing rates at scale: seeds a namespace of N users by `user-service import` (bcrypt hashes,
no hashing), exports them with `user-service export`, and times `list-users` pages in the core.

    .venv/bin/python benchmarks/transfer.py [--users 100000] [--databases sqlite,postgresql] [--pages 30]
    .venv/bin/python benchmarks/transfer.py --users 1000000 --pages-only   # seeded by SQL, pages timed only

Import and export run as real `user-service` processes, each measured for wall time and its own peak RSS. Pages are
timed in-process (the command's start-up is not the page): the first page, pages deep in the namespace, a prefix
search that matches few users, and prefixes a tenth of the users share (those made first, and those made last).
PostgreSQL gets a database of the run's own (`--postgres-url`), dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import psycopg
from seeding import seed_by_sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SECRET = "benchmark-only-signing-key-0123456789-abcdefghij"  # noqa: S105 (a throwaway database's)
NAMESPACE = "bench"
# Runs one `user-service` command and reports its own peak RSS on stderr's last line.
RUNNER = (
    "import resource, sys\n"
    "from user_service.cli import main\n"
    "sys.argv = ['user-service', *sys.argv[1:]]\n"
    "try:\n    main()\nfinally:\n"
    "    print(f'maxrss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}', file=sys.stderr)\n"
)
COMMAND_TIMEOUT_SECONDS = 900


def write_users(path: Path, count: int) -> None:
    """N users of one namespace as JSON Lines, with one real bcrypt hash (cost 10) shared by all."""
    password_hash = bcrypt.hashpw(b"benchmark password 1", bcrypt.gensalt(10)).decode()
    start = datetime(2020, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as out:
        for index in range(count):
            record = {
                "id": str(uuid.uuid4()),
                "namespace": NAMESPACE,
                "username": f"user{index:07d}",
                "email": f"user{index:07d}@example.com",
                "full_name": f"User Number {index}",
                "extra": {"plan": "pro" if index % 3 else "free"},
                "created_at": (start + timedelta(seconds=index)).isoformat(),
                "password_hash": password_hash,
            }
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


def run(url: str, *args: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (MiB) of one `user-service` command."""
    env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET_KEY": SECRET, "BCRYPT_ROUNDS": "10"}
    began = time.perf_counter()
    done = subprocess.run(
        [PYTHON, "-c", RUNNER, *args], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SECONDS
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"user-service {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    rss = next(line for line in reversed(done.stderr.splitlines()) if line.startswith("maxrss_kib="))
    return elapsed, int(rss.split("=")[1]) // 1024


def tenth_prefix(users: int, tenth: int) -> str:
    """The prefix that the usernames of one tenth of the namespace share (0: the first users made, 9: the last),
    for users named as write_users and the seeding name them (user0000000 up); exact where `users` is a power of
    ten."""
    first, last = tenth * users // 10, (tenth + 1) * users // 10 - 1
    low, high = f"user{first:07d}", f"user{last:07d}"
    shared = next((at for at, (a, b) in enumerate(zip(low, high, strict=True)) if a != b), len(low))
    return low[:shared]


def page_latencies(url: str, users: int, pages: int) -> dict[str, float]:
    """Median milliseconds of list_users pages of 50: the first, deep ones (after a cursor), a rare prefix, and a
    prefix a tenth of the users share whose users were made first, and one whose users were made last (the hard
    case: the walk in order of creation meets none of them)."""
    from user_service.config import Settings
    from user_service.service import UserService

    settings = Settings(database_url=url, jwt_secret_key=SECRET, _env_file=None)  # type: ignore[call-arg]
    kinds = ("first page", "deep page", "rare prefix", "common prefix, made first", "common prefix, made last")
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    with UserService(settings) as service:
        cursor, seen = None, 0
        # Walk forward through the namespace in steps of 500 users to collect cursors spread over it.
        cursors = []
        for _ in range(pages):
            page = service.list_users(NAMESPACE, limit=500, after=cursor)
            seen += len(page.items)
            if page.next is None:
                break
            cursor = page.next
            cursors.append(cursor)
        for index in range(pages):
            calls: dict[str, dict[str, Any]] = {
                "first page": {},
                "deep page": {"after": cursors[-1 - index % len(cursors)]},
                # At most 100 users (user + 5 digits), often none.
                "rare prefix": {"search": f"USER{(index * 7919) % 99999:05d}"},
                "common prefix, made first": {"search": tenth_prefix(users, 0)},
                "common prefix, made last": {"search": tenth_prefix(users, 9)},
            }
            for kind, options in calls.items():
                began = time.perf_counter()
                service.list_users(NAMESPACE, **options)
                timings[kind].append((time.perf_counter() - began) * 1000)
    return {kind: round(statistics.median(values), 2) for kind, values in timings.items()}


def settle(url: str) -> None:
    """On PostgreSQL, what autovacuum does soon after a bulk load (statistics for the planner, the visibility map
    for index-only scans), done now instead of at a moment of its own choosing in the middle of the timings."""
    if not url.startswith("postgresql"):
        return
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True, connect_timeout=5) as connection:
        connection.execute("VACUUM ANALYZE users")


@contextmanager
def database(kind: str, folder: Path, postgres_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    name = f"user_service_transfer_bench_{uuid.uuid4().hex[:8]}"
    admin = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure_pages_only(kind: str, users: int, folder: Path, postgres_url: str, pages: int) -> dict[str, Any]:
    with database(kind, folder, postgres_url) as url:
        run(url, "migrate")
        seeded = seed_by_sql(kind, url, users)
        settle(url)
        latencies = page_latencies(url, users, pages)
    return {
        "database": kind,
        "users": users,
        "seeded by SQL in s": round(seeded, 1),
        **{f"list-users {name} ms": value for name, value in latencies.items()},
    }


def measure(kind: str, users: int, source: Path, folder: Path, postgres_url: str, pages: int) -> dict[str, Any]:
    with database(kind, folder, postgres_url) as url:
        run(url, "migrate")
        imported, import_rss = run(url, "import", str(source))
        exported, export_rss = run(url, "export", "--include-password-hashes", "--output", str(folder / "out.jsonl"))
        settle(url)
        latencies = page_latencies(url, users, pages)
    return {
        "database": kind,
        "users": users,
        "import users/s": round(users / imported),
        "import peak RSS MiB": import_rss,
        "export users/s": round(users / exported),
        "export peak RSS MiB": export_rss,
        **{f"list-users {name} ms": value for name, value in latencies.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--pages", type=int, default=30, help="timed calls of each kind of page")
    parser.add_argument("--pages-only", action="store_true", help="seed by SQL and time list-users pages only")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="user-service-transfer-") as temp:
        folder = Path(temp)
        if options.pages_only:
            for kind in options.databases.split(","):
                print(json.dumps(measure_pages_only(kind, options.users, folder, options.postgres_url, options.pages)))
            return
        source = folder / "users.jsonl"
        write_users(source, options.users)
        print(f"{options.users} users, {source.stat().st_size / 2**20:.0f} MiB of JSON Lines", flush=True)
        for kind in options.databases.split(","):
            result = measure(kind, options.users, source, folder, options.postgres_url, options.pages)
            print(json.dumps(result), flush=True)
            for leftover in folder.glob("bench.db*"):
                leftover.unlink()


if __name__ == "__main__":
    main()
