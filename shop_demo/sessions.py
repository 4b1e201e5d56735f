"""The demo's session store: Django's database sessions, refusing malformed session keys.

Django's database backend looks any cookie value of 8+ characters up in PostgreSQL; a value with a
NUL byte makes PostgreSQL raise ``DataError`` ("a string literal cannot contain NUL"), so a forged
cookie turned any page that reads the session into a 500 (found by the schemathesis fuzz test).
Django only ever issues 32 lowercase letters and digits, so anything else is no session at all.
"""

from __future__ import annotations

import re

from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

_KEY = re.compile(r"[a-z0-9]{8,64}")


class SessionStore(DatabaseSessionStore):
    def _validate_session_key(self, key: str | None) -> bool:
        return bool(key) and _KEY.fullmatch(str(key)) is not None
