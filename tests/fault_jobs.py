"""Job functions for executor fault tests; a module of its own so spawned workers can import it."""

import os
import signal
import time
from pathlib import Path


def run(task) -> str:
    """'kill' (or a packed task holding 'pack-kill') SIGKILLs its own worker; 'sleep' records its pid in task.out and
    sleeps; others return after a moment."""
    if task.job_id == "kill" or (task.packed and any(m.job_id == "pack-kill" for m in task.packed)):  # a pack dies whole
        time.sleep(0.2)  # let the siblings start: they are in flight when the pool breaks
        os.kill(os.getpid(), signal.SIGKILL)
    if task.job_id == "sleep":
        Path(task.out).write_text(str(os.getpid()))
        time.sleep(120)
    time.sleep(0.5)
    return task.job_id
