"""The directory of accounts through the core, as the operator CLI and app back ends use it: pages in a stable
order, prefix search, filters, one account's state, namespaces, and ending a user's sessions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import PASSWORD, FakeClock, registration
from tests.helpers import query_plan
from user_service.errors import InvalidCredentials, InvalidInput, InvalidToken, UserNotFound
from user_service.service import UserService, directory
from user_service.service import statements as sql


def add(service: UserService, clock: FakeClock, *names: str, namespace: str = "app-x") -> None:
    for name in names:
        clock.advance(1)
        email = f"{name}@example.com"
        service.register(registration(namespace=namespace, username=name, password=PASSWORD, email=email))


def test_pages_cover_every_user_once_in_order_of_creation(service: UserService, clock: FakeClock) -> None:
    names = [f"user{index:02d}" for index in range(7)]
    add(service, clock, *names)
    add(service, clock, "stranger", namespace="other")

    seen, after, pages = [], None, 0
    while pages < 10:
        page = service.list_users("app-x", limit=3, after=after)
        seen += [item.username for item in page.items]
        pages += 1
        if page.next is None:
            break
        after = page.next

    assert seen == names
    assert pages == 3


def test_users_created_in_the_same_instant_are_paged_by_id(service: UserService) -> None:
    for name in ("a1", "b2", "c3", "d4"):
        service.register(registration(namespace="app-x", username=name, password=PASSWORD))

    first = service.list_users("app-x", limit=2)
    second = service.list_users("app-x", limit=2, after=first.next)

    ids = [item.id for item in first.items + second.items]
    assert sorted(ids) == ids
    assert len(set(ids)) == 4
    assert second.next is None


def test_search_matches_a_username_or_email_prefix_whatever_its_case(service: UserService, clock: FakeClock) -> None:
    add(service, clock, "alice", "alina", "bob", "a_b")
    clock.advance(1)
    service.register(registration(namespace="app-x", username="zed", password=PASSWORD, email="ALfred@example.com"))

    found = service.list_users("app-x", search="AL")
    literal = service.list_users("app-x", search="a_")

    assert [item.username for item in found.items] == ["alice", "alina", "zed"]
    assert [item.username for item in literal.items] == ["a_b"]


def explain(service: UserService, search: str, params: dict[str, Any]) -> str:
    """The database's plan for the prebuilt page statement of this kind of search, with these parameters."""
    statement = sql.user_page(service.engine.dialect.name, search, active=False, after=False)
    query = statement.params(params).compile(dialect=service.engine.dialect, compile_kwargs={"literal_binds": True})
    return query_plan(service.engine, str(query))


def insert_users(service: UserService, clock: FakeClock, names: list[str]) -> None:
    """Users straight into the table (thousands of registrations would cost seconds), one millisecond apart."""
    start = clock.now
    with service.engine.begin() as connection:
        connection.execute(
            sql.USERS.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "namespace": "app-x",
                    "username": name,
                    "email": f"{name}@example.com",
                    "password_hash": "x" * 60,
                    "extra": {},
                    "created_at": start + timedelta(milliseconds=index),
                    "updated_at": start,
                }
                for index, name in enumerate(names)
            ],
        )
    clock.advance(len(names) / 1000 + 1)


def test_a_prefix_is_sorted_out_of_the_search_indexes(service: UserService, clock: FakeClock) -> None:
    """On a million users a search must not read the namespace through: the matches of a prefix are a range of
    the (namespace, username|email, created_at, id, is_active) indexes, put in order of creation from the index
    alone, on either database."""
    add(service, clock, "alice", "bob")
    insert_users(service, clock, [f"user{index:04d}" for index in range(500)])
    if service.engine.dialect.name == "postgresql":
        with service.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE users")  # what autovacuum does on a real table
    params = {"namespace": "app-x", "limit": 51, **directory._prefix_params("Al")}

    plan = explain(service, "sorted", params)

    assert "ix_users_search_username" in plan, plan
    assert "ix_users_search_email" in plan, plan
    assert "ix_users_namespace_created_at_id" not in plan, plan
    if service.engine.dialect.name == "sqlite":
        assert plan.count("COVERING INDEX ix_users_search_") == 2, plan


def test_a_prefix_many_users_share_walks_the_namespace_in_order(service: UserService, clock: FakeClock) -> None:
    names = [f"user{index:04d}" for index in range(sql.SPARSE_PREFIX_MATCHES + 5)]
    insert_users(service, clock, names)
    add(service, clock, "zed")

    dense = service.list_users("app-x", search="USER", limit=3)
    sparse = service.list_users("app-x", search="user0001", limit=500)

    assert [item.username for item in dense.items] == names[:3]
    assert [item.username for item in sparse.items] == [name for name in names if name.startswith("user0001")]
    plan = explain(service, "walked", {"namespace": "app-x", "limit": 4, **directory._prefix_params("u")})
    assert "ix_users_namespace_created_at_id" in plan, plan


def test_many_matches_created_after_everyone_else_are_all_found_in_order(
    service: UserService, clock: FakeClock
) -> None:
    """A prefix many users share, all created after more users than the walk in order of creation looks at: the
    search sorts them out of the indexes instead, page after page, and finds each once."""
    others = [f"early{index:05d}" for index in range(sql.WALKED_USERS + 10)]
    matching = [f"late{index:05d}" for index in range(sql.SPARSE_PREFIX_MATCHES + 10)]
    insert_users(service, clock, others)
    insert_users(service, clock, matching)

    found, cursor = [], None
    for _ in range(10):
        page = service.list_users("app-x", search="LATE", limit=500, after=cursor)
        found.extend(item.username for item in page.items)
        cursor = page.next
        if cursor is None:
            break

    assert found == matching
    assert service.list_users("app-x", search="late0000", limit=20).items[0].username == "late00000"


def test_filters_by_active_state(service: UserService, clock: FakeClock) -> None:
    add(service, clock, "alice", "bob")
    service.set_active(namespace="app-x", username="bob", active=False)

    assert [item.username for item in service.list_users("app-x", active=False).items] == ["bob"]
    assert [item.username for item in service.list_users("app-x", active=True).items] == ["alice"]


@pytest.mark.parametrize("cursor", ["nonsense", "W10", "WyJub3QgYSBkYXRlIiwgIngiXQ"], ids=["junk", "empty", "bad"])
def test_a_cursor_this_service_did_not_make_is_refused(service: UserService, cursor: str) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        service.list_users("app-x", after=cursor)


@pytest.mark.parametrize("limit", [0, 501])
def test_page_size_is_bounded(service: UserService, limit: int) -> None:
    with pytest.raises(InvalidInput, match="limit must be 1 to 500"):
        service.list_users("app-x", limit=limit)


def test_one_accounts_state(service: UserService, clock: FakeClock) -> None:
    add(service, clock, "alice")
    with pytest.raises(InvalidCredentials):
        service.login(namespace="app-x", username="alice", password="not the password")
    service.login(namespace="app-x", username="alice", password=PASSWORD)
    service.login(namespace="app-x", username="alice", password=PASSWORD)

    detail = service.user_detail(namespace="app-x", username="Alice")

    assert (detail.username, detail.is_active, detail.live_sessions) == ("alice", True, 2)
    assert detail.failed_login_count == 0
    assert detail.last_login_at == clock.now
    assert detail.locked_until is None


def test_namespaces_are_counted(service: UserService, clock: FakeClock) -> None:
    add(service, clock, "alice", "bob")
    add(service, clock, "carol", namespace="billing")

    assert [(n.namespace, n.users) for n in service.namespaces()] == [("app-x", 2), ("billing", 1)]


def test_revoking_sessions_ends_them_at_once(service: UserService, clock: FakeClock) -> None:
    add(service, clock, "alice")
    pair = service.login(namespace="app-x", username="alice", password=PASSWORD)

    assert service.revoke_sessions(namespace="app-x", username="alice") == 1

    with pytest.raises(InvalidToken):
        service.authenticate(pair.access_token)
    assert service.user_detail(namespace="app-x", username="alice").live_sessions == 0
    with pytest.raises(UserNotFound):
        service.revoke_sessions(namespace="app-x", username="nobody")
