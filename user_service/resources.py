"""Files that ship with the package: bundled into the wheel, or read from the repository in a source checkout."""

from __future__ import annotations

from pathlib import Path

from user_service.errors import ConfigurationError

_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_path(bundled_name: str, repo_name: str) -> Path:
    """`_bundled/<bundled_name>` inside an installed wheel, else `<repo_name>` at the repository root."""
    for candidate in (_PACKAGE_DIR / "_bundled" / bundled_name, _PACKAGE_DIR.parent / repo_name):
        if candidate.exists():
            return candidate
    raise ConfigurationError(f"{repo_name} is missing from this installation")
