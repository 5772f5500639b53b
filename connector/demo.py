"""`make demo`: the service-mode daemon end to end, on loopback, in a few seconds.

For each connector: a sandbox ConductorOne tenant (token endpoint + BatonService over TLS), the connector's
sandbox upstream, and the real daemon (`run_daemon`) with the real app connector. The tenant then hands out
a full sync, a grant, a revoke, (Confluence) a create-account task and (Atlassian) the `disable_user` then
`enable_user` actions; the demo prints each task, how it was finished and what the uploaded c1z holds, and
exits 0 when every task ended as expected.

An app whose sandbox (or app package) is missing is skipped; if no app can run, a small in-memory connector
shows the same flow, so the demo always runs. `python -m connector demo toy` runs only that one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connector.ops.logging import configure_logging
from connector.ops.settings import BatonSettings, parse_settings
from connector.pb.c1.connector.v2 import entitlement_pb2, grant_pb2, resource_pb2
from connector.sandbox.tenant import FinishRecord, TenantHandle, start_tenant
from connector.sandbox.tenant.server import describe_finish
from connector.sdk import model
from connector.sdk.interface import Connector
from connector.service.daemon import run_daemon
from connector.service.testing_app import ToyConnector, ToyState, fast_options, group_res, user_res

TASK_TIMEOUT = 60.0


@dataclass
class Scenario:
    """One connector's part of the demo: how to build it and what to ask of it."""

    name: str
    settings_cls: type[BatonSettings]
    env: dict[str, str]
    build: Callable[[Any], Connector]
    grant: tuple[entitlement_pb2.Entitlement, resource_pb2.Resource] | None = None
    revoke: grant_pb2.Grant | None = None
    create_account: resource_pb2.AccountInfo | None = None
    # (action name, arguments), invoked in order as action_invoke tasks
    actions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    app_name: str = "baton-toy"  # in the Hello build info and the user agent


ScenarioFactory = Callable[[Path], contextlib.AbstractAsyncContextManager[Scenario | None]]


# ------------------------------------------------------------------------------------------------ scenarios


@contextlib.asynccontextmanager
async def toy_scenario(_: Path) -> AsyncIterator[Scenario | None]:
    state = ToyState()
    yield Scenario(
        name="toy (in-memory)",
        settings_cls=BatonSettings,
        env={},
        build=lambda _settings: ToyConnector(state),
        grant=(model.assignment_entitlement(group_res("ops"), "member"), user_res("dave", "Dave")),
        revoke=model.new_grant(group_res("eng"), "member", model.resource_id("user", "bob")),
        create_account=resource_pb2.AccountInfo(login="erin"),
    )


def _optional(module: str) -> Any | None:
    """An app or sandbox module, or None when it has not been written yet."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            return None
        raise


def _membership(
    group_id: str, group_name: str, principal_id: str, principal_name: str
) -> tuple[Any, Any, Any]:
    """(entitlement, principal resource, grant) for `group:<id>:member` held by `user:<principal>`."""
    group = model.new_resource(group_name, "group", group_id)
    user = model.new_resource(principal_name, "user", principal_id)
    entitlement = model.assignment_entitlement(group, "member")
    return entitlement, user, model.new_grant(group, "member", user.id)


@contextlib.asynccontextmanager
async def confluence_scenario(workdir: Path) -> AsyncIterator[Scenario | None]:
    sandbox_mod = _optional("connector.sandbox.confluence.server")
    app = _optional("connector.apps.confluence_datacenter.main")
    if sandbox_mod is None or app is None:
        yield None
        return
    sandbox = await sandbox_mod.start_confluence_sandbox()
    try:
        data = sandbox.data
        # A group with members, a member to remove and an active user to add.
        groups = [g for g in data.groups.values() if g.members and not g.name.startswith("confluence-")]
        group = groups[0]
        member = group.members[0]
        newcomer = next(u for u in data.users.values() if u.active and u.username not in group.members)
        # Users are known by their user key (the connector's default ids, as the newest Go connector's).
        ent, principal, _ = _membership(group.name, group.name, newcomer.user_key, newcomer.display_name)
        _, _, revoke = _membership(group.name, group.name, data.users[member].user_key, member)
        account = resource_pb2.AccountInfo(
            login="demo.newcomer",
            profile=model.to_struct(
                {
                    "username": "demo.newcomer",
                    "email": "demo.newcomer@example.com",
                    "display_name": "Demo Newcomer",
                }
            ),
        )
        spec = app.SPEC
        yield Scenario(
            name=f"{spec.name} (sandbox Confluence {sandbox.config.version} at {sandbox.base_url})",
            settings_cls=spec.settings_cls,
            env={"BATON_HOSTNAME": sandbox.base_url, "BATON_ACCESS_TOKEN": sandbox.admin_token},
            build=spec.build,
            grant=(ent, principal),
            revoke=revoke,
            create_account=account,
            app_name=spec.name,
            notes=[
                f"grant:  add {newcomer.username!r} to group {group.name!r}",
                f"revoke: remove {member!r} from group {group.name!r}",
                "account: create 'demo.newcomer' (no password: Confluence mails a set-password link)",
            ],
        )
    finally:
        await sandbox.stop()


@contextlib.asynccontextmanager
async def atlassian_scenario(workdir: Path) -> AsyncIterator[Scenario | None]:
    sandbox_mod = _optional("connector.sandbox.atlassian.server")
    app = _optional("connector.apps.atlassian.main")
    if sandbox_mod is None or app is None:
        yield None
        return
    sandbox = await sandbox_mod.start_atlassian_sandbox()
    try:
        state = sandbox.state
        members = state.group_members
        group = next(g for g in state.groups.values() if g.modifiable and members.get(g.id))
        member = sorted(members[group.id])[0]
        newcomer = next(
            u
            for u in state.users.values()
            if u.account_type == "atlassian"
            and u.account_status == "active"
            and u.membership_status == "active"
            and u.account_id not in members[group.id]
        )
        target = next(
            u
            for u in state.users.values()
            if u.status == "active" and u.account_type == "atlassian" and not u.platform_roles
        )
        ent, principal, _ = _membership(group.id, group.name, newcomer.account_id, newcomer.name)
        _, _, revoke = _membership(group.id, group.name, member, member)
        spec = app.SPEC
        yield Scenario(
            name=f"{spec.name} (sandbox organization at {sandbox.base_url})",
            settings_cls=spec.settings_cls,
            env={
                "BATON_API_TOKEN": sandbox.api_key,
                "BATON_ORG": sandbox.org_id,
                "BATON_API_BASE_URL": sandbox.base_url,
            },
            build=spec.build,
            grant=(ent, principal),
            revoke=revoke,
            actions=[
                ("disable_user", {"user_id": target.account_id}),
                ("enable_user", {"user_id": target.account_id}),
            ],
            app_name=spec.name,
            notes=[
                f"grant:  add {newcomer.name!r} to group {group.name!r}",
                f"revoke: remove account {member} from group {group.name!r}",
                f"action: disable_user, then enable_user, for {target.name!r} ({target.account_id})",
            ],
        )
    finally:
        await sandbox.stop()


APP_SCENARIOS: dict[str, ScenarioFactory] = {
    "confluence": confluence_scenario,
    "atlassian": atlassian_scenario,
}


# ------------------------------------------------------------------------------------------------ running


def _say(text: str = "") -> None:
    print(text, flush=True)


def _line(label: str, text: str) -> None:
    _say(f"   {label:<11} {text}")


def _describe(rec: FinishRecord) -> str:
    """What the tenant was told: the response type and annotations, or the error."""
    text = describe_finish(rec).split(": ", 1)[1]
    if rec.outcome == "success" and rec.task_type == "create_account":
        result = getattr(rec.response, "WhichOneof", lambda _: None)("result")
        text += f" result={result}" if result else ""
    return f"task {rec.task_id}: {text}"


def _outcome_ok(rec: FinishRecord) -> bool:
    return rec.outcome == "success"


def _report_uploads(tenant: TenantHandle, task_id: str) -> None:
    for up in [u for u in tenant.uploads if u.task_id == task_id]:
        summary = up.summary
        if summary is None:
            _line("", f"uploaded {up.size} bytes ({up.kind}; {up.decode_error or 'not decoded'})")
            continue
        by_type = ", ".join(f"{n} {t}" for t, n in summary.resources_by_type.items())
        _line(
            "",
            f"uploaded c1z: {up.size} bytes; {summary.resources} resources ({by_type}), "
            f"{summary.entitlements} entitlements, {summary.grants} grants",
        )


def _invoker(tenant: TenantHandle, name: str, args: dict[str, Any]) -> Callable[[], str]:
    return lambda: tenant.enqueue_action_invoke(name, args)


async def _run_scenario(scenario: Scenario, workdir: Path) -> bool:
    _say(f"== {scenario.name} ==")
    for note in scenario.notes:
        _say(f"   {note}")
    tenant: TenantHandle = await start_tenant(
        data_dir=workdir / "tenant", next_poll=0.1, next_heartbeat=0.5, client_name="demo-connector"
    )
    ok = True
    stop = asyncio.Event()
    try:
        env = {
            **scenario.env,
            **tenant.env(),
            "BATON_PROVISIONING": "true",
            "BATON_HOST_ID": "demo-host",
            "BATON_C1Z_TEMP_DIR": str(workdir),
        }
        settings = parse_settings(scenario.settings_cls, [], env=env)
        options = fast_options()
        options = type(options)(
            scheduler=options.scheduler, tasks=options.tasks, install_signal_handlers=False
        )
        daemon = asyncio.create_task(
            run_daemon(
                lambda: scenario.build(settings),
                settings,
                options=options,
                env=env,
                stop=stop,
                app_name=scenario.app_name,
            )
        )
        _line("tenant", f"https://{tenant.address}  client {tenant.client_id}")
        hello = await tenant.wait_hello(within=TASK_TIMEOUT)
        caps = len(hello.metadata.capabilities.resource_type_capabilities)
        _line("hello", f"{hello.metadata.display_name!r} from host {hello.host_id} ({caps} resource types)")

        # One task at a time, as a tenant operator would click them, so each line's time is its own.
        steps: list[tuple[str, Callable[[], str]]] = [("sync", tenant.enqueue_sync)]
        if scenario.grant is not None:
            grant = scenario.grant
            steps.append(("grant", lambda: tenant.enqueue_grant(*grant)))
        if scenario.revoke is not None:
            revoke = scenario.revoke
            steps.append(("revoke", lambda: tenant.enqueue_revoke(revoke)))
        if scenario.create_account is not None:
            account = scenario.create_account
            steps.append(("account", lambda: tenant.enqueue_create_account(account)))
        for name, args in scenario.actions:
            steps.append((name, _invoker(tenant, name, args)))
        for label, enqueue in steps:
            started = time.monotonic()
            tid = enqueue()
            rec = await tenant.wait_finished(tid, within=TASK_TIMEOUT)
            took = time.monotonic() - started
            _line(label, f"{_describe(rec)}  [{took:.2f}s]")
            ok = ok and _outcome_ok(rec)
            if label == "sync":
                _report_uploads(tenant, tid)
        stop.set()
        code = await asyncio.wait_for(daemon, 30)
        _line("daemon", f"stopped, exit code {code}")
        ok = ok and code == 0
    finally:
        stop.set()
        await tenant.close()
    _say()
    return ok


async def _demo(only: Sequence[str], workdir: Path) -> int:
    results: list[bool] = []
    ran_app = False
    for app, factory in APP_SCENARIOS.items():
        if only and app not in only:
            continue
        async with factory(workdir / app) as scenario:
            if scenario is None:
                _say(f"== {app}: sandbox not available yet, skipped ==\n")
                continue
            ran_app = True
            results.append(await _run_scenario(scenario, workdir / app))
    if not ran_app or "toy" in only:
        async with toy_scenario(workdir / "toy") as scenario:
            assert scenario is not None
            results.append(await _run_scenario(scenario, workdir / "toy"))
    good = all(results)
    _say(
        "demo finished: every task ended as expected" if good else "demo finished: some tasks did not succeed"
    )
    return 0 if good else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "only", nargs="*", help="scenarios to run: confluence, atlassian, toy (default: all apps)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep tenant data (uploads) in this directory"
    )
    parser.add_argument("--log-level", default="error", help="daemon log level (default: error)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    unknown = [name for name in args.only if name not in (*APP_SCENARIOS, "toy")]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r} (choose from confluence, atlassian, toy)")
    configure_logging(args.log_level, "console")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_demo(args.only, args.keep))
    with tempfile.TemporaryDirectory(prefix="baton-demo-") as tmp:
        return asyncio.run(_demo(args.only, Path(tmp)))
