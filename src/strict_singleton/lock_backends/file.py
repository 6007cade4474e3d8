"""File lease: an OS file lock per instance ID, for many processes on one host.

Guarantee: at most one holder per instance ID among all processes of this host that
use the same directory on a local filesystem with ``flock`` support. The OS frees the
lock when the holder's process dies, so the lease never expires while the holder
lives (``Grant.valid_for`` is ``None``) and is never left orphaned. A forked child never
holds its parent's leases (it closes its copies of lock file descriptors at once and
answers "not ours" for the parent's tokens), so the lock dies with the holder even if a
child it forked lives on.

Assumptions: a local filesystem (``flock`` over NFS is not reliable); every
participant uses the same directory. Lock files are never deleted (deleting a lock
file that another process has open lets two holders coexist).

Which directory: one path for every process, never a per-process setting such as
``$TMPDIR`` (two processes with different temp directories would lock different files
for one ID and both start):

1. the ``directory`` argument; else
2. the environment variable ``STRICT_SINGLETON_LOCK_DIR`` (an absolute path; it must
   have the same value in every participant; empty means unset); else
3. ``/var/tmp/strict-singleton`` on POSIX, ``%ProgramData%\\strict-singleton`` on
   Windows. ``/var/tmp`` exists on every POSIX system, is not redirected by ``$TMPDIR``,
   and, unlike ``/tmp`` (often a tmpfs), survives reboots, so the fencing counters
   keep growing. A systemd unit with ``PrivateTmp=yes`` gets a private ``/var/tmp``
   too: such services must name a shared directory explicitly.

Files: ``<directory>/<sha256(instance_id)[:40]>.lock``. The lock is filelock's
descriptor-level primitive (``flock`` on Unix, ``LockFileEx`` on Windows) on a
descriptor we own, and the fencing counter lives in the lock file itself: a
fixed-width 20-digit number written under the lock in one small ``write``, followed by
the last start record (``release_with_record``, ``record_start``; a 100-byte slot),
written under the lock just before it is released, then the last request record
(``record_request``; a slot of ``REQUEST_RECORD_MAX`` bytes), written under the held
lock, which is kept. Each slot is padded with spaces and only its own writer touches
it, so no call erases or alters another slot; ``acquire`` reads all three in one
``read``. A file whose request slot was never written ends before it (no request
record). They survive process crashes, not the loss of the directory; records are kept
until replaced (readers check their ``expires_at_us``).

Nothing in the directory may redirect a write (POSIX). Lock files are opened with
``O_NOFOLLOW`` relative to a descriptor of the directory, which is itself opened with
``O_NOFOLLOW`` and checked on that descriptor; a lock file must be a regular file with
one link. The directory must be a real directory (not a symbolic link), owned by this
user or by root, and if group or others may write to it, it must have the sticky bit
(else they could delete a held lock file). Anything else raises
:class:`~strict_singleton.errors.LockUnavailableError` (``InvalidArgumentError`` at
construction when the directory already shows the problem) and nothing is written.
On Windows only the symbolic-link and regular-file checks apply.

Users: all participants run as one user. We create a missing directory with mode
``0700``; another user is refused the directory (fail closed: its start raises
instead of proceeding unguarded). To share lock files between users, an administrator
creates a root-owned group directory, e.g. ``install -d -o root -g GROUP -m 3770 DIR``
(setgid: new files take the group; sticky: only a file's owner may delete it). Lock
files are created with mode ``0660`` whatever the umask, so group members can lock
files that others created.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import lock_descriptor, unlock_descriptor

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends._wakeups import RELEASES, wait_async, wait_sync
from strict_singleton.lock_backends.base import (
    REQUEST_RECORD_MAX,
    Grant,
    RequestRecord,
    StartRecord,
    require_positive_ttl,
)

ENV_DIRECTORY = "STRICT_SINGLETON_LOCK_DIR"
if os.name == "nt":  # pragma: no cover - exercised on Windows only
    DEFAULT_DIRECTORY = Path(os.environ.get("PROGRAMDATA") or r"C:\ProgramData") / "strict-singleton"
else:
    DEFAULT_DIRECTORY = Path("/var/tmp/strict-singleton")
DIRECTORY_MODE = 0o700
FILE_MODE = 0o660
# Another process's release cannot wake us; re-try this often.
CROSS_PROCESS_POLL = 0.01

_POSIX = os.name == "posix"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Descriptor-relative opens (openat) close the gap between checking a path and using it.
_RELATIVE = _POSIX and bool(_NOFOLLOW) and hasattr(os, "O_DIRECTORY") and os.open in os.supports_dir_fd
_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW
# O_NONBLOCK: opening a FIFO planted at a lock path must not block (we refuse it after fstat).
_FILE_FLAGS = os.O_RDWR | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)
_SHARING_HINT = (
    "; every participant must run as one user, or use a root-owned shared directory "
    "(see strict_singleton.lock_backends.file)"
)


def lock_directory(directory: str | os.PathLike[str] | None = None) -> Path:
    """The directory a :class:`FileLease` uses: the argument, else the environment, else the default."""
    if directory is not None:
        if not str(os.fspath(directory)).strip():
            # Path("") would silently mean the current directory.
            raise InvalidArgumentError("directory must not be empty", backend="file")
        return Path(directory)
    configured = os.environ.get(ENV_DIRECTORY, "")
    if not configured:
        return DEFAULT_DIRECTORY
    if not Path(configured).is_absolute():
        raise InvalidArgumentError(
            f"{ENV_DIRECTORY} must be an absolute path (the same in every process), got {configured!r}", backend="file"
        )
    return Path(configured)


def directory_problem(st: os.stat_result) -> str | None:
    """Why a directory with this ``lstat`` result must not hold lock files, or ``None``."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if not _POSIX:
        return None
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        return f"is owned by uid {st.st_uid}, not by this user (uid {euid}) or root{_SHARING_HINT}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return f"is group- or world-writable without the sticky bit (others may delete held lock files){_SHARING_HINT}"
    return None


def _file_problem(st: os.stat_result) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if _POSIX and st.st_nlink != 1:
        return f"has {st.st_nlink} hard links (another name for some other file)"
    return None


class _Refused(OSError):
    """A directory or lock path that we will not use; nothing was written."""


Judge = Callable[[os.stat_result], str | None]


def _refuse_if(
    judge: Judge, what: str, path: str | Path, dir_fd: int | None = None, cause: OSError | None = None
) -> None:
    """Raise :class:`_Refused` if ``judge`` objects to what ``path`` is (not following a link).

    A missing or unreachable path passes: the caller reports its own error.
    """
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return
    problem = judge(st)
    if problem:
        raise _Refused(f"{what} {problem}") from cause


def _keep_if(judge: Judge, what: str, fd: int) -> int:
    """``fd`` if ``judge`` does not object to what it is open on; else close it and refuse."""
    try:
        problem = judge(os.fstat(fd))
    except OSError:
        os.close(fd)
        raise
    if problem:
        os.close(fd)
        raise _Refused(f"{what} {problem}")
    return fd


def _open_directory(directory: Path, *, create: bool) -> int | None:
    """A descriptor of the checked lock directory (``None`` where descriptor-relative opens are unavailable)."""
    what = f"lock directory {directory}"
    if not _RELATIVE:  # pragma: no cover - Windows: check the path, then use it
        if create:
            directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        _refuse_if(directory_problem, what, directory)
        return None
    try:
        fd = os.open(directory, _DIRECTORY_FLAGS)
    except FileNotFoundError:
        if not create:
            raise
        directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        return _open_directory(directory, create=False)
    except OSError as exc:  # O_NOFOLLOW: a symbolic link fails here; say so
        _refuse_if(directory_problem, what, directory, cause=exc)
        raise
    return _keep_if(directory_problem, what, fd)


def _open_lock_file(directory: Path, path: Path, *, create: bool) -> int | None:
    """An open descriptor of the lock file at ``path``, checked; ``None`` if missing and not ``create``."""
    dir_fd = _open_directory(directory, create=create)
    name: str | Path = path.name if dir_fd is not None else path
    what = f"lock file {path}"
    try:
        try:
            opened = _open_or_create(name, dir_fd, create=create)
        except OSError as exc:  # O_NOFOLLOW: a symbolic link fails here; say so
            _refuse_if(_file_problem, what, name, dir_fd, cause=exc)
            raise
        if opened is None:
            return None
        fd = _keep_if(_file_problem, what, opened[0])
        if opened[1] and _POSIX:
            try:
                os.fchmod(fd, FILE_MODE)  # whatever the umask: group members may lock it too
            except OSError:
                os.close(fd)
                raise
        return fd
    finally:
        if dir_fd is not None:
            os.close(dir_fd)


def _open_or_create(name: str | Path, dir_fd: int | None, *, create: bool) -> tuple[int, bool] | None:
    """(descriptor, whether we created the file), or ``None`` if missing and not ``create``.

    Opens an existing file without ``O_CREAT`` first: Linux's ``protected_regular``
    refuses ``O_CREAT`` on another user's file in a sticky shared directory.
    """
    for _ in range(3):
        try:
            return os.open(name, _FILE_FLAGS, dir_fd=dir_fd), False
        except FileNotFoundError:
            if not create:
                return None
        try:
            return os.open(name, _FILE_FLAGS | os.O_CREAT | os.O_EXCL, FILE_MODE, dir_fd=dir_fd), True
        except FileExistsError:
            continue  # another process created it meanwhile (or planted something): look again
    raise _Refused(f"lock file {name} keeps appearing and disappearing")


# A flock belongs to the open file description, which fork() shares with the child: a
# child's copy of a lock file descriptor would keep the lock after the holder died (every
# starter on the host busy until that unrelated child exits), and could unlock it. So
# every lock file descriptor is tracked from open to close, and a forked child closes its
# copies at once (closes, never unlocks: the parent's descriptor keeps the lock) and
# forgets its parent's leases. Opening-and-tracking and untracking-and-closing hold
# _fork_guard, which fork() takes too, so a child never has an untracked one, not even
# when another thread was inside acquire. A child that execs needs none of this: our
# descriptors are non-inheritable (PEP 446). The directory descriptor is opened and
# closed under _fork_guard as well (it carries no lock, a copy would only leak).
_lock_fds: set[int] = set()
_fork_guard = threading.Lock()
_leases: weakref.WeakSet[FileLease] = weakref.WeakSet()


def _open_tracked(directory: Path, path: Path, *, create: bool) -> int | None:
    with _fork_guard:
        fd = _open_lock_file(directory, path, create=create)
        if fd is not None:
            _lock_fds.add(fd)
        return fd


def _close_tracked(fd: int) -> None:
    with _fork_guard:
        _lock_fds.discard(fd)
        os.close(fd)


def _after_fork_in_child() -> None:
    global _fork_guard
    _fork_guard = threading.Lock()  # held by the forking thread in the parent
    for fd in _lock_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    _lock_fds.clear()
    for lease in list(_leases):
        lease._held = {}
        lease._held_lock = threading.Lock()  # another thread of the parent may have held it


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(
        before=lambda: _fork_guard.acquire(),
        after_in_parent=lambda: _fork_guard.release(),
        after_in_child=_after_fork_in_child,
    )


class FileLease:
    """A lease per instance ID as a file lock in ``directory`` (the embedded default).

    Args:
        directory: where lock files live; created (mode ``0700``) if missing. Defaults
            to ``$STRICT_SINGLETON_LOCK_DIR``, else ``/var/tmp/strict-singleton``
            (``%ProgramData%\\strict-singleton`` on Windows). See the module docstring
            for the checks it must pass.

    Raises:
        InvalidArgumentError: the directory is empty, the environment variable is a
            relative path, or the directory already exists but is not safe to use.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        path = lock_directory(directory)
        self._directory = path
        self._name = f"file({path})"
        try:
            _refuse_if(directory_problem, f"lock directory {path}", path)  # a missing one is made at first use
        except _Refused as exc:
            raise InvalidArgumentError(str(exc), backend=self._name) from None
        self._held: dict[tuple[str, str], int] = {}  # (instance ID, token) -> locked descriptor
        self._held_lock = threading.Lock()
        _leases.add(self)  # a forked child forgets what it holds

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
        try:
            fd = _open_tracked(self._directory, self.lock_path(instance_id), create=True)
        except OSError as exc:
            raise self._unavailable(exc, instance_id) from exc
        assert fd is not None
        try:
            if not lock_descriptor(fd, blocking=False):
                _close_tracked(fd)
                return None
            fence, record, request = _read_state(fd)
            _write_fence(fd, fence + 1)
        except OSError as exc:
            _close_tracked(fd)  # closing the descriptor also drops the lock
            raise self._unavailable(exc, instance_id) from exc
        except BaseException:  # interrupted before the lease was registered: nobody could release it
            _close_tracked(fd)
            raise
        with self._held_lock:
            self._held[(instance_id, token)] = fd
        return Grant(fencing_token=fence + 1, valid_for=None, last_start=record, last_request=request)

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
            _close_tracked(fd)
        RELEASES.notify(str(self.lock_path(instance_id)))
        return True

    def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """Write ``record`` into the lock file while holding it (the lease is kept).

        The file keeps it until the next record replaces it; readers ignore it once
        ``record.expires_at_us`` passed (this host's wall clock wrote and reads it).
        """
        with self._held_lock:
            fd = self._held.get((instance_id, token))
        if fd is None:
            return False
        try:
            _write_record(fd, record)
        except OSError as exc:
            raise self._unavailable(exc, instance_id) from exc
        return True

    def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        """Write ``record`` into the lock file's request slot while holding it (the lease is kept).

        Kept until the next request record replaces it; readers ignore it once
        ``record.expires_at_us`` passed. ``False`` (nothing written) unless ``token`` holds it.
        """
        with self._held_lock:
            fd = self._held.get((instance_id, token))
        if fd is None:
            return False
        try:
            _write_request(fd, record)
        except OSError as exc:
            raise self._unavailable(exc, instance_id) from exc
        return True

    def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        """:meth:`record_start`, then release: the record is written under the lock."""
        return self.record_start(instance_id, token, record, ttl) and self.release(instance_id, token)

    def wait_for_release(self, instance_id: str, timeout: float) -> None:
        for pause in self.pauses(instance_id, timeout):
            wait_sync(str(self.lock_path(instance_id)), pause)

    def pauses(self, instance_id: str, timeout: float) -> Iterator[float]:
        """How long to wait, again and again, until the lease looks free or ``timeout`` passed.

        Releases in this process wake a waiter at once; another process's release is
        found by probing the lock file (local, microseconds, no load on any server),
        at intervals growing from 2 ms to ``CROSS_PROCESS_POLL``.
        """
        deadline = time.monotonic() + timeout
        interval = 0.002
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or self.probe_free(instance_id):
                return
            yield min(left, interval)
            interval = min(interval * 2, CROSS_PROCESS_POLL)

    def probe_free(self, instance_id: str) -> bool:
        """Whether nobody holds the lock right now (takes and drops it at once).

        Creates nothing; a missing or unusable lock file counts as free, so the next
        acquire attempt reports the problem.
        """
        try:
            fd = _open_tracked(self._directory, self.lock_path(instance_id), create=False)
        except OSError:
            return True
        if fd is None:
            return True
        try:
            if lock_descriptor(fd, blocking=False):
                unlock_descriptor(fd)
                return True
            return False
        finally:
            _close_tracked(fd)

    def close(self) -> None:
        with self._held_lock:
            held = list(self._held.values())
            self._held.clear()
        for fd in held:
            _close_tracked(fd)

    def _unavailable(self, exc: OSError, instance_id: str) -> LockUnavailableError:
        if isinstance(exc, _Refused):
            message = f"refusing the lock file: {exc}; nothing was written"
        else:
            message = f"lock directory unavailable: {type(exc).__name__}: {exc}"
        return LockUnavailableError(message, instance_id=instance_id, backend=self._name)


_FENCE_WIDTH = 20
# After the counter: the last start record, padded with spaces to a fixed width.
_RECORD_WIDTH = 100
# After the start record: the last request record, padded with spaces to a fixed width.
_REQUEST_OFFSET = _FENCE_WIDTH + _RECORD_WIDTH
_REQUEST_WIDTH = REQUEST_RECORD_MAX
_STATE_WIDTH = _REQUEST_OFFSET + _REQUEST_WIDTH
# Padding, and the zeros of a hole (a request slot written after a file that had no start record).
_BLANK = b" \x00"


def _read_state(fd: int) -> tuple[int, StartRecord | None, RequestRecord | None]:
    """(fencing counter, start record, request record) from the lock file, in one ``read``.

    A file whose request slot was never written is shorter: its request record is ``None``.
    """
    data = os.pread(fd, _STATE_WIDTH, 0) if hasattr(os, "pread") else _read_from_start(fd)
    fence = data[:_FENCE_WIDTH].strip()
    start = StartRecord.decode(data[_FENCE_WIDTH:_REQUEST_OFFSET].strip(_BLANK) or None)
    request = RequestRecord.decode(data[_REQUEST_OFFSET:_STATE_WIDTH].strip(_BLANK) or None)
    return (int(fence) if fence.isdigit() else 0), start, request


def _read_from_start(fd: int) -> bytes:  # pragma: no cover - Windows has no pread
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    left = _STATE_WIDTH
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_request(fd: int, record: RequestRecord) -> None:
    text = record.encode().encode("ascii")  # at most REQUEST_RECORD_MAX bytes, or ValueError
    if len(text) > _REQUEST_WIDTH:  # pragma: no cover - encode() refuses longer ones
        raise OSError(f"request record too long ({len(text)} bytes)")
    data = text.ljust(_REQUEST_WIDTH)
    if hasattr(os, "pwrite"):
        written = os.pwrite(fd, data, _REQUEST_OFFSET)
    else:  # pragma: no cover - Windows has no pwrite
        os.lseek(fd, _REQUEST_OFFSET, os.SEEK_SET)
        written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"short write of the request record ({written} of {len(data)} bytes)")


def _write_record(fd: int, record: StartRecord) -> None:
    text = record.encode().encode("ascii")
    if len(text) > _RECORD_WIDTH:  # pragma: no cover - 5 integers always fit
        raise OSError(f"start record too long ({len(text)} bytes)")
    os.lseek(fd, _FENCE_WIDTH, os.SEEK_SET)
    os.write(fd, text.ljust(_RECORD_WIDTH))


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

    async def record_start(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        return self._sync.record_start(instance_id, token, record, ttl)

    async def record_request(self, instance_id: str, token: str, record: RequestRecord, ttl: float) -> bool:
        return self._sync.record_request(instance_id, token, record, ttl)

    async def release_with_record(self, instance_id: str, token: str, record: StartRecord, ttl: float) -> bool:
        return self._sync.release_with_record(instance_id, token, record, ttl)

    async def wait_for_release(self, instance_id: str, timeout: float) -> None:
        for pause in self._sync.pauses(instance_id, timeout):
            await wait_async(str(self._sync.lock_path(instance_id)), pause)

    async def close(self) -> None:
        self._sync.close()


__all__ = ["DEFAULT_DIRECTORY", "ENV_DIRECTORY", "AsyncFileLease", "FileLease"]
