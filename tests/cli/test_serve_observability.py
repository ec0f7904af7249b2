"""`serve`'s metrics and access-log options: they reach the workers' settings, and the metrics never share the
public port."""

from __future__ import annotations

import os
from typing import Any

from tests.conftest import Cli
from tests.helpers import one_line_error


def test_metrics_port_and_no_access_log_reach_the_workers(cli: Cli, uvicorn_calls: list[dict[str, Any]]) -> None:
    result = cli("serve", "--port", "8000", "--metrics-port", "9100", "--no-access-log")

    assert result.exit_code == 0, result.output
    settings = uvicorn_calls[0]["settings"]
    assert (settings.metrics_port, settings.access_log) == (9100, False)
    assert (os.environ["METRICS_PORT"], os.environ["ACCESS_LOG"]) == ("9100", "False")


def test_the_access_log_is_on_by_default(cli: Cli, uvicorn_calls: list[dict[str, Any]]) -> None:
    assert cli("serve").exit_code == 0

    assert uvicorn_calls[0]["settings"].access_log is True
    assert uvicorn_calls[0]["settings"].metrics_port is None


def test_the_metrics_port_must_not_be_the_public_port(cli: Cli, uvicorn_calls: list[dict[str, Any]]) -> None:
    message = one_line_error(cli("serve", "--port", "8000", "--metrics-port", "8000"))

    assert "metrics port must not be the public port" in message
    assert uvicorn_calls == []
