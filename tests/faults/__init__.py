"""Fault injection for the reliability tests (issue 7): a misbehaving backbone, subprocess
Celery workers that can be SIGKILLed, and restarts of the broker and of the embedded Postgres."""
