-- Issue 20: a status of a message to a group (StatusEvent v4 recipient_type "group") is a group's,
-- not a person's: its subject_id is '' and the group's id is in extra.group_id. recipient_type makes
-- that a column analytics can filter on ('individual', 'group', or '' when Meta did not say).
-- A recipient known only by a business-scoped user id has a subject like any other: no column here
-- assumes a phone number.
ALTER TABLE status_events ADD COLUMN IF NOT EXISTS recipient_type LowCardinality(String) DEFAULT '';
