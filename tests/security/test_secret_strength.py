"""The JWT secret must hold real randomness: long but predictable secrets (runs, repeats) are refused, and what
`user-service init` generates always passes."""

from __future__ import annotations

import secrets

import pytest
from pydantic import ValidationError

from tests.conftest import TEST_SECRET
from user_service.config import Settings, secret_problem

PREDICTABLE = [
    pytest.param("0123456789012345678901234567890123", id="digits counting up, repeated"),
    pytest.param("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP", id="the alphabet"),
    pytest.param("k3y-" + "abcdefghijklmnopqrstuvwxyz0123456789" * 2, id="a run, repeated"),
    pytest.param("Correct#Horse7Correct#Horse7Correct#Horse7", id="words, repeated"),
    pytest.param("zyxwvutsrqponmlkjihgfedcba9876543210", id="counting down"),
    pytest.param("2468ACEGIKMOQSUWY02468ACEGIKMOQSUWY0", id="even steps, repeated"),
    pytest.param("Xq7-Lm2#Pz9$" + "9" * 30, id="one character held"),
]


@pytest.mark.parametrize("secret", PREDICTABLE)
def test_a_predictable_secret_is_refused(secret: str) -> None:
    problem = secret_problem(secret)

    assert problem is not None
    assert "JWT_SECRET_KEY" in problem
    assert secret[:8] not in problem
    with pytest.raises(ValidationError, match="JWT_SECRET_KEY"):
        Settings(jwt_secret_key=secret, _env_file=None)  # type: ignore[call-arg]


def test_generated_secrets_always_pass() -> None:
    problems = {secret_problem(secrets.token_urlsafe(48)) for _ in range(5000)}

    assert problems == {None}


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(TEST_SECRET, id="the test suite's"),
        pytest.param(secrets.token_hex(32), id="64 hex digits"),
        pytest.param("9c1f6e0b-47a2-4d8e-b3f5-21d7c8a90e64-Rk2", id="a uuid and more"),
    ],
)
def test_random_looking_secrets_of_other_shapes_pass(secret: str) -> None:
    assert secret_problem(secret) is None
