"""Whether anyone but this user (or root) can move a lock directory away from above it.

A directory's own owner and mode protect the lock files in it; the directories above it
protect its *name*. Another user who may write to an ancestor (world-writable without
the sticky bit) or who owns one can rename the lock directory (or the symbolic link
leading to it) and put another in its place: new starters then lock files the holders
never see. Every directory on the way is checked, both along the path as written
(where its symbolic links live) and along the path they resolve to.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def ancestors(directory: str) -> list[str]:
    """Every existing directory above ``directory`` (absolute), resolved, without repeats:
    the parents of each prefix of the path as written, and of the path it resolves to."""
    path = Path(directory)
    seen: dict[str, None] = {}
    prefixes = [path, *path.parents]
    for prefix in prefixes:
        if prefix != path and prefix.exists():
            seen.setdefault(os.path.realpath(prefix))
    resolved = Path(os.path.realpath(path))
    for parent in resolved.parents:
        seen.setdefault(str(parent))
    seen.pop(str(resolved), None)
    return list(seen)


def ancestor_problem(directory: str) -> str | None:
    """Why another user could replace ``directory`` from above, or ``None``."""
    if not hasattr(os, "geteuid"):
        return None
    euid = os.geteuid()
    for ancestor in ancestors(directory):
        try:
            st = os.stat(ancestor)
        except OSError:
            continue
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            return (
                f"{ancestor} above it is world-writable without the sticky bit (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): any user may rename the lock directory away"
            )
        if st.st_uid not in (euid, 0):
            return f"{ancestor} above it is owned by uid {st.st_uid}: that user may rename the lock directory away"
    return None
