"""Reading input at an HTTP boundary: bounded, parsed once, refused with a clear status.

One helper for every JSON API (the tenants admin API, the privacy API) and the size check of
Meta's form callbacks, so each refuses the same way:

* a body over the limit → **413**, from ``Content-Length`` before reading, else as soon as the
  streamed count passes it (a missing or lying length is no way around it);
* a body that is not JSON (not UTF-8, truncated, nested deeper than the parser's limit) → **400**
  ``body is not valid JSON: …``;
* JSON that the request model refuses → **400** with ``field: reason`` for each failure. The
  models bound every field (lengths, ranges, id patterns), so nothing unbounded reaches a
  service, a Kafka record or an Avro field;
* a path parameter that is not an id of its kind → **400** (``check_id``).

Messages name the field and the rule, never echo the input (it may be 5 MB, or personal data).
"""

from __future__ import annotations

import re
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

M = TypeVar("M", bound=BaseModel)


class BadInput(Exception):
    """Input refused at the boundary: ``status`` (400, 413) and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self)}, status_code=self.status)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The whole body, or ``BadInput(413)`` once it is known to be over ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise BadInput(413, f"body too large: {int(declared)} bytes, at most {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadInput(413, f"body too large: more than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def validation_message(exc: ValidationError) -> str:
    """``field: reason; ...`` without the offending input."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                     for e in exc.errors(include_url=False, include_input=False, include_context=False))


def parse_json(raw: bytes, model: type[M]) -> M:
    """``raw`` (empty = ``{}``) validated as ``model``, or ``BadInput(400)``. pydantic's JSON parser
    reads integers of any size (so ``10**30`` gets the field's range message, not a parse error) and
    stops nesting at a fixed depth (so 100,000 ``[`` is "not valid JSON", not a crash)."""
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise BadInput(400, f"body is not valid JSON: {errors[0]['msg'].removeprefix('Invalid JSON: ')}") from None
        raise BadInput(400, validation_message(exc)) from None


async def json_body(request: Request, model: type[M], max_bytes: int) -> M:
    """The request's JSON body as ``model``: 413 over ``max_bytes``, 400 not JSON or refused."""
    return parse_json(await read_body(request, max_bytes), model)


def check_id(value: str, pattern: re.Pattern[str], what: str) -> str:
    """A caller-given identifier (a path or query parameter), or ``BadInput(400)``."""
    if not pattern.fullmatch(value):
        raise BadInput(400, f"{what} is not a valid id (pattern {pattern.pattern})")
    return value
