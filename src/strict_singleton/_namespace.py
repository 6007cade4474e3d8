"""Lock keys per task hub: instance IDs are unique per task hub, so leases and records are too.

A starter's *namespace* names the task hub its client talks to. The lock key of an instance
ID is the ID itself in the empty namespace (every lock key before namespaces existed, so
starters of older releases and of this one still exclude each other there), else
``namespace + U+001F + instance ID``. Instance IDs never contain control characters (they are
refused before any lease), so no key of a namespace can equal a key of another namespace or a
bare ID: unrelated task hubs that share a lock store never wait on each other's leases or
records, and one task hub's starters always share theirs.

Where the namespace comes from, unless ``namespace=`` names it:

* ``durabletask-azuremanaged``'s scheduler clients: their task hub (the ``taskhub`` header
  their interceptor sends);
* the Azure Functions binding's client: its ``task_hub_name`` (``DurableFunctionsStarter``);
* any other client (durabletask's gRPC clients talk to one sidecar, whose task hub they do
  not know): the empty namespace. Two apps or environments that share a lock store and IDs
  but not a task hub pass ``namespace=`` (e.g. the task hub's name) to stay apart; deriving
  it from an address instead would let two spellings of one backend's address start twice.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from strict_singleton.errors import InvalidArgumentError

SEPARATOR = "\x1f"
MAX_NAMESPACE_LENGTH = 256
_FORBIDDEN = frozenset({"Cc", "Cs", "Zl", "Zp"})


def validate_namespace(namespace: object, *, backend: str = "") -> str:
    """A ``str`` of at most 256 characters without control characters (empty: the shared
    namespace), else :class:`InvalidArgumentError`."""
    if (
        not isinstance(namespace, str)
        or len(namespace) > MAX_NAMESPACE_LENGTH
        or namespace != namespace.strip()
        or any(unicodedata.category(c) in _FORBIDDEN for c in namespace)
    ):
        shown = namespace[:80].encode("unicode_escape").decode() if isinstance(namespace, str) else namespace
        raise InvalidArgumentError(
            f"namespace must be a str of at most {MAX_NAMESPACE_LENGTH} characters without control characters "
            f"or surrounding whitespace (the task hub's name, or '' to share locks with every task hub), got {shown!r}",
            backend=backend,
        )
    return namespace


def derived_namespace(client: Any) -> str:
    """The task hub ``client`` talks to where the client says (see the module docstring), else ''."""
    hub = getattr(client, "task_hub_name", None)  # the Functions binding's client
    if isinstance(hub, str) and hub:
        return hub
    for interceptor in getattr(client, "_interceptors", None) or ():
        for key, value in getattr(interceptor, "_metadata", None) or ():
            if key == "taskhub" and isinstance(value, str) and value:
                return value
    return ""


def lock_key(namespace: str, instance_id: str) -> str:
    """The key the lock store keeps ``instance_id``'s lease and records under."""
    return instance_id if not namespace else f"{namespace}{SEPARATOR}{instance_id}"
