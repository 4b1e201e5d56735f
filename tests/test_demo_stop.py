"""Issue 14, point 7: Ctrl-C in the terminal running ``manage.py demo`` stops everything.

A terminal sends SIGINT to the whole foreground process group; this test starts the demo in a
process group of its own (an empty catalogue, no indexing wait: only the part that starts
services), waits until the web server answers, sends SIGINT to the group and checks the exit
status, the last words and that the embedded PostgreSQL of that data directory is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
VAR = REPO / "var" / "test-demo-stop"  # its own data directory (kept: initdb once, not per run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_of(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any("postgres" in part for part in cmdline[:1]) and str(data_dir) in " ".join(cmdline):
            found.append(proc)
    return found


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.timeout(300)
@pytest.mark.parametrize("inherited_sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
def test_sigint_to_the_demos_process_group_stops_it_cleanly_and_stops_postgres(
    inherited_sigint: signal.Handlers,
) -> None:
    """``sigint-ignored``: how a non-interactive shell starts a background job (``make demo &``,
    a CI script, a test run started with ``&``).  Python keeps an inherited SIG_IGN, so unless
    the demo sets its own handler it (and its children) never stop on SIGINT."""
    redis_url = os.environ.get("IMGREC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "IMGREC_EMBEDDED_KEEP")}
    env.update(
        DJANGO_SETTINGS_MODULE="shop_demo.settings", IMGREC_VAR_DIR=str(VAR), REDIS_URL=redis_url, PYTHONUNBUFFERED="1"
    )
    port = _free_port()
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "demo", "--empty", "--no-index-wait", "--addr", f"127.0.0.1:{port}"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, like a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, inherited_sigint),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not (any("Press Ctrl-C to stop." in x for x in lines) and _answers(port)):
            assert demo.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the demo did not come up:\n" + "".join(lines)
            time.sleep(0.5)
        assert _postgres_of(VAR / "pgdata"), "the demo's embedded PostgreSQL should be running"
        started = psutil.Process(demo.pid).children(recursive=True)  # web, worker, its pool and beat
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        code = demo.wait(timeout=90)
    finally:
        if demo.poll() is None:
            # The demo's children run in sessions of their own: a kill of its group alone would
            # leave them (and, through their handles, the embedded PostgreSQL) to the next run.
            children = psutil.Process(demo.pid).children(recursive=True)
            os.killpg(demo.pid, signal.SIGKILL)
            for child in children:
                child.kill()
            demo.wait()
            psutil.wait_procs(children, timeout=10)
            for server in _postgres_of(VAR / "pgdata"):
                server.terminate()
    reader.join(timeout=10)
    output = "".join(lines)
    assert code == 0, output
    assert "Stopped." in output and "stopped unexpectedly" not in output, output
    assert not _answers(port), "the web server still answers"
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, f"processes of the demo were left running: {[p.cmdline()[:4] for p in alive]}"
    assert _postgres_of(VAR / "pgdata") == [], "the embedded PostgreSQL was left running"
    assert not (VAR / "pgdata" / "postmaster.pid").exists()
