"""Local secret files: generated once, atomically, mode 0600, under ``<state_dir>/secrets/``.

Several processes may start at the same moment; the first to ``link`` its file wins and the
others read the winner's value, so every process of a deployment agrees on one secret.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from wapipe.privacy.errors import SecretsNotConfigured


def read_b64_secret(path: Path, *, length: int | None = None) -> bytes:
    raw = path.read_bytes().strip()
    try:
        value = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise SecretsNotConfigured(f"{path}: not base64") from exc
    if length is not None and len(value) != length:
        raise SecretsNotConfigured(f"{path}: expected {length} bytes, got {len(value)}")
    return value


def decode_b64(value: str, what: str, *, length: int | None = None) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except ValueError as exc:
        raise SecretsNotConfigured(f"{what}: not base64") from exc
    if length is not None and len(raw) != length:
        raise SecretsNotConfigured(f"{what}: expected {length} bytes (base64), got {len(raw)}")
    return raw


def generated_secret(path: Path, length: int = 32) -> bytes:
    """The secret stored at ``path``; created (random, 0600) when absent."""
    if path.exists():
        return read_b64_secret(path, length=length)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, base64.b64encode(secrets.token_bytes(length)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic; fails if another process created it first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_b64_secret(path, length=length)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600, folder 0700), replacing it
    atomically: the file is never visible with wider permissions, not even while it is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
