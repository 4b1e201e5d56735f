"""Settings of the Celery worker subprocesses that the reliability tests kill and restart.

The test settings, plus what the parent test process hands over in the environment: its test
database (``DATABASE_URL``, so the subprocess never joins the embedded server's handle list —
a SIGKILLed handle would keep that server alive), its media folder, its broker and the
``IMGREC`` overrides of the test (JSON in ``IMGREC_FAULT_IMGREC``).  The fault-injection
backbone ``imgrec_fault`` is registered.
"""

import json
import os

# Imported (not used) in the worker's parent so that each pool child forked after a SIGKILL
# starts in a second instead of importing torch again; the model itself still loads in the child.
import torch  # noqa: E402,F401

import tests.faults.backbones  # noqa: E402,F401  (registers "imgrec_fault")
from tests.settings import *  # noqa: F401,F403
from tests.settings import CELERY_BROKER_URL, IMGREC

MEDIA_ROOT = os.environ["IMGREC_FAULT_MEDIA_ROOT"]
CELERY_BROKER_URL = os.environ.get("IMGREC_FAULT_BROKER_URL", CELERY_BROKER_URL)
IMGREC = {**IMGREC, **json.loads(os.environ.get("IMGREC_FAULT_IMGREC", "{}"))}

if os.environ.get("IMGREC_FAULT_KILL_AT_REFRESH"):
    from celery.signals import worker_process_init

    def _kill_at_refresh(**_: object) -> None:
        from tests.faults.windows import install_kill_at_refresh

        install_kill_at_refresh(os.environ["IMGREC_FAULT_KILL_AT_REFRESH"])

    worker_process_init.connect(_kill_at_refresh, weak=False)
