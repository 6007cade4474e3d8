"""File lease: an OS file lock per instance ID, for many processes on one host.

Guarantee: at most one holder per instance ID among all processes of this host that
use the same directory on a local filesystem with ``flock`` support. The OS frees the
lock when the holder's process dies, so the lease never expires while the holder
lives (``Grant.valid_for`` is ``None``) and is never left orphaned.

Assumptions: a local filesystem (``flock`` over NFS is not reliable); every
participant uses the same directory. Lock files are never deleted (deleting a lock
file that another process has open lets two holders coexist).

Files: ``<directory>/<sha256(instance_id)[:40]>.lock``. The lock is filelock's
descriptor-level primitive (``flock`` on Unix, ``LockFileEx`` on Windows) on a
descriptor we own, and the fencing counter lives in the lock file itself: a
fixed-width 20-digit number written under the lock in one small ``write``. It survives
process crashes, not the loss of the directory.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends._wakeups import RELEASES, wait_async, wait_sync
from strict_singleton.lock_backends.base import Grant, require_positive_ttl

DEFAULT_DIRECTORY = Path(tempfile.gettempdir()) / "strict-singleton"
# Another process's release cannot wake us; re-try this often.
CROSS_PROCESS_POLL = 0.01


class FileLease:
    """A lease per instance ID as a file lock in ``directory`` (the embedded default).

    Args:
        directory: where lock files live; created if missing. Defaults to
            ``<tempdir>/strict-singleton``.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is not None and not str(os.fspath(directory)).strip():
            # Path("") would silently mean the current directory.
            raise InvalidArgumentError("directory must not be empty", backend="file")
        path = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        self._directory = path
        self._name = f"file({path})"
        self._held: dict[tuple[str, str], int] = {}  # (instance ID, token) -> locked descriptor
        self._held_lock = threading.Lock()
        self._ready = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def directory(self) -> Path:
        return self._directory

    def __repr__(self) -> str:
        return f"FileLease(directory={str(self._directory)!r})"

    def validate_ttl(self, ttl: float) -> None:
        require_positive_ttl(ttl, backend=self._name)

    def lock_path(self, instance_id: str) -> Path:
        digest = hashlib.sha256(instance_id.encode("utf-8")).hexdigest()[:40]
        return self._directory / f"{digest}.lock"

    def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        path = self.lock_path(instance_id)
        try:
            if not self._ready:
                self._directory.mkdir(parents=True, exist_ok=True)
                self._ready = True
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._unavailable(exc, instance_id) from exc
        try:
            if not lock_descriptor(fd, blocking=False):
                os.close(fd)
                return None
            fence = _read_fence(fd) + 1
            _write_fence(fd, fence)
        except OSError as exc:
            os.close(fd)  # closing the descriptor also drops the lock
            raise self._unavailable(exc, instance_id) from exc
        with self._held_lock:
            self._held[(instance_id, token)] = fd
        return Grant(fencing_token=fence, valid_for=None)

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        # An OS lock does not expire; it is ours for as long as we hold the descriptor.
        with self._held_lock:
            return (instance_id, token) in self._held

    def release(self, instance_id: str, token: str) -> bool:
        with self._held_lock:
            fd = self._held.pop((instance_id, token), None)
        if fd is None:
            return False
        try:
            unlock_descriptor(fd)
        except OSError as exc:
            raise self._unavailable(exc, instance_id) from exc
        finally:
            os.close(fd)
        RELEASES.notify(str(self.lock_path(instance_id)))
        return True

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        # Releases in this process wake us at once; another process's release is found
        # by probing the lock file (local, microseconds, no load on any server), at
        # intervals growing from 2 ms to CROSS_PROCESS_POLL.
        key = str(self.lock_path(instance_id))
        deadline = time.monotonic() + timeout
        interval = 0.002
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.probe_free(instance_id):
                return
            wait_sync(key, min(left, interval))
            interval = min(interval * 2, CROSS_PROCESS_POLL)

    def probe_free(self, instance_id: str) -> bool:
        """Whether nobody holds the lock right now (takes and drops it at once)."""
        try:
            fd = os.open(self.lock_path(instance_id), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return True  # let the acquire attempt report the problem
        try:
            if lock_descriptor(fd, blocking=False):
                unlock_descriptor(fd)
                return True
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        with self._held_lock:
            held = list(self._held.values())
            self._held.clear()
        for fd in held:
            os.close(fd)

    def _unavailable(self, exc: OSError, instance_id: str) -> LockUnavailableError:
        return LockUnavailableError(
            f"lock directory unavailable: {type(exc).__name__}: {exc}", instance_id=instance_id, backend=self._name
        )


_FENCE_WIDTH = 20


def _read_fence(fd: int) -> int:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, _FENCE_WIDTH).strip()
    return int(data) if data.isdigit() else 0


def _write_fence(fd: int, value: int) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{value:0{_FENCE_WIDTH}d}".encode("ascii"))


class AsyncFileLease:
    """The asyncio twin of :class:`FileLease`.

    Lock attempts are non-blocking ``flock`` calls on a local file (microseconds), so
    they run on the event loop; only waiting yields.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._sync = FileLease(directory)

    @property
    def name(self) -> str:
        return self._sync.name

    @property
    def directory(self) -> Path:
        return self._sync.directory

    def __repr__(self) -> str:
        return f"AsyncFileLease(directory={str(self._sync.directory)!r})"

    def validate_ttl(self, ttl: float) -> None:
        self._sync.validate_ttl(ttl)

    async def acquire(self, instance_id: str, token: str, ttl: float) -> Grant | None:
        return self._sync.acquire(instance_id, token, ttl)

    async def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        return self._sync.extend(instance_id, token, ttl)

    async def release(self, instance_id: str, token: str) -> bool:
        return self._sync.release(instance_id, token)

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        key = str(self._sync.lock_path(instance_id))
        deadline = time.monotonic() + timeout
        interval = 0.002
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self._sync.probe_free(instance_id):
                return
            await wait_async(key, min(left, interval))
            interval = min(interval * 2, CROSS_PROCESS_POLL)

    async def close(self) -> None:
        self._sync.close()


__all__ = ["AsyncFileLease", "FileLease"]
