"""Moving users in and out: `export` writes JSON Lines, one user a line, streamed; `import` reads them back (from
this service or another system, with bcrypt hashes kept), all of the file or none of it."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from user_service.cli._options import DatabaseUrlOption, EnvFileOption
from user_service.cli._output import err_console, exit_with_error, operator_service

if TYPE_CHECKING:
    from user_service.service.import_batch import ImportReport

# Refused lines are reported one a line on stderr, at most this many; then only their count.
MAX_REPORTED_LINES = 1000
# Exported lines written to the output at once.
EXPORT_WRITE_LINES = 500


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_)


def export(
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Only this namespace's users.", show_default=False)
    ] = None,
    include_password_hashes: Annotated[
        bool,
        typer.Option(
            "--include-password-hashes",
            help="Add each user's bcrypt hash: anyone holding the file can then try to guess passwords offline.",
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (created 0600) instead of stdout.", dir_okay=False),
    ] = None,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Export users as JSON Lines, one user a line, in order of namespace and creation; streamed."""
    with operator_service(env_file, database_url) as service, ExitStack() as stack:
        target: IO[str] = sys.stdout
        if output is not None:
            target = stack.enter_context(_private_file(output))
        count = 0
        lines: list[str] = []
        for line in service.export_lines(namespace=namespace, include_password_hashes=include_password_hashes):
            lines.append(line)
            if len(lines) == EXPORT_WRITE_LINES:
                count += _write_lines(target, lines)
        count += _write_lines(target, lines)
        target.flush()
    if output is not None:
        err_console.print(f"exported {count} users to {output}", markup=False)


def _write_lines(target: IO[str], lines: list[str]) -> int:
    """Write the lines at once (one write for many: the stream's per-call cost) and empty the list; how many."""
    count = len(lines)
    if lines:
        target.write("\n".join(lines) + "\n")
        lines.clear()
    return count


def _private_file(path: Path) -> IO[str]:
    import os

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        exit_with_error(f"cannot write {path}: {exc.strerror}")
    return os.fdopen(descriptor, "w", encoding="utf-8", newline="\n")


def import_(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="JSON Lines of users, as `export` writes them; - for stdin.")
    ],
    upsert: Annotated[
        bool, typer.Option("--upsert", help="Replace users that already exist (same namespace and username).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check everything and count, but write nothing.")] = False,
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the valid lines even when some are refused.")
    ] = False,
    env_file: EnvFileOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Import users from JSON Lines: bcrypt hashes ($2a$, $2b$, $2y$) are kept, so users log in with the password
    they had; a refused line keeps the whole file out unless --skip-invalid. Exit 1 when any line was refused."""
    with operator_service(env_file, database_url) as service, ExitStack() as stack:
        source, size = _open_source(file, stack)
        refused = 0

        def problem(number: int, reason: str) -> None:
            nonlocal refused
            refused += 1
            if refused <= MAX_REPORTED_LINES:
                err_console.print(f"line {number}: {reason}", markup=False)

        progress = _progress_bar(stack, size)
        report = service.import_users(
            source,
            on_problem=problem,
            upsert=upsert,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            on_progress=progress,
        )
        if progress is not None:
            progress(size or 0)
    if refused > MAX_REPORTED_LINES:
        err_console.print(f"and {refused - MAX_REPORTED_LINES} more refused lines", markup=False)
    err_console.print(_summary(report, dry_run=dry_run), markup=False)
    if report.refused:
        raise typer.Exit(1)


def _open_source(file: str, stack: ExitStack) -> tuple[BinaryIO, int | None]:
    if file == "-":
        return sys.stdin.buffer, None
    path = Path(file)
    try:
        handle = stack.enter_context(path.open("rb"))
    except OSError as exc:
        exit_with_error(f"cannot read {file}: {exc.strerror}")
    if not path.is_file():
        exit_with_error(f"cannot read {file}: not a file")
    return handle, path.stat().st_size


def _progress_bar(stack: ExitStack, size: int | None) -> Any:
    """A progress bar on stderr when it is a terminal (the bytes of the file read); None otherwise."""
    if not err_console.is_terminal:
        return None
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = stack.enter_context(
        Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=err_console)
    )
    task = bar.add_task("import", total=size)
    return lambda done: bar.update(task, completed=done)


def _summary(report: ImportReport, *, dry_run: bool) -> str:
    if dry_run:
        return (
            f"dry run, nothing written: would import {report.imported}, update {report.updated}, skip {report.refused}"
        )
    if not report.written:
        return (
            f"imported 0, updated 0, skipped {report.users}: {report.refused} lines refused, so nothing was imported "
            "(--skip-invalid imports the valid lines)"
        )
    return f"imported {report.imported}, updated {report.updated}, skipped {report.refused}"
