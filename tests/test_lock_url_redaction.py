"""No secret of a lock URL or client address is ever printed, however the URL is mistyped.

Passwords with the characters that move URL boundaries (``? # / @ : & = , [ ]``, spaces,
percent signs), through :func:`redact_url`, ``lock_backends.from_url`` errors,
``strict-singleton doctor`` (text and ``--json``, usage errors and reports) and the
usage errors of ``strict-singleton race --lock``.
"""

from __future__ import annotations

import io
import re

import pytest

from strict_singleton.cli import EXIT_USAGE, main
from strict_singleton.errors import InvalidArgumentError
from strict_singleton.lock_backends import from_url
from strict_singleton.lock_backends._url import redact_url, scrub
from strict_singleton.testing import free_port

# Two distinctive halves around each nasty character: neither half may ever be shown.
LEFT, RIGHT = "Kq7Zxw", "Wm3Pvy"
NASTY = ["?", "#", "/", "@", ":", "&", "=", "%", " ", ",", "[", "]", "?x=1#", "/?#@", "@127.0.0.1:1/0?"]
PASSWORDS = [f"{LEFT}{c}{RIGHT}" for c in NASTY]


def url_forms(password: str, port: int) -> list[str]:
    # A password typed without its colon is hidden whole, unless it has a colon itself:
    # then it is indistinguishable from user:password, whose user is shown.
    alone = [] if ":" in password else [f"rediss://{password}@127.0.0.1:{port}/0"]
    return [
        *alone,
        f"redis://:{password}@127.0.0.1:{port}/0",
        f"redis://app:{password}@127.0.0.1:{port}/0",
        f"redis://127.0.0.1:{port}/0?password={password}",
        f"redis://127.0.0.1:{port}/0#{password}",
        f"redlock://:{password}@127.0.0.1:{port},127.0.0.1:{port + 1},127.0.0.1:{port + 2}/0",
        f"azurite://:{password}@127.0.0.1:{port}/locks",
        f"redis://:{password}@[::1:{port}/0",
        f"redlock://:{password}@[::1:{port},127.0.0.1:1,127.0.0.1:2/0",
    ]


def assert_hidden(text: str) -> None:
    assert LEFT not in text and RIGHT not in text, text


@pytest.mark.parametrize("password", PASSWORDS)
def test_redact_url_hides_every_part_of_a_nasty_password(password: str) -> None:
    for url in url_forms(password, 1):
        shown = redact_url(url)
        assert_hidden(shown)
        assert "***" in shown
        assert_hidden(scrub(f"driver said: cannot connect to {url}", url))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:top?secret@127.0.0.1:27107/0", "redis://:***@127.0.0.1:27107/0"),
        ("redis://:top#secret@127.0.0.1:27107/0", "redis://:***@127.0.0.1:27107/0"),
        ("redis://h:1/0?topsecret", "redis://h:1/0?***"),
        ("redis://h:1/0?socket_timeout=2&topsecret", "redis://h:1/0?socket_timeout=2&***"),
        ("redis://h:1/0?password=a@b:1", "redis://***"),  # '@' in a query value: nothing provable
        ("redis://[::1]:6380/0", "redis://[::1]:6380/0"),
        ("grpc://user:topsecret@127.0.0.1:1", "grpc://user:***@127.0.0.1:1"),
    ],
)
def test_redact_url_shows_only_what_is_provably_public(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# The last one makes a well-formed URL of what precedes its '@': not an error to show.
@pytest.mark.parametrize("password", PASSWORDS[:-1])
def test_from_url_errors_never_show_the_password(password: str) -> None:
    for url in [
        f"redis://:{password}@127.0.0.1/0",  # no port
        f"redis://:{password}@[::1:1/0",  # unclosed bracket
        f"redis://:{password}@127.0.0.1:port/0",
        f"redlock://:{password}@[::1:1,127.0.0.1:2,127.0.0.1:3/0",
        f"azurite://:{password}@[::1:1/locks",
    ]:
        with pytest.raises(InvalidArgumentError) as caught:
            from_url(url)
        assert_hidden(str(caught.value))


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        status = main(list(argv), stdout=out, stderr=err)
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("password", PASSWORDS)
def test_doctor_never_prints_a_nasty_password(password: str, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens: every reachable URL fails fast
    for url in url_forms(password, port):
        for argv in (["doctor", "--timeout", "0.5", url], ["doctor", "--json", "--timeout", "0.5", url]):
            status, out, err = run(*argv)
            captured = capsys.readouterr()
            assert_hidden(out + err + captured.out + captured.err)
            assert status != 0


@pytest.mark.parametrize("password", PASSWORDS[:-1])
def test_race_lock_usage_errors_never_print_a_nasty_password(password: str, capsys: pytest.CaptureFixture[str]) -> None:
    for url in [
        f"redis://:{password}@127.0.0.1/0",
        f"redis://:{password}@[::1:1/0",
        f"redis://:{password}@127.0.0.1:1/0?socket_timeout=abc",
        f"redlock://:{password}@[::1:1,127.0.0.1:2,127.0.0.1:3/0",
    ]:
        status, out, err = run("race", "--lock", url)
        captured = capsys.readouterr()
        assert status == EXIT_USAGE
        assert_hidden(out + err + captured.out + captured.err)
        assert "invalid _lock_url value" not in captured.err


def test_argparse_never_echoes_a_malformed_url(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["doctor", "redis://:topsecret@[::1:27107/0"], ["doctor", "redlock://:topsecret@[::1:1,a:2,b:3/0"]):
        status, _, _ = run(*argv)
        err = capsys.readouterr().err
        assert status == EXIT_USAGE
        assert "topsecret" not in err and "invalid" not in err.split(":")[0]
        assert re.search(r"redis|redlock", err)


def test_check_deployment_raises_invalid_argument_for_a_malformed_bracket() -> None:
    from strict_singleton.doctor import check_deployment

    for url in ("redis://:topsecret@[::1:27107/0", "redlock://:topsecret@[::1:1,127.0.0.1:2,127.0.0.1:3/0"):
        with pytest.raises(InvalidArgumentError) as caught:
            check_deployment([url])
        assert "topsecret" not in str(caught.value)
