"""Token verification throughput with ES256 keys: user-service's GET /users/me, the downstream example's protected
GET /orders (examples/downstream_service.py, JWKS already cached) and the bare FastAPI ceiling (GET /ping), each a
real server on loopback pinned to one core, wrk on the other, access logs off on all three, measured in turn.

    .venv/bin/python benchmarks/downstream.py [--rounds 2] [--duration 5]

Targets: /users/me at least 0.25x the ceiling, /orders at least 0.35x. (/users/me against fastapi-users is measured by
`benchmarks/run.py --scenarios me --log-level warning --systems us-sqlite,fau,ceiling`.)
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from load import Wrk
from servers import ServerPool, free_port, http, post_json
from setup_env import ensure_wrk, project_bin
from systems import NAMESPACE, PEERS, base_env

REPO = Path(__file__).resolve().parents[1]
# Passes the password policy (no namespace or username inside).
PASSWORD = "Kq7v-Xw3p-Lm9z-tokens"  # noqa: S105 (the benchmark account's password, on a throw-away database)
TARGETS = {"me": 0.25, "downstream": 0.35}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, choices=range(1, 11), metavar="1-10")
    parser.add_argument("--duration", type=int, default=5, choices=range(1, 61), metavar="1-60")
    parser.add_argument("--warmup", type=int, default=1, choices=range(61), metavar="0-60")
    parser.add_argument("--connections", type=int, default=16, choices=range(1, 257), metavar="1-256")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    wrk_path = ensure_wrk()
    cores = os.sched_getaffinity(0)
    server_cpus, wrk_cpus = ([min(cores)], [max(cores)]) if len(cores) > 1 else (None, None)
    workdir = Path(tempfile.mkdtemp(prefix="us-bench-downstream-"))
    pool = ServerPool()
    try:
        env = {
            **base_env(),
            "DATABASE_URL": f"sqlite:///{workdir / 'accounts.db'}",
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "JWT_ALGORITHM": "ES256",
            "BCRYPT_ROUNDS": "10",
            "RATE_LIMIT_ENABLED": "false",
            "UPLOAD_DIR": str(workdir / "uploads"),
            # uvicorn's access log is written at INFO.
            "LOG_LEVEL": "WARNING",
        }
        subprocess.run([str(project_bin("user-service")), "migrate"], env=env, cwd=workdir, check=True, timeout=120)
        port = free_port()
        accounts = pool.start(
            "user-service",
            [str(project_bin("user-service")), "serve", "--host", "127.0.0.1", "--port", str(port)],
            port=port,
            ready_path="/health",
            env=env,
            cwd=workdir,
            log_path=workdir / "accounts.log",
            cpus=server_cpus,
        )
        account = {"namespace": NAMESPACE, "username": "reader", "password": PASSWORD}
        status, body = post_json(f"{accounts.base_url}/auth/register", account)
        assert status == 201, body
        status, body = post_json(f"{accounts.base_url}/auth/login", account)
        assert status == 200, body
        token = str(body["access_token"])

        uvicorn = [str(project_bin("python")), "-m", "uvicorn", "--host", "127.0.0.1", "--no-access-log"]
        port = free_port()
        downstream = pool.start(
            "downstream",
            [*uvicorn, "--port", str(port), "--app-dir", str(REPO), "examples.downstream_service:app"],
            port=port,
            ready_path="/health",
            env={**base_env(), "USER_SERVICE_URL": accounts.base_url},
            cwd=workdir,
            log_path=workdir / "downstream.log",
            cpus=server_cpus,
        )
        # The JWKS is fetched once here: the measured requests find it cached.
        assert http("GET", f"{downstream.base_url}/orders", token=token)[0] == 200
        port = free_port()
        ceiling = pool.start(
            "ceiling",
            [*uvicorn, "--port", str(port), "--app-dir", str(PEERS), "ceiling_app:app"],
            port=port,
            ready_path="/ping",
            env={**base_env(), "BCRYPT_ROUNDS": "4"},
            cwd=workdir,
            log_path=workdir / "ceiling.log",
            cpus=server_cpus,
        )
        wrk = Wrk(wrk_path, cpus=wrk_cpus, script_dir=workdir / "lua")
        urls = {
            "me": (f"{accounts.base_url}/users/me", token),
            "downstream": (f"{downstream.base_url}/orders", token),
            "ceiling": (f"{ceiling.base_url}/ping", ""),
        }
        rates: dict[str, list[float]] = {key: [] for key in urls}
        for _ in range(args.rounds):
            for key, (url, bearer) in urls.items():
                if args.warmup:
                    wrk.run("get.lua", url, [bearer], connections=args.connections, seconds=args.warmup)
                result = wrk.run("get.lua", url, [bearer], connections=args.connections, seconds=args.duration)
                if result.errors:
                    print(f"error: {key} answered {result.errors} failed requests", file=sys.stderr)
                    return 1
                rates[key].append(result.ok / (result.duration_s or 1.0))
        medians = {key: statistics.median(values) for key, values in rates.items()}
        report = {
            "req_per_s": {key: round(value, 1) for key, value in medians.items()},
            "vs_ceiling": {key: round(medians[key] / medians["ceiling"], 3) for key in TARGETS},
            "targets": {
                key: {"at_least": goal, "met": medians[key] / medians["ceiling"] >= goal}
                for key, goal in TARGETS.items()
            },
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        pool.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
