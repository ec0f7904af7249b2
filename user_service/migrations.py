"""Schema migrations, driven in code: the scripts ship inside the wheel (or come from the repository's alembic/
folder in a source checkout), and the connection is handed to Alembic rather than read from a config file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from user_service.errors import ConfigurationError, InvalidInput
from user_service.resources import shipped_path

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"


def script_location() -> Path:
    """The folder holding env.py and versions/: bundled in the wheel, or the repository's own."""
    return shipped_path("alembic", "alembic")


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    # ConfigParser interpolates '%', so a path holding one must be escaped.
    config.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    config.set_main_option("file_template", FILE_TEMPLATE)
    return config


def _script() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    head = _script().get_current_head()
    assert head is not None
    return str(head)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    return str(revision) if revision else None


def history() -> list[str]:
    """Every revision from the first to the head (the history is linear)."""
    return [str(rev.revision) for rev in reversed(list(_script().walk_revisions()))]


def resolve(target: str) -> str:
    """'base', or the full revision id that `target` ('head', an id or a unique prefix of one) names."""
    revisions = history()
    if target == "head":
        return revisions[-1]
    if target == "base" or target in revisions:
        return target
    matches = [rev for rev in revisions if rev.startswith(target)]
    if len(matches) != 1:
        raise InvalidInput(f"unknown revision {target!r}; known: base, head, {', '.join(revisions)}")
    return matches[0]


def is_downgrade(current: str | None, target: str) -> bool:
    """Whether migrating from `current` to the resolved `target` goes down (and so drops what later revisions
    added)."""
    if current is None:
        return False
    revisions = history()
    if current not in revisions:
        return False
    goal = -1 if target == "base" else revisions.index(target)
    return goal < revisions.index(current)


def count_users(engine: Engine) -> int:
    """How many accounts the database holds (0 when it has no users table yet)."""
    from sqlalchemy import inspect

    with engine.connect() as connection:
        if not inspect(connection).has_table("users"):
            return 0
        return int(connection.execute(text("SELECT count(*) FROM users")).scalar_one())


# Any fixed 64-bit number: instances that migrate at once queue on this PostgreSQL advisory lock.
MIGRATION_LOCK_KEY = 0x75736572_73766321


def migrate_to(engine: Engine, target: str = "head") -> tuple[str | None, str | None]:
    """Upgrade or downgrade to `target` ('head', 'base' or a revision id); returns (before, after).

    One transaction: on PostgreSQL it first takes an advisory lock, on SQLite the write lock, so several instances
    starting together migrate one after another (the later ones find the work done).
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    revisions = history()
    target = resolve(target)
    position = {rev: index for index, rev in enumerate(revisions)}
    goal = -1 if target == "base" else position[target]
    config = _config()
    # On SQLite the write lock is taken up front (BEGIN IMMEDIATE, waiting up to the busy timeout), so migrations
    # started together queue there as they do on PostgreSQL's advisory lock; a deferred transaction would fail
    # with "database is locked" when its first write met another's.
    with engine.execution_options(write=True).begin() as connection:
        if connection.dialect.name == "postgresql":
            # The service's session limits are for requests: a migration waits its turn and runs to the end.
            connection.execute(text("SET LOCAL lock_timeout = 0"))
            connection.execute(text("SET LOCAL statement_timeout = 0"))
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        found = MigrationContext.configure(connection).get_current_revision()
        before = str(found) if found else None
        if before is not None and before not in position:
            raise ConfigurationError(
                f"the database is at revision {before}, which this version of user-service does not know"
            )
        now_at = position[before] if before else -1
        config.attributes["connection"] = connection
        if goal > now_at:
            command.upgrade(config, target)
        elif goal < now_at:
            command.downgrade(config, target)
    return before, current_revision(engine)


# The two assignments every script of versions/ starts with (script.py.mako): `revision: str = "..."` and
# `down_revision: ... = "..."` (None for the first).
_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=\s*(?:\"(\w+)\"|'(\w+)'|None)", re.MULTILINE)


def shipped_head() -> str:
    """The head revision, read from the scripts' own assignments: the one revision no other one comes after. The
    same answer as `head_revision()` without importing Alembic, which costs every command about half a second."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (script_location() / "versions").glob("*.py"):
        for name, double, single in _REVISION_LINE.findall(script.read_text(encoding="utf-8")):
            (revisions if name == "revision" else parents).add(double or single)
    parents.discard("")
    heads = revisions - parents
    if len(heads) != 1:
        raise ConfigurationError(f"the migration scripts have {len(heads)} heads, not one")
    return str(heads.pop())


def stored_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when it has never been migrated), read without Alembic."""
    from sqlalchemy import inspect

    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(found[0]) if len(found) == 1 else None


def is_at_head(engine: Engine) -> bool:
    return stored_revision(engine) == shipped_head()
