"""One-shot `--invoke-action NAME [--invoke-action-args JSON]` and `--delete-resource ID
--delete-resource-type TYPE`, as the Go SDK's local mode has them: build the connector, make the one call
through the runtime, print the result and exit.

Output: the InvokeActionResponse as protojson on stdout (exit 0 when the action completed, 1 when it
failed, its `error` text also on stderr); `deleted <type> <id>` for a deletion. Usage mistakes (bad JSON, a
missing companion flag, one-shot flags beside --client-id) are one line on stderr and exit 2, before any
upstream call. As in the Go SDK, a one-shot deletion needs no --provisioning: asking for it is the consent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from google.protobuf import duration_pb2, json_format, struct_pb2

from connector.ops.settings import BatonSettings, SettingsError
from connector.pb.c1.connector.v2 import action_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sdk.interface import Connector

Status = action_pb2.BatonActionStatus
# How long a one-shot invocation may run before we stop waiting for it.
ACTION_WAIT = 600.0
_POLL = 0.5


def requested(settings: BatonSettings) -> bool:
    """Any of the flags (a companion flag alone is a mistake to report, not a reason to sync)."""
    return any(
        (
            settings.invoke_action,
            settings.invoke_action_args,
            settings.invoke_action_resource_type,
            settings.delete_resource,
            settings.delete_resource_type,
        )
    )


def check(settings: BatonSettings, daemon: bool) -> struct_pb2.Struct | None:
    """The parsed action arguments; SettingsError for a usage mistake."""
    if daemon:
        raise SettingsError(
            "--invoke-action and --delete-resource are one-shot flags; they cannot be used with --client-id "
            "(service mode receives actions and deletions as tasks from ConductorOne)"
        )
    if settings.invoke_action and settings.delete_resource:
        raise SettingsError("--invoke-action and --delete-resource cannot be used together")
    if settings.delete_resource and not settings.delete_resource_type:
        raise SettingsError("--delete-resource needs --delete-resource-type / BATON_DELETE_RESOURCE_TYPE")
    for name in ("invoke_action_args", "invoke_action_resource_type"):
        if getattr(settings, name) and not settings.invoke_action:
            flag = "--" + name.replace("_", "-")
            raise SettingsError(f"{flag} needs --invoke-action / BATON_INVOKE_ACTION")
    if settings.delete_resource_type and not settings.delete_resource:
        raise SettingsError("--delete-resource-type needs --delete-resource / BATON_DELETE_RESOURCE")
    if not settings.invoke_action:
        return None
    args = struct_pb2.Struct()
    text = settings.invoke_action_args.strip()
    if text:
        try:
            value = json.loads(text)
        except ValueError as err:
            raise SettingsError(f"--invoke-action-args is not valid JSON: {err}") from None
        if not isinstance(value, dict):
            raise SettingsError('--invoke-action-args must be a JSON object, e.g. {"user_id": "..."}')
        args.update(value)
    return args


def main(
    build: Callable[[Any], Connector],
    settings: BatonSettings,
    prog: str,
    *,
    daemon: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = check(settings, daemon)
        connector = build(settings)
    except SettingsError as exc:
        print(f"{prog}: error: {exc}", file=err)
        return 2
    try:
        return asyncio.run(_run(connector, settings, args, prog, out, err))
    except KeyboardInterrupt:
        return 130


async def _run(
    connector: Connector,
    settings: BatonSettings,
    args: struct_pb2.Struct | None,
    prog: str,
    out: TextIO,
    err: TextIO,
) -> int:
    from connector.sdk.runtime import ConnectorRuntime

    runtime = ConnectorRuntime(connector, provisioning=True)
    try:
        if args is not None:
            return await _invoke(runtime, settings, args, out, err, prog)
        rid = model.resource_id(settings.delete_resource_type, settings.delete_resource)
        await runtime.delete_resource_v2(resource_pb2.DeleteResourceV2Request(resource_id=rid))
        print(f"deleted {rid.resource_type} {rid.resource}", file=out)
        return 0
    except ConnectorError as exc:
        print(f"{prog}: error: {exc.code.name}: {exc.message}", file=err)
        return 1
    finally:
        await runtime.close()


async def _invoke(
    runtime: Any, settings: BatonSettings, args: struct_pb2.Struct, out: TextIO, err: TextIO, prog: str
) -> int:
    request = action_pb2.InvokeActionRequest(
        name=settings.invoke_action,
        args=args,
        resource_type_id=settings.invoke_action_resource_type,
        inline_wait=duration_pb2.Duration(seconds=int(ACTION_WAIT)),
    )
    resp = await runtime.invoke_action(request)
    status = resp.status
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ACTION_WAIT
    while status in (Status.BATON_ACTION_STATUS_PENDING, Status.BATON_ACTION_STATUS_RUNNING):
        if loop.time() >= deadline:
            break
        await asyncio.sleep(_POLL)
        resp = await runtime.get_action_status(action_pb2.GetActionStatusRequest(id=resp.id))
        status = resp.status
    print(json_format.MessageToJson(resp, indent=2), file=out)
    if status == Status.BATON_ACTION_STATUS_COMPLETE:
        return 0
    error = resp.response.fields.get("error")
    text = error.string_value if error is not None else Status.Name(status)
    print(f"{prog}: error: action {resp.name} {Status.Name(status)}: {text}", file=err)
    return 1
