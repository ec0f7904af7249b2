"""A batch of imported users, written together within the import's transaction: at once when it collides with no
stored user, else after reading the stored users it collides with, to name each line's collision and write the rest.
Collisions are found against stored rows only: a user colliding with one still waiting sends the batch first, so
memory holds two batches (one being written, one filling) whatever the file's size."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from user_service.schemas import ImportedUser
from user_service.service import statements as sql
from user_service.service import transfer_sql as tsql
from user_service.service.database import Transaction, insert_new_rows, insert_rows

BATCH_SIZE = 1000
# A batch waits at most this long for more users before it is written: lines with plain passwords are hashed one by
# one at BCRYPT_ROUNDS, and a transaction left idle longer than DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS is ended by
# PostgreSQL.
BATCH_MAX_SECONDS = 5.0

ProblemSink = Callable[[int, str], None]


@dataclass
class ImportReport:
    """What an import did: users read, imported, updated, refused; `written` when the transaction committed."""

    users: int = 0
    imported: int = 0
    updated: int = 0
    refused: int = 0
    written: bool = False


Pending = list[tuple[int, ImportedUser, dict[str, Any]]]


@dataclass
class _Written:
    """What writing one batch did: lines refused for a collision, users inserted and updated."""

    refused: list[tuple[int, str]]
    imported: int
    updated: int


class ImportBatch:
    """Users waiting to be written together, and the lines refused whose report waits for the lines before them.

    A batch is written on a thread of its own while the next one is read and checked: the write waits for the
    database (PostgreSQL's server, SQLite's C code, neither holding the GIL), the checks for the CPU. Writes run one
    after another on the one connection of the import's transaction, never at once; each batch is checked against
    the stored users, those of the batches written before it included. Use as a context manager: leaving it waits for
    the write in progress, so the transaction is never ended under it."""

    def __init__(self, tx: Transaction, report: ImportReport, on_problem: ProblemSink, *, upsert: bool) -> None:
        self.tx, self.report, self.on_problem, self.upsert = tx, report, on_problem, upsert
        self.pending: Pending = []
        self.keys: set[tuple[Any, ...]] = set()
        # Refused lines not reported yet: reported in the order of the file once every line before them is judged.
        self.refused: list[tuple[int, str]] = []
        self.started = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="import-writer")
        self._writing: Future[_Written] | None = None

    def __enter__(self) -> ImportBatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        try:
            if kind is None:
                self._wait()
            elif self._writing is not None:
                # Something else ends the import: let the write in progress end, whatever it raised.
                wait([self._writing])
        finally:
            self._writer.shutdown(wait=True)

    def refuse(self, number: int, reason: str) -> None:
        self.refused.append((number, reason))
        if len(self.refused) >= BATCH_SIZE:
            self.flush()

    def add(self, number: int, user: ImportedUser, row: dict[str, Any]) -> None:
        keys = {("id", row["id"]), ("name", row["namespace"], row["username"])}
        if row["email"] is not None:
            keys.add(("email", row["namespace"], row["email"]))
        full = len(self.pending) >= BATCH_SIZE or time.monotonic() - self.started >= BATCH_MAX_SECONDS
        if full or not self.keys.isdisjoint(keys):
            self.flush()
        self.pending.append((number, user, row))
        self.keys |= keys

    def flush(self) -> None:
        """Wait for the batch being written, then hand over the pending one and report the refused lines before it."""
        self._wait()
        batch, self.pending, self.keys = self.pending, [], set()
        self._report(before=batch[0][0] if batch else None)
        if batch:
            self._writing = self._writer.submit(self._write, batch)
        self.started = time.monotonic()

    def finish(self) -> None:
        """Write what is pending, wait for it, and report every refused line."""
        self.flush()
        self._wait()
        self._report(before=None)

    def _wait(self) -> None:
        if self._writing is None:
            return
        writing, self._writing = self._writing, None
        written = writing.result()
        self.refused += written.refused
        self.report.imported += written.imported
        self.report.updated += written.updated

    def _report(self, *, before: int | None) -> None:
        """Report the refused lines numbered below `before` (all of them when None), in the order of the file."""
        ready = sorted(entry for entry in self.refused if before is None or entry[0] < before)
        self.refused = [entry for entry in self.refused if before is not None and entry[0] >= before]
        self.report.refused += len(ready)
        for number, reason in ready:
            self.on_problem(number, reason)

    def _write(self, batch: Pending) -> _Written:
        rows = [row for _, _, row in batch]
        # Most batches collide with nothing stored: written at once, the unique indexes checking them. A batch that
        # does collide (or any batch of an upsert) is looked up first, to report each collision or update the user.
        if not self.upsert and insert_new_rows(self.tx, sql.USERS, rows):
            return _Written([], len(rows), 0)
        lookups = tsql.lookups(self.tx.dialect.name)
        found = self.tx.execute(lookups.by_id, {"ids": [row["id"] for row in rows]}).mappings().all()
        by_id: dict[Any, Mapping[Any, Any]] = {stored["id"]: stored for stored in found}
        by_name = self._stored(lookups.by_name, rows, "username")
        by_email = self._stored(lookups.by_email, rows, "email")
        refused, inserts, updates = [], [], []
        for number, user, row in batch:
            problem, existing = self._collision(user, row, by_id, by_name, by_email)
            if problem is not None:
                refused.append((number, problem))
            elif existing is None:
                inserts.append(row)
            else:
                updates.append(_update_of(user, row, existing))
        insert_rows(self.tx, sql.USERS, inserts)
        if updates:
            self.tx.execute(sql.UPDATE_USER, updates)
        return _Written(refused, len(inserts), len(updates))

    def _stored(self, statement: Any, rows: list[dict[str, Any]], field: str) -> dict[Any, Mapping[Any, Any]]:
        """The stored users holding the rows' values of `field`, by (namespace, value)."""
        wanted: dict[str, list[Any]] = {}
        for row in rows:
            if row[field] is not None:
                wanted.setdefault(row["namespace"], []).append(row[field])
        found: dict[Any, Mapping[Any, Any]] = {}
        for namespace, values in wanted.items():
            for stored in self.tx.execute(statement, {"namespace": namespace, "values": values}).mappings():
                found[(namespace, stored[field])] = stored
        return found

    def _collision(
        self,
        user: ImportedUser,
        row: dict[str, Any],
        by_id: dict[Any, Mapping[Any, Any]],
        by_name: dict[Any, Mapping[Any, Any]],
        by_email: dict[Any, Mapping[Any, Any]],
    ) -> tuple[str | None, Mapping[Any, Any] | None]:
        """(why the line is refused, or None; the stored user it updates, or None for a new one)."""
        namespace, username = row["namespace"], row["username"]
        existing = by_name.get((namespace, username))
        if existing is not None and not self.upsert:
            return f"user {namespace}/{username} already exists (an earlier line or a stored user)", None
        if existing is not None and user.id is not None and user.id != existing["id"]:
            return f"id {user.id} differs from the id of the existing user {namespace}/{username}", None
        owner = by_id.get(row["id"])
        if existing is None and owner is not None:
            return f"id {row['id']} is already the id of {owner['namespace']}/{owner['username']}", None
        holder = by_email.get((namespace, row["email"]))
        if holder is not None and (existing is None or holder["id"] != existing["id"]):
            return f"email {row['email']} is already used by {namespace}/{holder['username']}", None
        return None, existing


def _update_of(user: ImportedUser, row: dict[str, Any], existing: Mapping[Any, Any]) -> dict[str, Any]:
    """The line replaces the stored user's profile, hash and state; its id stays, and its creation time unless the
    line gives one."""
    return {
        "user_key": existing["id"],
        "password_hash": row["password_hash"],
        "email": row["email"],
        "full_name": row["full_name"],
        "avatar_url": row["avatar_url"],
        "extra": row["extra"],
        "is_active": row["is_active"],
        "created_at": user.created_at or existing["created_at"],
        "updated_at": row["updated_at"],
    }
