"""File lease: an OS file lock per instance ID, for many processes on one host.

Guarantee: at most one holder per instance ID among all processes of this host that
use the same directory on a local filesystem with ``flock`` support. The OS frees the
lock when the holder's process dies, so the lease never expires while the holder
lives (``Grant.valid_for`` is ``None``) and is never left orphaned.

Assumptions: a local filesystem (``flock`` over NFS is not reliable); every
participant uses the same directory. Lock files are never deleted (deleting a lock
file that another process has open lets two holders coexist).

Files: ``<directory>/<sha256(instance_id)[:40]>.lock`` and ``.fence`` (the fencing
counter, written atomically under the lock with ``os.replace``; it survives process
crashes, not the loss of the directory).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from filelock import FileLock, Timeout

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends._wakeups import RELEASES, wait_async, wait_sync
from strict_singleton.lock_backends.base import Grant, require_positive_ttl

DEFAULT_DIRECTORY = Path(tempfile.gettempdir()) / "strict-singleton"
# Another process's release cannot wake us; re-try this often.
CROSS_PROCESS_POLL = 0.02


class FileLease:
    """A lease per instance ID as a file lock in ``directory`` (the embedded default).

    Args:
        directory: where lock files live; created if missing. Defaults to
            ``<tempdir>/strict-singleton``.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        path = Path(directory) if directory is not None else DEFAULT_DIRECTORY
        if not str(path):
            raise InvalidArgumentError("directory must not be empty", backend="file")
        self._directory = path
        self._name = f"file({path})"
        self._held: dict[tuple[str, str], FileLock] = {}
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
            lock = FileLock(
                path, thread_local=False, is_singleton=False, fallback_to_soft=False, preserve_lock_file=True
            )
            try:
                lock.acquire(blocking=False)
            except Timeout:
                return None
            try:
                fence = self._bump_fence(path.with_suffix(".fence"))
            except BaseException:
                lock.release()
                raise
        except OSError as exc:
            raise LockUnavailableError(
                f"lock directory unavailable: {type(exc).__name__}: {exc}", instance_id=instance_id, backend=self._name
            ) from exc
        with self._held_lock:
            self._held[(instance_id, token)] = lock
        return Grant(fencing_token=fence, valid_for=None)

    def extend(self, instance_id: str, token: str, ttl: float) -> bool:
        # An OS lock does not expire; it is ours for as long as we hold the object.
        with self._held_lock:
            return (instance_id, token) in self._held

    def release(self, instance_id: str, token: str) -> bool:
        with self._held_lock:
            lock = self._held.pop((instance_id, token), None)
        if lock is None:
            return False
        try:
            lock.release()
        except OSError as exc:
            raise LockUnavailableError(
                f"could not release file lock: {exc}", instance_id=instance_id, backend=self._name
            ) from exc
        RELEASES.notify(str(self.lock_path(instance_id)))
        return True

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        wait_sync(str(self.lock_path(instance_id)), min(timeout, CROSS_PROCESS_POLL))

    def close(self) -> None:
        with self._held_lock:
            held = list(self._held.values())
            self._held.clear()
        for lock in held:
            lock.release()

    @staticmethod
    def _bump_fence(path: Path) -> int:
        try:
            current = int(path.read_text(encoding="ascii") or "0")
        except FileNotFoundError:
            current = 0
        nxt = current + 1
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(str(nxt), encoding="ascii")
        os.replace(tmp, path)
        return nxt


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
        await wait_async(str(self._sync.lock_path(instance_id)), min(timeout, CROSS_PROCESS_POLL))

    async def close(self) -> None:
        self._sync.close()


__all__ = ["AsyncFileLease", "FileLease"]
