"""Print a URL that may carry secrets: show only what is provably public, mask the rest.

A URL typed by hand breaks the grammar in ways a parser resolves differently from a
person: an unencoded ``?``, ``#``, ``/`` or ``@`` in a password moves where the host,
the query and the fragment seem to start. So nothing is shown because a parser put it
in a public place; a part is shown only when it has the shape public parts have (a host
name and port, ``/db`` or ``/container``, a known harmless option with a plain value).
Everything else becomes ``***``, and whatever could be a secret under any reading of the
URL is also scrubbed from messages (driver errors) that may echo it.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"
_MIN_SCRUB = 3  # shorter "secrets" would mangle every message they are scrubbed from

# redis-py URL options that carry no secret; any other query value is masked.
PUBLIC_QUERY_KEYS = frozenset(
    {
        "db", "protocol", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
        "retry_on_timeout", "health_check_interval", "max_connections", "single_connection_client",
        "decode_responses", "encoding", "ssl_cert_reqs", "ssl_check_hostname", "client_name", "timeout",
    }
)  # fmt: skip

_HOST = re.compile(r"(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
_USER = re.compile(r"[A-Za-z0-9_.~-]*")
_PATH = re.compile(r"(?:/[A-Za-z0-9_.~-]*)*")
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")
_FILE_OR_PLAIN = re.compile(r"[A-Za-z0-9_.~:/+-]*")


def redact_url(url: str) -> str:
    """``url`` safe to print: every part that is not provably public replaced by ``***``.

    ``redis://:pw@h:1/0`` -> ``redis://:***@h:1/0``; ``redis://user:pw@...`` keeps a
    plain ``user``; a userinfo without a colon is hidden whole (it may be a password typed
    without one); userinfo ends at the *last* ``@`` before the host, so a password with an
    unencoded ``?``, ``#``, ``/`` or ``@`` stays hidden; every ``redlock://`` node is treated
    alike; ``?password=pw`` -> ``?password=***`` (only known harmless options with plain
    values keep them; a bare ``?word`` is hidden); a fragment is hidden. Where the URL
    could also be read as a query or fragment holding an ``@``, everything after the
    scheme is hidden. ``file`` URLs are returned as they are (a path holds no secret).
    """
    if not isinstance(url, str):
        return repr(type(url))
    if url == "file" or url.startswith("file:"):
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or not _PLAIN.fullmatch(scheme):
        return url if _FILE_OR_PLAIN.fullmatch(url) else MASK
    head = f"{scheme}://"
    at = rest.rfind("@")
    tail_start = _first_of(rest, "/?#", at + 1)
    authority, tail = rest[:tail_start], rest[tail_start:]
    if at >= 0 and _ambiguous(rest[:at]):
        return head + MASK
    nodes = authority.split(",") if scheme == "redlock" else [authority]
    shown = head + ",".join(_redact_node(node) for node in nodes) + _redact_tail(tail)
    return scrub(shown, url)


def scrub(text: str, url: str) -> str:
    """``text`` with every secret of ``url`` (as written, and percent-decoded) replaced by ``***``.

    For messages that might echo part of a URL (driver errors); secrets shorter than
    three characters are left alone.
    """
    if not isinstance(text, str):
        return text
    for secret in sorted(secrets_of(url), key=len, reverse=True):
        if len(secret) >= _MIN_SCRUB:
            text = text.replace(secret, MASK)
    return text


def secrets_of(url: str) -> set[str]:
    """Everything in ``url`` that may be a secret, under each reading of it: userinfo up to
    the last ``@`` (as :func:`redact_url` reads it) and up to the first ``/?#`` (as
    ``urllib`` and the drivers read it), every query value and bare query word that is not
    a known harmless option, and the fragment; each also cut at the delimiters a parser
    may have cut it at."""
    if not isinstance(url, str) or "://" not in url or url.startswith("file:"):
        return set()
    scheme, _, rest = url.partition("://")
    redlock = scheme == "redlock"
    last_at = rest.rfind("@")
    found = _userinfo_secrets(rest[:last_at], redlock=redlock) if last_at >= 0 else set()
    netloc = rest[: _first_of(rest, "/?#", 0)]
    for node in netloc.split(",") if redlock else [netloc]:
        userinfo, at, host = node.rpartition("@")
        if at:
            found |= _userinfo_secrets(userinfo, redlock=False)
        if not _HOST.fullmatch(host):
            found |= _pieces(host)
    for text in (rest, rest[last_at + 1 :]):
        body, _, fragment = text.partition("#")
        found |= _pieces(fragment)
        for param in body.partition("?")[2].split("&"):
            key, eq, value = param.partition("=")
            if not eq:
                found |= _pieces(key)
            elif key.lower() not in PUBLIC_QUERY_KEYS or not _PLAIN.fullmatch(value):
                found |= _pieces(value)
    found.discard("")
    if last_at < 0 or not _ambiguous(rest[:last_at]):
        # The host, port and path redact_url shows are public, whatever a query echoed.
        after = rest[last_at + 1 :]
        found -= set(_DELIMITERS.split(after[: _first_of(after, "?#", 0)]))
    return found | {unquote(s) for s in found}


def _userinfo_secrets(region: str, *, redlock: bool) -> set[str]:
    """The passwords in the text before the last ``@`` (for Redlock: earlier whole nodes,
    then the last node's userinfo)."""
    found: set[str] = set()
    nodes = region.split(",") if redlock else [region]
    for i, node in enumerate(nodes):
        userinfo = node
        if i < len(nodes) - 1:
            userinfo, at, _ = node.rpartition("@")
            if not at:
                if not _HOST.fullmatch(node):  # a password cut at a comma
                    found |= _pieces(node)
                continue
        _, colon, password = userinfo.partition(":")
        found |= _pieces(password if colon else userinfo)
    return found


def _pieces(secret: str) -> set[str]:
    """``secret`` and its parts between URL delimiters, as a parser may have cut it."""
    return {secret, *_DELIMITERS.split(secret)}


_DELIMITERS = re.compile(r"[:@/?#&=,\[\]]")


def _first_of(text: str, chars: str, start: int) -> int:
    found = [i for i in (text.find(c, max(start, 0)) for c in chars) if i >= 0]
    return min(found) if found else len(text)


def _ambiguous(userinfo: str) -> bool:
    """Whether text before the last ``@`` could be a host, path and query rather than a
    password: then the ``@`` may belong to a query value or fragment, and the part after
    it to the secret."""
    cut = _first_of(userinfo, "/?#", 0)
    if cut == len(userinfo):
        return False
    last_node = userinfo[:cut].split(",")[-1].rpartition("@")[2]
    return bool(_HOST.fullmatch(last_node))


def _redact_node(node: str) -> str:
    userinfo, at, host = node.rpartition("@")
    shown_host = host if _HOST.fullmatch(host) else MASK
    if not at:
        return shown_host
    user, colon, _ = userinfo.partition(":")
    if colon and _USER.fullmatch(user):
        return f"{user}:{MASK}@{shown_host}"
    return f"{MASK}@{shown_host}"


def _redact_tail(tail: str) -> str:
    body, fragment_sep, _ = tail.partition("#")
    path, query_sep, query = body.partition("?")
    shown = path if _PATH.fullmatch(path) else "/" + MASK
    if query_sep:
        shown += "?" + "&".join(_redact_param(p) for p in query.split("&"))
    if fragment_sep:
        shown += "#" + MASK
    return shown


def _redact_param(param: str) -> str:
    key, eq, value = param.partition("=")
    if not param:
        return param
    if not eq or not _PLAIN.fullmatch(key):
        return MASK
    if key.lower() in PUBLIC_QUERY_KEYS and _PLAIN.fullmatch(value):
        return param
    return f"{key}={MASK}"
