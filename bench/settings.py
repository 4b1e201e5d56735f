"""Settings of the benchmarks: the test settings with a fixed media folder.

``tests.settings`` gives every process a fresh temporary ``MEDIA_ROOT``; the benchmarks that run
a server or a Celery worker beside the process that saves the photos need one folder for all of
them: ``$IMGREC_VAR_DIR/bench-media``.
"""

import os
from pathlib import Path

from tests.settings import *  # noqa: F401,F403
from tests.settings import VAR_DIR

MEDIA_ROOT = str(Path(os.environ.get("IMGREC_BENCH_MEDIA", Path(VAR_DIR) / "bench-media")))
# imgrec's URLs plus the hand-written peers that bench/similar_peer.py and bench/serving_load.py
# measure imgrec against (the demo's URLconf is included whole).
ROOT_URLCONF = "bench.peer_view"

# ``IMGREC_BENCH_TEXT_QUEUE=<name>``: text embeddings on a queue of their own (``QUEUES["text"]``);
# bench/freshness.py's worker consumes every queue of ``QUEUES``, so it serves both in turn.
if os.environ.get("IMGREC_BENCH_TEXT_QUEUE"):
    IMGREC = {**IMGREC, "QUEUES": {**IMGREC["QUEUES"], "text": os.environ["IMGREC_BENCH_TEXT_QUEUE"]}}  # noqa: F405
