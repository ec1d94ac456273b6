-- A Claude Code session's cost (`ccm statusline`, GET /ccm/sessions/{id}) is read from its rows; without this index
-- that is a scan of every row. Rows without a session (most API callers) are left out of it.
CREATE INDEX usage_session ON usage (session, key_id) WHERE session IS NOT NULL;
