"""The one-shot `--invoke-action` and `--delete-resource` flags of the console script, run as a user runs
them (a real subprocess against the Atlassian sandbox): what is printed and the exit code."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from connector.sandbox.atlassian.data import OrgSpec
from connector.sandbox.atlassian.server import AtlassianSandbox, start_atlassian_sandbox
from tests.test_atlassian_actions import DELETE, SUSPEND, pick
from tests.test_cli import _clean_env, _run


@pytest.fixture
async def sandbox() -> AsyncIterator[AtlassianSandbox]:
    sb = await start_atlassian_sandbox(spec=OrgSpec(accounts=40, groups=5, memberships=60, workspaces=2))
    yield sb
    await sb.stop()


def _env(sb: AtlassianSandbox, **extra: str) -> dict[str, str]:
    return _clean_env(
        BATON_API_TOKEN=sb.api_key, BATON_ORG=sb.org_id, BATON_API_BASE_URL=sb.base_url, **extra
    )


async def test_invoke_action_prints_the_result_and_exits_0(sandbox: AtlassianSandbox) -> None:
    user = pick(sandbox.state, status="active")
    args = json.dumps({"user_id": user.account_id})
    code, out, err = await _run(
        "--invoke-action", "disable_user", "--invoke-action-args", args, env=_env(sandbox)
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["name"] == "disable_user" and doc["status"] == "BATON_ACTION_STATUS_COMPLETE"
    assert doc["response"] == {"success": True}
    assert user.status == "suspended"
    # BATON_* env works as well as flags.
    code, out, _ = await _run(
        env=_env(sandbox, BATON_INVOKE_ACTION="enable_user", BATON_INVOKE_ACTION_ARGS=args)
    )
    assert code == 0 and json.loads(out)["response"] == {"success": True}
    assert user.status == "active"


async def test_a_failed_action_exits_1_with_its_error(sandbox: AtlassianSandbox) -> None:
    admin = pick(sandbox.state, status="active", org_admin=True)
    args = json.dumps({"user_id": admin.account_id})
    code, out, err = await _run(
        "--invoke-action", "disable_user", "--invoke-action-args", args, env=_env(sandbox)
    )
    assert code == 1
    assert json.loads(out)["status"] == "BATON_ACTION_STATUS_FAILED"
    last = err.strip().splitlines()[-1]
    assert last.startswith("baton-atlassian: error: action disable_user BATON_ACTION_STATUS_FAILED: ")
    assert "org admin role" in last
    code, _, err = await _run("--invoke-action", "disable_user", env=_env(sandbox))
    assert code == 1 and "INVALID_ARGUMENT: action disable_user: argument 'user_id' is required" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--invoke-action", "disable_user", "--invoke-action-args", "{user_id"], "is not valid JSON"),
        (["--invoke-action", "disable_user", "--invoke-action-args", "[]"], "must be a JSON object"),
        (["--delete-resource", "abc"], "--delete-resource needs --delete-resource-type"),
        (["--invoke-action-args", "{}"], "--invoke-action-args needs --invoke-action"),
        (["--invoke-action", "x", "--delete-resource", "y", "--delete-resource-type", "user"], "together"),
        (["--invoke-action", "x", "--client-id", "id@tenant.conductor.one/pcc"], "one-shot flags"),
    ],
)
async def test_usage_mistakes_are_one_line_and_exit_2(
    sandbox: AtlassianSandbox, flags: list[str], message: str
) -> None:
    code, out, err = await _run(*flags, env=_env(sandbox))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert sandbox.stats.requests == 0


async def test_delete_resource_deletes_and_exits_0(sandbox: AtlassianSandbox) -> None:
    user = pick(sandbox.state, status="active", claim_status="managed")
    # No --provisioning needed: the one-shot flag is the consent, as in the Go SDK.
    flags = ("--delete-resource", user.account_id, "--delete-resource-type", "user")
    code, out, err = await _run(*flags, env=_env(sandbox))
    assert code == 0, err
    assert out.strip() == f"deleted user {user.account_id}"
    assert user.status == "for_deletion"
    unmanaged = pick(sandbox.state, status="active", claim_status="unmanaged")
    code, out, err = await _run(
        "--delete-resource", unmanaged.account_id, "--delete-resource-type", "user", env=_env(sandbox)
    )
    assert code == 1 and out == ""
    assert "PERMISSION_DENIED" in err and "managed accounts" in err
    assert sandbox.stats.by_route[DELETE] == 2 and sandbox.stats.by_route[SUSPEND] == 0
