"""Media in the simulated Cloud API: uploads (``POST /{phone_number_id}/media``), media ids and
their download URLs (``GET /{media_id}`` → a URL that expires and needs the token), inbound media a
test makes the "user" send, and resumable upload sessions (``/{app_id}/uploads``, ``/upload:…``)
that end in a file handle.

Behaviour follows Meta's documentation (docs/meta-api.md, "Media"): size limits per media type,
media ids valid 30 days, download URLs valid 5 minutes and only with a token of the media's WABA,
the SHA-256 in ``GET /{media_id}`` in hex (inbound webhooks carry it base64-encoded).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

from connectors.meta.sandbox.graph_errors import GraphError, unknown_object

# Meta's supported media types (MIME type -> media type) and size limits in bytes.
MIME_KINDS = {
    "audio/aac": "audio", "audio/amr": "audio", "audio/mpeg": "audio", "audio/mp4": "audio", "audio/ogg": "audio",
    "text/plain": "document", "application/pdf": "document", "application/vnd.ms-excel": "document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "document",
    "application/msword": "document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "document",
    "application/vnd.ms-powerpoint": "document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "document",
    "image/jpeg": "image", "image/png": "image", "image/webp": "sticker",
    "video/mp4": "video", "video/3gpp": "video",
}
LIMITS = {"image": 5 * 1024 * 1024, "audio": 16 * 1024 * 1024, "video": 16 * 1024 * 1024,
          "document": 100 * 1024 * 1024, "sticker": 500 * 1024}
MAX_UPLOAD_BYTES = max(LIMITS.values())  # the largest file Meta takes (documents)
# The Resumable Upload API's accepted file types (Meta's "Upload a file" guide).
UPLOAD_TYPES = frozenset({"application/pdf", "image/jpeg", "image/jpg", "image/png", "video/mp4"})


@dataclass(slots=True)
class Media:
    id: str
    waba_id: str
    phone_number_id: str
    mime_type: str
    content: bytes
    created: float  # monotonic
    ttl_s: float

    @property
    def sha256_hex(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def sha256_b64(self) -> str:
        return base64.b64encode(hashlib.sha256(self.content).digest()).decode()


@dataclass(slots=True)
class UploadSession:
    id: str  # "upload:…"
    app_id: str
    file_name: str
    file_length: int
    file_type: str
    data: bytearray = field(default_factory=bytearray)
    handle: str | None = None


class MediaStore:
    """The sandbox's media; lives in the server's memory like the rest of the simulated world."""

    def __init__(self) -> None:
        self.media: dict[str, Media] = {}
        self.sessions: dict[str, UploadSession] = {}
        self.handles: dict[str, bytes] = {}
        self._url_key = secrets.token_bytes(32)
        self._seq = 0

    # --- media ids ----------------------------------------------------------------------------
    def add(self, waba_id: str, phone_number_id: str, mime_type: str, content: bytes, ttl_s: float) -> Media:
        kind = MIME_KINDS.get(mime_type.split(";")[0].strip().lower())
        if kind is None:
            raise GraphError(131053, details=f"Param file must be a file with one of the following types: "
                                             f"{', '.join(sorted(MIME_KINDS))}. Received file of type '{mime_type}'.")
        if not content:
            raise GraphError(131053, details="The uploaded file is empty.")
        if len(content) > LIMITS[kind]:
            raise GraphError(131053, details=f"{kind} file size {len(content)} bytes exceeds the limit of "
                                             f"{LIMITS[kind]} bytes.")
        self._seq += 1
        mid = str(1_000_000_000_000_000 + self._seq * 7919 + secrets.randbelow(7919))
        m = Media(mid, waba_id, phone_number_id, mime_type, bytes(content), time.monotonic(), ttl_s)
        self.media[mid] = m
        return m

    def get(self, media_id: str, may_use) -> Media:
        """The media if it exists, has not expired and the caller's token may use its WABA."""
        m = self.media.get(media_id)
        if m is None or not may_use(m.waba_id):
            raise unknown_object(media_id)
        if time.monotonic() - m.created > m.ttl_s:
            del self.media[media_id]
            raise unknown_object(media_id)
        return m

    def delete(self, media_id: str, may_use) -> None:
        self.get(media_id, may_use)
        del self.media[media_id]

    def info(self, m: Media, base_url: str, url_ttl_s: float) -> dict:
        expires = int(time.time() + url_ttl_s)
        return {"messaging_product": "whatsapp", "url": f"{base_url}/whatsapp_business/attachments/?mid={m.id}"
                f"&ext={expires}&hash={self._sign(m.id, expires)}", "mime_type": m.mime_type,
                "sha256": m.sha256_hex, "file_size": len(m.content), "id": m.id}

    def _sign(self, media_id: str, expires: int) -> str:
        return hmac.new(self._url_key, f"{media_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def download(self, mid: str | None, ext: str | None, sig: str | None, may_use) -> Media:
        """The bytes behind a download URL: signature intact, not expired, token of the WABA."""
        try:
            expires = int(ext or "")
        except ValueError:
            raise GraphError(100, message="(#100) Invalid media URL") from None
        if not mid or not sig or not hmac.compare_digest(self._sign(mid, expires), sig):
            raise GraphError(100, message="(#100) Invalid media URL")
        if time.time() > expires:
            raise GraphError(100, http_status=404, message="(#100) The media URL has expired; ask GET /{media_id} again")
        return self.get(mid, may_use)

    # --- resumable uploads --------------------------------------------------------------------
    def start(self, app_id: str, file_name: str | None, file_length: str | None, file_type: str | None) -> UploadSession:
        for key, v in (("file_length", file_length), ("file_type", file_type)):
            if not v:
                raise GraphError(100, message=f"(#100) The parameter {key} is required")
        try:
            length = int(file_length or "")
        except ValueError:
            raise GraphError(100, message="(#100) Param file_length must be an integer") from None
        if length < 1:
            raise GraphError(100, message="(#100) Param file_length must be a positive integer")
        if length > MAX_UPLOAD_BYTES:  # the session's bytes are held in memory: bounded by Meta's largest file
            raise GraphError(131053, details=f"file_length {length} exceeds the limit of {MAX_UPLOAD_BYTES} bytes.")
        if file_type not in UPLOAD_TYPES:
            raise GraphError(100, message=f"(#100) Param file_type must be one of {{{', '.join(sorted(UPLOAD_TYPES))}}}")
        sid = "upload:" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode().rstrip("=")
        s = UploadSession(sid, app_id, file_name or "file", length, str(file_type))
        self.sessions[sid] = s
        return s

    def session(self, sid: str, app_id: str) -> UploadSession:
        s = self.sessions.get(sid)
        if s is None or s.app_id != app_id:
            raise unknown_object(sid)
        return s

    def chunk(self, s: UploadSession, offset_header: str | None, chunk: bytes) -> dict:
        try:
            offset = int(offset_header if offset_header is not None else "")
        except ValueError:
            raise GraphError(100, message="(#100) The header file_offset is required and must be an integer") from None
        have = len(s.data)
        if offset < 0 or offset > have:
            raise GraphError(100, message="(#100) Invalid file_offset",
                             details=f"file_offset {offset} does not match the {have} bytes received")
        end = offset + len(chunk)
        if end > s.file_length:
            raise GraphError(100, message="(#100) The upload is longer than file_length",
                             details=f"{end} bytes > file_length {s.file_length}")
        if offset < have:  # a repeated chunk (the answer was lost): fine when it is the same bytes
            if end > have or bytes(s.data[offset:end]) != chunk:
                raise GraphError(100, message="(#100) Invalid file_offset",
                                 details=f"file_offset {offset} does not match the {have} bytes received")
        else:
            s.data.extend(chunk)
        if len(s.data) == s.file_length:
            if s.handle is None:
                s.handle = "4::" + base64.b64encode(secrets.token_bytes(30)).decode()
                self.handles[s.handle] = bytes(s.data)
            return {"h": s.handle}
        return {"id": s.id, "file_offset": len(s.data)}
