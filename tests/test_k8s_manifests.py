"""deploy/k8s: every overlay renders, validates against the Kubernetes schemas and is wired consistently.

Rendering uses `kubectl kustomize` when kubectl is on PATH, else a small renderer below that implements
exactly the kustomization features the tree uses (resources, JSON 6902 patches with kind/name targets,
namePrefix/nameSuffix) and refuses anything else; when kubectl is present a test checks that both agree.
Alert rules are checked with `promtool check rules` and unit-tested with `promtool test rules`.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from connector.apps.atlassian.settings import AtlassianSettings
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.ops.metrics import Metrics
from connector.ops.settings import parse_settings
from connector.sandbox.tenant.keys import issue_secret
from connector.service.credentials import CredentialSource

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = K8S / "overlays"
APPS = ("atlassian", "confluence-datacenter")
VARIANTS = [*APPS, *(f"{app}-secret-files" for app in APPS)]
# Oldest Kubernetes minor we claim to support, and the newest schemas the validator ships.
K8S_VERSIONS = ("1.28", kubernetes_validate.latest_version())

# Keys of the example secrets, exactly as the ConductorOne set-up guides name them.
GUIDE_SECRET_KEYS = {
    "atlassian": {"BATON_CLIENT_ID", "BATON_CLIENT_SECRET", "BATON_API_TOKEN", "BATON_ORG"},
    "confluence-datacenter": {
        "BATON_CLIENT_ID",
        "BATON_CLIENT_SECRET",
        "BATON_ACCESS_TOKEN",
        "BATON_HOSTNAME",
        "BATON_USERNAME",
        "BATON_PASSWORD",
        "BATON_PROVISIONING",
    },
}

Obj = dict[str, Any]


# --------------------------------------------------------------------------------------------------------
# Rendering


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _json_patch(doc: Obj, ops: list[Obj]) -> None:
    """RFC 6902 add / remove / replace, which is all the overlays use."""
    for op in ops:
        kind, path = op["op"], op["path"]
        tokens = [_unescape(t) for t in path.split("/")[1:]]
        parent: Any = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        if isinstance(parent, list):
            if kind == "add":
                index = len(parent) if last == "-" else int(last)
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "remove":
                del parent[int(last)]
            elif kind == "replace":
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                raise AssertionError(f"unsupported JSON patch op {kind!r} at {path}")
        else:
            if kind in ("remove", "replace") and last not in parent:
                raise AssertionError(f"JSON patch {kind} of a missing path {path}")
            if kind == "remove":
                del parent[last]
            elif kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise AssertionError(f"unsupported JSON patch op {kind!r} at {path}")


def render_python(directory: Path) -> list[Obj]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - {
        "apiVersion",
        "kind",
        "resources",
        "patches",
        "namePrefix",
        "nameSuffix",
    }
    assert not unsupported, f"{directory}: the test renderer does not implement {sorted(unsupported)}"
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            objects += render_python(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in kustomization.get("patches", []):
        assert set(patch) <= {"path", "patch", "target"}, patch
        ops = yaml.safe_load((directory / patch["path"]).read_text() if "path" in patch else patch["patch"])
        assert isinstance(ops, list), (
            f"{directory}: only JSON 6902 patches are supported by the test renderer"
        )
        target = patch["target"]
        assert set(target) <= {"kind", "name"}, target
        matched = [
            o
            for o in objects
            if ("kind" not in target or o["kind"] == target["kind"])
            and ("name" not in target or re.fullmatch(target["name"], o["metadata"]["name"]))
        ]
        assert matched, f"{directory}: patch target {target} matches nothing"
        for obj in matched:
            _json_patch(obj, ops)
    for obj in objects:
        name = obj["metadata"]["name"]
        obj["metadata"]["name"] = (
            kustomization.get("namePrefix", "") + name + kustomization.get("nameSuffix", "")
        )
    return objects


def render_kubectl(directory: Path) -> list[Obj]:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


HAVE_KUBECTL = shutil.which("kubectl") is not None
HAVE_PROMTOOL = shutil.which("promtool") is not None
_cache: dict[str, list[Obj]] = {}


def rendered(variant: str) -> list[Obj]:
    if variant not in _cache:
        render = render_kubectl if HAVE_KUBECTL else render_python
        _cache[variant] = render(OVERLAYS / variant)
    return copy.deepcopy(_cache[variant])


def by_kind(objects: list[Obj], kind: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objects: list[Obj]) -> Obj:
    containers = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def example_secret(app: str) -> Obj:
    return dict(yaml.safe_load((OVERLAYS / app / f"baton-{app}-secrets.yaml").read_text()))


def app_of(variant: str) -> str:
    return variant.removesuffix("-secret-files")


def _project_version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def dockerfile_targets() -> dict[str, list[str]]:
    """Named Dockerfile stages -> their ENTRYPOINT (exec form), for stages that set one."""
    targets: dict[str, list[str]] = {}
    stage = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        m = re.match(r"FROM\s+\S+(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            stage = m.group(1) or ""
        elif line.upper().startswith("ENTRYPOINT") and stage:
            targets[stage] = yaml.safe_load(line.split(None, 1)[1])
    return targets


# --------------------------------------------------------------------------------------------------------
# Schemas for the prometheus-operator CRDs (the fields these manifests may use, per the operator's API docs)

_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _STR_MAP, "matchExpressions": {"type": "array"}},
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": _STR_MAP, "annotations": _STR_MAP},
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string", "pattern": _DURATION},
                                        "keep_firing_for": {"type": "string", "pattern": _DURATION},
                                        "labels": _STR_MAP,
                                        "annotations": _STR_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _labels_everywhere(obj: Any) -> Iterator[dict[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("labels", "matchLabels") and isinstance(value, dict):
                yield value
            else:
                yield from _labels_everywhere(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _labels_everywhere(item)


# --------------------------------------------------------------------------------------------------------
# Rendering and validation


@pytest.mark.skipif(not HAVE_KUBECTL, reason="kubectl not on PATH: nothing to compare the test renderer with")
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_fallback_renderer_matches_kubectl_kustomize(variant: str) -> None:
    def key(o: Obj) -> tuple[str, str]:
        return (o["kind"], o["metadata"]["name"])

    ours = sorted(render_python(OVERLAYS / variant), key=key)
    theirs = sorted(render_kubectl(OVERLAYS / variant), key=key)
    assert ours == theirs


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_validates(variant: str) -> None:
    objects = rendered(variant)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["Deployment", "NetworkPolicy", "PrometheusRule", "Service", "ServiceMonitor"]
    for obj in objects:
        name = obj["metadata"]["name"]
        assert _DNS1123.match(name) and len(name) <= 63, name
        for labels in _labels_everywhere(obj):
            for k, v in labels.items():
                assert isinstance(v, str), f"{obj['kind']}/{name}: label {k} must be a string, got {v!r}"
                assert _LABEL_KEY.match(k) and _LABEL_VALUE.match(v) and len(v) <= 63, (k, v)
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("app", APPS)
def test_example_secret_validates_and_has_the_guide_keys(app: str) -> None:
    secret = example_secret(app)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(secret, version, strict=True)
    assert secret["metadata"]["name"] == f"baton-{app}-secrets"
    assert set(secret["stringData"]) == GUIDE_SECRET_KEYS[app]
    assert all(isinstance(v, str) for v in secret["stringData"].values())
    # The secret is applied by hand, never by `kubectl apply -k`, so placeholders cannot overwrite it.
    for variant in (app, f"{app}-secret-files"):
        assert "Secret" not in {o["kind"] for o in rendered(variant)}


def test_crd_schemas_reject_what_the_operator_would_reject() -> None:
    """Guards the hand-written CRD schemas themselves: a typo'd field or a bad duration must fail."""
    monitor = by_kind(rendered("atlassian"), "ServiceMonitor")
    bad = copy.deepcopy(monitor)
    bad["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SERVICE_MONITOR_SCHEMA)
    rule = by_kind(rendered("atlassian"), "PrometheusRule")
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, PROMETHEUS_RULE_SCHEMA)


# --------------------------------------------------------------------------------------------------------
# Wiring that users rely on


@pytest.mark.parametrize("variant", VARIANTS)
def test_deployment_matches_the_guide_and_runs_the_connector_command(variant: str) -> None:
    app = app_of(variant)
    objects = rendered(variant)
    deployment = by_kind(objects, "Deployment")
    assert deployment["metadata"]["name"] == f"baton-{app}"
    assert deployment["metadata"]["labels"]["app"] == f"baton-{app}"
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": f"baton-{app}"}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == {"app": f"baton-{app}", "baton": "true", "baton-app": app}

    c = container(objects)
    assert c["name"] == f"baton-{app}"
    # As in the guide: the image's entrypoint starts the connector, so the container sets neither.
    assert "command" not in c and "args" not in c
    repository, _, tag = c["image"].rpartition(":")
    assert repository == f"baton-{app}" and tag == _project_version()
    # That image is the Dockerfile target of the same name, whose entrypoint is the connector's script.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = dockerfile_targets()[f"baton-{app}"]
    assert entrypoint == [f"baton-{app}"] and entrypoint[0] in scripts


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_reach_the_pods_and_probes_reach_the_ops_server(variant: str) -> None:
    objects = rendered(variant)
    deployment = by_kind(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = by_kind(objects, "Service")
    monitor = by_kind(objects, "ServiceMonitor")
    policy = by_kind(objects, "NetworkPolicy")

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert selects(service["spec"]["selector"], pod_labels)
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    other = "confluence-datacenter" if app_of(variant) == "atlassian" else "atlassian"
    other_pods = by_kind(rendered(other), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not selects(service["spec"]["selector"], other_pods), (
        "two connectors in one namespace must not mix"
    )

    c = container(objects)
    env = env_of(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["BATON_HEALTH_CHECK"]["value"] == "true"
    assert int(env["BATON_HEALTH_CHECK_PORT"]["value"]) == ports["ops"] == 8081
    assert env["BATON_HEALTH_CHECK_BIND_ADDRESS"]["value"] == "0.0.0.0"
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": "ops"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ops"}
    assert service["spec"]["ports"][0]["targetPort"] == "ops"
    assert service["spec"]["publishNotReadyAddresses"] is True  # metrics of an unready pod still scraped
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8081}


@pytest.mark.parametrize("variant", VARIANTS)
def test_pod_is_locked_down(variant: str) -> None:
    objects = rendered(variant)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # service links would inject BATON_* variables
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}

    policy = by_kind(objects, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    egress = {(p["port"], p.get("protocol", "TCP")) for rule in policy["egress"] for p in rule["ports"]}
    assert all("to" not in rule or rule["to"] for rule in policy["egress"])
    expected = {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    if app_of(variant) == "confluence-datacenter":
        expected.add((8090, "TCP"))  # Confluence's own HTTP port when not behind a 443 proxy
    assert egress == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_rollout_and_shutdown_leave_no_gap(variant: str) -> None:
    objects = rendered(variant)
    spec = by_kind(objects, "Deployment")["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    grace = float(env_of(container(objects))["BATON_SHUTDOWN_GRACE_SECONDS"]["value"])
    # Room for the daemon's own grace plus reporting results and exiting before SIGKILL.
    assert spec["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 15


@pytest.mark.parametrize("variant", VARIANTS)
def test_resources_and_the_writable_temp_dir(variant: str) -> None:
    objects = rendered(variant)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    res = c["resources"]
    assert res["requests"]["memory"] == "256Mi" and res["limits"]["memory"] == "512Mi"
    temp_dir = env_of(c)["BATON_C1Z_TEMP_DIR"]["value"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[temp_dir]]
    assert env_of(c)["TMPDIR"]["value"] == temp_dir


@pytest.mark.parametrize("app", APPS)
def test_env_from_variant_reads_the_example_secret(app: str) -> None:
    c = container(rendered(app))
    assert c["envFrom"] == [{"secretRef": {"name": example_secret(app)["metadata"]["name"]}}]


def _guide_values() -> dict[str, str]:
    """Realistic values for every guide key (the tenant's own credential formats)."""
    issued = issue_secret()
    return {
        "BATON_CLIENT_ID": "quiet-otter-12345@acme.conductor.one/pcc",
        "BATON_CLIENT_SECRET": issued.secret,
        "BATON_API_TOKEN": "ATCTT3xFfGN0-org-api-key-0123456789",
        "BATON_ORG": "8a1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
        "BATON_ACCESS_TOKEN": "NjQ2MzQ1Njc4OTAxOkpAT-confluence-pat",
        "BATON_HOSTNAME": "https://confluence.example.com",
        "BATON_USERNAME": "svc-conductorone",
        "BATON_PASSWORD": "correct horse battery staple",
        "BATON_PROVISIONING": "true",
    }


def pod_env(variant: str, values: dict[str, str], mount_dir: Path) -> dict[str, str]:
    """The environment the kubelet would give the container, with the Secret holding `values`.

    Secret volumes become files under `mount_dir` (the paths in *_FILE variables are rewritten to it).
    """
    app = app_of(variant)
    objects = rendered(variant)
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    secret_name = example_secret(app)["metadata"]["name"]
    data = {k: values[k] for k in example_secret(app)["stringData"]}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["volumes"]}
    secret_mounts = [p for p, m in mounts.items() if "secret" in volumes[m["name"]]]
    for key, value in data.items():
        (mount_dir / key).write_text(value + "\n")

    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        assert source["secretRef"]["name"] == secret_name
        env |= data
    for item in c.get("env", []):
        if "value" in item:
            value = item["value"]
            for mount in secret_mounts:
                if value.startswith(mount + "/"):
                    value = str(mount_dir / value.removeprefix(mount + "/"))
            env[item["name"]] = value
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret_name
            if ref["key"] in data:
                env[item["name"]] = data[ref["key"]]
            else:
                assert ref.get("optional") is True, (
                    f"{item['name']}: required key {ref['key']} not in the Secret"
                )
        else:
            env[item["name"]] = "baton-pod-0"  # fieldRef metadata.name
    return env


SETTINGS = {"atlassian": AtlassianSettings, "confluence-datacenter": ConfluenceSettings}


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_daemon_gets_every_credential_from_the_manifests(variant: str, tmp_path: Path) -> None:
    """What the pod's env and mounts deliver parses as the daemon parses it: settings and credentials."""
    app = app_of(variant)
    values = _guide_values()
    env = pod_env(variant, values, tmp_path)
    settings = parse_settings(SETTINGS[app], [], env=env)

    assert settings.health_check is True
    assert settings.health_check_port == 8081
    assert settings.health_check_bind_address == "0.0.0.0"
    assert settings.c1z_temp_dir == "/tmp/baton"
    assert settings.shutdown_grace_seconds == 20
    if app == "atlassian":
        assert isinstance(settings, AtlassianSettings)
        assert settings.api_token.get_secret_value() == values["BATON_API_TOKEN"]
        assert settings.org == values["BATON_ORG"]
    else:
        assert isinstance(settings, ConfluenceSettings)
        assert settings.access_token is not None and settings.password is not None
        assert settings.access_token.get_secret_value() == values["BATON_ACCESS_TOKEN"]
        assert settings.password.get_secret_value() == values["BATON_PASSWORD"]
        assert settings.hostname == values["BATON_HOSTNAME"]
        assert settings.username == values["BATON_USERNAME"]
        assert settings.provisioning is True

    source = CredentialSource.from_settings(settings, env)
    creds = source.load()
    assert creds.client_id.value == values["BATON_CLIENT_ID"]
    # Mounted files are watched for rotation; env vars need a rolling restart.
    assert source.watches_files is variant.endswith("-secret-files")


@pytest.mark.parametrize("app", APPS)
def test_secret_files_variant_mounts_the_secret_read_only_and_drops_env_from(app: str) -> None:
    objects = rendered(f"{app}-secret-files")
    pod = by_kind(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    secret = example_secret(app)
    assert "envFrom" not in c
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = [m for m in c["volumeMounts"] if "secret" in volumes[m["name"]]]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    assert volumes[mounts[0]["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    files = {e["name"]: e["value"] for e in c["env"] if e["name"].endswith("_FILE")}
    assert {"BATON_CLIENT_ID_FILE", "BATON_CLIENT_SECRET_FILE"} <= set(files)
    for var, path in files.items():
        assert path == f"{mounts[0]['mountPath']}/{var.removesuffix('_FILE')}", var


# --------------------------------------------------------------------------------------------------------
# Alerts


def _rules() -> list[Obj]:
    rule = by_kind(rendered("atlassian"), "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def test_alert_rules_use_only_series_the_daemon_exports_and_link_their_runbook() -> None:
    m = Metrics("atlassian")
    m.sync_started()
    m.sync_finished("success", None, 1.0, 1)
    m.task_received("grant")
    m.task_finished("grant", "success", 0.1)
    m.tenant_rpc("GetTask", "OK")
    m.auth_failure("token")

    class Event:
        upstream, method, route, status, elapsed = "atlassian", "GET", "/x", 429, 0.1
        attempt, retrying, rate_limited, wait = 1, True, True, 1.0

    m.upstream_hook()(Event())
    exported = {s.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}
    docs = (ROOT / "docs" / "operations.md").read_text().lower()
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "BatonConnectorSyncStale",
        "BatonConnectorSyncFailing",
        "BatonConnectorTenantUnreachable",
        "BatonConnectorAuthFailures",
        "BatonConnectorUpstreamRateLimited",
    }
    for rule in rules:
        used = set(re.findall(r"\b((?:baton|process)_[a-z_]+)\b", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} uses unknown series {sorted(used - exported)}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}"
        assert f"### {rule['alert'].lower()}" in docs, (
            f"docs/operations.md lacks a section for {rule['alert']}"
        )


def _rules_file(tmp_path: Path, *, annotations: bool) -> Path:
    rule = by_kind(rendered("atlassian"), "PrometheusRule")
    spec = copy.deepcopy(rule["spec"])
    if not annotations:
        # Unit tests compare annotations verbatim; the expressions are what they are here to check.
        for group in spec["groups"]:
            for r in group["rules"]:
                r.pop("annotations", None)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.skipif(not HAVE_PROMTOOL, reason="promtool not on PATH (Debian/Ubuntu package: prometheus)")
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["promtool", "check", "rules", str(_rules_file(tmp_path, annotations=True))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _series(name: str, values: str, **labels: str) -> Obj:
    base = {"namespace": "ops", "job": "baton-atlassian", "pod": "baton-atlassian-1"} | labels
    rendered_labels = ",".join(f'{k}="{v}"' for k, v in sorted(base.items()))
    return {"series": f"{name}{{{rendered_labels}}}", "values": values}


ALERT_CASES: list[tuple[str, list[Obj], list[tuple[str, list[dict[str, str]]]]]] = [
    (
        # Last success at t=1h; the pod has run since t=0. Stale after 13h (+15m for).
        "BatonConnectorSyncStale",
        [
            _series("baton_sync_last_success_timestamp_seconds", "3600+0x1000"),
            _series("process_start_time_seconds", "0+0x1000"),
            # A pod started at 10h that never synced: too young to page about.
            _series("baton_sync_last_success_timestamp_seconds", "0+0x1000", job="baton-young", pod="y"),
            _series("process_start_time_seconds", "36000+0x1000", job="baton-young", pod="y"),
        ],
        [
            ("12h50m", []),
            ("13h30m", [{"namespace": "ops", "job": "baton-atlassian", "severity": "warning"}]),
        ],
    ),
    (
        "BatonConnectorSyncFailing",
        [
            # One more failed run each hour, never a success.
            _series("baton_sync_runs_total", "0x60 1x60 2x60 3x60", outcome="failure"),
            _series("baton_sync_runs_total", "0x240", outcome="success"),
            # Another connector that fails now and then but also succeeds: no alert.
            _series(
                "baton_sync_runs_total", "0x60 1x60 2x60 3x60", outcome="failure", job="baton-ok", pod="o"
            ),
            _series(
                "baton_sync_runs_total", "0x30 1x60 2x60 3x90", outcome="success", job="baton-ok", pod="o"
            ),
        ],
        [
            ("1h", []),
            ("4h", [{"namespace": "ops", "job": "baton-atlassian", "severity": "warning"}]),
        ],
    ),
    (
        # Poll age grows a minute per minute; no successful RPC at all.
        "BatonConnectorTenantUnreachable",
        [
            _series("baton_tenant_last_poll_age_seconds", "0+60x60"),
            _series("baton_tenant_rpcs_total", "5+0x60", method="GetTask", code="OK"),
            # Busy pod: no poll for a long time, but heartbeats succeed.
            _series("baton_tenant_last_poll_age_seconds", "0+60x60", pod="busy"),
            _series("baton_tenant_rpcs_total", "0+2x60", method="Heartbeat", code="OK", pod="busy"),
        ],
        [
            ("16m", []),
            (
                "30m",
                [
                    {
                        "namespace": "ops",
                        "job": "baton-atlassian",
                        "pod": "baton-atlassian-1",
                        "severity": "critical",
                    }
                ],
            ),
        ],
    ),
    (
        "BatonConnectorAuthFailures",
        [_series("baton_auth_failures_total", "0 0 0 0 0 1+1x40", where="token")],
        [
            ("4m", []),
            (
                "30m",
                [
                    {
                        "namespace": "ops",
                        "job": "baton-atlassian",
                        "pod": "baton-atlassian-1",
                        "where": "token",
                        "severity": "critical",
                    }
                ],
            ),
        ],
    ),
    (
        "BatonConnectorUpstreamRateLimited",
        [
            _series("baton_upstream_rate_limited_total", "0+20x100", connector="atlassian"),
            _series(
                "baton_upstream_requests_total",
                "0+100x100",
                connector="atlassian",
                method="GET",
                route="/a",
                status="200",
            ),
            # 2% rate limited: normal back-pressure, no alert.
            _series("baton_upstream_rate_limited_total", "0+2x100", connector="confluence"),
            _series(
                "baton_upstream_requests_total",
                "0+100x100",
                connector="confluence",
                method="GET",
                route="/b",
                status="200",
            ),
        ],
        [
            ("30m", []),
            (
                "60m",
                [
                    {
                        "namespace": "ops",
                        "job": "baton-atlassian",
                        "connector": "atlassian",
                        "severity": "warning",
                    }
                ],
            ),
        ],
    ),
    (
        "BatonConnectorProvisioningFailures",
        [
            _series(
                "baton_tasks_finished_total", "0 0 0 1 1 1", task_type="grant", outcome="non_retryable_error"
            ),
            _series(
                "baton_tasks_finished_total", "0 0 0 1 1 1", task_type="sync_full", outcome="retryable_error"
            ),
        ],
        [
            ("2m", []),
            (
                "5m",
                [{"namespace": "ops", "job": "baton-atlassian", "task_type": "grant", "severity": "warning"}],
            ),
        ],
    ),
    (
        "BatonConnectorMetricsDown",
        [
            _series("up", "1x10 0x30", instance="10.0.0.1:8081"),
            _series("baton_build_info", "1x10 _x30", connector="atlassian", version="0.1.0"),
            # Some other job that is down: not ours.
            _series("up", "0x40", job="node", pod="n", instance="10.0.0.2:9100"),
        ],
        [
            ("15m", []),
            (
                "30m",
                [
                    {
                        "namespace": "ops",
                        "job": "baton-atlassian",
                        "pod": "baton-atlassian-1",
                        "instance": "10.0.0.1:8081",
                        "severity": "warning",
                    }
                ],
            ),
        ],
    ),
]


@pytest.mark.skipif(not HAVE_PROMTOOL, reason="promtool not on PATH (Debian/Ubuntu package: prometheus)")
def test_alerts_fire_on_the_bad_case_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    rules_file = _rules_file(tmp_path, annotations=False)
    assert {c[0] for c in ALERT_CASES} == {r["alert"] for r in _rules()}, "every alert needs a unit test"
    tests = []
    for alert, series, checks in ALERT_CASES:
        tests.append(
            {
                "name": alert,
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": alert,
                        "exp_alerts": [{"exp_labels": labels} for labels in expected],
                    }
                    for at, expected in checks
                ],
            }
        )
    test_file = tmp_path / "tests.yaml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests})
    )
    proc = subprocess.run(
        ["promtool", "test", "rules", test_file.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
