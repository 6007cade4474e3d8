"""Bad input at every public entry point gets a clear error, and nothing is scheduled.

Complements tests/test_bad_input.py (starter constructors and start arguments, sync and
async): here the lease constructors, lock URLs, the CLI and the public ID validator.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from strict_singleton import InvalidArgumentError, InvalidInstanceIdError, validate_instance_id
from strict_singleton.cli import main
from strict_singleton.lock_backends import FileLease
from strict_singleton.lock_backends import from_url as lock_from_url
from strict_singleton.lock_backends.redis import RedisLease
from strict_singleton.lock_backends.redlock import AsyncRedlockLease, RedlockLease
from strict_singleton.testing import DurableTestBackend


def redises(n: int) -> list[Any]:
    return [fakeredis.FakeRedis() for _ in range(n)]


def blob_lease(arg: Any, **kw: Any) -> Any:
    from strict_singleton.lock_backends.blob import BlobLease

    return BlobLease(arg, **kw)


def blob_from_string(conn: str, container: str) -> Any:
    from strict_singleton.lock_backends.blob import BlobLease

    return BlobLease.from_connection_string(conn, container=container)


AZ = "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a;"

CONSTRUCTORS: list[tuple[str, Callable[[], Any], str]] = [
    ("redis prefix with braces", lambda: RedisLease(fakeredis.FakeRedis(), prefix="a{b}"), "braces"),
    ("redis empty prefix", lambda: RedisLease(fakeredis.FakeRedis(), prefix=""), "non-empty"),
    ("redis prefix with newline", lambda: RedisLease(fakeredis.FakeRedis(), prefix="a\nb"), "printable"),
    ("redlock with 2 nodes", lambda: RedlockLease(redises(2)), "at least 3"),
    ("redlock async with 1 node", lambda: AsyncRedlockLease(redises(1)), "at least 3"),
    (
        "redlock same client twice",
        lambda: RedlockLease([c := fakeredis.FakeRedis(), c, fakeredis.FakeRedis()]),
        "distinct",
    ),
    ("redlock node_timeout 0", lambda: RedlockLease(redises(3), node_timeout=0), "node_timeout"),
    ("redlock node_timeout 10", lambda: RedlockLease(redises(3), node_timeout=10), "node_timeout"),
    ("redlock node_timeout str", lambda: RedlockLease(redises(3), node_timeout="1"), "node_timeout"),  # type: ignore[arg-type]
    ("blob not a container client", lambda: blob_lease(object()), "ContainerClient"),
    ("blob garbage connection string", lambda: blob_from_string("not a connection string", "c"), "connection string"),
    ("blob empty container", lambda: blob_from_string(AZ, ""), "container"),
    ("file empty directory", lambda: FileLease(""), "directory"),
]


@pytest.mark.parametrize(("case", "build", "message"), CONSTRUCTORS, ids=[c[0] for c in CONSTRUCTORS])
def test_lease_constructors(case: str, build: Callable[[], Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build()


def test_blob_prefix_rules() -> None:
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(AZ, container_name="c")
    for prefix in ("", "a\\b", "x" * 101):
        with pytest.raises(InvalidArgumentError, match="prefix"):
            blob_lease(container, prefix=prefix)


URLS = [
    ("", "non-empty"),
    ("redis://localhost:notaport/0", "bad port"),
    ("redis:///0", "host and port"),
    ("azblob://", "AZURE_STORAGE_CONNECTION_STRING"),
    ("azurite://127.0.0.1/c", "host and port"),
    ("azurite://127.0.0.1:10000/", "container"),
    ("redlock://127.0.0.1:1,127.0.0.1:2/0", "at least 3"),
    ("redlock://127.0.0.1:1,127.0.0.1:x,127.0.0.1:3/0", "bad port"),
    ("ftp://example/x", "unsupported lock URL"),
]


@pytest.mark.parametrize(("url", "message"), URLS)
def test_lock_urls(url: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        lock_from_url(url)


def test_lock_url_errors_hide_passwords() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        lock_from_url("redis://:hunter2@localhost:badport/0")
    assert "hunter2" not in str(info.value)


CLI = [
    (["--starters", "0"], "must be at least 1"),
    (["--processes", "-2"], "must be at least 1"),
    (["--ids", "sometimes"], "invalid choice"),
    (["--api", "fibers"], "invalid choice"),
    (["--visibility-delay", "nan"], "seconds >= 0"),
    (["--lock", "redis://h:99999/0"], "bad port"),
    (["--lock", "azurite://127.0.0.1:1/"], "container"),
    (["--lock", "redlock://127.0.0.1:1/0"], "at least 3"),
]


@pytest.mark.parametrize(("flags", "message"), CLI)
def test_cli_flags(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["race", *flags], stdout=io.StringIO())
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["", " x", "x\n", "a\tb", "\u0085x", "x" * 257, b"bytes", 3.0])
def test_public_id_validator(bad: Any) -> None:
    with pytest.raises(InvalidInstanceIdError):
        validate_instance_id(bad)


def test_nothing_reaches_the_backend(strict_singleton_durable_backend: DurableTestBackend) -> None:
    """After every bad call above, the Durable backend saw nothing (spot check on a live one)."""
    for _case, build, _message in CONSTRUCTORS:
        with pytest.raises(InvalidArgumentError):
            build()
    assert (
        strict_singleton_durable_backend.instance_count() == 0
        and strict_singleton_durable_backend.ledger.snapshot().total_created == 0
    )
