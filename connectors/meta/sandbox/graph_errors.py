"""Meta-shaped Graph API errors as the sandbox answers them.

The body is Meta's: ``{"error": {message, type, code, error_subcode?, error_data{messaging_product,
details}?, fbtrace_id}}``. The sandbox builds these itself (it does not import the connector's
error classes) so the two sides are checked against each other rather than against one table.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

# code -> (title used in "(#code) title", HTTP status, type)
_CATALOGUE: dict[int, tuple[str, int, str]] = {
    1: ("An unknown error occurred", 500, "OAuthException"),
    2: ("Service temporarily unavailable", 503, "OAuthException"),
    4: ("Application request limit reached", 400, "OAuthException"),
    10: ("Permission denied", 403, "OAuthException"),
    100: ("Invalid parameter", 400, "OAuthException"),
    80007: ("Rate limit issues", 400, "OAuthException"),
    190: ("Invalid OAuth access token - Cannot parse access token", 401, "OAuthException"),
    200: ("Permissions error", 403, "OAuthException"),
    130429: ("Rate limit hit", 400, "OAuthException"),
    131000: ("Something went wrong", 500, "OAuthException"),
    131008: ("Required parameter is missing", 400, "OAuthException"),
    131009: ("Parameter value is not valid", 400, "OAuthException"),
    131026: ("Message Undeliverable", 400, "OAuthException"),
    131047: ("Re-engagement message", 400, "OAuthException"),
    131048: ("Spam rate limit hit", 400, "OAuthException"),
    131049: ("This message was not delivered to maintain healthy ecosystem engagement.", 400, "OAuthException"),
    131053: ("Media upload error", 400, "OAuthException"),
    131056: ("(Business Account, Consumer Account) pair rate limit hit", 400, "OAuthException"),
    132000: ("Number of parameters does not match the expected number of params", 400, "OAuthException"),
    132001: ("Template name does not exist in the translation", 404, "OAuthException"),
    132015: ("Template is Paused", 400, "OAuthException"),
    132016: ("Template is Disabled", 400, "OAuthException"),
    133010: ("Account not registered", 400, "OAuthException"),
    133016: ("Account register deregister rate limit exceeded", 400, "OAuthException"),
}

THROTTLING = frozenset({4, 80007, 130429, 131056})


def fbtrace_id() -> str:
    return secrets.token_urlsafe(20)[:27]


def known(code: int) -> bool:
    """A code the sandbox can answer with (its title, HTTP status and type are Meta's)."""
    return code in _CATALOGUE


def title(code: int) -> str:
    return _CATALOGUE.get(code, ("Error", 400, "OAuthException"))[0]


@dataclass(slots=True)
class GraphError(Exception):
    code: int
    details: str | None = None
    subcode: int | None = None
    message: str | None = None
    http_status: int | None = None
    type: str | None = None

    def status(self) -> int:
        return self.http_status or _CATALOGUE.get(self.code, ("", 400, ""))[1]

    def body(self) -> dict:
        name, _, kind = _CATALOGUE.get(self.code, ("Error", 400, "OAuthException"))
        err: dict = {
            "message": self.message or (f"(#{self.code}) {name}" if self.code != 190 else name),
            "type": self.type or kind,
            "code": self.code,
        }
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.details is not None:
            err["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        err["fbtrace_id"] = fbtrace_id()
        return {"error": err}

    def encode(self) -> bytes:
        return json.dumps(self.body()).encode()


def status_error(code: int, details: str) -> dict:
    """The ``errors[]`` item of a failed status webhook."""
    return {
        "code": code,
        "title": title(code),
        "message": title(code),
        "error_data": {"details": details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }


# Shorthands for the common cases.
def missing(param: str) -> GraphError:
    return GraphError(100, message=f"(#100) The parameter {param} is required.", details=f"The parameter {param} is required.")


def invalid(param: str, why: str, code: int = 100) -> GraphError:
    return GraphError(code, message=f"(#{code}) Param {param} {why}" if code == 100 else None, details=f"{param}: {why}")


def unknown_object(object_id: str) -> GraphError:
    return GraphError(
        100,
        subcode=33,
        type="GraphMethodException",
        message=(f"Unsupported post request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
                 "missing permissions, or does not support this operation."),
    )
