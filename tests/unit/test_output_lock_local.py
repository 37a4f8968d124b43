"""One live run per output: the lock of a local folder (the engine's, no Prefect).

The lock of an object store (moto's S3) and two dataset runs on one output are tested in
``tests/test_output_lock.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prefect_seedream.engine.output_lock import (
    OutputLock,
    OutputLockedError,
    check_held_by,
    current_holder,
)
from prefect_seedream.engine.storage import ImageStore


def test_a_second_lock_on_a_local_folder_fails_fast_and_names_the_holder(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out")
    first = OutputLock(store, run_id="run-a")
    first.acquire()
    try:
        with pytest.raises(OutputLockedError) as info:
            OutputLock(ImageStore(tmp_path / "out"), run_id="run-b").acquire()
        assert "run run-a" in str(info.value) and f"pid {os.getpid()}" in str(info.value)
        assert current_holder(store).run_id == "run-a"
        check_held_by(store, "run-a")
        with pytest.raises(OutputLockedError, match="run the parent flow again"):
            check_held_by(store, "run-b")
    finally:
        first.release()
    second = OutputLock(store, run_id="run-b")
    second.acquire()
    second.release()
    assert current_holder(store) is None


def test_a_killed_holder_never_blocks_the_next_run(tmp_path: Path) -> None:
    """SIGKILL a process that holds the lock: the kernel releases it at once."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from prefect_seedream.engine.output_lock import OutputLock
            from prefect_seedream.engine.storage import ImageStore
            lock = OutputLock(ImageStore({str(out)!r}), run_id="doomed")
            lock.acquire()
            print("held", flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match="doomed"):
            OutputLock(ImageStore(out), run_id="next").acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        lock = OutputLock(ImageStore(out), run_id="next")
        lock.acquire()  # immediately: no timeout to wait out
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
