"""Where sealed media objects live: the ``MediaStore`` contract and its two implementations.

Every call names the tenant: an object is addressed by ``(tenant_id, object_id)`` and a store never
lists or reads across tenants. Names are opaque ids (no phone numbers, no file names):
``<root>/<tenant_id>/<object_id>`` in a folder, ``<prefix>/<tenant_id>/<object_id>`` in a bucket.
The stores keep bytes only; sealing is ``wapipe.media.sealed``'s job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from wapipe.config import Settings

__all__ = ["LocalMediaStore", "MediaStore", "S3MediaStore", "StoredObject", "check_id", "open_store"]

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OBJECT = re.compile(r"^[a-f0-9]{32}$")


def check_id(tenant_id: str, object_id: str | None = None) -> None:
    """Refuse ids that could escape the tenant's folder or prefix (``..``, ``/``) with a clear error."""
    if not isinstance(tenant_id, str) or not _TENANT.match(tenant_id) or tenant_id in (".", ".."):
        raise ValueError(f"bad tenant id {tenant_id!r}")
    if object_id is not None and (not isinstance(object_id, str) or not _OBJECT.match(object_id)):
        raise ValueError(f"bad media object id {object_id!r} (32 hex digits)")


@dataclass(frozen=True, slots=True)
class StoredObject:
    object_id: str
    size: int
    stored_at: dt.datetime  # aware UTC


class MediaStore(Protocol):
    async def put(self, tenant_id: str, object_id: str, blob: bytes) -> None: ...
    async def get(self, tenant_id: str, object_id: str) -> bytes: ...  # KeyError when absent
    async def head(self, tenant_id: str, object_id: str, size: int) -> bytes: ...  # the first bytes
    async def delete(self, tenant_id: str, object_id: str) -> bool: ...
    async def list(self, tenant_id: str) -> list[StoredObject]: ...
    async def tenants(self) -> list[str]: ...
    def describe(self) -> str: ...


class LocalMediaStore:
    """A folder: one file per object, written atomically (temp file + rename), mode 0600."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"folder {self.root}"

    def _path(self, tenant_id: str, object_id: str) -> Path:
        check_id(tenant_id, object_id)
        return self.root / tenant_id / object_id

    def _put(self, tenant_id: str, object_id: str, blob: bytes) -> None:
        path = self._path(tenant_id, object_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def put(self, tenant_id: str, object_id: str, blob: bytes) -> None:
        await asyncio.to_thread(self._put, tenant_id, object_id, blob)

    def _get(self, tenant_id: str, object_id: str) -> bytes:
        try:
            return self._path(tenant_id, object_id).read_bytes()
        except FileNotFoundError:
            raise KeyError(object_id) from None

    async def get(self, tenant_id: str, object_id: str) -> bytes:
        return await asyncio.to_thread(self._get, tenant_id, object_id)

    def _head(self, tenant_id: str, object_id: str, size: int) -> bytes:
        try:
            with self._path(tenant_id, object_id).open("rb") as f:
                return f.read(size)
        except FileNotFoundError:
            raise KeyError(object_id) from None

    async def head(self, tenant_id: str, object_id: str, size: int) -> bytes:
        return await asyncio.to_thread(self._head, tenant_id, object_id, size)

    async def delete(self, tenant_id: str, object_id: str) -> bool:
        path = self._path(tenant_id, object_id)
        try:
            await asyncio.to_thread(path.unlink)
            return True
        except FileNotFoundError:
            return False

    def _list(self, tenant_id: str) -> list[StoredObject]:
        check_id(tenant_id)
        folder = self.root / tenant_id
        out = []
        if folder.is_dir():
            for p in folder.iterdir():
                if _OBJECT.match(p.name):
                    st = p.stat()
                    out.append(StoredObject(p.name, st.st_size, dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)))
        return out

    async def list(self, tenant_id: str) -> list[StoredObject]:
        return await asyncio.to_thread(self._list, tenant_id)

    async def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _TENANT.match(p.name))


class S3MediaStore:
    """An S3-compatible bucket through boto3 (calls run in threads). ``prefix`` may be empty."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None,
                 client: Any = None) -> None:
        if not bucket:
            raise ValueError("an S3 media URL needs a bucket: s3://bucket[/prefix]")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            try:
                import boto3  # optional dependency: pip install 'wapipe[s3]'
            except ImportError as e:  # pragma: no cover - depends on the install
                raise RuntimeError("S3 media storage needs boto3: pip install 'wapipe[s3]'") from e
            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self._s3 = client

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _key(self, tenant_id: str, object_id: str | None = None) -> str:
        check_id(tenant_id, object_id)
        parts = [p for p in (self.prefix, tenant_id, object_id) if p]
        return "/".join(parts) + ("" if object_id else "/")

    async def put(self, tenant_id: str, object_id: str, blob: bytes) -> None:
        await asyncio.to_thread(self._s3.put_object, Bucket=self.bucket, Key=self._key(tenant_id, object_id), Body=blob,
                                ContentType="application/octet-stream")

    def _get(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise KeyError(key) from None

    async def get(self, tenant_id: str, object_id: str) -> bytes:
        return await asyncio.to_thread(self._get, self._key(tenant_id, object_id))

    def _head(self, key: str, size: int) -> bytes:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{max(0, size - 1)}")["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            raise KeyError(key) from None

    async def head(self, tenant_id: str, object_id: str, size: int) -> bytes:
        return await asyncio.to_thread(self._head, self._key(tenant_id, object_id), size)

    def _delete(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError:
            return False
        self._s3.delete_object(Bucket=self.bucket, Key=key)
        return True

    async def delete(self, tenant_id: str, object_id: str) -> bool:
        return await asyncio.to_thread(self._delete, self._key(tenant_id, object_id))

    def _list(self, prefix: str) -> list[StoredObject]:
        out = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(prefix):]
                if _OBJECT.match(name):
                    out.append(StoredObject(name, int(item["Size"]), item["LastModified"].astimezone(dt.timezone.utc)))
        return out

    async def list(self, tenant_id: str) -> list[StoredObject]:
        return await asyncio.to_thread(self._list, self._key(tenant_id))

    def _tenants(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        names = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
            for cp in page.get("CommonPrefixes", []):
                name = cp["Prefix"][len(base):].rstrip("/")
                if _TENANT.match(name):
                    names.append(name)
        return sorted(names)

    async def tenants(self) -> list[str]:
        return await asyncio.to_thread(self._tenants)


def open_store(settings: Settings, url: str | None = None) -> MediaStore:
    """The store ``WAPIPE_MEDIA_URL`` names: ``s3://bucket/prefix``, ``file:///path`` or a path;
    default ``<state_dir>/media``."""
    url = url or settings.media_url
    if not url:
        return LocalMediaStore(settings.state_dir / "media")
    parts = urlsplit(url)
    if parts.scheme == "s3":
        return S3MediaStore(parts.netloc, parts.path, endpoint_url=settings.media_s3_endpoint_url,
                            region=settings.media_s3_region)
    if parts.scheme == "file":
        return LocalMediaStore(Path(parts.path))
    if parts.scheme == "":
        return LocalMediaStore(Path(url))
    raise ValueError(f"media URL {url!r}: use a folder path, file:///path or s3://bucket[/prefix]")
