"""File lease hazards: where the lock directory is, and what may live in it.

* The default directory must not follow per-process settings such as ``$TMPDIR``:
  two processes that disagree on it would both "hold" the same instance ID.
* Nothing in the lock directory may redirect our writes: planted symlinks (to a file
  or as the directory itself), hard links, FIFOs and directories at a lock path are
  refused with a clear error, and the files they point at stay untouched.
* The directory must be ours (or root's), and not writable by others without the
  sticky bit (else they could delete a held lock file).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from strict_singleton.errors import InvalidArgumentError, LockUnavailableError
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.lock_backends.file import DEFAULT_DIRECTORY
from suite_helpers import token

ENV_DIRECTORY = "STRICT_SINGLETON_LOCK_DIR"  # documented: one setting for every process
posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes, owners, symlinks and FIFOs")
PRECIOUS = b"precious: the first 20 bytes of this file must never change\n"

# A child process: lock one ID with the default FileLease, say what happened, and hold
# the lock until the parent closes our stdin.
HOLD_WITH_DEFAULT = """
import sys
from strict_singleton.lock_backends import FileLease
lease = FileLease()
grant = lease.acquire(sys.argv[1], sys.argv[2], 15.0)
print("held" if grant is not None else "busy", lease.directory, flush=True)
sys.stdin.read()
"""


@pytest.fixture
def no_env_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_DIRECTORY, raising=False)


class Children:
    """Child processes that hold a lock until stopped; always reaped."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def hold(self, instance_id: str, name: str, env: dict[str, str]) -> str:
        """Start a holder with ``env`` and return its first line ("held <dir>" or "busy <dir>")."""
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD_WITH_DEFAULT, instance_id, token(name)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith(("held", "busy")):  # it crashed: show why
            line += proc.stdout.read()
        return line

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.stdin is not None:
                proc.stdin.close()


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.stop()


def child_env(tmpdir: Path, lock_dir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR", "TEMP", "TMP", ENV_DIRECTORY)}
    env["TMPDIR"] = env["TEMP"] = env["TMP"] = str(tmpdir)
    if lock_dir is not None:
        env[ENV_DIRECTORY] = str(lock_dir)
    return env


# -- 1. the default directory is one fixed path --------------------------------------


def test_default_directory_ignores_tmpdir_across_processes(
    tmp_path: Path, children: Children, no_env_directory: None
) -> None:
    """Two processes with different $TMPDIR lock the same ID with the default FileLease."""
    instance_id = f"tmpdir-hazard-{uuid.uuid4()}"  # unique: this uses the machine's real default directory
    first_tmp, second_tmp = tmp_path / "tmp-a", tmp_path / "tmp-b"
    first_tmp.mkdir()
    second_tmp.mkdir()
    try:
        first = children.hold(instance_id, "first", child_env(first_tmp))
        assert first.startswith("held"), first
        second = children.hold(instance_id, "second", child_env(second_tmp))
        assert second.startswith("busy"), f"both processes hold {instance_id!r}: first {first!r}, second {second!r}"
    finally:
        children.stop()
        FileLease().lock_path(instance_id).unlink(missing_ok=True)  # nobody holds it any more


def test_environment_variable_applies_to_every_process(tmp_path: Path, children: Children) -> None:
    shared = tmp_path / "shared-locks"
    first_tmp, second_tmp = tmp_path / "tmp-a", tmp_path / "tmp-b"
    first_tmp.mkdir()
    second_tmp.mkdir()
    first = children.hold("env-dir", "first", child_env(first_tmp, shared))
    assert first == f"held {shared}"
    second = children.hold("env-dir", "second", child_env(second_tmp, shared))
    assert second == f"busy {shared}"


def test_default_directory_is_fixed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_env_directory: None) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # make gettempdir() re-read $TMPDIR
    assert tempfile.gettempdir() == str(tmp_path)
    assert FileLease().directory == DEFAULT_DIRECTORY
    assert not DEFAULT_DIRECTORY.is_relative_to(tmp_path)
    if os.name == "posix":
        assert Path("/var/tmp/strict-singleton") == DEFAULT_DIRECTORY


def test_explicit_directory_beats_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ENV_DIRECTORY, str(tmp_path / "from-env"))
    assert FileLease().directory == tmp_path / "from-env"
    assert AsyncFileLease().directory == tmp_path / "from-env"
    assert FileLease(tmp_path / "explicit").directory == tmp_path / "explicit"
    monkeypatch.setenv(ENV_DIRECTORY, "")  # set but empty: as if unset
    assert FileLease().directory == DEFAULT_DIRECTORY


def test_relative_environment_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # A relative path would depend on each process's working directory.
    monkeypatch.setenv(ENV_DIRECTORY, "locks")
    with pytest.raises(InvalidArgumentError, match=ENV_DIRECTORY):
        FileLease()


# -- 2. nothing in the directory redirects our writes ---------------------------------


def plant_symlink(lease: FileLease, instance_id: str, target: Path) -> Path:
    link = lease.lock_path(instance_id)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


@posix_only
@pytest.mark.parametrize("api", ["sync", "async"])
def test_planted_symlink_to_a_file_is_refused(tmp_path: Path, api: str) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    lease = FileLease(tmp_path / "locks")
    plant_symlink(lease, "job", victim)
    with pytest.raises(LockUnavailableError, match="symbolic link") as caught:
        if api == "sync":
            lease.acquire("job", token("a"), 15.0)
        else:
            asyncio.run(AsyncFileLease(tmp_path / "locks").acquire("job", token("a"), 15.0))
    assert caught.value.instance_id == "job"
    assert victim.read_bytes() == PRECIOUS
    lease.wait_for_release("job", 0.0)  # probing must not touch it either
    assert lease.probe_free("job") is True  # "not held": the acquire reports the problem
    assert victim.read_bytes() == PRECIOUS


@posix_only
def test_dangling_symlink_creates_nothing(tmp_path: Path) -> None:
    lease = FileLease(tmp_path / "locks")
    target = tmp_path / "would-be-created"
    plant_symlink(lease, "job", target)
    with pytest.raises(LockUnavailableError, match="symbolic link"):
        lease.acquire("job", token("a"), 15.0)
    lease.probe_free("job")
    assert not target.exists()


@posix_only
def test_hard_link_to_another_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(PRECIOUS)
    lease = FileLease(tmp_path / "locks")
    path = lease.lock_path("job")
    path.parent.mkdir()
    os.link(victim, path)
    with pytest.raises(LockUnavailableError, match="hard link"):
        lease.acquire("job", token("a"), 15.0)
    assert victim.read_bytes() == PRECIOUS


@posix_only
def test_symlinked_directory_is_refused_at_construction(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        FileLease(tmp_path / "link")
    with pytest.raises(InvalidArgumentError, match="symbolic link"):
        AsyncFileLease(tmp_path / "link")
    assert list(real.iterdir()) == []


@posix_only
def test_directory_swapped_for_a_symlink_after_construction(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    lease = FileLease(tmp_path / "locks")  # does not exist yet: nothing to check
    (tmp_path / "locks").symlink_to(elsewhere)
    with pytest.raises(LockUnavailableError, match="symbolic link"):
        lease.acquire("job", token("a"), 15.0)
    assert lease.probe_free("job") is True
    assert list(elsewhere.iterdir()) == []


@posix_only
def test_lock_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    lease = FileLease(tmp_path / "locks")
    lease.lock_path("job").mkdir(parents=True)
    with pytest.raises(LockUnavailableError, match="not a regular file"):
        lease.acquire("job", token("a"), 15.0)


@posix_only
def test_lock_path_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    lease = FileLease(tmp_path / "locks")
    fifo = lease.lock_path("job")
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    outcome: list[BaseException | object] = []
    done = threading.Event()

    def attempt() -> None:
        try:
            outcome.append(lease.acquire("job", token("a"), 15.0))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=attempt, daemon=True).start()
    if not done.wait(10.0):
        # An acquire that opens the FIFO blocks reading it: feed it so the thread can finish.
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(writer, b"0" * 20)
        os.close(writer)
        done.wait(10.0)
        pytest.fail(f"acquire blocked reading a FIFO planted at the lock path (then returned {outcome!r})")
    assert len(outcome) == 1 and isinstance(outcome[0], LockUnavailableError), outcome
    assert "not a regular file" in str(outcome[0])


# -- 2b. whose directory it is ---------------------------------------------------------


def nobody_uid() -> int:
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


needs_root = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="chown to another user needs root")


@needs_root
def test_directory_owned_by_another_user_is_refused_at_construction(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, nobody_uid(), -1)
    with pytest.raises(InvalidArgumentError, match="owned by uid"):
        FileLease(theirs)
    assert list(theirs.iterdir()) == []


@needs_root
def test_directory_given_to_another_user_after_construction(tmp_path: Path) -> None:
    lease = FileLease(tmp_path / "locks")
    assert lease.acquire("a", token("a"), 15.0) is not None
    lease.release("a", token("a"))
    os.chown(tmp_path / "locks", nobody_uid(), -1)
    with pytest.raises(LockUnavailableError, match="owned by uid"):
        lease.acquire("b", token("b"), 15.0)
    assert not lease.lock_path("b").exists()


@posix_only
def test_writable_by_others_without_sticky_bit_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # anyone could delete (and so duplicate) a held lock file
    with pytest.raises(InvalidArgumentError, match="sticky"):
        FileLease(shared)
    shared.chmod(0o1777)  # /tmp-like: only a file's owner may delete it
    lease = FileLease(shared)
    assert lease.acquire("job", token("a"), 15.0) is not None
    lease.close()


@posix_only
def test_created_directory_and_files_have_documented_modes(tmp_path: Path) -> None:
    lease = FileLease(tmp_path / "locks")
    old = os.umask(0o022)
    try:
        assert lease.acquire("job", token("a"), 15.0) is not None
    finally:
        os.umask(old)
    directory = os.lstat(tmp_path / "locks")
    assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.geteuid()
    assert stat.S_IMODE(os.lstat(lease.lock_path("job")).st_mode) == 0o660
    lease.close()


@needs_root
def test_root_owned_group_directory_is_shared_by_group(tmp_path: Path) -> None:
    """The documented multi-user recipe: ``install -d -o root -g GROUP -m 3770 DIR``."""
    shared = tmp_path / "shared"
    shared.mkdir()
    group = pwd.getpwuid(nobody_uid()).pw_gid
    os.chown(shared, 0, group)
    shared.chmod(0o3770)  # setgid: files take the group; sticky: only a file's owner deletes it
    lease = FileLease(shared)
    old = os.umask(0o077)  # the lock file is group-writable whatever the umask
    try:
        assert lease.acquire("job", token("a"), 15.0) is not None
    finally:
        os.umask(old)
    st = os.lstat(lease.lock_path("job"))
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, group)
    lease.close()
