"""The encrypted per-profile credential store."""
