"""A database outage under a running `serve`: the service answers 503 quickly instead of hanging or failing with a
500, and recovers by itself when the database is back. PostgreSQL only: the server reaches it through a TCP proxy
that the test cuts and restores, so the real server, which other tests use, keeps running. Also with PgBouncer
in transaction mode in front, the proxy between it and PostgreSQL."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests.conftest import PASSWORD, TemplateDatabase, bearer
from tests.e2e._cluster import Call, TcpProxy, codes, database_engine, released_together, serve_env
from tests.e2e.conftest import Server, StartServe
from tests.pgbouncer import running_pgbouncer
from user_service.models import User

pytestmark = pytest.mark.e2e

# A hang would show as a request slower than this; a timely 503 takes about one connect timeout.
ANSWER_WITHIN = 10.0
RECOVERY_DEADLINE = 30.0
POOL_SIZE = 2
# More requests at once than the pool holds connections.
CROWD = 3 * POOL_SIZE
POLL_INTERVAL = 0.2

Send = Callable[[httpx.Client], httpx.Response]


def timed(http: httpx.Client, send: Send) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = send(http)
    return response, time.monotonic() - started


def poll_until_healthy(http: httpx.Client, server_process: subprocess.Popen[bytes]) -> httpx.Response:
    deadline = time.monotonic() + RECOVERY_DEADLINE
    while True:
        response = http.get("/health")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        # Waiting on the server doubles as the poll interval and notices if it died.
        with contextlib.suppress(subprocess.TimeoutExpired):
            server_process.wait(POLL_INTERVAL)
        assert server_process.poll() is None, "the server exited during the outage"


@contextlib.contextmanager
def database_behind_proxy(database: TemplateDatabase) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of PostgreSQL and the URL the service uses: the proxy's, or, with PgBouncer, that of a
    PgBouncer of its own whose server connections go through the proxy (PostgreSQL fails behind the pooler)."""
    real = make_url(database.direct_url)
    with TcpProxy(real.port or 5432) as proxy:
        if database.kind != "pgbouncer":
            yield proxy, real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            return
        with running_pgbouncer(proxy.port) as port:
            yield proxy, real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def serve_behind(
    url: str, database: TemplateDatabase, start_serve: StartServe, tmp_path: Path, **settings: str
) -> Server:
    """`serve` on `url`, giving up on a connection attempt quickly."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = serve_env(url, DB_CONNECT_TIMEOUT_SECONDS="1", **database.service_env, **settings)
    return start_serve(env=env, cwd=workdir)


@pytest.mark.parametrize("database", ["postgresql", "pgbouncer"], indirect=True)
@pytest.mark.parametrize("failure", ["refused", "unresponsive"])
def test_a_database_outage_answers_503_quickly_and_the_service_recovers_without_a_restart(
    database: TemplateDatabase, db_url: str, tmp_path: Path, start_serve: StartServe, failure: str
) -> None:
    namespace = f"outage-{uuid.uuid4().hex[:12]}"
    alice = {"namespace": namespace, "username": "alice", "password": PASSWORD}
    bob = {"namespace": namespace, "username": "bob", "password": PASSWORD}

    with database_behind_proxy(database) as (proxy, url):
        server = serve_behind(url, database, start_serve, tmp_path, DB_POOL_TIMEOUT_SECONDS="2")
        with httpx.Client(base_url=server.base_url, timeout=2 * ANSWER_WITHIN) as http:
            assert http.post("/auth/register", json=alice).status_code == 201
            login = http.post("/auth/login", json=alice)
            assert login.status_code == 200, login.text
            pair = login.json()
            assert http.get("/users/me", headers=bearer(pair["access_token"])).status_code == 200

            proxy.cut(failure)
            requests: dict[str, Send] = {
                "health": lambda h: h.get("/health"),
                "login": lambda h: h.post("/auth/login", json=alice),
                "register": lambda h: h.post("/auth/register", json=bob),
                "me": lambda h: h.get("/users/me", headers=bearer(pair["access_token"])),
                "refresh": lambda h: h.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
            }
            during = {name: timed(http, send) for name, send in requests.items()}

            # Nothing the failed registration started may be left behind (checked on the real port).
            with database_engine(db_url) as engine, Session(engine) as session:
                bobs = session.scalar(
                    select(func.count()).select_from(User).where(User.namespace == namespace, User.username == "bob")
                )

            proxy.restore()
            recovered = poll_until_healthy(http, server.process)
            after = {
                "login": http.post("/auth/login", json=alice).status_code,
                "me": http.get("/users/me", headers=bearer(pair["access_token"])).status_code,
                "register": http.post("/auth/register", json=bob).status_code,
            }

    outcomes = {
        name: (response.status_code, response.headers.get("content-type"), elapsed < ANSWER_WITHIN)
        for name, (response, elapsed) in during.items()
    }
    assert outcomes == dict.fromkeys(requests, (503, "application/json", True)), {
        name: (response.status_code, round(elapsed, 2), response.text) for name, (response, elapsed) in during.items()
    }
    health = during["health"][0].json()
    assert (health["status"], health["database"]) == ("unavailable", "unavailable")
    assert {name: during[name][0].json()["code"] for name in requests if name != "health"} == dict.fromkeys(
        ("login", "register", "me", "refresh"), "database_unavailable"
    )
    assert bobs == 0
    assert recovered.status_code == 200, recovered.text
    assert after == {"login": 200, "me": 200, "register": 201}
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("database", ["postgresql", "pgbouncer"], indirect=True)
def test_more_requests_than_the_pool_holds_during_an_outage_get_503_not_500(
    database: TemplateDatabase, db_url: str, tmp_path: Path, start_serve: StartServe
) -> None:
    account = {"namespace": f"outage-{uuid.uuid4().hex[:12]}", "username": "alice", "password": PASSWORD}
    with database_behind_proxy(database) as (proxy, url):
        # Connection attempts to a host that never answers take the 2 s that libpq allows at the least; the pool
        # gives up on a free connection sooner, so the requests beyond the pool's size run out of pool, not time.
        server = serve_behind(
            url,
            database,
            start_serve,
            tmp_path,
            DB_POOL_SIZE=str(POOL_SIZE),
            DB_MAX_OVERFLOW="0",
            DB_POOL_TIMEOUT_SECONDS="1",
        )
        with httpx.Client(base_url=server.base_url, timeout=2 * ANSWER_WITHIN) as http:
            assert http.post("/auth/register", json=account).status_code == 201

        proxy.cut("unresponsive")
        crowd = released_together(server.base_url, [Call("POST", "/auth/login", account)] * CROWD)

    assert codes(crowd) == [(503, "database_unavailable")] * CROWD, codes(crowd)
    assert max(result.ended - result.started for result in crowd) < ANSWER_WITHIN
    assert "Traceback" not in server.output()
