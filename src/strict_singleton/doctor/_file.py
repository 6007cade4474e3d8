"""File lease checks (``file``, ``file:/dir``): the directory, its filesystem, who shares it.

The file lease is one host's lock: every participant must open the same directory (an
absolute path: a relative one depends on each process's working directory) on a local
filesystem, owned by their user (or root), not writable by others without the sticky
bit, under ancestors no other user may rename it from. The doctor never creates the
directory (a doctor run as root would leave one only root may use); a missing one is a
warning: who creates it first decides its owner, and no lease cycle could run.
"""

from __future__ import annotations

import contextlib
import os
import stat

from strict_singleton.doctor._ancestors import ancestor_problem
from strict_singleton.doctor._cycle import lease_cycle
from strict_singleton.doctor._model import Check, Status
from strict_singleton.doctor._mounts import (
    existing_ancestor,
    filesystem_problem,
    mount_of,
    read_mountinfo,
    unshared_mount,
)
from strict_singleton.doctor._redis_cycle import scratch_id
from strict_singleton.lock_backends.file import ENV_DIRECTORY, directory_problem, lock_directory

_ROW_DIRECTORY = "row 19"
_ROW_LOCAL = "assumption: one host, one directory, a local filesystem"
_ROW_SHARED = "row 18"


def directory_check(directory: str, target: str) -> tuple[Check, bool]:
    """Whether the directory is fit for lock files, and whether it exists."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        parent = existing_ancestor(directory)
        above = ancestor_problem(directory)
        if above is not None:  # another user could create it first, or replace it later
            return (
                Check(
                    target,
                    "directory",
                    Status.FAILURE,
                    f"{directory} is not created yet and {above}, or create it first as its own",
                    fix="put the lock directory under directories only root or this user may write "
                    "(e.g. /srv/strict-singleton, or /var/tmp: sticky)",
                    guarantee=_ROW_DIRECTORY,
                    measured="missing",
                ),
                False,
            )
        if os.access(parent, os.W_OK | os.X_OK):
            return (
                Check(
                    target,
                    "directory",
                    Status.WARNING,
                    f"{directory} is not created yet; the first lease creates it as the user that runs it first, "
                    "with mode 0700 (every other participant must be that user), and no lease cycle ran here",
                    fix=f"create it ahead as the service's user: install -d -m 0700 -o SERVICE_USER {directory}",
                    guarantee=_ROW_DIRECTORY,
                    measured="missing",
                ),
                False,
            )
        return (
            Check(
                target,
                "directory",
                Status.FAILURE,
                f"{directory} does not exist and this user may not create it in {parent}: every start fails closed",
                fix=f"install -d -m 0700 -o SERVICE_USER {directory}",
                guarantee=_ROW_DIRECTORY,
                measured="missing",
            ),
            False,
        )
    except OSError as exc:
        return Check(
            target,
            "directory",
            Status.FAILURE,
            f"cannot inspect {directory}: {exc}",
            guarantee=_ROW_DIRECTORY,
            measured="unreadable",
        ), False
    measured = f"uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"
    problem = directory_problem(st)
    if problem is None and not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
        problem = "is not readable and writable by this user"
    above = ancestor_problem(directory) if problem is None else None
    if above is not None:
        return (
            Check(
                target,
                "directory",
                Status.FAILURE,
                f"{directory}: {above}, and new starters would lock files the holders never see",
                fix="put the lock directory under directories only root or this user may write "
                "(e.g. /srv/strict-singleton, or /var/tmp: sticky)",
                guarantee=_ROW_DIRECTORY,
                measured=measured,
            ),
            True,
        )
    if problem is not None:
        return (
            Check(
                target,
                "directory",
                Status.FAILURE,
                f"{directory} {problem}; the lease refuses it, so every start fails closed",
                fix=f"chown SERVICE_USER {directory} && chmod 0700 {directory} (a shared group directory: "
                f"install -d -o root -g GROUP -m 3770 {directory})",
                guarantee=_ROW_DIRECTORY,
                measured=measured,
            ),
            True,
        )
    return Check(
        target,
        "directory",
        Status.OK,
        f"{directory}: owned by this user or root, not writable by others without the sticky bit, and no "
        "directory above it lets another user rename it",
        guarantee=_ROW_DIRECTORY,
        measured=measured,
    ), True


def filesystem_check(directory: str, target: str) -> Check:
    mounts = read_mountinfo()
    if mounts is None:
        return Check(
            target,
            "local filesystem",
            Status.SKIPPED,
            "no /proc/self/mountinfo here: not checked",
            guarantee=_ROW_LOCAL,
            measured="unknown",
        )
    mount = mount_of(mounts, existing_ancestor(directory))
    if mount is None:
        return Check(
            target,
            "local filesystem",
            Status.WARNING,
            "no mount found for the directory",
            guarantee=_ROW_LOCAL,
            measured="unknown",
        )
    measured = f"{mount.fstype} at {mount.point}"
    problem = filesystem_problem(mount)
    if problem is not None:
        level, why = problem
        return Check(
            target,
            "local filesystem",
            Status.FAILURE if level == "failure" else Status.WARNING,
            f"{why}; two hosts could both hold one ID",
            fix="use a directory on a local disk, and one host (or a redis:// / azblob:// lock across hosts)",
            guarantee=_ROW_LOCAL,
            measured=measured,
        )
    return Check(
        target,
        "local filesystem",
        Status.OK,
        "flock is this host's kernel lock",
        guarantee=_ROW_LOCAL,
        measured=measured,
    )


def sharing_check(directory: str, target: str) -> Check:
    mine = read_mountinfo()
    if mine is None:
        return Check(
            target,
            "shared directory",
            Status.SKIPPED,
            "no /proc/self/mountinfo here: not checked",
            guarantee=_ROW_SHARED,
            measured="unknown",
        )
    why = unshared_mount(mine, read_mountinfo("1"), existing_ancestor(directory))
    if why is not None:
        return Check(
            target,
            "shared directory",
            Status.WARNING,
            f"{why}: services outside it see another {directory}, and their leases do not meet this one's",
            fix=f"give every participant one shared directory outside private mounts: file:/srv/locks or "
            f"${ENV_DIRECTORY} (and for systemd, ReadWritePaths= for it instead of relying on /var/tmp)",
            guarantee=_ROW_SHARED,
            measured="private mount",
        )
    return Check(
        target,
        "shared directory",
        Status.OK,
        "the same mount as PID 1 sees (no private /tmp or /var/tmp)",
        guarantee=_ROW_SHARED,
        measured="shared",
    )


def check_file(
    url: str, target: str, *, timeout: float, clock_skew: float, prefix: str | None, checks: list[Check]
) -> list[Check]:
    """Every check of one ``file`` or ``file:/dir`` lock URL (``timeout``, ``clock_skew``
    and ``prefix`` do not apply: one host's kernel, one clock, no key names); each check
    is appended to ``checks`` as it is done, which is returned."""
    from strict_singleton.lock_backends.file import FileLease

    directory = str(lock_directory(url[len("file:") :] or None))
    shown = f"{target} ({directory})" if url == "file" else target
    if not os.path.isabs(directory):
        checks.append(
            Check(
                shown,
                "directory",
                Status.FAILURE,
                f"{directory} is a relative path: each process resolves it against its own working directory, so "
                "processes started from different directories lock different files",
                fix=f"use an absolute path: file:{os.path.abspath(directory)} (or wherever every participant meets)",
                guarantee=_ROW_SHARED,
                measured="relative path",
            )
        )
        return checks
    check, exists = directory_check(directory, shown)
    checks.append(check)
    checks.append(filesystem_check(directory, shown))
    checks.append(sharing_check(directory, shown))
    if not exists or check.status is Status.FAILURE:
        return checks
    lease = FileLease(directory)
    instance_id = scratch_id()
    try:
        checks.append(lease_cycle(lease, target=shown, instance_id=instance_id, ttl=15.0))
    finally:
        lease.close()  # before the unlink: a lock file is never deleted while held
        # A lock file is never deleted while others may open it; nobody else knows this ID.
        with contextlib.suppress(OSError):
            os.unlink(lease.lock_path(instance_id))
    return checks


__all__ = ["check_file"]
