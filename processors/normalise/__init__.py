"""``wapipe normalise``: raw Meta webhooks → typed status, inbound and account events."""
