"""Which filesystem holds a path, and whether this process shares it with the host.

Reads ``/proc/<pid>/mountinfo`` (Linux). Parsing and judging are pure functions of that
text, so they are tested on any table without mounting anything.

PID 1 is the reference for "the host's view". In a container, PID 1 is the container's
own init, in the container's mount namespace: the check then compares this process with
its container, and cannot see another container's private ``/var/tmp`` (give every
container one shared volume, and name it in ``file:/dir``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

# flock on these is either not shared between hosts or not reliable at all.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "afs",
        "9p",
        "ncpfs",
        "beegfs",
        "orangefs",
        "davfs",
        "sshfs",
    }
)
# FUSE drivers that reach another machine: their flock is at best per client.
NETWORK_FUSE = frozenset(
    {
        "sshfs", "s3fs", "gcsfuse", "rclone", "goofys", "blobfuse", "blobfuse2", "glusterfs", "cephfs",
        "ceph-fuse", "davfs", "juicefs", "mountpoint-s3", "seaweedfs", "moosefs", "lizardfs", "curlftpfs",
    }
)  # fmt: skip
# FUSE drivers over local storage: flock there is this host's kernel lock (fuse-overlayfs
# is the root filesystem of rootless Podman containers).
LOCAL_FUSE = frozenset({"fuse-overlayfs", "squashfuse", "lxcfs"})
_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``mountinfo``: where, what, and which part of its device (``root``)."""

    point: str
    root: str
    device: str  # major:minor
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``mountinfo`` text, in order (later ones shadow earlier ones)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 7:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 3:
            continue
        mounts.append(
            Mount(
                point=_unescape(fields[4]),
                root=_unescape(fields[3]),
                device=fields[2],
                fstype=fields[dash + 1],
                source=_unescape(fields[dash + 2]),
            )
        )
    return mounts


def read_mountinfo(pid: str = "self") -> list[Mount] | None:
    """The mounts ``pid`` sees, or ``None`` where they cannot be read (not Linux, no permission)."""
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as f:
            return parse_mountinfo(f.read())
    except OSError:
        return None


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount that holds absolute ``path``: the deepest mount point above it, the last
    one mounted where several share that point."""
    target = PurePosixPath(path)
    best: Mount | None = None
    for mount in mounts:
        point = PurePosixPath(mount.point)
        if (target == point or point in target.parents) and (
            best is None or len(point.parts) >= len(PurePosixPath(best.point).parts)
        ):
            best = mount
    return best


def filesystem_problem(mount: Mount) -> tuple[str, str] | None:
    """("failure" or "warning", why) if flock on this filesystem is not one host's lock."""
    fstype = mount.fstype
    if fstype in NETWORK_FILESYSTEMS or fstype.split(".")[0] in NETWORK_FILESYSTEMS:
        return "failure", f"{fstype} is a network filesystem: flock there is not reliable across hosts"
    if fstype.startswith("fuse.") or fstype == "fuse":
        driver = fstype.partition(".")[2] or mount.source.partition("#")[0]
        if driver in LOCAL_FUSE:
            return None
        if driver in NETWORK_FUSE:
            return "failure", f"{fstype} is a network filesystem over FUSE: flock there is not shared between hosts"
        return (
            "warning",
            f"{fstype} is a FUSE filesystem the doctor does not know: flock there is a local kernel lock only "
            "if the driver stores locally",
        )
    if fstype == "virtiofs":
        return "warning", "virtiofs is shared with the VM host: flock does not reach processes in other guests"
    return None


def unshared_mount(mine: list[Mount], init: list[Mount] | None, path: str) -> str | None:
    """Why processes outside this one's mount namespace may see another directory at
    ``path`` (systemd ``PrivateTmp``, a container), or ``None`` if nothing shows it."""
    own = mount_of(mine, path)
    if own is None:
        return None
    if "systemd-private-" in own.root:
        return f"{own.point} is this service's private copy ({own.root}): systemd PrivateTmp=yes"
    if init is None:
        return None
    theirs = mount_of(init, path)
    if theirs is None or (theirs.point, theirs.root, theirs.device) != (own.point, own.root, own.device):
        seen = "nothing" if theirs is None else f"{theirs.fstype} {theirs.root} at {theirs.point}"
        return (
            f"this process sees {own.fstype} {own.root} at {own.point}, PID 1 sees {seen}: another mount "
            "namespace (systemd PrivateTmp, a container)"
        )
    return None


def existing_ancestor(path: str) -> str:
    """``path`` itself if it exists, else its nearest existing parent (resolved)."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return os.path.realpath(current)
