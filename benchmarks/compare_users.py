"""Compare two runs of run.py made on user bases of different sizes: GET /users/me, login and refresh on each
database, the second run's throughput over the first's, with the target that it stays within 10 %.

    .venv/bin/python benchmarks/run.py --scenarios me,login,refresh --users 1000 --output 1k.json
    .venv/bin/python benchmarks/run.py --scenarios me,login,refresh --users 1000000 --output 1m.json
    .venv/bin/python benchmarks/compare_users.py 1k.json 1m.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from report import USER_BASE_DRIFT, USER_BASE_ROWS, USER_BASE_SYSTEMS
from systems import SYSTEMS

# user-service on each database carries the target; fastapi-users is shown for reference.
COMPARED = (*USER_BASE_SYSTEMS, "fau", "fau-pg")


def _load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _median(document: dict[str, Any], scenario: str, system: str) -> dict[str, Any] | None:
    median: dict[str, Any] | None = document.get("scenarios", {}).get(scenario, {}).get("median", {}).get(system)
    return median


def compare(first: dict[str, Any], second: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scenario and system measured in both runs: ok/s and p99 of each, and B over A."""
    rows = []
    for scenario, name in USER_BASE_ROWS.items():
        for system in COMPARED:
            a, b = _median(first, scenario, system), _median(second, scenario, system)
            if not a or not b or not a.get("ok_per_s") or b.get("ok_per_s") is None:
                continue
            ratio = round(b["ok_per_s"] / a["ok_per_s"], 3)
            met = abs(ratio - 1) <= USER_BASE_DRIFT if system in USER_BASE_SYSTEMS else None
            rows.append(
                {
                    "scenario": name,
                    "system": SYSTEMS[system].label,
                    "a_ok_per_s": a["ok_per_s"],
                    "b_ok_per_s": b["ok_per_s"],
                    "a_p99_ms": a.get("p99_ms"),
                    "b_p99_ms": b.get("p99_ms"),
                    "b_over_a": ratio,
                    "met": met,
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="run.py's JSON on the smaller user base")
    parser.add_argument("b", type=Path, help="run.py's JSON on the larger user base")
    args = parser.parse_args(argv)
    first, second = _load(args.a), _load(args.b)
    users = [document.get("settings", {}).get("users", 0) for document in (first, second)]
    print(f"A: {args.a} ({users[0]:,} seeded users)   B: {args.b} ({users[1]:,} seeded users)")
    rows = compare(first, second)
    if not rows:
        print("no GET /users/me, login or refresh figures in both runs")
        return 1
    print(f"{'row':14} {'system':28} {'A ok/s':>9} {'B ok/s':>9} {'A p99':>8} {'B p99':>8} {'B / A':>7}  target")
    for row in rows:
        verdict = {True: "within 10 %: met", False: "within 10 %: NOT met", None: "(reference)"}[row["met"]]
        p99 = [f"{value:8.1f}" if value is not None else f"{'-':>8}" for value in (row["a_p99_ms"], row["b_p99_ms"])]
        print(
            f"{row['scenario']:14} {row['system']:28} {row['a_ok_per_s']:9.1f} {row['b_ok_per_s']:9.1f} "
            f"{p99[0]} {p99[1]} {row['b_over_a']:6.2f}x  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
