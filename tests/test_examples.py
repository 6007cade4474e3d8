"""The examples users copy, run as far as this machine allows.

``examples/worker_app.py`` runs whole, as a user runs it (a subprocess: durabletask's in-memory
backend, a real worker, the file lease in a temporary directory). The Functions project
``examples/functions_app/`` is imported and its HTTP trigger driven through the real 1.x client
against the host stand-in; its JSON files, its requirements and the wheel-shipping commands of
its README are checked offline. ``func start`` itself needs Core Tools: not run here.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
APP = EXAMPLES / "functions_app"
DAY = "2026-11-28"

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def project() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return dict(tomllib.load(f)["project"])


# -- examples/worker_app.py ----------------------------------------------------------------------


def example_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment without any setting that would point the example elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("DURABLE_ENDPOINT", "DURABLE_TASKHUB")}
    env.pop("STRICT_SINGLETON_LOCK_URL", None)
    env["STRICT_SINGLETON_LOCK_DIR"] = str(tmp_path / "locks")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize("api", ["sync", "asyncio"])
def test_the_worker_app_starts_once_and_its_orchestration_completes(tmp_path: Path, api: str) -> None:
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "worker_app.py"), "--api", api, "--day", DAY],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=example_env(tmp_path),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("durable backend: in-memory backend on port ") and f"api: {api}" in lines[0], lines
    assert "16 concurrent callers -> {'already_running': 15, 'started': 1}" in lines, run.stdout
    assert "started by one caller, fencing token 1" in lines, run.stdout
    assert f"orchestration nightly-report: COMPLETED, output: 'report for {DAY}: built'" in lines, run.stdout
    assert "Traceback" not in run.stderr, run.stderr
    assert len(list((tmp_path / "locks").glob("*.lock"))) == 1  # the lease was taken where it was told


def load_worker_app() -> Any:
    spec = importlib.util.spec_from_file_location("worker_app_example", EXAMPLES / "worker_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["worker_app_example"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_worker_app_reads_its_settings_from_flags_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_worker_app()
    monkeypatch.setenv("DURABLE_ENDPOINT", "http://localhost:8080")
    monkeypatch.setenv("DURABLE_TASKHUB", "default")
    monkeypatch.setenv("STRICT_SINGLETON_LOCK_URL", "redis://localhost:6380/0")
    args = module.parse_args([])
    assert (args.endpoint, args.taskhub, args.lock) == ("http://localhost:8080", "default", "redis://localhost:6380/0")
    for key in ("DURABLE_ENDPOINT", "DURABLE_TASKHUB", "STRICT_SINGLETON_LOCK_URL"):
        monkeypatch.delenv(key)
    args = module.parse_args(["--api", "asyncio", "--callers", "4"])
    assert (args.endpoint, args.taskhub, args.lock, args.api, args.callers) == (None, None, "file", "asyncio", 4)
    with pytest.raises(SystemExit):
        module.parse_args(["--taskhub", "default"])  # a task hub without a scheduler to find it on


def test_the_worker_app_builds_the_scheduler_clients_the_docstring_names() -> None:
    """``--taskhub``: the azuremanaged client and worker with the emulator's settings (built,
    not connected: no scheduler here)."""
    pytest.importorskip("durabletask.azuremanaged")
    from durabletask.azuremanaged.client import AsyncDurableTaskSchedulerClient, DurableTaskSchedulerClient
    from durabletask.azuremanaged.worker import DurableTaskSchedulerWorker

    module = load_worker_app()
    target = module.Target(address="http://localhost:8080", taskhub="default", description="emulator")
    client = target.client()
    assert isinstance(client, DurableTaskSchedulerClient)
    client.close()
    assert isinstance(target.worker(), DurableTaskSchedulerWorker)

    async def build() -> Any:
        async_client = target.async_client()
        await async_client.close()
        return async_client

    assert isinstance(asyncio.run(build()), AsyncDurableTaskSchedulerClient)


def test_the_worker_app_uses_no_test_harness() -> None:
    """A template for an app: durabletask's public backend, never strict_singleton.testing."""
    tree = ast.parse((EXAMPLES / "worker_app.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("strict_singleton.testing")}, imported
    assert "durabletask.testing" in imported and "durabletask.worker" in imported


def test_the_quickstart_says_it_is_a_demo_on_the_harness() -> None:
    text = (EXAMPLES / "quickstart.py").read_text()
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "strict_singleton.testing" in text and "strict_singleton.testing" in doc
    assert "overwrite-duplicates demo backend" in doc and "examples/worker_app.py" in doc


# -- examples/functions_app/: the HTTP trigger ----------------------------------------------------


@pytest.fixture
def function_app() -> Any:
    """``function_app.py`` imported as the Functions worker imports it (needs the functions extra)."""
    pytest.importorskip("azure.durable_functions")
    pytest.importorskip("azure.functions")
    spec = importlib.util.spec_from_file_location("functions_app_example", APP / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["functions_app_example"] = module
    spec.loader.exec_module(module)
    return module


def app_functions(app: Any) -> dict[str, Any]:
    return {f.get_function_name(): f for f in app.myApp.get_functions()}


def http_start(app: Any) -> Callable[..., Any]:
    return app_functions(app)["http_start_single"].get_user_function()  # type: ignore[no-any-return]


def post(function_name: str, instance_id: str) -> Any:
    import azure.functions as func

    return func.HttpRequest(
        method="POST",
        url=f"http://localhost:7071/api/orchestrators/{function_name}/{instance_id}",
        body=b"",
        route_params={"functionName": function_name, "instanceId": instance_id},
    )


def test_the_functions_app_registers_a_trigger_an_orchestrator_and_an_activity(function_app: Any) -> None:
    functions = app_functions(function_app)
    assert set(functions) == {"http_start_single", "orch", "hello"}
    bindings = {name: {b.type for b in f.get_bindings()} for name, f in functions.items()}
    assert {"httpTrigger", "durableClient"} <= bindings["http_start_single"]
    assert "orchestrationTrigger" in bindings["orch"] and "activityTrigger" in bindings["hello"]


def test_the_functions_app_answers_a_contended_wave_with_one_202(
    function_app: Any, make_host: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 invocations at once on a host that would overwrite a running instance: one 202
    (the check-status payload), fifteen 409, one instance created."""
    from strict_singleton.testing import functions_host as fh

    monkeypatch.setenv("STRICT_SINGLETON_LOCK_URL", f"file:{tmp_path}")
    user_function = http_start(function_app)
    host = make_host("anystate", known_functions={"orch"})
    binding = fh.binding_json(host)
    iid = f"nightly-{uuid.uuid4().hex[:8]}"

    async def wave() -> list[Any]:
        return list(await asyncio.gather(*(user_function(req=post("orch", iid), client=binding) for _ in range(16))))

    answers = fh.run(wave())
    statuses = Counter(a.status_code for a in answers)
    assert statuses == Counter({202: 1, 409: 15}), statuses
    accepted = next(a for a in answers if a.status_code == 202)
    assert json.loads(accepted.get_body())["id"] == iid
    assert host.counts.created[iid] == 1


def test_an_empty_lock_setting_means_the_default_lock(
    function_app: Any, make_host: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """local.settings.json ships ``STRICT_SINGLETON_LOCK_URL: ""``: the default (a Blob lease on
    AzureWebJobsStorage), whose missing setting is the app's 500 with what to set, not a URL error."""
    from strict_singleton.testing import functions_host as fh

    monkeypatch.setenv("STRICT_SINGLETON_LOCK_URL", "")
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    user_function = http_start(function_app)
    host = make_host("reject", known_functions={"orch"})
    answer = fh.run(user_function(req=post("orch", "nightly"), client=fh.binding_json(host)))
    assert answer.status_code == 500
    assert "AzureWebJobsStorage" in answer.get_body().decode()
    assert host.counts.total_created == 0


# -- examples/functions_app/: the project files ---------------------------------------------------


def test_host_json_is_a_durable_functions_v2_host() -> None:
    host = json.loads((APP / "host.json").read_text())
    assert host["version"] == "2.0"
    bundle = host["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert bundle["version"].startswith("[4.")  # bundle 4.x: Durable Functions 2.x with the v2 Python model
    # The host's own check stays on (a duplicate that passed the lease is rejected, not an overwrite).
    assert host["extensions"]["durableTask"]["overridableExistingInstanceStates"] == "NonRunningStates"


def test_local_settings_name_what_the_app_and_the_adapter_read() -> None:
    pytest.importorskip("azure.durable_functions")
    from strict_singleton.functions._locks import STORAGE_SETTING

    text = (APP / "local.settings.json").read_text()
    settings = json.loads(text)
    values = settings["Values"]
    assert settings["IsEncrypted"] is False
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values[STORAGE_SETTING] == "UseDevelopmentStorage=true"
    assert "EnableWorkerIndexing" in values["AzureWebJobsFeatureFlags"]
    assert "STRICT_SINGLETON_LOCK_URL" in values
    assert 'os.environ.get("STRICT_SINGLETON_LOCK_URL")' in (APP / "function_app.py").read_text()
    assert not any(word in text.lower() for word in ("accountkey", "password", "sig=", "secret")), text


def requirement_lines() -> list[str]:
    lines = (APP / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_requirements_parse_and_pin_this_version_from_the_wheel_directory() -> None:
    options = [line for line in requirement_lines() if line.startswith("-")]
    requirements = [Requirement(line) for line in requirement_lines() if not line.startswith("-")]
    assert options == ["--find-links wheels"]
    ours = [r for r in requirements if canonicalize_name(r.name) == "strict-singleton"]
    assert len(ours) == 1 and ours[0].extras == {"functions"}
    pinned = {str(s.version) for s in ours[0].specifier if s.operator == "=="}
    assert pinned == {project()["version"]}, "pin the version pyproject.toml builds"
    declared = {canonicalize_name(Requirement(r).name) for r in project()["optional-dependencies"]["functions"]}
    assert {canonicalize_name(r.name) for r in requirements} - {"strict-singleton"} <= declared


def test_the_wheel_directory_is_shipped_but_not_committed() -> None:
    funcignore = (APP / ".funcignore").read_text().split()
    gitignore = (APP / ".gitignore").read_text().split()
    assert not [p for p in funcignore if p.rstrip("/") in ("wheels", ".python_packages", "*")], funcignore
    assert "wheels/" in gitignore
    assert {"local.settings.json", ".venv"} <= set(funcignore)


def build_backend_available() -> bool:
    """pyproject's build backend, installed: the wheel is then built offline (no isolation)."""
    from importlib import metadata

    try:
        return Version(metadata.version("setuptools")) >= Version("77") and bool(metadata.version("wheel"))
    except metadata.PackageNotFoundError:
        return False


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_the_readmes_wheel_commands_work_offline(tmp_path: Path) -> None:
    """README step 1 (``pip wheel --no-deps -w wheels <checkout>``), then the app's own
    ``--find-links wheels`` + ``strict-singleton[functions]==<version>`` lines, resolved with no
    index from another working directory: pip takes the wheel from ``wheels/`` beside the file."""
    if not build_backend_available():
        pytest.skip("setuptools>=77 and wheel are not installed: the wheel cannot be built offline")
    checkout = tmp_path / "checkout"  # a copy: building writes build/ and *.egg-info into the tree
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    app = tmp_path / "functions_app"
    app.mkdir()
    built = pip(
        "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", "wheels", str(checkout), cwd=app
    )
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list((app / "wheels").glob("*.whl"))
    version = project()["version"]
    assert [w.name for w in wheels] == [f"strict_singleton-{version}-py3-none-any.whl"]

    ours = [line for line in requirement_lines() if line.startswith("--find-links") or "strict-singleton" in line]
    (app / "requirements.txt").write_text("\n".join(ours) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resolved = pip(
        "install", "--dry-run", "--no-index", "--no-deps", "--ignore-installed", "-q", "--report", "-",
        "-r", str(app / "requirements.txt"),
        cwd=elsewhere,
    )  # fmt: skip
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    report = json.loads(resolved.stdout)
    [item] = report["install"]
    assert item["metadata"]["name"] == "strict-singleton" and item["metadata"]["version"] == version
    assert item["download_info"]["url"] == wheels[0].as_uri()
