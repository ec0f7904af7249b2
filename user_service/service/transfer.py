"""Moving users in and out: an export that streams every user in key order, one page at a time, and an import that
checks every line with the registration rules and keeps the users' bcrypt hashes, so nobody has to reset a password.

An import is one write transaction, written in batches: it keeps all of the file or none of it. Collisions (inside
the file and with stored users) are found by the unique indexes as each batch is written, and named by reading the
stored users of a batch that collides, within that transaction, so memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, BinaryIO

import orjson

from user_service.errors import EmailTaken, InvalidInput, UserIdTaken, UsernameTaken
from user_service.events import security_event
from user_service.schemas import ImportedUser, Profile
from user_service.service import accounts
from user_service.service import statements as sql
from user_service.service import transfer_sql as tsql
from user_service.service.context import Account, Context
from user_service.service.database import UniqueViolation
from user_service.service.import_batch import BATCH_SIZE, ImportBatch, ImportReport, ProblemSink
from user_service.service.profiles import profile_of
from user_service.validation import parse_input

EXPORT_PAGE_SIZE = 2000
# A line holds one user: 50 extra entries of 64 + 1024 characters fill about 60 KiB of JSON, quadruple that at most
# in escapes.
LINE_MAX_BYTES = 256 * 1024

ProgressSink = Callable[[int], None]


class _Discard(Exception):
    """Ends the import's transaction without keeping it (a dry run, or a refused line without skip_invalid)."""


# -- export -------------------------------------------------------------------------------------------------------


def export_lines(ctx: Context, *, namespace: str | None = None, include_password_hashes: bool = False) -> Iterator[str]:
    """Every user (of one namespace, or all) as one line of JSON (without its newline), in (namespace, created_at,
    id) order; read a page at a time (the next one read ahead), so memory does not grow with the number of users.
    `extra` goes out as the JSON text stored, never parsed (the last member of each object)."""
    params: dict[str, Any] = {"limit": EXPORT_PAGE_SIZE}
    if namespace is not None:
        key = accounts.normalized_name(namespace, "x")
        if key is None:
            raise InvalidInput("namespace must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")
        params["namespace"] = key[0]
    # Each page is one statement (its own consistent snapshot). The next page is read on a thread of its own while
    # this one is written out: the database works on it (PostgreSQL's server, SQLite's C code) meanwhile.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-reader") as reader:
        page: Future[Sequence[Mapping[Any, Any]]] | None
        page = reader.submit(ctx.db.read_all, tsql.EXPORT_PAGES[(namespace is not None, False)], dict(params))
        while page is not None:
            rows = page.result()
            page = None
            if len(rows) == EXPORT_PAGE_SIZE:
                last = rows[-1]
                params.update(after_namespace=last["namespace"], after_created=last["created_at"], after_id=last["id"])
                page = reader.submit(ctx.db.read_all, tsql.EXPORT_PAGES[(namespace is not None, True)], dict(params))
            for row in rows:
                extra = row["extra_json"] if row["extra_json"] is not None else "null"
                record = orjson.dumps(_exported(ctx, row, include_password_hashes))
                yield f'{record[:-1].decode()},"extra":{extra}}}'


def export_users(
    ctx: Context, *, namespace: str | None = None, include_password_hashes: bool = False
) -> Iterator[dict[str, Any]]:
    """Every user as a record, as `export_lines` writes it."""
    for line in export_lines(ctx, namespace=namespace, include_password_hashes=include_password_hashes):
        yield json.loads(line)


def _exported(ctx: Context, row: Mapping[Any, Any], include_password_hashes: bool) -> dict[str, Any]:
    """The record of one user, as orjson writes it: the id as its usual string, the times in ISO 8601 with their
    UTC offset (as `datetime.isoformat`), the text unescaped but for what JSON requires."""
    record = {name: row[name] for name in tsql.EXPORT_FIELDS}
    if row["avatar_key"]:
        # An uploaded image stays here; its public address travels when there is one.
        base = ctx.settings.public_base_url
        record["avatar_url"] = f"{base}/uploads/{row['avatar_key']}" if base else None
    if include_password_hashes:
        record["password_hash"] = row["password_hash"]
    return record


# -- one imported user --------------------------------------------------------------------------------------------


def stored_row(ctx: Context, user: ImportedUser, now: datetime) -> dict[str, Any]:
    """The users row of a validated imported user: its hash kept, or its plain password checked against the policy
    and hashed at BCRYPT_ROUNDS."""
    if user.password is not None:
        accounts.check_policy(ctx, user.password, user)
        password_hash = ctx.passwords.hash(user.password)
    else:
        assert user.password_hash is not None  # the model requires one of the two
        password_hash = user.password_hash
    return {
        "id": user.id or uuid.uuid4(),
        "namespace": user.namespace,
        "username": user.username,
        "password_hash": password_hash,
        "email": user.email,
        "full_name": user.full_name,
        "avatar_url": user.avatar_url,
        "avatar_key": None,
        "extra": user.extra or {},
        "is_active": user.is_active,
        "email_verified": user.email_verified and user.email is not None,
        "failed_login_count": 0,
        "locked_until": None,
        "created_at": user.created_at or now,
        "updated_at": user.updated_at or now,
        "last_login_at": None,
    }


def create_user(ctx: Context, data: ImportedUser) -> Profile:
    """Store one user brought from another system (operators): its bcrypt hash kept, its id and times as given.
    UsernameTaken, EmailTaken or UserIdTaken when one of them is already used."""
    if data.password is not None:
        accounts.check_policy(ctx, data.password, data)
    _raise_if_taken(ctx, data)
    row = stored_row(ctx, data, ctx.clock())
    try:
        with ctx.db.write() as tx:
            tx.execute(sql.INSERT_USER, row)
    except UniqueViolation:
        _raise_if_taken(ctx, data)
        raise UsernameTaken() from None
    security_event("user_imported", namespace=data.namespace, username=data.username, user_id=row["id"], users=1)
    return profile_of(ctx, Account.from_row(row))


def _raise_if_taken(ctx: Context, data: ImportedUser) -> None:
    if accounts.find(ctx, data.namespace, data.username) is not None:
        raise UsernameTaken()
    if data.email is not None and ctx.db.read_one(sql.EMAIL_OWNER, {"namespace": data.namespace, "email": data.email}):
        raise EmailTaken()
    if data.id is not None and ctx.db.read_one(tsql.USERS_BY_ID, {"ids": [data.id]}):
        raise UserIdTaken()


# -- import -------------------------------------------------------------------------------------------------------


def import_users(
    ctx: Context,
    source: BinaryIO,
    *,
    on_problem: ProblemSink,
    upsert: bool = False,
    dry_run: bool = False,
    skip_invalid: bool = False,
    on_progress: ProgressSink | None = None,
) -> ImportReport:
    """Import JSON Lines of users (the export's format). Each refused line is reported to `on_problem` with its
    number and reason; any refused line keeps the whole file out unless `skip_invalid`. Users that already exist
    (by username in their namespace) are refused unless `upsert`, which replaces them by the line. `dry_run` does
    everything but keep it."""
    report = ImportReport()
    now = ctx.clock()
    try:
        with ctx.db.write() as tx:
            tsql.plan_lookups_with_their_values(tx)
            with ImportBatch(tx, report, on_problem, upsert=upsert) as batch:
                for number, raw, consumed in _lines(source):
                    try:
                        user = _parse(raw)
                        row = stored_row(ctx, user, now)
                    except InvalidInput as exc:
                        report.users += 1
                        batch.refuse(number, exc.message)
                        continue
                    report.users += 1
                    batch.add(number, user, row)
                    if on_progress is not None and report.users % BATCH_SIZE == 0:
                        on_progress(consumed)
                batch.finish()
            if report.users == 0:
                raise InvalidInput("the file holds no users: one JSON object a line is expected")
            if dry_run or (report.refused and not skip_invalid):
                raise _Discard()
    except _Discard:
        return report
    except UniqueViolation:
        raise UsernameTaken(
            "a user with one of the imported names, emails or ids was created during the import; "
            "nothing was imported: run it again"
        ) from None
    report.written = True
    security_event("users_imported", imported=report.imported, updated=report.updated, refused=report.refused)
    return report


def _lines(source: BinaryIO) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, the line or None when it is too long, bytes read so far) for every line that is not blank."""
    number = consumed = 0
    while True:
        line = source.readline(LINE_MAX_BYTES + 1)
        if not line:
            return
        number += 1
        consumed += len(line)
        if len(line) > LINE_MAX_BYTES:
            # Skip the rest of the line without holding it.
            while line and not line.endswith(b"\n"):
                line = source.readline(LINE_MAX_BYTES)
                consumed += len(line)
            yield number, None, consumed
        elif line.strip():
            yield number, line, consumed


def _parse(raw: bytes | None) -> ImportedUser:
    if raw is None:
        raise InvalidInput(f"the line is longer than {LINE_MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"not valid UTF-8 (byte {exc.start + 1} of the line)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise InvalidInput("not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("a line must be a JSON object: one user a line")
    return parse_input(ImportedUser, data)
