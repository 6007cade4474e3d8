"""What to tell a user whose install lacks an optional extra.

strict-singleton is not on a public package index, so ``pip install 'strict-singleton[redis]'``
alone fails for most users. The message gives three ways, each a command that works somewhere:

1. the index form, for an index (or a ``--find-links`` wheel directory) that holds the package;
2. the form that re-installs from where this copy came from: the checkout, wheel or VCS URL
   pip recorded in the installed distribution's ``direct_url.json`` (PEP 610), else a
   placeholder for the user's checkout;
3. the extra's own dependencies, as declared in the installed metadata (``Requires-Dist``), which
   pip installs from the public index without strict-singleton.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from importlib import metadata
from urllib.parse import unquote, urlsplit, urlunsplit

DISTRIBUTION = "strict-singleton"
CHECKOUT_PLACEHOLDER = "<path to your strict-singleton checkout>"


def missing_extra_message(subject: str, extra: str, cause: BaseException | str | None = None) -> str:
    """``"{subject} needs the '{extra}' extra ({cause}); install one of: ..."``: one line."""
    why = f" ({cause})" if cause is not None and str(cause) else ""
    return f"{subject} needs the '{extra}' extra{why}; {install_hint(extra)}"


def install_hint(extra: str) -> str:
    """The three install commands for ``extra``, read from this install's metadata."""
    direct_url: str | None = None
    requires: list[str] | None = None
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        pass
    else:
        direct_url = dist.read_text("direct_url.json")
        requires = dist.requires
    return hint_from(extra, direct_url=direct_url, requires=requires)


def hint_from(extra: str, *, direct_url: str | None, requires: list[str] | None) -> str:
    """:func:`install_hint` from the metadata it reads (a pure function, tested on its own)."""
    ways = [
        f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}]')} (from an index or wheel directory that has "
        "strict-singleton: it is not on PyPI)",
        source_command(extra, direct_url),
    ]
    deps = extra_requirements(extra, requires)
    if deps:
        ways.append(f"pip install {' '.join(shlex.quote(d) for d in deps)} (the extra's own dependencies)")
    return "install it with one of: " + "; or ".join(ways)


def source_command(extra: str, direct_url: str | None) -> str:
    """A pip command that installs ``extra`` from where this copy of the package was installed."""
    generic = f"pip install {shlex.quote(f'{CHECKOUT_PLACEHOLDER}[{extra}]')} (from a checkout)"
    try:
        info = json.loads(direct_url) if direct_url else None
    except ValueError:
        return generic
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return generic
    url = _without_credentials(info["url"])
    parts = urlsplit(url)
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        revision = vcs.get("commit_id") or vcs.get("requested_revision")
        pinned = f"{vcs['vcs']}+{url}" + (f"@{revision}" if isinstance(revision, str) and revision else "")
        return f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}] @ {pinned}')} (where this copy came from)"
    if parts.scheme != "file":  # an archive URL
        return f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}] @ {url}')} (where this copy came from)"
    path = _file_url_path(url)
    if not os.path.exists(path):  # a checkout or wheel that has since been moved or deleted
        return generic
    dir_info = info.get("dir_info")
    editable = isinstance(dir_info, dict) and dir_info.get("editable") is True
    flag = "-e " if editable else ""
    where = "this install's checkout" if isinstance(dir_info, dict) else "this install's wheel"
    return f"pip install {flag}{shlex.quote(f'{path}[{extra}]')} ({where})"


def extra_requirements(extra: str, requires: list[str] | None) -> list[str]:
    """The requirements an extra adds (``Requires-Dist: redis>=5.0.1; extra == "redis"``)."""
    marker = re.compile(r"""\bextra\s*==\s*['"]""" + re.escape(extra) + r"""['"]""")
    found = []
    for line in requires or ():
        requirement, _, condition = line.partition(";")
        if marker.search(condition) and not requirement.strip().startswith(DISTRIBUTION):
            found.append(requirement.strip().replace(" ", ""))
    return found


def _without_credentials(url: str) -> str:
    # pip may keep a user name or an environment variable reference in a recorded URL; a
    # message is printed and logged, so no user information goes into it.
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _file_url_path(url: str) -> str:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if os.name == "nt":  # file:///C:/x -> C:\x
        from urllib.request import url2pathname

        path = url2pathname(parts.path)
    return path
