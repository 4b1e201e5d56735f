"""Faults inside imgrec's write window, for the worker subprocesses (tests/settings_faults.py).

``IMGREC_FAULT_KILL_AT_REFRESH=<path>``: the first pool child that starts writing product
vectors while ``<path>`` exists deletes it and SIGKILLs itself — a worker dying between an
image's status and its product's vector (issue 13 §1).
"""

from __future__ import annotations

import os
import signal
from typing import Any


def install_kill_at_refresh(flag: str) -> None:
    """Wrap ``indexing.refresh_product_vectors`` in this process (call it in the pool child)."""
    from imgrec_app.services import indexing

    real = indexing.refresh_product_vectors

    def refresh(pairs: Any, model_id: str) -> int:
        try:
            os.remove(flag)
        except FileNotFoundError:
            return real(pairs, model_id)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    indexing.refresh_product_vectors = refresh
