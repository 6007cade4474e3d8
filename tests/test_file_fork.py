"""File leases across ``fork()``: a forked child never holds its parent's leases.

``flock`` belongs to the open file description, which ``fork()`` shares with the child.
A child that kept its copy of a held lock file's descriptor would keep the lock after
the holder died (every starter on the host would get BUSY until that unrelated child
exits), and could unlock it or write records under the holder's lease. Each test runs
a real holder process that forks a child (``os.fork()`` or a ``multiprocessing``
fork-context ``Process``) while it holds a lease; the child reports what the holder's
lease looks like from inside it, then blocks on a pipe that only this test writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strict_singleton.lock_backends import AsyncFileLease, FileLease, Grant
from suite_helpers import poll_until, token

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")

INSTANCE_ID = "forked"
OWNER = token("holder")
FREED_WITHIN = 10.0  # seconds; a freed flock is free at once, a kept one stays held
REPLY_WITHIN = 60.0  # seconds for a helper process to say something (a bound, not a timing claim)

# The holder: python -c HOLDER DIRECTORY INSTANCE_ID TOKEN API HOW PING_FD CHECK
#   API: "sync" (FileLease) or "async" (AsyncFileLease)
#   HOW: "fork" (os.fork() after acquiring), "mp" (a fork-context multiprocessing.Process
#        started after acquiring) or "fork-in-acquire" (os.fork() from the main thread while
#        another thread is inside acquire, between opening the lock file and locking it).
#   CHECK: "check" (the child tries the parent's lease and reports) or "quiet" (it only
#        reports its pid: a child's release must not be what frees the lease).
# Every line it (or its child) prints is one JSON object with a "kind". Commands on stdin:
# "release" releases with PARENT_RECORD and answers {"kind": "released"}.
HOLDER = r"""
import asyncio, json, multiprocessing, os, sys, threading, traceback
from strict_singleton.lock_backends import AsyncFileLease, FileLease
from strict_singleton.lock_backends import file as file_backend
from strict_singleton.lock_backends.base import RequestRecord, StartRecord

directory, instance_id, owner, api, how, ping_fd, check = sys.argv[1:6] + [int(sys.argv[6]), sys.argv[7]]
CHILD_RECORD = StartRecord(fencing_token=1, sent_at_us=111, previous_created_us=None, expires_at_us=2**60)
PARENT_RECORD = StartRecord(fencing_token=1, sent_at_us=222, previous_created_us=None, expires_at_us=2**60)
REQUEST = RequestRecord(
    request_id="r", fencing_token=1, sent_at_us=111, previous_created_us=None, action="start", event="",
    expires_at_us=2**60,
)
lease = FileLease(directory) if api == "sync" else AsyncFileLease(directory)


def call(name, *args):
    result = getattr(lease, name)(*args)
    return asyncio.run(result) if api == "async" else result


def say(**fields):  # one write of less than PIPE_BUF bytes: never interleaved with the other process's
    os.write(1, (json.dumps(fields) + "\n").encode())


def child():
    if check == "quiet":
        say(kind="child", pid=os.getpid())
    else:
        say(
            kind="child",
            pid=os.getpid(),
            extend=call("extend", instance_id, owner, 15.0),
            record_start=call("record_start", instance_id, owner, CHILD_RECORD, 15.0),
            record_request=call("record_request", instance_id, owner, REQUEST, 15.0),
            release_with_record=call("release_with_record", instance_id, owner, CHILD_RECORD, 15.0),
            release=call("release", instance_id, owner),
        )
    with os.fdopen(ping_fd, "r") as pings:
        for _ in pings:
            say(kind="pong", pid=os.getpid())


def run_child():  # never returns into the holder's code
    try:
        child()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        os._exit(1)
    os._exit(0)


if how == "fork-in-acquire":
    opened, go, box = threading.Event(), threading.Event(), []
    real_lock = file_backend.lock_descriptor

    def paused_lock(fd, **kwargs):
        opened.set()
        go.wait()
        return real_lock(fd, **kwargs)

    file_backend.lock_descriptor = paused_lock
    acquiring = threading.Thread(target=lambda: box.append(call("acquire", instance_id, owner, 15.0)))
    acquiring.start()
    opened.wait()
    if os.fork() == 0:
        run_child()
    go.set()
    acquiring.join()
    grant = box[0]
else:
    grant = call("acquire", instance_id, owner, 15.0)
say(kind="held", fencing_token=None if grant is None else grant.fencing_token)
if how == "fork":
    if os.fork() == 0:
        run_child()
elif how == "mp":
    multiprocessing.get_context("fork").Process(target=run_child).start()
for line in sys.stdin:
    if line.strip() == "release":
        say(kind="released", result=call("release_with_record", instance_id, owner, PARENT_RECORD, 15.0))
"""


class Holder:
    """The holder process, its forked child, and the pipe the child blocks on; all reaped by :meth:`stop`."""

    def __init__(self, directory: Path, api: str, how: str, check: bool) -> None:
        self.ping_read, self.ping_write = os.pipe()
        args = [str(directory), INSTANCE_ID, OWNER, api, how, str(self.ping_read), "check" if check else "quiet"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=(self.ping_read,),
        )
        os.close(self.ping_read)
        self.child_pid: int | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.unread: list[dict[str, Any]] = []
        self.other: list[str] = []  # anything that was not a message (tracebacks)
        threading.Thread(target=self._read, daemon=True, name="fork-holder-output").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # EOF once the holder and its child are gone
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, kind: str) -> dict[str, Any]:
        """The next message of ``kind`` from the holder or its child (waits up to REPLY_WITHIN)."""
        while True:
            for message in self.unread:
                if message["kind"] == kind:
                    self.unread.remove(message)
                    return message
            try:
                line = self.lines.get(timeout=REPLY_WITHIN)
            except queue.Empty:
                raise AssertionError(
                    f"no {kind!r} message within {REPLY_WITHIN} s; other output: {self.other}"
                ) from None
            if line is None:
                raise AssertionError(f"the output ended before a {kind!r} message; other output: {self.other}")
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self.other.append(line)
                continue
            if message["kind"] == "child":
                self.child_pid = message["pid"]
            self.unread.append(message)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def child_alive(self) -> bool:
        """Whether the forked child still answers on its pipe (a live process, not a zombie)."""
        os.write(self.ping_write, b"ping\n")
        return bool(self.expect("pong")["pid"] == self.child_pid)

    def kill_holder(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(REPLY_WITHIN)

    def stop(self) -> None:
        if self.child_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child_pid, signal.SIGKILL)
        os.close(self.ping_write)  # a child that was not reported yet reads EOF and exits
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(REPLY_WITHIN)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    try:
        yield started
    finally:
        for holder in started:
            holder.stop()


def start_holder(holders: list[Holder], directory: Path, api: str, how: str, *, check: bool = False) -> Holder:
    """A holder that holds INSTANCE_ID and has forked a child that reported (with ``check``:
    the child's calls with the parent's token all answered "not ours")."""
    holder = Holder(directory, api, how, check)
    holders.append(holder)
    held = holder.expect("held")
    assert held["fencing_token"] == 1, held
    report = holder.expect("child")
    if not check:
        return holder
    assert {k: report[k] for k in report if k not in ("kind", "pid")} == {
        "extend": False,
        "record_start": False,
        "record_request": False,
        "release_with_record": False,
        "release": False,
    }, f"the forked child could use its parent's lease: {report}"
    return holder


def acquire(directory: Path, api: str, owner: str) -> Grant | None:
    """An acquire of INSTANCE_ID by a fresh lease object in this process (sync or async API),
    which is closed at once (a lease it got is let go, its descriptor not leaked)."""
    if api == "sync":
        lease = FileLease(directory)
        try:
            return lease.acquire(INSTANCE_ID, owner, 15.0)
        finally:
            lease.close()

    async def attempt() -> Grant | None:
        lease = AsyncFileLease(directory)
        try:
            return await lease.acquire(INSTANCE_ID, owner, 15.0)
        finally:
            await lease.close()

    return asyncio.run(attempt())


APIS = ["sync", "async"]
FORKS = ["fork", "mp"]


@pytest.mark.parametrize("how", FORKS)
@pytest.mark.parametrize("api", APIS)
def test_lease_freed_when_holder_dies_though_its_forked_child_lives(
    tmp_path: Path, holders: list[Holder], api: str, how: str
) -> None:
    """SIGKILL the holder while the child it forked lives on (and never touched the lease):
    the lease is free for a fresh starter, as if the holder had never forked."""
    holder = start_holder(holders, tmp_path, api, how)
    assert acquire(tmp_path, api, token("early")) is None  # the holder has it
    holder.kill_holder()
    grants: list[Grant] = []

    def acquired() -> bool:
        grant = acquire(tmp_path, api, token("after"))
        if grant is not None:
            grants.append(grant)
        return grant is not None

    poll_until(acquired, FREED_WITHIN, "the dead holder's lease to be free while its forked child lives")
    assert grants[0].fencing_token == 2
    assert holder.child_alive(), "the forked child died: this test proved nothing"


@pytest.mark.parametrize("how", FORKS)
@pytest.mark.parametrize("api", APIS)
def test_forked_child_cannot_use_or_release_its_parents_lease(
    tmp_path: Path, holders: list[Holder], api: str, how: str
) -> None:
    """In the child, extend/record_start/record_request/release(_with_record) with the parent's
    token answer "not ours" (checked in start_holder); afterwards the parent still holds the
    lease (a third party is refused) and its own record and release still work."""
    holder = start_holder(holders, tmp_path, api, how, check=True)
    assert acquire(tmp_path, api, token("third")) is None, "the child's calls released the parent's lease"
    holder.send("release")
    assert holder.expect("released")["result"] is True
    grant = acquire(tmp_path, api, token("third"))
    assert grant is not None and grant.fencing_token == 2
    assert grant.last_start is not None and grant.last_start.sent_at_us == 222  # the parent's record, not the child's
    assert grant.last_request is None  # the child wrote no request record
    assert holder.child_alive()


def test_child_forked_while_another_thread_is_inside_acquire(tmp_path: Path, holders: list[Holder]) -> None:
    """A fork from one thread while another has opened the lock file but not yet locked it:
    the child's copy of that descriptor must not keep the lock the parent takes next."""
    holder = start_holder(holders, tmp_path, "sync", "fork-in-acquire")
    assert acquire(tmp_path, "sync", token("early")) is None
    holder.kill_holder()
    poll_until(
        lambda: acquire(tmp_path, "sync", token("after")) is not None,
        FREED_WITHIN,
        "the dead holder's lease to be free while a child forked during its acquire lives",
    )
    assert holder.child_alive()
