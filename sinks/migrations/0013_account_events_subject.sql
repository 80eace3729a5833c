-- Issue 18: account events about a WhatsApp user (user_preferences, message echoes, ...) carry the
-- person's subject_id and their part of the value sealed (AccountEvent v2), so an erasure finds
-- and deletes them like every other table with a subject_id. Business-level events keep ''.
ALTER TABLE account_events ADD COLUMN IF NOT EXISTS subject_id String DEFAULT '';
ALTER TABLE account_events ADD COLUMN IF NOT EXISTS pii_key_id String DEFAULT '';
ALTER TABLE account_events ADD COLUMN IF NOT EXISTS pii_nonce String DEFAULT '';
ALTER TABLE account_events ADD COLUMN IF NOT EXISTS pii_ciphertext String DEFAULT '';
