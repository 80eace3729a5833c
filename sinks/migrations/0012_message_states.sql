-- The message state machine without a GROUP BY at insert time.
--
-- message_status (0002) was filled by a materialized view that grouped every inserted block by
-- (tenant_id, wamid) and built an argMax state per message. That view was 60 % of the sink's
-- ClickHouse time (bench/sink.py: six 100k-row inserts took 4.3 s with it, 1.7 s without).
-- message_states keeps the same fold with simple aggregates only, so the view maps each status
-- row to one state row and the engine folds them when parts merge (and queries fold what is not
-- merged yet). The current status is max((rank, timestamp, status)): the highest rank, then the
-- latest time, as argMax(status, (rank, timestamp)) was (on a tie of both it takes the greater
-- name, so the result no longer depends on the order rows were read). Every aggregate is
-- idempotent, so the backfill below may overlap rows the new view already wrote.
CREATE TABLE IF NOT EXISTS message_states
(
    tenant_id                LowCardinality(String),
    wamid                    String,
    phone_number_id          SimpleAggregateFunction(any, String),
    waba_id                  SimpleAggregateFunction(any, String),
    subject_id               SimpleAggregateFunction(any, String),
    biz_opaque_callback_data SimpleAggregateFunction(any, Nullable(String)),
    rank_max                 SimpleAggregateFunction(max, UInt8),
    status_last              SimpleAggregateFunction(max, Tuple(UInt8, DateTime64(3, 'UTC'), String)),
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

CREATE MATERIALIZED VIEW IF NOT EXISTS message_states_mv TO message_states AS
SELECT
    tenant_id,
    wamid,
    phone_number_id,
    waba_id,
    subject_id,
    biz_opaque_callback_data,
    status_rank                                              AS rank_max,
    (status_rank, timestamp, toString(status))               AS status_last,
    if(status = 'sent', timestamp, NULL)                     AS sent_min,
    if(status = 'delivered', timestamp, NULL)                AS delivered_min,
    if(status IN ('read', 'played'), timestamp, NULL)        AS read_min,
    if(status = 'failed', timestamp, NULL)                   AS failed_min,
    timestamp                                                AS first_seen,
    timestamp                                                AS last_update,
    error_codes,
    error_titles,
    pricing_category,
    pricing_model,
    toNullable(toUInt8(pricing_billable))                    AS pricing_billable,
    conversation_origin,
    retention_days
FROM status_events;

DROP VIEW IF EXISTS message_status_mv;

INSERT INTO message_states
SELECT
    tenant_id, wamid, phone_number_id, waba_id, subject_id, biz_opaque_callback_data,
    status_rank, (status_rank, timestamp, toString(status)),
    if(status = 'sent', timestamp, NULL), if(status = 'delivered', timestamp, NULL),
    if(status IN ('read', 'played'), timestamp, NULL), if(status = 'failed', timestamp, NULL),
    timestamp, timestamp, error_codes, error_titles, pricing_category, pricing_model,
    toNullable(toUInt8(pricing_billable)), conversation_origin, retention_days
FROM status_events;

-- Same columns as before; the status is the third element of the greatest (rank, time, status).
CREATE OR REPLACE VIEW message_status_current AS
SELECT
    tenant_id,
    wamid,
    any(phone_number_id)                                   AS phone_number_id,
    any(waba_id)                                           AS waba_id,
    any(subject_id)                                        AS subject_id,
    any(biz_opaque_callback_data)                          AS biz_opaque_callback_data,
    max(rank_max)                                          AS rank,
    max(status_last).3                                     AS status,
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
FROM message_states
GROUP BY tenant_id, wamid;

DROP TABLE IF EXISTS message_status;
