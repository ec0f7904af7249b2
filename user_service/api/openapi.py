"""What the OpenAPI schema says beyond FastAPI's defaults: stable operation ids for generated clients, where the
bearer token comes from (through the path the app is mounted at), and the refresh token's place in cookie mode."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

# Route functions whose names read badly as a client method; the rest are used as they are.
_OPERATION_NAMES = {
    "read_me": "get_me",
    "patch_me": "update_me",
    "read_upload": "get_upload",
    "health": "check",
    "enrol_totp": "mfa_totp_enrol",
    "confirm_totp": "mfa_totp_confirm",
    "remove_totp": "mfa_totp_remove",
}
BEARER_SCHEME = "HTTPBearer"
# The models that carry a refresh token, in a body or an answer.
_REFRESH_TOKEN_MODELS = ("TokenPair", "RefreshRequest", "LogoutRequest")
_IN_COOKIE_MODE = (
    "In cookie mode the refresh token travels in the HttpOnly `refresh_token` cookie instead: absent from token "
    "answers, and taken from the cookie when a refresh or logout body has none."
)


def operation_id(route: APIRoute) -> str:
    """`<tag>_<action>` (`auth_login`, `users_get_me`): stable and readable, never the path-and-method default."""
    area = str(route.tags[0]) if route.tags else "service"
    return f"{area}_{_OPERATION_NAMES.get(route.name, route.name)}"


def bearer_description(root_path: str = "") -> str:
    """Where the bearer scheme's access token comes from, with the path the app answers under (its mount path)."""
    prefix = root_path.rstrip("/")
    return f"Access token from POST {prefix}/auth/login; refresh at POST {prefix}/auth/refresh."


def mark_refresh_token_optional(schema: dict[str, Any]) -> None:
    """Cookie mode: `refresh_token` is optional in the token pair and in the refresh and logout bodies. Changes
    `schema` in place, and doing it again changes nothing."""
    components = schema.get("components", {}).get("schemas", {})
    for name in _REFRESH_TOKEN_MODELS:
        model = components.get(name)
        if model is None:
            continue
        required = [field for field in model.get("required", []) if field != "refresh_token"]
        if required:
            model["required"] = required
        else:
            model.pop("required", None)
        model["properties"]["refresh_token"]["description"] = _IN_COOKIE_MODE


def served_under(schema: dict[str, Any], root_path: str) -> dict[str, Any]:
    """The schema as served under `root_path` (the mount path, or empty): requests go to that path (the first
    server), and the bearer scheme names the login and refresh endpoints there. `schema` itself is not changed."""
    prefix = root_path.rstrip("/")
    if not prefix:
        return schema
    components = schema["components"]
    schemes = components["securitySchemes"]
    served = {
        **schema,
        "servers": [{"url": prefix}, *(server for server in schema.get("servers", []) if server["url"] != prefix)],
        "components": {
            **components,
            "securitySchemes": {
                **schemes,
                BEARER_SCHEME: {**schemes[BEARER_SCHEME], "description": bearer_description(prefix)},
            },
        },
    }
    return served


# The success response of an endpoint that hands out tokens: never cached (RFC 6749 5.1).
NO_STORE_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "headers": {
            "Cache-Control": {
                "description": "`no-store`: token responses are never cached.",
                "schema": {"type": "string"},
            }
        }
    }
}
