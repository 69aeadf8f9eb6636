"""Vendor hooks: each owns its connection, auth and transport; pacing and retries come from the base."""
