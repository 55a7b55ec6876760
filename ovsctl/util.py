"""Small helpers shared by the agent, the lab and the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time


def atomic_write(path: str, text: str) -> None:
    """Replace `path` with `text` atomically and durably (temp file, fsync, rename, dir fsync)."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
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


def kill_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Send `sig` to a process we started, wait up to `timeout` s for it to go, then SIGKILL."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
