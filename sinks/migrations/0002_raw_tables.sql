-- The sink's raw tables (one per topic) and the message status state machine.
--
-- Idempotence, twice over:
--  * every table keeps a deduplication window for non-replicated MergeTree, so a retried INSERT
--    with the same insert_deduplication_token (the sink resends the identical batch) is a no-op;
--  * every table is a ReplacingMergeTree whose ORDER BY is the record's identity, so a record
--    redelivered after a crash (a different batch, a different token) collapses under FINAL.
-- Retention: each row carries `retention_days`, taken from the tenant's settings for the row's data
-- type (content, metadata, audit) or the Settings default, and a TTL on it.

ALTER TABLE send_requests ADD COLUMN IF NOT EXISTS retention_days UInt16 DEFAULT 365;
ALTER TABLE send_requests MODIFY TTL toDateTime(requested_at) + toIntervalDay(retention_days);
ALTER TABLE send_requests MODIFY SETTING non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS send_results
(
    command_id       String,
    tenant_id        LowCardinality(String),
    idempotency_key  String,
    phone_number_id  LowCardinality(String),
    subject_id       String,
    lane             LowCardinality(String),
    campaign_id      Nullable(String),
    outcome          LowCardinality(String),
    wamid            Nullable(String),
    message_status   Nullable(String),
    error_code       Nullable(Int32),
    error_subcode    Nullable(Int32),
    reason           Nullable(String),
    attempts         UInt16,
    original_outcome Nullable(String),
    decided_at       DateTime64(3, 'UTC'),
    retention_days   UInt16,
    inserted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(decided_at)
ORDER BY (tenant_id, command_id, outcome, attempts, decided_at)
TTL toDateTime(decided_at) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- One row per status webhook entry (duplicates collapse on event_id = sha256(number, wamid, status)).
CREATE TABLE IF NOT EXISTS status_events
(
    event_id                 String,
    tenant_id                LowCardinality(String),
    waba_id                  LowCardinality(String),
    phone_number_id          LowCardinality(String),
    wamid                    String,
    status                   LowCardinality(String),
    status_rank              UInt8,
    timestamp                DateTime64(3, 'UTC'),
    subject_id               String,
    biz_opaque_callback_data Nullable(String),
    conversation_id          Nullable(String),
    conversation_origin      Nullable(String),
    conversation_expires_at  Nullable(DateTime64(3, 'UTC')),
    pricing_billable         Nullable(Bool),
    pricing_model            Nullable(String),
    pricing_category         Nullable(String),
    pricing_type             Nullable(String),
    error_codes              Array(Int32),
    error_titles             Array(String),
    error_messages           Array(String),
    error_details            Array(String),
    received_at              DateTime64(3, 'UTC'),
    extra                    String,
    retention_days           UInt16,
    inserted_at              DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, wamid, event_id)
TTL toDateTime(timestamp) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- The state machine, where queries see it: one row per message, folded from status_events by
-- aggregates that are idempotent and order-free (max rank, min timestamps, argMax of status by
-- (rank, timestamp)). sent(1) < delivered(2) < read = played(3) < failed(4); unknown statuses rank 0
-- and never move a message. A late `sent` after `read` cannot lower max(rank); duplicates change
-- nothing. Read it through the view message_status_current (below).
CREATE TABLE IF NOT EXISTS message_status
(
    tenant_id                LowCardinality(String),
    wamid                    String,
    phone_number_id          SimpleAggregateFunction(any, String),
    waba_id                  SimpleAggregateFunction(any, String),
    subject_id               SimpleAggregateFunction(any, String),
    biz_opaque_callback_data SimpleAggregateFunction(any, Nullable(String)),
    rank_max                 SimpleAggregateFunction(max, UInt8),
    status_state             AggregateFunction(argMax, String, Tuple(UInt8, DateTime64(3, 'UTC'))),
    sent_min                 SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    delivered_min            SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    read_min                 SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    failed_min               SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    first_seen               SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_update              SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    error_codes              SimpleAggregateFunction(groupUniqArrayArray, Array(Int32)),
    error_titles             SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    pricing_category         SimpleAggregateFunction(any, Nullable(String)),
    pricing_model            SimpleAggregateFunction(any, Nullable(String)),
    pricing_billable         SimpleAggregateFunction(max, Nullable(UInt8)),
    conversation_origin      SimpleAggregateFunction(any, Nullable(String)),
    retention_days           SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(first_seen)
ORDER BY (tenant_id, wamid)
TTL toDateTime(first_seen) + toIntervalDay(retention_days);

CREATE MATERIALIZED VIEW IF NOT EXISTS message_status_mv TO message_status AS
SELECT
    tenant_id,
    wamid,
    any(phone_number_id)                                   AS phone_number_id,
    any(waba_id)                                           AS waba_id,
    any(subject_id)                                        AS subject_id,
    any(biz_opaque_callback_data)                          AS biz_opaque_callback_data,
    max(status_rank)                                       AS rank_max,
    argMaxState(toString(status), (status_rank, timestamp)) AS status_state,
    minIf(toNullable(timestamp), status = 'sent')          AS sent_min,
    minIf(toNullable(timestamp), status = 'delivered')     AS delivered_min,
    minIf(toNullable(timestamp), status IN ('read', 'played')) AS read_min,
    minIf(toNullable(timestamp), status = 'failed')        AS failed_min,
    min(timestamp)                                         AS first_seen,
    max(timestamp)                                         AS last_update,
    groupUniqArrayArray(error_codes)                       AS error_codes,
    groupUniqArrayArray(error_titles)                      AS error_titles,
    any(pricing_category)                                  AS pricing_category,
    any(pricing_model)                                     AS pricing_model,
    max(toNullable(toUInt8(pricing_billable)))             AS pricing_billable,
    any(conversation_origin)                               AS conversation_origin,
    max(retention_days)                                    AS retention_days
FROM status_events
GROUP BY tenant_id, wamid;

-- The current state of each message. `delivered_at` and `sent_at` are implied by later states
-- (Meta may skip `delivered`, or `sent`): a read message was delivered, a delivered one was sent.
CREATE VIEW IF NOT EXISTS message_status_current AS
SELECT
    tenant_id,
    wamid,
    any(phone_number_id)                                   AS phone_number_id,
    any(waba_id)                                           AS waba_id,
    any(subject_id)                                        AS subject_id,
    any(biz_opaque_callback_data)                          AS biz_opaque_callback_data,
    max(rank_max)                                          AS rank,
    argMaxMerge(status_state)                              AS status,
    coalesce(min(sent_min), min(delivered_min), min(read_min)) AS sent_at,
    if(max(rank_max) IN (2, 3), coalesce(min(delivered_min), min(read_min)), min(delivered_min)) AS delivered_at,
    min(read_min)                                          AS read_at,
    min(failed_min)                                        AS failed_at,
    min(first_seen)                                        AS first_seen,
    max(last_update)                                       AS last_update,
    groupUniqArrayArray(error_codes)                       AS error_codes,
    groupUniqArrayArray(error_titles)                      AS error_titles,
    any(pricing_category)                                  AS pricing_category,
    any(pricing_model)                                     AS pricing_model,
    max(pricing_billable)                                  AS pricing_billable,
    any(conversation_origin)                               AS conversation_origin
FROM message_status
GROUP BY tenant_id, wamid;

-- Inbound messages: metadata in clear (subject_id is pseudonymous), content only sealed, and the
-- sealed content expires earlier (column TTL, the tenant's `content` retention) than the row.
CREATE TABLE IF NOT EXISTS inbound_messages
(
    event_id               String,
    tenant_id              LowCardinality(String),
    waba_id                LowCardinality(String),
    phone_number_id        LowCardinality(String),
    message_id             String,
    type                   LowCardinality(String),
    timestamp              DateTime64(3, 'UTC'),
    subject_id             String,
    context_message_id     Nullable(String),
    pii_key_id             String TTL toDateTime(timestamp) + toIntervalDay(content_retention_days),
    pii_nonce              String TTL toDateTime(timestamp) + toIntervalDay(content_retention_days),
    pii_ciphertext         String TTL toDateTime(timestamp) + toIntervalDay(content_retention_days),
    received_at            DateTime64(3, 'UTC'),
    extra                  String,
    content_retention_days UInt16,
    retention_days         UInt16,
    inserted_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (tenant_id, phone_number_id, message_id)
TTL toDateTime(timestamp) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

-- Template status, number quality, account updates and any other field Meta sends (value kept whole).
CREATE TABLE IF NOT EXISTS account_events
(
    event_id        String,
    tenant_id       LowCardinality(String),
    waba_id         LowCardinality(String),
    phone_number_id Nullable(String),
    field           LowCardinality(String),
    event           Nullable(String),
    value           String,
    occurred_at     DateTime64(3, 'UTC'),
    received_at     DateTime64(3, 'UTC'),
    retention_days  UInt16,
    inserted_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (waba_id, field, event_id)
TTL toDateTime(occurred_at) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS audit_log
(
    event_id       String,
    occurred_at    DateTime64(3, 'UTC'),
    actor          LowCardinality(String),
    tenant_id      LowCardinality(String),
    subject_id     String,
    action         LowCardinality(String),
    target         Nullable(String),
    outcome        LowCardinality(String),
    details        Map(String, String),
    retention_days UInt16,
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(inserted_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_id)
TTL toDateTime(occurred_at) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 10000;
