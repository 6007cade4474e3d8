"""The Durable backend's address, as ``doctor`` accepts it: ``[grpc://|grpcs://]host:port``."""

from __future__ import annotations

import ipaddress
import re

from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends._redact import MASK

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(
    rf"(?:grpcs?://)?(?P<host>{_LABEL}(?:\.{_LABEL})*|\[(?P<ip6>[0-9A-Fa-f:.]+)\]):(?P<port>[0-9]{{1,5}})"
)
_ADDRESS_FORMS = "[grpc://|grpcs://]host:port (a host name, an IPv4 address or a bracketed IPv6 address)"


def validate_client_address(address: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``address`` is ``[grpc://|grpcs://]host:port``.

    A gRPC address carries no credentials (TLS is ``grpcs://``; tokens go in metadata),
    so anything else (a user or password, a path, a query, a fragment, another scheme,
    a port that is not a number) is refused before a channel is built: gRPC echoes a
    target it cannot resolve in its errors and in its native log, on file descriptor 2,
    where nothing can scrub it. The message shows nothing of the address."""
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is not None and 0 < int(match["port"]) < 65536:
        if match["ip6"] is None:
            return
        try:
            ipaddress.IPv6Address(match["ip6"])
        except ValueError:
            pass
        else:
            return
    raise InvalidArgumentError(f"bad client address {MASK}: use {_ADDRESS_FORMS}, with nothing else in it")


__all__ = ["validate_client_address"]
