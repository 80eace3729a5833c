"""The Kafka edge: how every client reaches the brokers, in one place (issue 22, item 1).

``KafkaEndpoint`` is what a client needs to connect: the bootstrap servers and the security
(TLS, SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512, mTLS) of the one ``Settings`` object. The three
client libraries get it in their own terms from here alone:

* confluent-kafka: ``confluent_conf(endpoint, **conf)`` — a config dict;
* aiokafka: ``aiokafka_kwargs(endpoint)`` — ``bootstrap_servers``, ``security_protocol``,
  ``ssl_context``, ``sasl_*``;
* Faust: ``faust_app_kwargs(endpoint)`` — ``broker`` URLs and ``broker_credentials``.

A bare ``str`` is accepted wherever an endpoint is (a plaintext broker: tests, local tools).
``check_access`` asks the brokers once for metadata and turns a refused login or a failed TLS
handshake into ``KafkaAuthError`` with the broker's own words, instead of a client that retries
forever; an unreachable broker is not an error there (services ride out broker outages). A
secured librdkafka client that is refused later (credentials rotated under a running service)
logs ``kafka.refused`` with the reason, once per client.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from wapipe.log import get_logger

if TYPE_CHECKING:
    from wapipe.config import Settings

log = get_logger(__name__)

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class NoKafka(RuntimeError):
    """No usable Kafka: none configured, or its settings do not fit together."""


class KafkaAuthError(NoKafka):
    """The brokers refused this client: wrong SASL credentials, or a TLS handshake that failed."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How a client authenticates and encrypts. Validated on construction."""

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_ca_file: str | None = None
    ssl_cert_file: str | None = None
    ssl_key_file: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise NoKafka(f"KAFKA_SECURITY_PROTOCOL={self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if self.sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise NoKafka(f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_MECHANISM "
                              f"({', '.join(MECHANISMS)}), got {self.sasl_mechanism!r}")
            if not self.sasl_username or self.sasl_password is None:
                raise NoKafka(f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_USERNAME and "
                              "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise NoKafka(f"SASL settings are given but KAFKA_SECURITY_PROTOCOL={self.protocol}: "
                          "use SASL_SSL (or SASL_PLAINTEXT)")
        if not self.tls and (self.ssl_ca_file or self.ssl_cert_file or self.ssl_key_file):
            raise NoKafka(f"TLS files are given but KAFKA_SECURITY_PROTOCOL={self.protocol}: use SSL or SASL_SSL")
        if bool(self.ssl_cert_file) != bool(self.ssl_key_file):
            raise NoKafka("mTLS needs both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE")
        for name, path in (("KAFKA_SSL_CA_FILE", self.ssl_ca_file), ("KAFKA_SSL_CERT_FILE", self.ssl_cert_file),
                           ("KAFKA_SSL_KEY_FILE", self.ssl_key_file)):
            if path is not None:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise NoKafka(f"{name}={path}: cannot read it ({exc.strerror})") from None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @classmethod
    def from_settings(cls, settings: "Settings") -> "KafkaSecurity":
        def text(v: Any) -> str | None:
            return None if v is None else str(v)

        def secret(v: Any) -> str | None:
            return None if v is None else v.get_secret_value()

        return cls(protocol=settings.kafka_security_protocol, sasl_mechanism=settings.kafka_sasl_mechanism,
                   sasl_username=settings.kafka_sasl_username, sasl_password=secret(settings.kafka_sasl_password),
                   ssl_ca_file=text(settings.kafka_ssl_ca_file), ssl_cert_file=text(settings.kafka_ssl_cert_file),
                   ssl_key_file=text(settings.kafka_ssl_key_file),
                   ssl_key_password=secret(settings.kafka_ssl_key_password))

    def describe(self) -> str:
        """For messages: what this client presents (never a secret)."""
        parts = [self.protocol]
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username!r}")
        if self.ssl_cert_file:
            parts.append(f"client certificate {self.ssl_cert_file}")
        return ", ".join(parts)

    # --- the three libraries ------------------------------------------------------------
    def confluent(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"security.protocol": self.protocol}
        if self.sasl:
            conf.update({"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                         "sasl.password": self.sasl_password})
        if self.ssl_ca_file:
            conf["ssl.ca.location"] = self.ssl_ca_file
        if self.ssl_cert_file:
            conf["ssl.certificate.location"] = self.ssl_cert_file
            conf["ssl.key.location"] = self.ssl_key_file
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password
        return conf

    def ssl_context(self) -> ssl.SSLContext | None:
        """Python's TLS context (aiokafka, Faust): the CA file or the system's roots, hostname checked."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=self.ssl_ca_file)
        if self.ssl_cert_file:
            ctx.load_cert_chain(self.ssl_cert_file, self.ssl_key_file, password=self.ssl_key_password)
        return ctx

    def aiokafka(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            kw["ssl_context"] = self.ssl_context()
        if self.sasl:
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password)
        return kw

    def faust_credentials(self) -> Any:
        """``broker_credentials`` of a Faust app (None: plaintext)."""
        import faust

        if self.sasl:
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         ssl_context=self.ssl_context(), mechanism=self.sasl_mechanism)
        if self.tls:
            return faust.SSLCredentials(self.ssl_context())
        return None


PLAINTEXT = KafkaSecurity()


@dataclass(frozen=True)
class KafkaEndpoint:
    """Where the brokers are and how to talk to them. ``str()`` is the bootstrap list alone."""

    bootstrap: str
    security: KafkaSecurity = PLAINTEXT

    def __post_init__(self) -> None:
        if not self.hosts:
            raise NoKafka(f"no Kafka bootstrap server in {self.bootstrap!r}")

    def __str__(self) -> str:
        return self.bootstrap

    @property
    def hosts(self) -> list[str]:
        return [h.strip() for h in self.bootstrap.split(",") if h.strip()]

    @classmethod
    def from_settings(cls, settings: "Settings", bootstrap: str) -> "KafkaEndpoint":
        return cls(bootstrap, KafkaSecurity.from_settings(settings))


Endpoint = Union[KafkaEndpoint, str]


def endpoint(target: Endpoint) -> KafkaEndpoint:
    """An endpoint as is; a bare bootstrap string as a plaintext endpoint."""
    return target if isinstance(target, KafkaEndpoint) else KafkaEndpoint(str(target))


def endpoint_for(settings: "Settings", target: Endpoint) -> KafkaEndpoint:
    """An endpoint as is; a bare bootstrap string with the security of ``settings``."""
    return target if isinstance(target, KafkaEndpoint) else KafkaEndpoint.from_settings(settings, str(target))


def confluent_conf(target: Endpoint, **conf: Any) -> dict[str, Any]:
    """A confluent-kafka (librdkafka) config: bootstrap and security, then ``conf``."""
    ep = endpoint(target)
    base: dict[str, Any] = {"bootstrap.servers": ep.bootstrap, **ep.security.confluent()}
    if ep.security.protocol != "PLAINTEXT":
        base["error_cb"] = RefusalLog(ep)
    return {**base, **conf}


def aiokafka_kwargs(target: Endpoint) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client: bootstrap and security."""
    ep = endpoint(target)
    return {"bootstrap_servers": ep.bootstrap, **ep.security.aiokafka()}


def faust_app_kwargs(target: Endpoint) -> dict[str, Any]:
    """``faust.App(..., **faust_app_kwargs(endpoint))``: broker URLs and credentials."""
    ep = endpoint(target)
    return {"broker": [f"kafka://{h}" for h in ep.hosts], "broker_credentials": ep.security.faust_credentials()}


# librdkafka's codes for a refused login or a failed TLS handshake: no retry will fix them.
def _refusal_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL,
                      KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED})


# A broker that wants a client certificate and gets none (or one it does not trust) answers with a
# TLS alert, which librdkafka reports as a transport failure: told apart by the alert's text.
_CERT_ALERTS = ("alert bad certificate", "alert certificate required", "alert unknown ca",
                "alert certificate unknown", "alert certificate expired", "alert certificate revoked")


def refusal(err: Any) -> bool:
    """Whether a librdkafka error (an ``error_cb`` argument) says the brokers refused us."""
    try:
        code, text = err.code(), err.str()
    except AttributeError:
        return False
    from confluent_kafka import KafkaError

    if code in _refusal_codes():
        return True
    return code == KafkaError._TRANSPORT and any(a in text.lower() for a in _CERT_ALERTS)


def _what(err: Any) -> str:
    from confluent_kafka import KafkaError

    if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return "authentication failed"
    if err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
        return "not authorized"
    return "authentication failed (TLS handshake)"


def check_access(target: Endpoint, *, timeout: float = 10.0) -> None:
    """Ask for metadata once with the endpoint's security. A refusal (bad credentials, TLS that
    fails) raises ``KafkaAuthError`` naming it; success or silence (broker down) returns."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    ep = endpoint(target)
    refused: list[Any] = []
    admin = AdminClient(confluent_conf(ep, error_cb=lambda e: refused.append(e) if refusal(e) else None,
                                       log_level=0, logger=_Quiet()))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException as exc:
            if refusal(exc.args[0]):
                refused.append(exc.args[0])
        admin.poll(0)
        if refused:
            err = refused[0]
            raise KafkaAuthError(f"Kafka at {ep.bootstrap} refused this client ({ep.security.describe()}): "
                                 f"{_what(err)}: {err.str()}")


class RefusalLog:
    """``error_cb`` of a secured librdkafka client: a refusal is logged once (``kafka.refused``),
    never with a secret; other errors are left to librdkafka's own log."""

    def __init__(self, ep: KafkaEndpoint) -> None:
        self.ep = ep
        self.said = False

    def __call__(self, err: Any) -> None:
        if not self.said and refusal(err):
            self.said = True
            log.error("kafka.refused", bootstrap=self.ep.bootstrap, client=self.ep.security.describe(),
                      reason=f"{_what(err)}: {err.str()}")


class _Quiet:
    def log(self, *args: Any, **kwargs: Any) -> None:  # the refusal is reported once, by check_access
        pass
