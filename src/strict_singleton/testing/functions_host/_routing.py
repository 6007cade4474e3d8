"""Routing a request as the real host does: raw path segments, dot segments, and the route table."""

from __future__ import annotations

from urllib.parse import quote_plus, unquote, unquote_plus

RPC_PREFIX = "/durabletask"


WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"


def _url_encode(text: str) -> str:
    """``WebUtility.UrlEncode``: space as ``+``, everything but letters, digits and ``-_.!*()`` as %XX."""
    return quote_plus(text, safe="-_.!*()")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path (what Kestrel's path normalisation does)."""
    out: list[str] = []
    segments = path.split("/")[1:]
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)


def host_route_segments(raw_target: str) -> list[str] | None:
    """The path segments the real host routes for a raw request target (path and query as sent),
    below the RPC or webhook base path; None outside both (the real host never sees such a path).

    The path ends at ``?`` or ``#``; Kestrel decodes %XX except %2F and removes dot segments;
    ``WebUtility.UrlDecode`` decodes the rest (%2F becomes ``/``) with ``+`` as a space; the
    base path is cut off and ``/`` trimmed at both ends before splitting.
    """
    path = raw_target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    pieces = [unquote(piece) for piece in path.replace("%2f", "%2F").split("%2F")]
    path = _remove_dot_segments("%2F".join(pieces))
    decoded = unquote_plus(path)
    for prefix in (RPC_PREFIX, WEBHOOK_PREFIX):
        if decoded.lower() == prefix or decoded.lower().startswith(prefix + "/"):
            rest = decoded[len(prefix) :].strip("/")
            return rest.split("/") if rest else []
    return None


# Operations the real host serves on instances/{instanceId}/{operation} that the stand-in does not.
_UNIMPLEMENTED_OPERATIONS = frozenset({"rewind", "restart", "suspend", "resume"})


def route(method: str, segments: list[str]) -> tuple[str, tuple[str, ...]] | None:
    """What the real host does with ``method`` on ``segments``: ``("start", (function, id))`` (id
    ``""``: the host makes one), ``("status", (id,))``, ``("terminate", (id,))``,
    ``("raise_event", (id, event))``, ``("not_implemented", ())`` for a route the real host serves
    and the stand-in does not, or None for the real host's 404. Literal segments and operations
    match case-insensitively, as ASP.NET routing and the handler's OrdinalIgnoreCase compare them.
    """
    n = len(segments)
    head = segments[0].lower() if segments else ""
    post = method == "POST"
    if head == "orchestrators" and n in (2, 3) and segments[1]:
        return ("start", (segments[1], segments[2] if n == 3 else "")) if post else None
    if head == "entities" and n <= 3:  # read, list, signal (POST) and delete entities
        return ("not_implemented", ()) if method in ("GET", "POST", "DELETE") else None
    if head == "instances" and n <= 3:
        instance_id = segments[1] if n >= 2 and segments[1] else None
        operation = segments[2].lower() if n == 3 and segments[2] else None
        if instance_id is None:  # list or purge by filters
            return ("not_implemented", ()) if method in ("GET", "DELETE") else None
        if operation is None:
            if method == "GET":
                return "status", (instance_id,)
            return ("not_implemented", ()) if method == "DELETE" else None
        if post and operation == "terminate":
            return "terminate", (instance_id,)
        if post and operation in _UNIMPLEMENTED_OPERATIONS:
            return "not_implemented", ()
        return None
    if head == "instances" and n == 4 and segments[2].lower() == "raiseevent" and segments[1] and segments[3]:
        return ("raise_event", (segments[1], segments[3])) if post else None
    if head == "makeprimary" and n == 1:
        return "not_implemented", ()
    return None
