"""The async Graph API client for the WhatsApp Cloud API.

One ``GraphClient`` (one pooled ``httpx.AsyncClient`` with keep-alive connections) serves every
tenant: the token is passed per call and only ever travels in the ``Authorization`` header —
it is never logged, never kept on the client, and never part of an error.

Every non-2xx answer becomes a typed error from ``connectors.meta.errors`` (decided by Meta's
``code``); an answer that never came becomes ``Transient`` (the request never left, or the call
is idempotent) or ``UnknownOutcome`` (a POST that may have reached Meta).

Endpoints (``{v}`` is the configured Graph version):

=========================  ==================================================================
send_message / mark_read   ``POST /{v}/{phone_number_id}/messages``
list_templates             ``GET /{v}/{waba_id}/message_templates`` (all pages)
create_template            ``POST /{v}/{waba_id}/message_templates``
delete_template            ``DELETE /{v}/{waba_id}/message_templates?name=…[&hsm_id=…]``
list_phone_numbers         ``GET /{v}/{waba_id}/phone_numbers``
phone_number               ``GET /{v}/{phone_number_id}?fields=…``
register_number            ``POST /{v}/{phone_number_id}/register``
subscribe_app              ``POST /{v}/{waba_id}/subscribed_apps``
unsubscribe_app            ``DELETE /{v}/{waba_id}/subscribed_apps``
exchange_code              ``GET /{v}/oauth/access_token?client_id&client_secret&code``
debug_token                ``GET /{v}/debug_token?input_token=…``
upload_media               ``POST /{v}/{phone_number_id}/media`` (multipart: messaging_product, type, file)
media_info / delete_media  ``GET|DELETE /{v}/{media_id}``
download_media             ``GET <url from media_info>`` (same token; Meta's hosts or the Graph host only)
start_upload               ``POST /{v}/{app_id}/uploads?file_name&file_length&file_type`` (resumable)
upload_offset              ``GET /{v}/upload:{session}`` → where an interrupted upload resumes
upload_chunk / upload_file ``POST /{v}/upload:{session}`` with header ``file_offset`` → handle ``h``
=========================  ==================================================================

Media limits (Meta's "supported media types"): images 5 MB, audio and video 16 MB, documents
100 MB, stickers 500 KB. ``upload_media`` refuses a larger file before sending it
(``MediaTooLarge``). A resumable upload yields a *file handle* for template examples (e.g. a
carousel or header sample), not a media id for sending messages.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from connectors.meta import errors
from connectors.meta.transport import AiohttpTransport
from connectors.meta.messages import OutboundMessage, ReadReceipt
from wapipe.log import get_logger

__all__ = [
    "CallTiming",
    "GraphClient",
    "PhoneNumberInfo",
    "SendAccepted",
    "TemplateCreated",
    "TemplateInfo",
    "TokenExchange",
    "TokenInfo",
    "GranularScope",
    "MediaInfo",
    "MediaTooLarge",
    "UploadSession",
    "MEDIA_LIMITS",
    "PHONE_NUMBER_FIELDS",
]

_log = get_logger(__name__)

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v23.0"

PHONE_NUMBER_FIELDS = (
    "id,display_phone_number,verified_name,status,quality_rating,throughput,"
    "whatsapp_business_manager_messaging_limit"
)


# Bytes per media type (Meta's supported media types). A sticker is 100 KB static, 500 KB animated.
MEDIA_LIMITS = {
    "image": 5 * 1024 * 1024,
    "audio": 16 * 1024 * 1024,
    "video": 16 * 1024 * 1024,
    "document": 100 * 1024 * 1024,
    "sticker": 500 * 1024,
}
# Hosts a media download URL may point at: the token travels with the download, so never to
# anything else (a URL is data from an answer, not a place to send credentials).
_MEDIA_HOST_SUFFIXES = (".fbsbx.com", ".facebook.com", ".whatsapp.net", ".fbcdn.net")


class MediaTooLarge(ValueError):
    """The file exceeds Meta's limit for its media type (refused before any request)."""


# --- response models ------------------------------------------------------------------------
class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class SendAccepted(_Reply):
    """Meta *accepted* the message (not delivered: delivery comes by status webhook).
    ``message_status`` is ``accepted``, ``held_for_quality_assessment`` or ``paused``."""

    wamid: str
    message_status: str = "accepted"
    wa_id: str | None = None
    input: str | None = None


class Throughput(_Reply):
    level: str | None = None


class PhoneNumberInfo(_Reply):
    id: str
    display_phone_number: str | None = None
    verified_name: str | None = None
    status: str | None = None
    quality_rating: str | None = None  # GREEN / YELLOW / RED / UNKNOWN
    throughput: Throughput | None = None
    whatsapp_business_manager_messaging_limit: str | None = None  # TIER_250 … TIER_UNLIMITED
    messaging_limit_tier: str | None = None  # deprecated by Meta; kept when present
    code_verification_status: str | None = None
    name_status: str | None = None
    platform_type: str | None = None

    @property
    def throughput_level(self) -> str | None:
        return self.throughput.level if self.throughput else None

    @property
    def messaging_limit(self) -> str | None:
        """The portfolio's messaging-limit tier, from the current field or the deprecated one."""
        return self.whatsapp_business_manager_messaging_limit or self.messaging_limit_tier


class TemplateInfo(_Reply):
    id: str | None = None
    name: str
    language: str
    status: str | None = None
    category: str | None = None
    components: list[dict[str, Any]] = Field(default_factory=list)
    rejected_reason: str | None = None
    quality_score: dict[str, Any] | None = None
    parameter_format: str | None = None


class MediaInfo(_Reply):
    """``GET /{media_id}``: where to download it (``url`` expires after 5 minutes and needs the
    token), its MIME type, hex SHA-256 and size in bytes."""

    id: str
    url: str
    mime_type: str | None = None
    sha256: str | None = None
    file_size: int | None = None
    messaging_product: str | None = None


class UploadSession(_Reply):
    """A resumable upload session (``upload:…``) and, once complete, the file handle ``h``."""

    id: str
    file_offset: int = 0
    h: str | None = None


class TemplateCreated(_Reply):
    id: str
    status: str | None = None
    category: str | None = None


class TokenExchange(_Reply):
    access_token: str = Field(repr=False)
    token_type: str | None = None
    expires_in: int | None = None


class GranularScope(_Reply):
    scope: str
    target_ids: list[str] = Field(default_factory=list)


class TokenInfo(_Reply):
    """``debug_token``'s ``data``: validity, scopes and the assets each scope covers."""

    app_id: str | None = None
    type: str | None = None
    application: str | None = None
    is_valid: bool = False
    expires_at: int | None = None
    data_access_expires_at: int | None = None
    issued_at: int | None = None
    user_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    granular_scopes: list[GranularScope] = Field(default_factory=list)

    def targets(self, scope: str) -> list[str]:
        """Asset ids granted for ``scope`` (e.g. WABA ids for ``whatsapp_business_management``)."""
        return [t for g in self.granular_scopes if g.scope == scope for t in g.target_ids]

    @property
    def waba_ids(self) -> list[str]:
        ids = self.targets("whatsapp_business_management") + self.targets("whatsapp_business_messaging")
        return list(dict.fromkeys(ids))


# --- latency hook ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallTiming:
    """One Graph call, for an opt-in latency hook. ``endpoint`` is a low-cardinality label
    such as ``POST /{phone_number_id}/messages``; ``outcome`` is ``ok`` or the error class."""

    endpoint: str
    method: str
    status: int | None
    seconds: float
    outcome: str


# --- keeping secrets out of httpx's own request log ----------------------------------------------
_SECRET_PARAMS = re.compile(r"((?:client_secret|code|input_token|access_token|fb_exchange_token)=)[^&\s\"']+")


class _RedactQuery(logging.Filter):
    """httpx logs every request URL at INFO; the code exchange and debug_token carry secrets
    in the query string (Meta's API puts them there). Mask those values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_SECRET_PARAMS.sub(r"\1***", str(a)) if isinstance(a, httpx.URL | str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _SECRET_PARAMS.sub(r"\1***", record.msg)
        return True


def _install_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())


# --- the client ------------------------------------------------------------------------------
class GraphClient:
    """Async Graph API client shared by all tenants. Use as ``async with GraphClient(...) as g``
    or call ``aclose()``.

    ``timeout`` is the default per-call timeout in seconds (each method takes ``timeout=`` too);
    ``connect_timeout`` bounds connection set-up and waiting for a pooled connection.
    ``on_call`` (optional) receives a ``CallTiming`` after every call, success or not.
    ``transport`` replaces the network (``httpx.MockTransport`` in unit tests).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        version: str = DEFAULT_VERSION,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 30.0,
        http2: bool = False,
        on_call: Callable[[CallTiming], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "wapipe-graph-client/0.1",
    ) -> None:
        _install_redaction()
        self.base_url = base_url.rstrip("/")
        self.version = version.strip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.on_call = on_call
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            http2=http2,
            # aiohttp's pool under httpx's API unless a transport is given or HTTP/2 is asked for
            # (see connectors/meta/transport.py for why, and why not the httpx-aiohttp package).
            transport=transport if transport is not None or http2 else AiohttpTransport(
                max_connections=max_connections, keepalive_expiry=keepalive_expiry),
            headers={"User-Agent": user_agent},
            follow_redirects=False,
        )

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> GraphClient:
        """Built from ``Settings`` (meta_graph_url, meta_graph_version, meta_http_timeout,
        meta_max_connections); keyword arguments override those and add the others."""
        options: dict[str, Any] = {"timeout": settings.meta_http_timeout, "max_connections": settings.meta_max_connections}
        options.update(kwargs)
        return cls(settings.meta_graph_url, settings.meta_graph_version, **options)

    def __repr__(self) -> str:
        return f"GraphClient(base_url={self.base_url!r}, version={self.version!r})"

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing ----------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        label: str,
        *,
        token: str | None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = None,
        idempotent: bool | None = None,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
        raw: bool = False,
        auth_scheme: str = "Bearer",
    ) -> Any:
        """One call: returns the decoded JSON of a 2xx answer (its bytes with ``raw``) or raises a
        ``MetaError``. ``idempotent`` (default: GET) decides whether a lost answer is ``Transient``
        or ``UnknownOutcome``. ``url`` replaces ``/{version}/{path}`` (a media download);
        ``data``/``files``/``content`` are a form, multipart or raw body instead of ``json``."""
        headers = {**({"Authorization": f"{auth_scheme} {token}"} if token else {}), **(headers or {})}
        endpoint = f"{method} {label}"
        if idempotent is None:
            idempotent = method == "GET"
        call_timeout: Any
        if timeout is None:
            call_timeout = httpx.USE_CLIENT_DEFAULT
        else:
            call_timeout = httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout), pool=min(timeout, self.connect_timeout))
        started = time.perf_counter()
        status: int | None = None
        outcome = "ok"
        try:
            try:
                response = await self._http.request(
                    method, url or f"/{self.version}/{path.lstrip('/')}", params=params, json=json, data=data,
                    files=files, content=content, headers=headers, timeout=call_timeout
                )
            except httpx.RequestError as exc:  # transport errors, and e.g. an undecodable answer
                error = errors.from_transport_error(exc, idempotent=idempotent, endpoint=endpoint)
                outcome = type(error).__name__
                raise error from None
            status = response.status_code
            if not response.is_success:
                error = errors.from_response(response, endpoint=endpoint)
                outcome = type(error).__name__
                raise error
            if raw:
                return response.content
            try:
                return response.json()
            except ValueError:
                # A success status means Meta acted: a send must not be retried blindly.
                error_cls = errors.Transient if idempotent else errors.UnknownOutcome
                outcome = error_cls.__name__
                raise error_cls(f"HTTP {status} with a body that is not JSON", http_status=status, endpoint=endpoint) from None
        finally:
            if self.on_call is not None:
                try:
                    self.on_call(CallTiming(endpoint, method, status, time.perf_counter() - started, outcome))
                except Exception:  # a broken metrics hook must never change a call's result
                    _log.warning("graph_on_call_hook_failed", endpoint=endpoint, exc_info=True)

    @staticmethod
    def _success(body: Any) -> bool:
        return bool(isinstance(body, dict) and body.get("success", False))

    # --- messages ----------------------------------------------------------------------
    async def send_message(
        self,
        phone_number_id: str,
        message: Mapping[str, Any] | OutboundMessage,
        *,
        token: str,
        timeout: float | None = None,
    ) -> SendAccepted:
        """Send one message (a body dict or a ``messages`` model). A 200 means *accepted*."""
        body = message.to_request() if isinstance(message, OutboundMessage) else dict(message)
        reply = await self._call(
            "POST", f"{phone_number_id}/messages", "/{phone_number_id}/messages", token=token, json=body, timeout=timeout
        )
        try:
            first = reply["messages"][0]
            contact = (reply.get("contacts") or [{}])[0]
            return SendAccepted(
                wamid=first["id"],
                message_status=first.get("message_status", "accepted"),
                wa_id=contact.get("wa_id"),
                input=contact.get("input"),
            )
        except (KeyError, IndexError, TypeError):
            # A 200 without a wamid: Meta may have sent it, we cannot tell.
            raise errors.UnknownOutcome(
                "200 without messages[0].id", http_status=200, endpoint="POST /{phone_number_id}/messages"
            ) from None

    async def mark_read(
        self, phone_number_id: str, message_id: str, *, token: str, typing_indicator: bool = False, timeout: float | None = None
    ) -> bool:
        body = ReadReceipt(message_id=message_id, typing_indicator=typing_indicator).to_request()
        reply = await self._call(
            "POST", f"{phone_number_id}/messages", "/{phone_number_id}/messages", token=token, json=body, timeout=timeout
        )
        return self._success(reply)

    # --- templates ---------------------------------------------------------------------
    async def list_templates(
        self,
        waba_id: str,
        *,
        token: str,
        name: str | None = None,
        status: str | None = None,
        page_size: int = 100,
        max_pages: int = 100,
        timeout: float | None = None,
    ) -> list[TemplateInfo]:
        """Every template of the WABA, following the ``after`` cursor page by page."""
        params: dict[str, Any] = {"limit": page_size}
        if name:
            params["name"] = name
        if status:
            params["status"] = status
        templates: list[TemplateInfo] = []
        for _ in range(max_pages):
            reply = await self._call(
                "GET", f"{waba_id}/message_templates", "/{waba_id}/message_templates", token=token, params=params, timeout=timeout
            )
            templates.extend(TemplateInfo.model_validate(item) for item in reply.get("data", []))
            paging = reply.get("paging") or {}
            after = (paging.get("cursors") or {}).get("after")
            if not paging.get("next") or not after:
                break
            params = {**params, "after": after}
        return templates

    async def create_template(
        self,
        waba_id: str,
        *,
        name: str,
        language: str,
        category: str,
        components: list[dict[str, Any]],
        token: str,
        parameter_format: str | None = None,
        allow_category_change: bool | None = None,
        timeout: float | None = None,
    ) -> TemplateCreated:
        body: dict[str, Any] = {"name": name, "language": language, "category": category, "components": components}
        if parameter_format is not None:
            body["parameter_format"] = parameter_format
        if allow_category_change is not None:
            body["allow_category_change"] = allow_category_change
        reply = await self._call(
            "POST", f"{waba_id}/message_templates", "/{waba_id}/message_templates", token=token, json=body, timeout=timeout
        )
        return TemplateCreated.model_validate(reply)

    async def delete_template(
        self, waba_id: str, name: str, *, token: str, hsm_id: str | None = None, timeout: float | None = None
    ) -> bool:
        """Delete by name (every language), or one template when ``hsm_id`` is given."""
        params = {"name": name, **({"hsm_id": hsm_id} if hsm_id else {})}
        reply = await self._call(
            "DELETE", f"{waba_id}/message_templates", "/{waba_id}/message_templates", token=token, params=params, timeout=timeout
        )
        return self._success(reply)

    # --- phone numbers -----------------------------------------------------------------
    async def list_phone_numbers(
        self, waba_id: str, *, token: str, fields: str | None = None, timeout: float | None = None
    ) -> list[PhoneNumberInfo]:
        params = {"fields": fields} if fields else None
        reply = await self._call(
            "GET", f"{waba_id}/phone_numbers", "/{waba_id}/phone_numbers", token=token, params=params, timeout=timeout
        )
        return [PhoneNumberInfo.model_validate(item) for item in reply.get("data", [])]

    async def phone_number(
        self, phone_number_id: str, *, token: str, fields: str = PHONE_NUMBER_FIELDS, timeout: float | None = None
    ) -> PhoneNumberInfo:
        reply = await self._call(
            "GET", f"{phone_number_id}", "/{phone_number_id}", token=token, params={"fields": fields}, timeout=timeout
        )
        return PhoneNumberInfo.model_validate(reply)

    async def register_number(
        self,
        phone_number_id: str,
        pin: str,
        *,
        token: str,
        data_localization_region: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        if not re.fullmatch(r"[0-9]{6}", pin):
            raise ValueError("the two-step verification PIN is 6 digits")
        body: dict[str, Any] = {"messaging_product": "whatsapp", "pin": pin}
        if data_localization_region:
            body["data_localization_region"] = data_localization_region
        reply = await self._call(
            "POST", f"{phone_number_id}/register", "/{phone_number_id}/register", token=token, json=body, timeout=timeout
        )
        return self._success(reply)

    # --- onboarding --------------------------------------------------------------------
    async def subscribe_app(
        self,
        waba_id: str,
        *,
        token: str,
        override_callback_uri: str | None = None,
        verify_token: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        body: dict[str, Any] | None = None
        if override_callback_uri:
            body = {"override_callback_uri": override_callback_uri, "verify_token": verify_token or ""}
        reply = await self._call(
            "POST", f"{waba_id}/subscribed_apps", "/{waba_id}/subscribed_apps", token=token, json=body, timeout=timeout
        )
        return self._success(reply)

    async def unsubscribe_app(self, waba_id: str, *, token: str, timeout: float | None = None) -> bool:
        reply = await self._call(
            "DELETE", f"{waba_id}/subscribed_apps", "/{waba_id}/subscribed_apps", token=token, timeout=timeout
        )
        return self._success(reply)

    async def exchange_code(
        self, client_id: str, client_secret: str, code: str, *, timeout: float | None = None
    ) -> TokenExchange:
        """Embedded signup: trade the browser flow's ``code`` (valid ~30 s) for a business
        integration system-user token. Meta takes the secret in the query string; httpx's
        request log is redacted for it."""
        try:
            reply = await self._exchange(client_id, client_secret, code, timeout)
        except errors.Transient as exc:
            # Meta refuses a bad client secret with code 1 ("Error validating client secret") and
            # a 4xx: not a temporary failure — the exchange was refused.
            if exc.http_status is not None and exc.http_status < 500:
                raise exc.retype(errors.AuthError) from None
            raise
        return TokenExchange.model_validate(reply)

    async def _exchange(self, client_id: str, client_secret: str, code: str, timeout: float | None) -> Any:
        return await self._call(
            "GET",
            "oauth/access_token",
            "/oauth/access_token",
            token=None,
            params={"client_id": client_id, "client_secret": client_secret, "code": code},
            timeout=timeout,
            idempotent=False,  # the code is single-use: a lost answer is a lost exchange
        )

    async def debug_token(self, input_token: str, *, app_token: str, timeout: float | None = None) -> TokenInfo:
        """Inspect ``input_token`` with an app token (``app_id|app_secret``) or a system-user token."""
        reply = await self._call(
            "GET", "debug_token", "/debug_token", token=app_token, params={"input_token": input_token}, timeout=timeout
        )
        return TokenInfo.model_validate(reply.get("data") or {})

    # --- media -------------------------------------------------------------------------
    async def upload_media(
        self,
        phone_number_id: str,
        content: bytes,
        *,
        mime_type: str,
        token: str,
        filename: str = "file",
        media_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Upload a file for sending; returns its media id (valid 30 days). ``media_type`` (image,
        audio, video, document, sticker; default: from ``mime_type``) picks Meta's size limit."""
        kind = media_type or _kind_of(mime_type)
        limit = MEDIA_LIMITS.get(kind)
        if limit is None:
            raise ValueError(f"unknown media type {kind!r}; one of {', '.join(MEDIA_LIMITS)}")
        if not content:
            raise ValueError("an empty file cannot be uploaded")
        if len(content) > limit:
            raise MediaTooLarge(f"{kind} of {len(content)} bytes exceeds Meta's limit of {limit} bytes")
        reply = await self._call(
            "POST", f"{phone_number_id}/media", "/{phone_number_id}/media", token=token,
            data={"messaging_product": "whatsapp", "type": mime_type},
            files={"file": (filename, content, mime_type)}, timeout=timeout,
        )
        media_id = reply.get("id") if isinstance(reply, dict) else None
        if not media_id:
            raise errors.UnknownOutcome("200 without a media id", http_status=200, endpoint="POST /{phone_number_id}/media")
        return str(media_id)

    async def media_info(
        self, media_id: str, *, token: str, phone_number_id: str | None = None, timeout: float | None = None
    ) -> MediaInfo:
        """The download URL (valid 5 minutes), MIME type, SHA-256 and size of a media id.
        ``phone_number_id`` makes Meta check that the media belongs to that number."""
        params = {"phone_number_id": phone_number_id} if phone_number_id else None
        reply = await self._call("GET", f"{media_id}", "/{media_id}", token=token, params=params, timeout=timeout)
        return MediaInfo.model_validate(reply)

    async def delete_media(
        self, media_id: str, *, token: str, phone_number_id: str | None = None, timeout: float | None = None
    ) -> bool:
        params = {"phone_number_id": phone_number_id} if phone_number_id else None
        reply = await self._call("DELETE", f"{media_id}", "/{media_id}", token=token, params=params, timeout=timeout)
        return self._success(reply)

    def _media_url_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("https", "http") or not host:
            return False
        own = urlsplit(self.base_url)
        if host == (own.hostname or "").lower() and parts.port == own.port:
            return True
        return parts.scheme == "https" and host.endswith(_MEDIA_HOST_SUFFIXES)

    async def download_media(
        self, info: MediaInfo, *, token: str, max_bytes: int = MEDIA_LIMITS["document"], timeout: float | None = None
    ) -> bytes:
        """The file behind ``media_info``'s URL, fetched with the token and checked against the
        announced size and SHA-256 (``Transient`` when they differ: a truncated or altered
        download is worth one more try). Refuses (``ValueError``) a URL on a host that is neither
        Meta's nor this client's Graph host, and a file over ``max_bytes``."""
        if not self._media_url_allowed(info.url):
            raise ValueError("media URL host is not Meta's: the token is not sent there")
        if info.file_size is not None and info.file_size > max_bytes:
            raise MediaTooLarge(f"media of {info.file_size} bytes exceeds the limit of {max_bytes} bytes")
        body = await self._call("GET", "", "<media url>", token=token, url=info.url, raw=True, timeout=timeout)
        endpoint = "GET <media url>"
        if len(body) > max_bytes:
            raise MediaTooLarge(f"media of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
        if info.file_size is not None and len(body) != info.file_size:
            raise errors.Transient(f"downloaded {len(body)} bytes, Meta announced {info.file_size}", endpoint=endpoint)
        if info.sha256 and hashlib.sha256(body).hexdigest() != info.sha256.lower():
            raise errors.Transient("downloaded media does not match its SHA-256", endpoint=endpoint)
        return body

    # --- resumable upload (file handles for templates) ----------------------------------
    async def start_upload(
        self, app_id: str, *, file_name: str, file_length: int, file_type: str, token: str, timeout: float | None = None
    ) -> UploadSession:
        """Open a resumable upload session for a file of ``file_length`` bytes."""
        if file_length < 1:
            raise ValueError("file_length must be at least 1 byte")
        reply = await self._call(
            "POST", f"{app_id}/uploads", "/{app_id}/uploads", token=token,
            params={"file_name": file_name, "file_length": file_length, "file_type": file_type}, timeout=timeout,
        )
        return UploadSession.model_validate(reply)

    async def upload_offset(self, session_id: str, *, token: str, timeout: float | None = None) -> int:
        """How many bytes of the session Meta already has: where an interrupted upload resumes."""
        reply = await self._call("GET", _session_path(session_id), "/upload:{session}", token=token,
                                 auth_scheme="OAuth", timeout=timeout)
        return int(reply.get("file_offset", 0))

    async def upload_chunk(
        self, session_id: str, chunk: bytes, *, offset: int, token: str, timeout: float | None = None
    ) -> UploadSession:
        """Send ``chunk`` as the bytes from ``offset`` on. The answer carries the handle ``h``
        once the whole file is there. Safe to repeat: the offset says where the bytes go."""
        reply = await self._call(
            "POST", _session_path(session_id), "/upload:{session}", token=token, auth_scheme="OAuth",
            headers={"file_offset": str(offset), "Content-Type": "application/octet-stream"},
            content=chunk, timeout=timeout, idempotent=True,
        )
        return UploadSession.model_validate({"id": session_id, **reply})

    async def upload_file(
        self, app_id: str, content: bytes, *, file_name: str, file_type: str, token: str,
        chunk_size: int = 4 * 1024 * 1024, session_id: str | None = None, timeout: float | None = None,
    ) -> str:
        """Upload ``content`` through a resumable session and return its file handle. With
        ``session_id`` (from an earlier, interrupted attempt) it resumes at Meta's offset."""
        if session_id is None:
            session_id = (await self.start_upload(app_id, file_name=file_name, file_length=len(content),
                                                  file_type=file_type, token=token, timeout=timeout)).id
            offset = 0
        else:
            offset = await self.upload_offset(session_id, token=token, timeout=timeout)
        if offset >= len(content):
            # Meta gives the handle only in the answer to the last chunk: an upload that completed
            # but whose answer was lost cannot give it again. Start a new session.
            raise errors.UnknownOutcome("the session already has every byte; its handle was not seen",
                                        endpoint="/upload:{session}")
        handle: str | None = None
        while offset < len(content):
            chunk = content[offset:offset + chunk_size]
            step = await self.upload_chunk(session_id, chunk, offset=offset, token=token, timeout=timeout)
            handle = step.h
            offset += len(chunk)
        if handle is None:
            raise errors.UnknownOutcome("upload complete without a file handle", endpoint="/upload:{session}")
        return handle


def _session_path(session_id: str) -> str:
    sid = session_id if session_id.startswith("upload:") else f"upload:{session_id}"
    if not re.fullmatch(r"upload:[A-Za-z0-9_\-=.?&:%+]+", sid):
        raise ValueError("not an upload session id")
    return sid


def _kind_of(mime_type: str) -> str:
    major = mime_type.split("/", 1)[0].lower()
    if mime_type.lower() == "image/webp":
        return "sticker"
    return major if major in ("image", "audio", "video") else "document"
