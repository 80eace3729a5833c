-- message_facts, corrected: a DUPLICATE result repeats the original's wamid, but the duplicate
-- command itself was never sent, so it must not count as accepted, sent, delivered or failed
-- (the original does). Only the wamid of the command's own ACCEPTED/UNKNOWN results is kept.
CREATE OR REPLACE VIEW message_facts AS
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
            anyIf(wamid, wamid IS NOT NULL AND wamid != '' AND outcome != 'DUPLICATE') AS result_wamid,
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
