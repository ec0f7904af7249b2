"""Setting up and running the service: init, migrate, serve."""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from user_service.cli._options import DatabaseUrlOption, EnvFileOption
from user_service.cli._output import cli_errors, console, exit_with_error, settings_from

if TYPE_CHECKING:
    from user_service.config import Settings


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(migrate)
    app.command()(serve)


def _set_line(content: str, name: str, value: str) -> str:
    line = f"{name}={value}"
    pattern = re.compile(rf"^{name}=.*$", re.MULTILINE)
    if pattern.search(content):
        return pattern.sub(lambda _match: line, content, count=1)
    return content.rstrip("\n") + f"\n{line}\n"


@contextmanager
def _file_errors(path: Path) -> Iterator[None]:
    """A file or folder that cannot be read or written ends the command in one line naming it."""
    try:
        yield
    except UnicodeDecodeError:
        exit_with_error(f"{path} is not UTF-8 text")
    except OSError as exc:
        exit_with_error(f"{exc.filename or path}: {exc.strerror or type(exc).__name__}")


def _write_private(path: Path, content: str) -> None:
    """Write the file readable by its owner only (it holds the secret), whatever mode an older copy had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(content)


def init(
    force: Annotated[
        bool, typer.Option("--force", help="Replace the secret of an existing env file, keeping its other settings.")
    ] = False,
    env_file: Annotated[Path, typer.Option("--env-file", help="Where to write the settings.")] = Path(".env"),
    database_url: DatabaseUrlOption = None,
) -> None:
    """Write .env with a fresh secret, create the upload folder and migrate the database to the latest schema."""
    from user_service.resources import shipped_path

    existing = env_file.exists()
    if existing and not force:
        exit_with_error(f"{env_file} already exists; pass --force to give it a new secret (its other settings stay)")
    with cli_errors(), _file_errors(env_file):
        if existing:
            content = env_file.read_text(encoding="utf-8")
        else:
            content = shipped_path("env.example", ".env.example").read_text(encoding="utf-8")
    content = _set_line(content, "JWT_SECRET_KEY", secrets.token_urlsafe(48))
    if database_url:
        content = _set_line(content, "DATABASE_URL", database_url)
    with _file_errors(env_file):
        _write_private(env_file, content)
    if existing:
        console.print(f"Replaced JWT_SECRET_KEY in {env_file}; every other setting in it was kept.")
    else:
        console.print(f"Wrote {env_file} with a new JWT_SECRET_KEY.")
    settings = settings_from(env_file, database_url)
    with _file_errors(settings.upload_dir):
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"Upload folder: {settings.upload_dir}")
    _migrate(settings, "head")
    console.print("Next: [bold]user-service serve[/bold]  (then open http://127.0.0.1:8000/docs)")


def _check_sqlite_folder(settings: Settings) -> None:
    """A SQLite database is created in an existing folder only: say which one is missing rather than let SQLite
    fail with "unable to open database file"."""
    from user_service.db import is_sqlite, sqlite_file

    path = sqlite_file(settings.database_url) if is_sqlite(settings.database_url) else None
    if path is not None and not path.exists() and not path.absolute().parent.is_dir():
        exit_with_error(f"the folder of the SQLite database {path} does not exist")


def _migrate(settings: Settings, target: str) -> None:
    from user_service import migrations
    from user_service.db import make_engine

    _check_sqlite_folder(settings)
    with cli_errors():
        engine = make_engine(settings)
    try:
        with cli_errors():
            before, after = migrations.migrate_to(engine, target)
    finally:
        engine.dispose()
    if before == after:
        console.print(f"Database already at {after or 'base'}.")
    else:
        console.print(f"Database migrated from {before or 'base'} to {after or 'base'}.")
    if after == migrations.head_revision() and settings.uses_key_store and settings.jwt_secret_key is not None:
        _prepare_keys(settings)


def _prepare_keys(settings: Settings) -> None:
    """Create the first signing keys on a database without any, and check that JWT_SECRET_KEY opens them: a wrong
    secret stops here with one line, before any worker starts."""
    from user_service.service import UserService

    if not settings.uses_key_store:
        return
    with cli_errors(), UserService(settings) as service:
        service.prepare_keys()


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm_downgrade(settings: Settings, revision: str, yes: bool) -> None:
    """Going down drops tables or columns: it needs --yes, or a yes typed at a terminal."""
    from user_service import migrations
    from user_service.db import make_engine

    with cli_errors():
        target = migrations.resolve(revision)
        engine = make_engine(settings)
    try:
        with cli_errors():
            before = migrations.current_revision(engine)
            if not migrations.is_downgrade(before, target):
                return
            users = migrations.count_users(engine)
    finally:
        engine.dispose()
    what = "every table" if target == "base" else "what later revisions added"
    question = f"migrating down from {before} to {target} drops {what}; the database holds {users} user(s)"
    if yes:
        return
    if not _interactive():
        exit_with_error(f"{question}; pass --yes to go ahead")
    if not typer.confirm(f"{question}. Go ahead?", default=False):
        exit_with_error("nothing changed")


def migrate(
    revision: Annotated[
        str, typer.Option("--revision", "-r", help="Target: head, base, or a revision id (up or down).")
    ] = "head",
    current: Annotated[bool, typer.Option("--current", help="Show the current and latest revision only.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Migrate down without asking (it drops tables or columns).")
    ] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Migrate the database schema (to the latest revision unless --revision says otherwise)."""
    from user_service.db import migration_settings

    settings = settings_from(env_file, database_url)
    if database_url is None:
        settings = migration_settings(settings)
    if not current:
        _check_sqlite_folder(settings)
        _confirm_downgrade(settings, revision, yes)
        _migrate(settings, revision)
        return
    from user_service import migrations

    now_at = _current_revision(settings)
    head = migrations.head_revision()
    state = "up to date" if now_at == head else "behind: run `user-service migrate`"
    console.print(f"current: {now_at or 'base'}\nhead:    {head}\n{state}")
    if now_at != head:
        # Scripts check the exit code: anything but the latest schema is not ready to serve.
        raise typer.Exit(1)


def _current_revision(settings: Settings) -> str | None:
    """Where the database's schema stands; it only looks, so a SQLite file that does not exist is never created."""
    from user_service import migrations
    from user_service.db import make_engine

    with cli_errors():
        engine = make_engine(settings, create=False)
    try:
        with cli_errors():
            return migrations.current_revision(engine)
    finally:
        engine.dispose()


def _export(settings: Settings, env_file: Path | None) -> None:
    """Hand the resolved settings to uvicorn's worker processes through their environment, and name the one env file
    they may read (the one given, else ./.env as here), so that a setting unset here stays unset there."""
    from user_service.config import ENV_FILE_VARIABLE

    chosen = env_file if env_file is not None else Path(".env")
    os.environ[ENV_FILE_VARIABLE] = str(chosen.resolve()) if chosen.is_file() else ""
    for name, value in settings.model_dump().items():
        key = name.upper()
        if value is None:
            os.environ.pop(key, None)
        else:
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            os.environ[key] = str(raw)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1, max=64)] = 1,
    reload: Annotated[bool, typer.Option("--reload", help="Restart on code changes (development).")] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics at /metrics on this port, on METRICS_HOST (METRICS_PORT).",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option("--access-log/--no-access-log", help="Log one line per request (ACCESS_LOG).", show_default=False),
    ] = None,
) -> None:
    """Run the HTTP service under uvicorn; refuses to start without a usable secret or an up-to-date database."""
    from user_service.config import load_settings

    with cli_errors():
        settings = load_settings(env_file, database_url=database_url, metrics_port=metrics_port, access_log=access_log)
        settings.signing_key()
    if settings.metrics_port and settings.metrics_port == port:
        exit_with_error("the metrics port must not be the public port")
    from user_service import migrations

    if _current_revision(settings) != migrations.head_revision():
        exit_with_error("the database schema is not up to date; run `user-service migrate` first")
    _prepare_keys(settings)

    from user_service.cli._server import run_server

    _export(settings, env_file)
    run_server(settings, host=host, port=port, workers=workers, reload=reload)
