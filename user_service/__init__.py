"""user-service: username/password accounts, JWT access tokens and rotating refresh tokens, as a service or a
library. The public API is what `__all__` lists; imports are lazy so that `import user_service` (and the CLI's
`--help`) stays cheap and reads nothing from the environment or the disk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "1.0.0"

__all__ = [
    "Profile",
    "Settings",
    "TokenPair",
    "UserService",
    "UserServiceError",
    "__version__",
    "create_app",
    "lifespan",
    "metrics_app",
    "metrics_text",
    "require_user",
]

if TYPE_CHECKING:
    from user_service.api.app import create_app, lifespan
    from user_service.api.host import metrics_app, metrics_text, require_user
    from user_service.config import Settings
    from user_service.errors import UserServiceError
    from user_service.schemas import Profile, TokenPair
    from user_service.service import UserService

_WHERE = {
    "create_app": "user_service.api.app",
    "lifespan": "user_service.api.app",
    "require_user": "user_service.api.host",
    "metrics_app": "user_service.api.host",
    "metrics_text": "user_service.api.host",
    "Settings": "user_service.config",
    "UserServiceError": "user_service.errors",
    "Profile": "user_service.schemas",
    "TokenPair": "user_service.schemas",
    "UserService": "user_service.service",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'user_service' has no attribute {name!r}")
