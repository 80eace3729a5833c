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
=========================  ==================================================================
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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
    "PHONE_NUMBER_FIELDS",
]

_log = get_logger(__name__)

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_VERSION = "v23.0"

PHONE_NUMBER_FIELDS = (
    "id,display_phone_number,verified_name,status,quality_rating,throughput,"
    "whatsapp_business_manager_messaging_limit"
)


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
    ) -> Any:
        """One call: returns the decoded JSON of a 2xx answer or raises a ``MetaError``.
        ``idempotent`` (default: GET) decides whether a lost answer is ``Transient`` or
        ``UnknownOutcome``."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
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
                    method, f"/{self.version}/{path.lstrip('/')}", params=params, json=json, headers=headers, timeout=call_timeout
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
