-- Analytics for analysts (docs/analytics.md): views over the sink's raw tables (0002).
--
-- Exactly once as seen by a query: every aggregate here is insensitive to duplicate rows (argMax,
-- min, max, uniqExact, the message_status state machine), so a status Meta delivered twice or a
-- batch a retrying sink inserted twice is counted once, with or without FINAL.

-- One row per send command: its final outcome (the last SendResult), what it asked for, and
-- where the message got to at Meta (message_status_current: read implies delivered implies sent).
CREATE VIEW IF NOT EXISTS message_facts AS
WITH
    results AS (
        SELECT
            tenant_id,
            command_id,
            any(idempotency_key)                                            AS idempotency_key,
            any(phone_number_id)                                            AS phone_number_id,
            any(lane)                                                       AS lane,
            any(campaign_id)                                                AS campaign_id,
            argMax(outcome, (decided_at, attempts, outcome != 'RETRYING'))  AS final_outcome,
            argMax(tuple(error_code), (decided_at, attempts, outcome != 'RETRYING')).1 AS result_error_code,
            argMax(tuple(reason), (decided_at, attempts, outcome != 'RETRYING')).1 AS result_reason,
            max(attempts)                                                   AS max_attempts,
            anyIf(wamid, wamid IS NOT NULL AND wamid != '')                 AS result_wamid,
            minIf(decided_at, outcome = 'ACCEPTED')                         AS accepted_min,
            countIf(outcome = 'ACCEPTED')                                   AS accepted_rows,
            max(decided_at)                                                 AS last_decided_at,
            min(decided_at)                                                 AS first_decided_at
        FROM send_results
        GROUP BY tenant_id, command_id
    ),
    requests AS (
        SELECT
            tenant_id,
            command_id,
            any(template_name) AS template_name,
            any(kind)          AS kind,
            min(requested_at)  AS first_requested_at
        FROM send_requests
        GROUP BY tenant_id, command_id
    )
SELECT
    r.tenant_id                                                   AS tenant_id,
    r.command_id                                                  AS command_id,
    r.idempotency_key                                             AS idempotency_key,
    r.phone_number_id                                             AS phone_number_id,
    r.lane                                                        AS lane,
    r.campaign_id                                                 AS campaign_id,
    if(q.command_id = '', NULL, q.template_name)                  AS template_name,
    if(q.command_id = '', '', q.kind)                             AS kind,
    if(q.command_id = '', r.first_decided_at, q.first_requested_at) AS requested_at,
    toDate(if(q.command_id = '', r.first_decided_at, q.first_requested_at)) AS day,
    r.final_outcome                                               AS outcome,
    r.max_attempts                                                AS attempts,
    ifNull(r.result_wamid, '')                                    AS wamid,
    if(r.accepted_rows > 0, r.accepted_min, NULL)                 AS accepted_at,
    r.last_decided_at                                             AS decided_at,
    if(s.wamid = '', '', s.status)                                AS status,
    if(s.wamid = '', 0, s.rank)                                   AS status_rank,
    if(s.wamid = '', NULL, s.sent_at)                             AS sent_at,
    if(s.wamid = '', NULL, s.delivered_at)                        AS delivered_at,
    if(s.wamid = '', NULL, s.read_at)                             AS read_at,
    if(s.wamid = '', NULL, s.failed_at)                           AS failed_at,
    coalesce(r.result_error_code, if(s.wamid != '' AND notEmpty(s.error_codes), s.error_codes[1], NULL), 0)
                                                                  AS error_code,
    coalesce(r.result_reason, if(s.wamid != '' AND notEmpty(s.error_titles), s.error_titles[1], NULL), '')
                                                                  AS error_reason,
    (r.final_outcome IN ('FAILED', 'DEAD') OR (s.wamid != '' AND s.failed_at IS NOT NULL)) AS is_failed,
    if(s.wamid = '', NULL, s.pricing_category)                    AS pricing_category,
    ifNull(if(s.wamid = '', NULL, s.pricing_billable), 0) = 1     AS billable
FROM results AS r
LEFT JOIN requests AS q ON q.tenant_id = r.tenant_id AND q.command_id = r.command_id
LEFT JOIN message_status_current AS s ON s.tenant_id = r.tenant_id AND s.wamid = ifNull(r.result_wamid, '')
SETTINGS join_use_nulls = 0;

-- The delivery funnel per tenant / campaign / template / number / day. Rates are of the messages
-- Meta accepted. `failed` counts Meta's synchronous refusals and failed statuses alike.
CREATE VIEW IF NOT EXISTS delivery_funnel AS
SELECT
    tenant_id,
    ifNull(campaign_id, '')                                            AS campaign_id,
    ifNull(template_name, '')                                          AS template_name,
    phone_number_id,
    day,
    count()                                                            AS requested,
    countIf(wamid != '')                                               AS accepted,
    countIf(sent_at IS NOT NULL)                                       AS sent,
    countIf(delivered_at IS NOT NULL)                                  AS delivered,
    countIf(read_at IS NOT NULL)                                       AS read,
    countIf(is_failed)                                                 AS failed,
    countIf(outcome IN ('REJECTED', 'EXPIRED', 'CANCELLED'))           AS rejected,
    countIf(outcome = 'DUPLICATE')                                     AS duplicate,
    countIf(outcome IN ('RETRYING', 'UNKNOWN'))                        AS pending,
    round(delivered / nullIf(accepted, 0), 4)                          AS delivered_rate,
    round(read / nullIf(accepted, 0), 4)                               AS read_rate,
    round(failed / nullIf(accepted + countIf(outcome IN ('FAILED', 'DEAD') AND wamid = ''), 0), 4) AS failed_rate
FROM message_facts
GROUP BY tenant_id, campaign_id, template_name, phone_number_id, day;

-- Seconds from Meta's accept to the delivered / read status, per tenant / campaign / number / day.
CREATE VIEW IF NOT EXISTS delivery_latency AS
SELECT
    tenant_id,
    ifNull(campaign_id, '')                                                               AS campaign_id,
    phone_number_id,
    day,
    countIf(delivered_at IS NOT NULL AND accepted_at IS NOT NULL)                         AS delivered_messages,
    quantilesIf(0.5, 0.9, 0.99)(greatest(0, dateDiff('millisecond', accepted_at, delivered_at)) / 1000.0,
                                delivered_at IS NOT NULL AND accepted_at IS NOT NULL)     AS time_to_deliver_s,
    countIf(read_at IS NOT NULL AND accepted_at IS NOT NULL)                              AS read_messages,
    quantilesIf(0.5, 0.9, 0.99)(greatest(0, dateDiff('millisecond', accepted_at, read_at)) / 1000.0,
                                read_at IS NOT NULL AND accepted_at IS NOT NULL)          AS time_to_read_s
FROM message_facts
GROUP BY tenant_id, campaign_id, phone_number_id, day;

-- Why messages did not get through: Meta's error code (synchronous or from a failed status), or
-- the pipeline's outcome when it refused a command before calling Meta.
CREATE VIEW IF NOT EXISTS failure_reasons AS
SELECT
    tenant_id,
    day,
    if(error_code = 0, outcome, toString(error_code)) AS code,
    any(error_reason)                                 AS example_reason,
    count()                                           AS messages
FROM message_facts
WHERE is_failed OR outcome IN ('REJECTED', 'EXPIRED', 'CANCELLED')
GROUP BY tenant_id, day, code;

-- Pricing category and billable counts, from the pricing object of status webhooks.
CREATE VIEW IF NOT EXISTS pricing_summary AS
SELECT
    tenant_id,
    day,
    ifNull(pricing_category, 'unknown') AS pricing_category,
    count()                             AS messages,
    countIf(billable)                   AS billable
FROM message_facts
WHERE wamid != ''
GROUP BY tenant_id, day, pricing_category;

-- Throughput achieved per number per minute, materialized (the raw results grow fastest). The
-- state is uniqExact over command ids, so a re-inserted batch changes nothing. No personal data.
CREATE TABLE IF NOT EXISTS number_throughput
(
    tenant_id       LowCardinality(String),
    phone_number_id LowCardinality(String),
    minute          DateTime('UTC'),
    accepted        AggregateFunction(uniqExact, String),
    retention_days  SimpleAggregateFunction(max, UInt16)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, phone_number_id, minute)
TTL minute + toIntervalDay(retention_days);

CREATE MATERIALIZED VIEW IF NOT EXISTS number_throughput_mv TO number_throughput AS
SELECT
    tenant_id,
    phone_number_id,
    toStartOfMinute(decided_at)                               AS minute,
    uniqExactState(command_id)                                AS accepted,
    max(retention_days)                                       AS retention_days
FROM send_results
WHERE outcome = 'ACCEPTED'
GROUP BY tenant_id, phone_number_id, minute;

INSERT INTO number_throughput
SELECT
    tenant_id,
    phone_number_id,
    toStartOfMinute(decided_at)                               AS minute,
    uniqExactState(command_id)                                AS accepted,
    max(retention_days)                                       AS retention_days
FROM send_results
WHERE outcome = 'ACCEPTED'
GROUP BY tenant_id, phone_number_id, minute;

CREATE VIEW IF NOT EXISTS number_throughput_minute AS
SELECT
    tenant_id,
    phone_number_id,
    minute,
    uniqExactMerge(accepted)                     AS accepted_messages,
    round(accepted_messages / 60.0, 2)           AS mean_msgs_per_s
FROM number_throughput
GROUP BY tenant_id, phone_number_id, minute;
