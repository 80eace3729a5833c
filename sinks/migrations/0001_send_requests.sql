-- Send commands as the pipeline accepted them (no personal data: the recipient is a subject id).
CREATE TABLE IF NOT EXISTS send_requests
(
    command_id      String,
    tenant_id       LowCardinality(String),
    idempotency_key String,
    phone_number_id LowCardinality(String),
    subject_id      String,
    lane            LowCardinality(String),
    campaign_id     Nullable(String),
    kind            LowCardinality(String),
    template_name   Nullable(String),
    template_lang   Nullable(String),
    requested_at    DateTime64(3, 'UTC'),
    valid_until     Nullable(DateTime64(3, 'UTC')),
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(requested_at)
ORDER BY (tenant_id, idempotency_key, command_id);
