"""The one settings object. Every value comes from an environment variable (or its default).

Names follow the tools' own conventions where one exists (``KAFKA_BOOTSTRAP_SERVERS``,
``CLICKHOUSE_URL``, ``SCHEMA_REGISTRY_URL``); everything else is ``WAPIPE_<FIELD>``.
Construct it once in an entry point (``Settings()``) and pass it down; nothing reads the
environment behind the caller's back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str) -> AliasChoices:
    """Accept both the conventional name and the WAPIPE_-prefixed one."""
    return AliasChoices(name, f"WAPIPE_{name}")


def _env_names(name: str, field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(a) for a in alias.choices]
    return [alias] if isinstance(alias, str) else [f"WAPIPE_{name.upper()}"]


class FileSecrets(PydanticBaseSettingsSource):
    """``<NAME>_FILE=/path`` for any setting: its value is the file's content (trailing newline
    dropped), as Docker and Kubernetes mount secrets — so a password or key never has to stand in
    an environment variable or a compose file. A setting with its own ``*_file`` field (the KEK,
    the pepper) keeps it: that field already names a file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for env in _env_names(field_name, field):
            path = os.environ.get(f"{env}_FILE")
            if path:
                try:
                    text = Path(path).read_text().rstrip("\n")
                except OSError as exc:
                    raise ValueError(f"{env}_FILE={path}: cannot read it ({exc.strerror})") from None
                return text, field_name, self.field_is_complex(field)
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields = self.settings_cls.model_fields
        for name, field in fields.items():
            if f"{name}_file" in fields:
                continue
            value, key, complex_ = self.get_field_value(field, name)
            if value is not None:
                out[key] = self.decode_complex_value(key, field, value) if complex_ else value
        return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WAPIPE_", extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Explicit arguments, then the environment, then *_FILE secrets.
        return init_settings, env_settings, FileSecrets(settings_cls), dotenv_settings, file_secret_settings

    # --- where state lives -------------------------------------------------------------
    state_dir: Path = Field(default=REPO_ROOT / ".wapipe", description="local state: jars, broker data, chDB folder, logs")

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(default=None, validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))
    # Security of every Kafka client (confluent-kafka, aiokafka, Faust: wapipe/edge/endpoint.py).
    # Passwords and keys: KAFKA_SASL_PASSWORD_FILE / KAFKA_SSL_KEY_PASSWORD_FILE (docs/security.md).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", validation_alias=_env("KAFKA_SECURITY_PROTOCOL"))
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, validation_alias=_env("KAFKA_SASL_MECHANISM"))
    kafka_sasl_username: str | None = Field(default=None, validation_alias=_env("KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(default=None, validation_alias=_env("KAFKA_SASL_PASSWORD"))
    kafka_ssl_ca_file: Path | None = Field(default=None, validation_alias=_env("KAFKA_SSL_CA_FILE"),
                                           description="PEM CA bundle the brokers' certificates are checked against")
    kafka_ssl_cert_file: Path | None = Field(default=None, validation_alias=_env("KAFKA_SSL_CERT_FILE"),
                                             description="mTLS: this client's PEM certificate (chain)")
    kafka_ssl_key_file: Path | None = Field(default=None, validation_alias=_env("KAFKA_SSL_KEY_FILE"),
                                            description="mTLS: this client's PEM private key")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, validation_alias=_env("KAFKA_SSL_KEY_PASSWORD"))
    kafka_version: str = "4.1.1"
    jars_dir: Path = Field(default=REPO_ROOT / ".wapipe" / "jars", description="Maven-fetched broker jars (shared by runs)")
    kafka_heap: str = "512m"
    topic_partitions: int = Field(default=4, ge=1, description="partitions of the keyed data topics")
    replication_factor: int = Field(default=1, ge=1)
    # Retention of the delete-policy topics (ms). Raw webhooks carry personal data: keep them short.
    retention_ms: int = 7 * 24 * 3600 * 1000
    raw_webhook_retention_ms: int = 24 * 3600 * 1000
    raw_webhook_segment_ms: int = 3600 * 1000
    # Compacted topics: erasure deadline. A tombstone makes a subject unreadable once the cleaner
    # has run; max.compaction.lag.ms bounds how long that can take.
    erasure_deadline_ms: int = 6 * 3600 * 1000
    compacted_segment_ms: int = 3600 * 1000
    tombstone_retention_ms: int = 24 * 3600 * 1000
    min_cleanable_dirty_ratio: float = 0.1
    # A dead letter larger than this is cut down (wapipe/deadletter.py): below Kafka's default
    # message limit (1,048,588 bytes on the broker, 1,000,000 in librdkafka's producer).
    dead_letter_max_bytes: int = Field(default=900_000, ge=4096)

    # --- Avro --------------------------------------------------------------------------
    schema_registry_url: str | None = Field(default=None, validation_alias=_env("SCHEMA_REGISTRY_URL"))

    # --- ClickHouse --------------------------------------------------------------------
    clickhouse_url: str | None = Field(default=None, validation_alias=_env("CLICKHOUSE_URL"))
    # Default retention (days) per data type when a tenant's settings name none
    # (keys: content, metadata, raw_webhooks, audit). WAPIPE_RETENTION_DEFAULTS='{"content": 7}'.
    retention_defaults: dict[str, int] = Field(default_factory=lambda: {
        "content": 30, "metadata": 365, "raw_webhooks": 1, "audit": 730})

    # --- sink (`wapipe sink`) and normaliser (`wapipe normalise`) ------------------------
    sink_group: str = "wapipe-sink"
    sink_batch_rows: int = Field(default=50_000, ge=1, description="flush a batch at this many rows")
    sink_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="...or this many bytes of values")
    sink_batch_ms: int = Field(default=500, ge=1, description="...or when the batch is this old (empty ones too)")
    sink_retry_max_s: float = Field(default=10.0, gt=0, description="cap of the insert retry backoff")
    sink_pipeline: bool = Field(default=True, description="write a batch in a thread while consuming the next")
    # Dead-letter limit: stop the sink when more than this share of the last `window` records
    # could not be converted (at least `min` of them): a bad deploy must not dead-letter everything.
    sink_dlq_max_ratio: float = Field(default=0.5, ge=0, le=1)
    sink_dlq_window: int = Field(default=1000, ge=1)
    sink_dlq_min: int = Field(default=50, ge=1)
    sink_read_port: int = Field(default=0, ge=0, description="port of the local read endpoint (0: any free one)")
    normalise_app_id: str = "wapipe-normalise"
    normalise_dedup_window_s: int = Field(default=7 * 24 * 3600, ge=1, description="Meta retries for up to 7 days")
    normalise_batch_max: int = Field(default=500, ge=1, description="raw webhooks converted and acked as one batch")
    normalise_batch_within_s: float = Field(default=0.02, gt=0, description="longest wait to fill a batch")
    normalise_offset_reset: str = Field(default="earliest", pattern="^(earliest|latest)$",
                                        description="where a new normaliser group starts (benchmarks: latest)")

    # --- send pipeline (`wapipe worker`, processors/send) --------------------------------
    send_app_id: str = "wapipe-send"
    send_dedup_window_s: int = Field(default=7 * 24 * 3600, ge=1, description="idempotency-key memory")
    send_default_mps: int = Field(default=80, ge=1, le=1000, description="throughput of a number Meta said nothing about")
    send_rate_safety: float = Field(default=0.985, gt=0.5, le=1.0, description="pace at this share of a number's limit")
    send_max_in_flight: int = Field(default=512, ge=1, description="Graph calls in flight, all numbers together")
    send_max_attempts: int = Field(default=5, ge=1, description="Graph calls per command before wa.send.dead")
    send_retry_base_s: float = Field(default=1.0, gt=0)
    send_retry_max_s: float = Field(default=300.0, gt=0)
    send_spam_pause_s: float = Field(default=600.0, gt=0, description="a number Meta restricted for spam (131048) "
                                     "pauses this long unless Meta says how long (Retry-After)")
    send_pair_interval_s: float = Field(default=6.0, ge=0, description="one message per this many s to one recipient")
    send_pair_burst: int = Field(default=45, ge=1, description="pair-rate burst Meta lets a number borrow")
    send_buffer_per_partition: int = Field(default=4000, ge=10, description="commands held in memory per partition")
    # A partition is paused (no more campaign commands read from it) only when every number on it
    # has 2 s of sendable work queued, or when the worker holds this many campaign commands in all
    # (a paused campaign's commands are held, so the other numbers of its partition go on).
    send_held_max: int = Field(default=50_000, ge=100, description="campaign commands held in memory per worker")
    # The worker's reading (wapipe/edge/lane_consumer.py, processors/send/lane_reader.py): records
    # taken from librdkafka per poll (one hand-over to the event loop each), and campaign records
    # taken but not read yet before the campaign topics pause. Larger polls bring a transactional
    # record past the campaign records fetched before it sooner (each hand-over waits for the GIL).
    send_max_poll_records: int = Field(default=2000, ge=1, le=10_000)
    send_read_ahead: int = Field(default=4000, ge=100, le=100_000)
    # How long the worker's producer gathers records into one request. bench/dispatch.py, 2026-12-05
    # 22:05-22:11, one number at 1,000/s: 5 ms gave 0.27-0.29 broker CPU-ms per message against
    # 0.39 with 1 ms, for 0.90-0.91 utilization against 0.92 (each call's intent waits up to this
    # long for its acknowledgement).
    send_linger_ms: int = Field(default=5, ge=0, le=100)
    # The most the server counts a call later after its request was written than another call
    # (processors/send/pacing.py: NumberPacer.window_wait); a larger value trades throughput for
    # tolerance of a slow or stalling server.
    # Unset (the default): a call counts until 1 s after its response, which needs no assumption.
    # 10 and 20 ms let the bench's sandbox, stalled on a loaded 2-core machine, count 84 of 80 and
    # 1,016 of 1,000 in a window; 50 ms held in the bench on a quiet machine but gave 8 and 16
    # 130429s in `make demo` beside a test run. Set it only for a server whose jitter is known.
    send_window_jitter_s: float | None = Field(default=None, ge=0.0, le=1.0)
    # The learned window rule (processors/send/pacing.py: NumberPacer.window_wait), used when no
    # jitter is set: a call answered counts until 1 s after its response less the fastest round
    # trip seen (from the call's start, after its ledger write) less this margin. False: until 1 s after the
    # response, which assumes nothing and costs the round trip on every slot.
    send_window_learn: bool = True
    send_window_margin_ms: float = Field(default=5.0, ge=0.0, le=500.0)
    send_session_window_s: int = Field(default=24 * 3600, ge=1, description="customer-service window")
    send_graph_timeout_s: float = Field(default=15.0, gt=0)
    send_reconcile_memory_s: float = Field(default=3600.0, gt=0, description="status webhooks remembered for UNKNOWN outcomes recorded later")
    send_unknown_timeout_s: float = Field(default=3600.0, gt=0, description="an UNKNOWN with no status webhook this long is reported (never resent)")
    # Where a new consumer group starts: "earliest" never skips a command; "latest" (the end of every
    # partition, committed once when the group is new: wapipe/edge/group_start.py) is for tests and
    # benchmarks that share a broker with earlier runs.
    send_offset_reset: str = Field(default="earliest", pattern="^(earliest|latest)$")

    # --- secrets -----------------------------------------------------------------------
    # Key-encryption key (32 bytes, base64) for per-subject data keys and tenant tokens.
    kek: SecretStr | None = Field(default=None, validation_alias=_env("KEK"))
    kek_file: Path | None = None
    # KEK rotation: earlier KEKs (comma-separated base64), still accepted for opening what they
    # wrapped/sealed; everything new is wrapped with WAPIPE_KEK.
    kek_previous: SecretStr | None = None
    # Pepper for pseudonymous subject ids (HMAC key). Must be stable for a deployment.
    subject_pepper: SecretStr | None = None
    subject_pepper_file: Path | None = None
    # WAPIPE_ENV=production: refuse to run without a configured KEK and pepper (no generated
    # local defaults), and never accept cleartext (empty key_id) Sealed fields.
    env: str = Field(default="development", description="development | test | production")
    # `wapipe privacy run`: how often open requests are re-checked (compaction, expiry, ClickHouse).
    privacy_check_interval_s: float = Field(default=5.0, gt=0)
    # sinks/erasure.py: no new ClickHouse deletes while this many mutations are running.
    erasure_max_running_mutations: int = Field(default=8, ge=1)
    # sinks/erasure.py: how often rows of erased subjects brought back by a replay are looked for.
    erasure_guard_interval_s: float = Field(default=60.0, ge=0)
    # sinks/erasure.py: a deletion is complete once the parts that held the rows are gone from
    # disk; ClickHouse removes replaced parts after ``old_parts_lifetime`` (480 s by default).
    # Set, the worker applies this many seconds (and the same cleanup period) to every subject table.
    erasure_old_parts_lifetime_s: int | None = Field(default=None, ge=1)
    # `wapipe privacy run`: a request that is final (COMPLETED, REJECTED, FAILED) is deleted from
    # wa.privacy.requests (a tombstone, then compaction) this long after its last update; a
    # restriction still in effect stays. 400 days: longer than the longest data retention (365).
    privacy_request_retention_ms: int = Field(default=400 * 24 * 3600 * 1000, ge=1000)
    # The legal deadline of an erasure request (GDPR Art. 12(3): one month), for the
    # wapipe_erasure_deadline_seconds gauge of `wapipe privacy run` (wapipe/privacy/metrics.py).
    privacy_legal_deadline_s: float = Field(default=30 * 24 * 3600, gt=0)

    @property
    def production(self) -> bool:
        return self.env.lower() == "production"

    # --- Graph API client (connectors/meta) ---------------------------------------------------
    # Base URL and version of Meta's Graph API (the sandbox's URL in tests and the demo).
    meta_graph_url: str = "https://graph.facebook.com"
    meta_graph_version: str = "v23.0"
    meta_http_timeout: float = Field(default=30.0, gt=0, description="per-call timeout, seconds")
    meta_max_connections: int = Field(default=100, ge=1, description="pooled connections to Graph")

    # --- inbound media (`wapipe media`, wapipe/media) -----------------------------------------
    # Where fetched inbound media is kept, sealed per subject: a folder (a path or file://…, the
    # default is <state_dir>/media) or S3-compatible storage (s3://bucket[/prefix]).
    media_url: str | None = None
    # An S3-compatible server's endpoint (MinIO, Ceph, …); None: AWS's own. Credentials come from
    # boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, a role).
    media_s3_endpoint_url: str | None = None
    media_s3_region: str | None = None
    media_group: str = "wapipe-media"
    media_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="largest inbound file fetched (Meta: documents ≤ 100 MB)")
    media_sweep_interval_s: float = Field(default=3600.0, gt=0, description="how often stored media past retention is deleted")

    # --- inbound to the ERP (`wapipe erp inbound`, processors/erp_inbound) -----------------------
    erp_inbound_group: str = "wapipe-erp-inbound"
    # How long a lookup of a reply's wamid waits for wa.send.results to be read up to its end.
    erp_link_catch_up_s: float = Field(default=10.0, gt=0)
    erp_read_attempts: int = Field(default=3, ge=1, description="Graph attempts of one mark-as-read on transient errors")

    # --- webhook ingress (`wapipe ingress`) --------------------------------------------------
    # Meta apps whose webhooks we accept: JSON {"<app id>": "<app secret>"} (WAPIPE_META_APPS).
    meta_apps: dict[str, SecretStr] = Field(default_factory=dict)
    # hub.verify_token of the GET subscription handshake (WAPIPE_VERIFY_TOKEN).
    verify_token: SecretStr | None = None
    # Base URL Meta and people reach us at (deletion-status links); else taken from the request.
    public_base_url: str | None = None
    # Meta sends up to 3 MB per POST; a margin for envelopes and encodings. wa.webhook.raw's
    # max.message.bytes and the ingress producer's message.max.bytes are derived from it
    # (wapipe/topics.py), so every body the ingress accepts can be stored.
    ingress_max_body_bytes: int = Field(default=3 * 1024 * 1024 + 256 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Bounded wait for the broker's ack: librdkafka's message.timeout.ms, and an overall deadline
    # above it (well under Meta's 1 s) after which the ingress answers 503 so Meta retries.
    ingress_publish_timeout_ms: int = Field(default=600, ge=50)
    ingress_deadline_ms: int = Field(default=850, ge=100)
    ingress_linger_ms: int = Field(default=1, ge=0)
    # Who polls the producer for delivery reports: "loop" (the event loop, default) or "thread".
    ingress_poll_mode: str = Field(default="loop", pattern="^(loop|thread)$")
    # Signed requests (data-deletion, deauthorize) older than this are refused as expired.
    signed_request_max_age_s: int = 24 * 3600

    # --- admin HTTP API (`wapipe tenants serve`) ---------------------------------------------
    # The operator key (WAPIPE_OPERATOR_API_KEY): every admin route. Tenants use their own key
    # (issued by `wapipe tenants api-key`), valid only for their own tenant's routes.
    operator_api_key: SecretStr | None = None
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=0, ge=0, description="0: a free port, printed on the READY line")
    # Largest JSON body the admin and privacy APIs read (413 above it); their requests are small.
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # --- health and metrics of every service (wapipe/probe.py) ------------------------------
    probe_enabled: bool = True
    probe_host: str = "127.0.0.1"
    probe_port: int = Field(default=0, ge=0, le=65535, description="0: a free port (written to <state>/probes/)")

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def chdb_path(self) -> Path:
        return self.state_dir / "chdb"

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{self.chdb_path}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @classmethod
    def under(cls, state_dir: Path, **overrides: Any) -> "Settings":
        """Settings from the environment with their state under ``state_dir`` (a test's or a
        benchmark's own folder); the Kafka jars stay shared."""
        base = cls()
        return base.model_copy(update={"state_dir": state_dir, "jars_dir": base.jars_dir,
                                       "kafka_bootstrap_servers": base.kafka_bootstrap_servers, **overrides})

    # --- the local stack (`wapipe demo`) ------------------------------------------------------
    # The demo's services behind the send path (sink, normaliser, privacy, media, erp-inbound,
    # tenants follow) run at this niceness: on the demo's machine they take the CPU the worker, the
    # ingress, the broker and the sandbox leave, and catch up after the burst (0: all equal). Each
    # service is a session of its own, so with Linux's autogroups its group is niced too, and it
    # yields to everything else on the machine (`wapipe up` leaves them at 0 unless asked,
    # `--background-nice`). docs/send-pipeline.md, "The demo's niceness did nothing".
    stack_background_nice: int = Field(default=10, ge=0, le=19)

    # --- reports and the demo (`wapipe report`, `wapipe demo`) ---------------------------
    reports_dir: Path = Field(default=REPO_ROOT / "reports", description="where `wapipe report` writes HTML reports")
