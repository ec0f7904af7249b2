"""A batch of imported users: the stored users it collides with are read, then the rest is written together, within
the import's transaction. Collisions are found against stored rows only: a user colliding with one still waiting
sends the batch first, so memory holds one batch whatever the file's size."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from user_service.schemas import ImportedUser
from user_service.service import statements as sql
from user_service.service import transfer_sql as tsql
from user_service.service.database import Transaction, insert_rows

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


class ImportBatch:
    """Users waiting to be written together, and the lines refused since the last batch was written."""

    def __init__(self, tx: Transaction, report: ImportReport, on_problem: ProblemSink, *, upsert: bool) -> None:
        self.tx, self.report, self.on_problem, self.upsert = tx, report, on_problem, upsert
        self.pending: list[tuple[int, ImportedUser, dict[str, Any]]] = []
        self.keys: set[tuple[Any, ...]] = set()
        # Lines refused since the last flush, reported with the batch's own refusals in the order of the file.
        self.refused: list[tuple[int, str]] = []
        self.started = time.monotonic()

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
        self._write()
        self.started = time.monotonic()
        self.report.refused += len(self.refused)
        for number, reason in sorted(self.refused):
            self.on_problem(number, reason)
        self.refused.clear()

    def _write(self) -> None:
        if not self.pending:
            return
        rows = [row for _, _, row in self.pending]
        found = self.tx.execute(tsql.USERS_BY_ID, {"ids": [row["id"] for row in rows]}).mappings().all()
        by_id: dict[Any, Mapping[Any, Any]] = {stored["id"]: stored for stored in found}
        by_name = self._stored(tsql.USERS_BY_NAME, rows, "username")
        by_email = self._stored(tsql.USERS_BY_EMAIL, rows, "email")
        inserts, updates = [], []
        for number, user, row in self.pending:
            problem, existing = self._collision(user, row, by_id, by_name, by_email)
            if problem is not None:
                self.refused.append((number, problem))
            elif existing is None:
                inserts.append(row)
            else:
                updates.append(_update_of(user, row, existing))
        if inserts:
            insert_rows(self.tx, sql.USERS, inserts)
        if updates:
            self.tx.execute(sql.UPDATE_USER, updates)
        self.report.imported += len(inserts)
        self.report.updated += len(updates)
        self.pending.clear()
        self.keys.clear()

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
