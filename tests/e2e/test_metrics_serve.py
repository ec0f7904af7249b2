"""`serve --metrics-port` as real processes: the metrics of every worker added up on a listener of their own, which
answers nothing but GET /metrics; a dead worker's figures are neither lost nor counted twice; the directory goes
with the server. And the access log: JSON with LOG_FORMAT=json, the request id in it, off with --no-access-log."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD
from tests.e2e._cluster import serve_env
from tests.e2e.conftest import USER_SERVICE, Server, StartServe, run_command

pytestmark = pytest.mark.e2e

METRICS_ON = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics, the workers' figures in (\S+)")
WORKER = re.compile(r"Started server process \[(\d+)\]")
TIMEOUT = 30.0


def logins(base_url: str, count: int, *, namespace: str) -> None:
    """Register an account and log in `count` times, each on a new connection (so the workers share them)."""
    account = {"namespace": namespace, "username": "alice", "password": PASSWORD}
    assert httpx.post(f"{base_url}/auth/register", json=account, timeout=TIMEOUT).status_code == 201
    for _ in range(count):
        assert httpx.post(f"{base_url}/auth/login", json=account, timeout=TIMEOUT).status_code == 200


def scrape(metrics_url: str) -> str:
    response = httpx.get(metrics_url, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def logins_counted_by(directory: Path, pid: int) -> float:
    """The successful logins in one worker's own counter file."""
    for metric in MultiProcessCollector.merge([str(directory / f"counter_{pid}.db")]):
        for sample in metric.samples:
            if sample.name == "user_service_auth_events_total" and sample.labels == {
                "event": "login",
                "outcome": "success",
            }:
                return float(sample.value)
    return 0.0


def metrics_of(server: Server) -> tuple[str, Path]:
    found = METRICS_ON.search(server.output())
    assert found is not None, server.output()
    return f"http://127.0.0.1:{found.group(1)}/metrics", Path(found.group(2))


def test_two_workers_add_up_and_a_dead_worker_counts_once(start_serve: StartServe, db_url: str, tmp_path: Path) -> None:
    server = start_serve("--workers", "2", "--metrics-port", "0", env=serve_env(db_url), cwd=tmp_path)
    server.wait_for_output("Application startup complete.", count=2)
    metrics_url, directory = metrics_of(server)

    logins(server.base_url, 6, namespace="first")
    before = scrape(metrics_url)
    assert value(before, "user_service_auth_events_total", event="login", outcome="success") == 6
    assert value(before, "user_service_auth_events_total", event="register", outcome="success") == 1

    # The worker to kill is one that counted some of the logins (the kernel chose which worker took each).
    busy = [int(pid) for pid in WORKER.findall(server.output()) if logins_counted_by(directory, int(pid)) > 0]
    assert busy, server.output()
    dead = busy[0]
    os.kill(dead, signal.SIGKILL)
    server.wait_for_output(f"Child process [{dead}] died")
    server.wait_for_output("Application startup complete.", count=3)
    logins(server.base_url, 4, namespace="second")
    after = scrape(metrics_url)

    assert value(after, "user_service_auth_events_total", event="login", outcome="success") == 10
    assert value(after, "user_service_sessions_started_total") == 10
    assert value(after, "user_service_password_hashes_waiting") == 0
    files = sorted(path.name for path in directory.iterdir())
    # What the dead worker counted stays counted; its live gauge is gone, so it is not added to the others'.
    assert f"counter_{dead}.db" in files
    assert f"gauge_livesum_{dead}.db" not in files
    assert len([name for name in files if name.startswith("counter_")]) >= 2

    assert server.stop() == 0
    assert not directory.exists()


def test_the_metrics_port_answers_only_get_metrics(start_serve: StartServe, db_url: str, tmp_path: Path) -> None:
    server = start_serve("--metrics-port", "0", env=serve_env(db_url), cwd=tmp_path)
    metrics_url, _ = metrics_of(server)
    base = metrics_url.removesuffix("/metrics")

    assert httpx.post(metrics_url, timeout=TIMEOUT).status_code == 405
    assert httpx.request("HEAD", metrics_url, timeout=TIMEOUT).status_code == 405
    assert httpx.get(f"{base}/", timeout=TIMEOUT).status_code == 404
    assert httpx.get(f"{base}/health", timeout=TIMEOUT).status_code == 404
    assert httpx.get(f"{metrics_url}?name[]=x", timeout=TIMEOUT).status_code == 404
    # Never on the public port.
    assert httpx.get(f"{server.base_url}/metrics", timeout=TIMEOUT).status_code == 404


def test_without_a_metrics_port_there_is_no_listener(start_serve: StartServe, db_url: str, tmp_path: Path) -> None:
    server = start_serve(env=serve_env(db_url), cwd=tmp_path)
    logins(server.base_url, 1, namespace="quiet")

    assert "metrics on" not in server.output()


def test_the_json_access_log_carries_the_request_id(start_serve: StartServe, db_url: str, tmp_path: Path) -> None:
    server = start_serve(env=serve_env(db_url, LOG_FORMAT="json"), cwd=tmp_path)
    account = {"namespace": "logs", "username": "alice", "password": PASSWORD}
    response = httpx.post(
        f"{server.base_url}/auth/register", json=account, headers={"X-Request-ID": "trace-42"}, timeout=TIMEOUT
    )
    assert response.headers["x-request-id"] == "trace-42"
    # The register's own access line (start-up's /health probes wrote access lines before it).
    server.wait_for_output('"path": "/auth/register"')

    entries = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    of_request = [entry for entry in entries if entry.get("request_id") == "trace-42"]
    assert [entry["logger"] for entry in of_request] == ["user_service.security", "user_service.access"]
    access = of_request[1]
    assert (access["method"], access["path"], access["status"], access["client"]) == (
        "POST",
        "/auth/register",
        201,
        "127.0.0.1",
    )
    assert not any(entry["logger"] == "uvicorn.access" for entry in entries)


def test_no_access_log_keeps_the_security_events(start_serve: StartServe, db_url: str, tmp_path: Path) -> None:
    server = start_serve("--no-access-log", env=serve_env(db_url), cwd=tmp_path)
    logins(server.base_url, 1, namespace="quiet")
    server.wait_for_output("user_service.security login ")

    assert "user_service.access" not in server.output()
    assert "uvicorn.access" not in server.output()


def test_a_metrics_port_in_use_is_one_line_error(db_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_command(
            [USER_SERVICE, "serve", "--port", "0", "--metrics-port", str(port)], env=serve_env(db_url), cwd=tmp_path
        )

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"the metrics listener cannot bind 127.0.0.1:{port}" in result.stderr
