"""Test servers as real child processes that are never left behind.

:class:`GuardedPopen` starts a command in its own process group together with a
*watcher*: a tiny process in that group that holds the read end of a pipe (the
lifeline) whose only write end lives in this process. However this process ends, a
normal exit, an uncaught exception or ``kill -9``, the kernel closes the write end; the
watcher reads EOF and SIGKILLs the whole group (the server, its children, itself).
Nothing has to run in the dying process: no ``atexit``, no signal handler.

The command is ``exec``-ed in place of the launcher, so ``Popen.pid`` is the server's
own pid (tests may SIGSTOP it) and the process group's id. The watcher is detached by a
double fork, so the server never sees an unexpected child.

Limits: a child made by a bare ``fork()`` (no ``exec``) while a server runs inherits the
lifeline, so that server outlives this process until the forked child exits too
(``multiprocessing`` with the ``spawn`` context, as this package uses, does not).
POSIX only.

:class:`ServerProcess` is one such server on a free port, ready when a line of its
output says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, TypeVar

S = TypeVar("S", bound="ServerProcess")

# Runs as ``python -I -S -c _LAUNCHER CMD...`` with the lifeline pipe as stdin, as the
# leader of a new session. It forks the watcher (detached by a double fork, its output
# to /dev/null so the server's output pipe sees EOF when the server dies), then execs
# CMD with stdin from /dev/null. Only builtin modules: it starts in milliseconds.
_LAUNCHER = """
import os, signal, sys
first = os.fork()
if first == 0:
    if os.fork() != 0:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.killpg(0, signal.SIGKILL)
    os._exit(0)
os.waitpid(first, 0)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.close(null)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GuardedPopen(subprocess.Popen[Any]):
    """``subprocess.Popen(command, **kwargs)`` in a new process group that is SIGKILLed as
    soon as this process ends, however it ends (see the module docstring).

    Keep the object referenced while the process should live: it holds the lifeline
    (:meth:`drop_lifeline`, or collecting the object, kills the group). Stop it with
    :func:`kill_group`. ``stdin``, ``start_new_session``, ``process_group`` and
    ``preexec_fn`` are taken; the command's stdin is ``/dev/null``. Everything else,
    ``communicate()`` included, works as for ``Popen``.
    """

    def __init__(self, command: list[str], **kwargs: Any) -> None:
        self._lifeline = -1
        for taken in ("stdin", "start_new_session", "preexec_fn", "process_group"):
            if taken in kwargs:
                raise TypeError(f"GuardedPopen sets {taken} itself")
        # os.pipe() fds are not inheritable: only the watcher gets the read end (as its
        # stdin), and no other child of ours ever holds the write end.
        read_end, self._lifeline = os.pipe()
        try:
            launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, *command]
            super().__init__(launcher, stdin=read_end, start_new_session=True, **kwargs)
        except BaseException:
            self.drop_lifeline()
            raise
        finally:
            os.close(read_end)

    def drop_lifeline(self) -> None:
        """Close our end of the lifeline: the watcher kills the group (if still alive)."""
        fd, self._lifeline = self._lifeline, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:
        self.drop_lifeline()
        super().__del__()


def kill_group(proc: GuardedPopen, *, timeout: float = 10.0) -> None:
    """SIGKILL a guarded process group, reap its leader and drop the lifeline."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=timeout)
    proc.drop_lifeline()  # the watcher, if it survived the group kill, now kills itself


class ServerProcess:
    """Start, stop and restart one server process; ``start()`` returns once a line of its
    output contains ``ready_text`` (or raises with the last lines it printed).

    A server lent to several tests is *pinned* (:meth:`pin`): ``stop()``, ``start()``
    of a stopped server and ``restart()`` then raise instead of pulling it from under
    the other tests.
    """

    ready_text = ""
    label = "server"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port if port is not None else free_port()
        self.startup_timeout = startup_timeout
        self._proc: GuardedPopen | None = None
        self._lines: list[str] = []
        self._pinned: str | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def output(self) -> str:
        """What the server printed so far (for failure messages)."""
        return "".join(self._lines)

    def pin(self, reason: str) -> None:
        """Refuse to stop or restart from now on; ``reason`` goes into the error."""
        self._pinned = reason

    def unpin(self) -> None:
        self._pinned = None

    def _refuse_if_pinned(self, action: str) -> None:
        if self._pinned is not None:
            raise RuntimeError(
                f"cannot {action} the {self.label} on port {self.port}: {self._pinned}. "
                "Use a private server to stop, restart or kill one."
            )

    def start(self: S) -> S:
        if self.running:
            return self
        self._refuse_if_pinned("start")
        return self._start()

    def _start(self: S) -> S:
        self._lines = []
        proc = GuardedPopen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._proc = proc
        ready = threading.Event()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._lines.append(line)
                if self.ready_text in line:
                    ready.set()
            ready.set()  # the process ended: stop waiting

        threading.Thread(target=pump, daemon=True, name=f"{self.label}-{self.port}-log").start()
        ready.wait(self.startup_timeout)
        if not self.running or not any(self.ready_text in line for line in self._lines):
            self._stop()
            raise RuntimeError(f"{self.label} did not start on port {self.port}:\n{''.join(self._lines[-20:])}")
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        self._refuse_if_pinned("stop")
        self._stop()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            kill_group(proc)

    def ensure_running(self: S) -> S:
        """Start again (same port) if the process died, even when pinned."""
        if not self.running:
            self._stop()
            self._restart()
        return self

    def restart(self: S) -> S:
        """Kill and start again on the same port (no persistence: all state is forgotten)."""
        self._refuse_if_pinned("restart")
        self._stop()
        return self._restart()

    def _restart(self: S) -> S:
        # The port may linger for a moment after the kill: retry until the deadline.
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                return self._start()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def __enter__(self: S) -> S:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
