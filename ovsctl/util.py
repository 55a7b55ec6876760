"""Small helpers shared by the agent, the lab and the tests."""

from __future__ import annotations

import os
import tempfile
import time


def atomic_write(path: str, text: str) -> None:
    """Replace `path` with `text` atomically and durably (temp file, fsync, rename, dir fsync)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def wait_until(cond, timeout: float, what: str, interval: float = 0.05, error=TimeoutError):
    """Poll cond() until truthy (returns its value) or raise `error` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        val = cond()
        if val:
            return val
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
