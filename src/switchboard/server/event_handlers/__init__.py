"""Event handlers: an org's signed webhooks (Standard Webhooks 1.0), delivered at least once from
the event log by a background dispatcher, with retries, dead letters, replays and an attempt log.
Depends only on core."""
