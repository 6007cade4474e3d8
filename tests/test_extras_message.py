"""A missing extra's message gives commands that work for a package that is not on an index:
the index form, the form from where this copy was installed (PEP 610 ``direct_url.json``), and
the extra's own dependencies."""

from __future__ import annotations

import importlib
import json
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from packaging.requirements import Requirement

from strict_singleton._extras import (
    CHECKOUT_PLACEHOLDER,
    extra_requirements,
    hint_from,
    install_hint,
    missing_extra_message,
    source_command,
)
from strict_singleton.lock_backends import from_url

ROOT = Path(__file__).resolve().parent.parent
REQUIRES = ['redis>=5.0.1; extra == "redis"', "durabletask>=1.10.0", 'strict-singleton[redis]; extra == "test"']

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def direct_url(url: str, **info: object) -> str:
    return json.dumps({"url": url, **info})


def test_an_editable_checkout_is_named_with_its_real_path(tmp_path: Path) -> None:
    text = source_command("redis", direct_url(tmp_path.as_uri(), dir_info={"editable": True}))
    assert text.startswith(f"pip install -e '{tmp_path}[redis]'")


def test_a_checkout_installed_without_e_and_a_wheel_file_are_named_too(tmp_path: Path) -> None:
    assert source_command("azure", direct_url(tmp_path.as_uri(), dir_info={})).startswith(
        f"pip install '{tmp_path}[azure]'"
    )
    wheel = tmp_path / "strict_singleton-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    text = source_command("azure", direct_url(wheel.as_uri(), archive_info={}))
    assert text.startswith(f"pip install '{wheel}[azure]'")


def test_a_path_with_spaces_or_quotes_stays_one_shell_word(tmp_path: Path) -> None:
    checkout = tmp_path / "it's here"
    checkout.mkdir()
    text = source_command("redis", direct_url(checkout.as_uri(), dir_info={"editable": True}))
    assert f"""'{tmp_path}/it'"'"'s here[redis]'""" in text


def test_a_vcs_or_remote_archive_install_is_a_direct_reference_without_credentials() -> None:
    vcs = direct_url(
        "https://user:token@example.com/org/strict-singleton.git",
        vcs_info={"vcs": "git", "commit_id": "0123abc", "requested_revision": "main"},
    )
    text = source_command("redis", vcs)
    assert "'strict-singleton[redis] @ git+https://example.com/org/strict-singleton.git@0123abc'" in text
    assert "token" not in text and "user" not in text
    remote = source_command("otel", direct_url("https://files.example.com/strict_singleton-0.1.0.whl", archive_info={}))
    assert "'strict-singleton[otel] @ https://files.example.com/strict_singleton-0.1.0.whl'" in remote


@pytest.mark.parametrize(
    "recorded",
    [None, "", "{not json", json.dumps(["a list"]), json.dumps({"dir_info": {}}), "gone"],
    ids=["none", "empty", "garbage", "not-an-object", "no-url", "moved-away"],
)
def test_without_a_usable_record_the_command_names_a_placeholder(recorded: str | None, tmp_path: Path) -> None:
    if recorded == "gone":
        recorded = direct_url((tmp_path / "deleted-checkout").as_uri(), dir_info={"editable": True})
    assert source_command("redis", recorded) == f"pip install '{CHECKOUT_PLACEHOLDER}[redis]' (from a checkout)"


def test_the_three_ways_in_order() -> None:
    text = hint_from("redis", direct_url=None, requires=REQUIRES)
    index = text.index("pip install 'strict-singleton[redis]'")
    checkout = text.index(f"'{CHECKOUT_PLACEHOLDER}[redis]'")
    deps = text.index("pip install 'redis>=5.0.1'")
    assert index < checkout < deps
    assert "not on PyPI" in text
    assert "durabletask" not in text  # a core dependency, not the extra's
    assert hint_from("plot", direct_url=None, requires=None).count("pip install") == 2  # no metadata: two ways


def test_the_extras_dependencies_are_the_ones_pyproject_declares() -> None:
    """Read from the installed metadata, so they follow pyproject.toml without a second list."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    requires = metadata.requires("strict-singleton")
    for extra, declared in extras.items():
        want = sorted(str(Requirement(r)) for r in declared if not r.startswith("strict-singleton"))
        assert sorted(str(Requirement(r)) for r in extra_requirements(extra, requires)) == want, extra


def test_this_install_is_named_as_pip_recorded_it() -> None:
    """The installed distribution's own record (an editable checkout here, a plain one in CI's
    newest-releases run): the message names that checkout, with -e when it is editable."""
    recorded = metadata.distribution("strict-singleton").read_text("direct_url.json")
    info = json.loads(recorded) if recorded else {}
    if not isinstance(info.get("dir_info"), dict) or Path(unquote(urlsplit(info["url"]).path)) != ROOT:
        pytest.skip(f"strict-singleton is not installed from this checkout ({info.get('url')})")
    flag = "-e " if info["dir_info"].get("editable") else ""
    text = install_hint("redis")
    assert f"pip install {flag}'{ROOT}[redis]'" in text
    assert "pip install 'strict-singleton[redis]'" in text and "pip install 'redis>=" in text


def test_missing_extra_message_names_the_subject_the_extra_and_the_cause() -> None:
    text = missing_extra_message("RedisLease", "redis", ImportError("No module named 'redis'"))
    assert text.startswith("RedisLease needs the 'redis' extra (No module named 'redis'); install it with one of: ")
    assert missing_extra_message("X", "azure").startswith("X needs the 'azure' extra; install")


@pytest.mark.parametrize(
    ("hidden", "module", "extra"),
    [
        (("redis", "redis.exceptions"), "strict_singleton.lock_backends._redis_common", "redis"),
        (("azure.storage.blob",), "strict_singleton.lock_backends.blob", "azure"),
        (("azure.durable_functions",), "strict_singleton.functions", "functions"),
    ],
)
def test_every_import_time_message_gives_the_three_ways(
    hidden: tuple[str, ...], module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in hidden:  # as if the extra were not installed
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, module, raising=False)  # imported afresh (restored afterwards)
    with pytest.raises(ImportError) as info:
        importlib.import_module(module)
    text = str(info.value)
    assert f"needs the '{extra}' extra" in text
    assert f"pip install 'strict-singleton[{extra}]'" in text
    assert install_hint(extra) in text


def test_a_lock_url_without_its_extra_gives_the_three_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ImportError) as info:
        from_url("redis://127.0.0.1:1/0")
    text = str(info.value)
    assert text.startswith("the redis:// lock needs the 'redis' extra")
    assert text.endswith(install_hint("redis"))
