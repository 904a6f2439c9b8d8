"""Forwarding: per-destination consumers that route, deliver with retries, dead-letter, and record receipts."""
