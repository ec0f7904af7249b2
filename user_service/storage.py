"""Where uploaded avatars live, behind a small interface (a local folder now; object storage can follow)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

COPY_CHUNK_BYTES = 64 * 1024
KEY_PATTERN = re.compile(r"[0-9a-f]{32}\.(jpg|png|webp)")


def is_valid_key(key: str) -> bool:
    """Keys are generated here; anything else (a path, `..`, another extension) is never a key."""
    return KEY_PATTERN.fullmatch(key) is not None


class AvatarStorage(Protocol):
    def save(self, source: BinaryIO, extension: str) -> str:
        """Store what `source` holds from where it stands (read it in chunks) under a new random key; the key."""

    def delete(self, key: str) -> None:
        """Remove the file for the key; a missing file is not an error."""

    def path(self, key: str) -> Path | None:
        """The local file behind the key, or None when there is none."""


class LocalAvatarStorage:
    """Files in one folder, named by random keys; the client's filename is never used."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, source: BinaryIO, extension: str) -> str:
        key = f"{secrets.token_hex(16)}.{extension}"
        if not is_valid_key(key):
            raise ValueError(f"unsupported extension: {extension}")
        self.root.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so a reader never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(source, handle, COPY_CHUNK_BYTES)
            os.replace(tmp, self.root / key)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def delete(self, key: str) -> None:
        if is_valid_key(key):
            (self.root / key).unlink(missing_ok=True)

    def path(self, key: str) -> Path | None:
        if not is_valid_key(key):
            return None
        candidate = self.root / key
        return candidate if candidate.is_file() else None
