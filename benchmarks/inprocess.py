"""What GET /users/me and a refresh cost in-process, without sockets, a server or a load generator: the CPU (user
and system, every thread of the process) per request through the whole ASGI app, one request at a time; and the
service's refresh alone, called in place and through a worker thread, to show what the hop to a thread costs.

    .venv/bin/python benchmarks/inprocess.py [--requests 2000] [--rounds 3] [--database sqlite|postgresql]

bcrypt at cost 4 (only the set-up logs in), rate limit off, access log off, metrics off (`--metrics` for on).
Prints each round and the medians; a figure of one machine on one day, to compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from anyio import to_thread
from run import bounded
from setup_env import project_bin
from systems import NAMESPACE, PASSWORD, PostgresDatabase, postgres_reachable

from user_service.api.app import create_app
from user_service.config import Settings
from user_service.schemas import RegisterRequest

JSON = [(b"content-type", b"application/json")]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=bounded(100, 100_000), default=2000, help="per measurement (default 2000)")
    parser.add_argument("--rounds", type=bounded(1, 20), default=3, help="rounds of every measurement (default 3)")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="an admin URL: the run creates and drops its own database there",
    )
    parser.add_argument("--metrics", action="store_true", help="count requests for Prometheus, as --metrics-port does")
    return parser.parse_args(argv)


class InProcess:
    """The app, one account and its tokens; requests sent to the ASGI app directly, one at a time."""

    def __init__(self, settings: Settings, metrics: bool) -> None:
        self.app = create_app(settings, metrics=metrics)
        self.service = self.app.state.service
        self.access_token = ""
        self.refresh_token = ""

    async def call(self, method: str, path: str, body: bytes = b"", headers: Sequence[tuple[bytes, bytes]] = ()) -> Any:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        status = sent[0]["status"]
        content = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}: {content[:200]!r}")
        return json.loads(content)

    async def log_in(self) -> None:
        self.service.register(RegisterRequest(namespace=NAMESPACE, username="me", password=PASSWORD))
        body = json.dumps({"namespace": NAMESPACE, "username": "me", "password": PASSWORD}).encode()
        pair = await self.call("POST", "/auth/login", body, JSON)
        self.access_token, self.refresh_token = pair["access_token"], pair["refresh_token"]

    async def me(self) -> None:
        await self.call("GET", "/users/me", headers=[(b"authorization", f"Bearer {self.access_token}".encode())])

    async def refresh(self) -> None:
        body = json.dumps({"refresh_token": self.refresh_token}).encode()
        self.refresh_token = (await self.call("POST", "/auth/refresh", body, JSON))["refresh_token"]

    async def service_refresh_in_place(self) -> None:
        self.refresh_token = self.service.refresh(self.refresh_token).refresh_token

    async def service_refresh_in_thread(self) -> None:
        self.refresh_token = (await to_thread.run_sync(self.service.refresh, self.refresh_token)).refresh_token


async def cpu_per_call(step: Callable[[], Awaitable[None]], count: int) -> tuple[float, float]:
    """User and system CPU of the whole process per call of `step`, in microseconds."""
    before = os.times()
    for _ in range(count):
        await step()
    after = os.times()
    return (after.user - before.user) * 1e6 / count, (after.system - before.system) * 1e6 / count


async def measure(bench: InProcess, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    steps = {
        "GET /users/me through the app": bench.me,
        "POST /auth/refresh through the app": bench.refresh,
        "the service's refresh, in place": bench.service_refresh_in_place,
        "the service's refresh, through a worker thread": bench.service_refresh_in_thread,
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    async with bench.app.router.lifespan_context(bench.app):
        await bench.log_in()
        for step in steps.values():  # warm-up: caches, prepared statements, the thread pool
            await cpu_per_call(step, min(200, args.requests))
        for round_no in range(1, args.rounds + 1):
            for name, step in steps.items():
                user, system = await cpu_per_call(step, args.requests)
                results[name].append((user, system))
                print(
                    f"[round {round_no}/{args.rounds}] {name:48} {user + system:8.0f} us ({user:.0f} user)", flush=True
                )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="us-inprocess-") as workdir:
        database: PostgresDatabase | None = None
        if args.database == "postgresql":
            if not postgres_reachable(args.postgres_url):
                print(f"error: no PostgreSQL answers at {args.postgres_url}", file=sys.stderr)
                return 2
            database = PostgresDatabase(args.postgres_url)
        try:
            url = database.url if database is not None else f"sqlite:///{Path(workdir) / 'inprocess.db'}"
            secret = secrets.token_urlsafe(48)
            env = {**os.environ, "DATABASE_URL": url, "JWT_SECRET_KEY": secret}
            subprocess.run([str(project_bin("user-service")), "migrate"], env=env, check=True, timeout=120)
            settings = Settings(
                database_url=url,
                jwt_secret_key=secret,
                bcrypt_rounds=4,
                rate_limit_enabled=False,
                access_log=False,
                upload_dir=Path(workdir) / "uploads",
                _env_file=None,  # type: ignore[call-arg]
            )
            bench = InProcess(settings, args.metrics)
            try:
                results = asyncio.run(measure(bench, args))
            finally:
                bench.service.close()
        finally:
            if database is not None:
                database.drop()
    print(f"\nmedians of {args.rounds} rounds of {args.requests} calls, {args.database}, CPU per call:")
    for name, figures in results.items():
        user = statistics.median(figure[0] for figure in figures)
        system = statistics.median(figure[1] for figure in figures)
        print(f"  {name:48} {user + system:8.0f} us ({user:.0f} user, {system:.0f} system)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
