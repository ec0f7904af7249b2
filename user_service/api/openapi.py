"""What the OpenAPI schema says beyond FastAPI's defaults: stable operation ids for generated clients."""

from __future__ import annotations

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


def operation_id(route: APIRoute) -> str:
    """`<tag>_<action>` (`auth_login`, `users_get_me`): stable and readable, never the path-and-method default."""
    area = str(route.tags[0]) if route.tags else "service"
    return f"{area}_{_OPERATION_NAMES.get(route.name, route.name)}"


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
