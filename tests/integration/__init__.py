"""Integration test projects: each runs in its own pytest session with its own settings."""
