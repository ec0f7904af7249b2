"""Where uploaded avatars live, behind a small interface: files in a local folder, or objects in an S3-compatible
bucket. Another backend (GCS, Azure Blob) is one more class with the five methods of `AvatarStorage`.

Keys are generated here (32 random hex digits and the extension) and never reused, so what is stored under a key
never changes: it is served with a year-long immutable Cache-Control.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from user_service.errors import ConfigurationError, StorageUnavailable

if TYPE_CHECKING:
    from user_service.config import Settings

COPY_CHUNK_BYTES = 64 * 1024
KEY_PATTERN = re.compile(r"[0-9a-f]{32}\.(jpg|png|webp)")
MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
CACHE_CONTROL = "public, max-age=31536000, immutable"
# An S3 call that hangs holds a worker thread: connecting and each read are bounded, with one retry.
S3_CONNECT_TIMEOUT_SECONDS = 3.0
S3_READ_TIMEOUT_SECONDS = 10.0
S3_MAX_ATTEMPTS = 2

log = logging.getLogger("user_service.storage")


def is_valid_key(key: str) -> bool:
    """Keys are generated here; anything else (a path, `..`, another extension) is never a key."""
    return KEY_PATTERN.fullmatch(key) is not None


def new_key(extension: str) -> str:
    key = f"{secrets.token_hex(16)}.{extension}"
    if not is_valid_key(key):
        raise ValueError(f"unsupported extension: {extension}")
    return key


class AvatarStorage(Protocol):
    """Stores avatars under random keys. Every method blocks (disk or network): call them off the event loop."""

    def save(self, source: BinaryIO, extension: str) -> str:
        """Store what `source` holds from where it stands (read it in chunks) under a new random key; the key.
        Either the whole object is stored or nothing is; StorageUnavailable when the storage cannot be reached."""

    def delete(self, key: str) -> None:
        """Remove the object for the key; a missing object is not an error."""

    def path(self, key: str) -> Path | None:
        """The local file behind the key, or None when there is none (or the storage is not local)."""

    def public_url(self, key: str) -> str | None:
        """The URL clients read the object from, or None when this app serves it itself at `/uploads/{key}`."""

    def reachable(self) -> bool:
        """Whether the storage can be reached now (one cheap probe)."""


class LocalAvatarStorage:
    """Files in one folder, named by random keys; the client's filename is never used."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, source: BinaryIO, extension: str) -> str:
        key = new_key(extension)
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

    def public_url(self, key: str) -> str | None:
        return None

    def reachable(self) -> bool:
        # The folder is created on the first upload: until then its nearest existing parent must be writable.
        folder = self.root.absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return os.access(folder, os.W_OK)


class S3AvatarStorage:
    """Objects in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), named `prefix + key`, written with the
    image's Content-Type and an immutable Cache-Control. Credentials come from boto3's standard chain."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        prefix: str = "",
        public_base_url: str | None = None,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigurationError(
                "AVATAR_STORAGE=s3 needs boto3: install user-service[s3] (pip install 'user-service[s3]')"
            ) from None
        self.bucket = bucket
        self.prefix = prefix
        config = Config(
            connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
            read_timeout=S3_READ_TIMEOUT_SECONDS,
            retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
            # No extra checksum pass over each body (boto3's default is to add a CRC32): TLS and the service's own
            # checks cover transport, and every pass over a 2 MiB body costs memory and CPU in the request thread.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # One client for the app: boto3 clients are thread-safe, sessions are not.
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )
        self.public_base_url = (public_base_url or _bucket_origin(bucket, endpoint_url, region)).rstrip("/")

    def save(self, source: BinaryIO, extension: str) -> str:
        key = new_key(extension)
        # One PUT with a known length: S3 stores the whole object or nothing.
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=source,
            ContentType=MEDIA_TYPES[extension],
            CacheControl=CACHE_CONTROL,
        )
        return key

    def delete(self, key: str) -> None:
        if is_valid_key(key):
            self._call("delete_object", Bucket=self.bucket, Key=self.prefix + key)

    def path(self, key: str) -> Path | None:
        return None

    def public_url(self, key: str) -> str | None:
        return f"{self.public_base_url}/{self.prefix}{key}"

    def reachable(self) -> bool:
        try:
            self._call("head_bucket", Bucket=self.bucket)
        except StorageUnavailable:
            return False
        return True

    def _call(self, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**params)
        except (BotoCoreError, ClientError) as exc:
            # The message names the operation and the error's kind, never the credentials.
            log.warning("S3 %s failed: %s", operation, type(exc).__name__)
            raise StorageUnavailable() from None


class CachedReachability:
    """`storage.reachable()`, asked at most once per `ttl_seconds`: health probes arrive every few seconds from
    every load balancer, and each must not become a request to the storage. While one probe runs, other callers get
    the last answer instead of waiting."""

    def __init__(
        self, storage: AvatarStorage, *, ttl_seconds: float = 10.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.storage = storage
        self.ttl_seconds = ttl_seconds
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._answer: bool | None = None
        self._checked_at = 0.0

    def __call__(self) -> bool:
        fresh = self._answer is not None and self.monotonic() - self._checked_at < self.ttl_seconds
        if fresh or not self._lock.acquire(blocking=self._answer is None):
            return bool(self._answer)
        try:
            self._answer = self.storage.reachable()
            self._checked_at = self.monotonic()
            return self._answer
        finally:
            self._lock.release()


def _bucket_origin(bucket: str, endpoint_url: str | None, region: str | None) -> str:
    """Where a public bucket's objects are read when AVATAR_PUBLIC_BASE_URL is unset: path-style on a custom
    endpoint, AWS's virtual-hosted style otherwise."""
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{bucket}"
    return f"https://{bucket}.s3.{region}.amazonaws.com" if region else f"https://{bucket}.s3.amazonaws.com"


def storage_from_settings(settings: Settings) -> AvatarStorage:
    """The storage AVATAR_STORAGE selects; ConfigurationError when S3 is chosen without boto3 or a bucket."""
    if settings.avatar_storage == "local":
        return LocalAvatarStorage(settings.upload_dir)
    if settings.s3_bucket is None:
        raise ConfigurationError("AVATAR_STORAGE=s3 needs S3_BUCKET")
    return S3AvatarStorage(
        bucket=settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        prefix=settings.s3_key_prefix,
        public_base_url=settings.avatar_public_base_url,
    )
