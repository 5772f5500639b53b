"""The Go SDK's one-shot provisioning flags: grant, revoke or create an account, print the result, exit.

Like the Go connectors' local mode, the entitlement, the principal and the grant are looked up by id in the
c1z at `--file` (a previous one-shot sync wrote it), so the connector receives the same full objects a
ConductorOne task would carry. Setting one of these flags turns provisioning on for that run, as in Go.
They are refused in service mode (the Go daemon silently ignores them, which hides the mistake).

Exit status: 0 with one result line on stdout; 1 with one `error:` line on stderr when the lookup or the
upstream call fails; 2 for a flag combination that cannot work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connector.c1z.container import C1zError
from connector.c1z.reader import C1zReader
from connector.ops.settings import SettingsError
from connector.pb.c1.connector.v2 import annotation_grant_pb2, grant_pb2, resource_pb2
from connector.sdk import model
from connector.sdk.errors import ConnectorError
from connector.sdk.interface import Connector
from connector.sdk.runtime import ConnectorRuntime


class OneShotError(Exception):
    """A one-line failure of a one-shot operation (exit status 1)."""


Runner = Callable[[ConnectorRuntime, Any], Awaitable[str]]


@dataclass(frozen=True)
class Operation:
    name: str
    triggers: tuple[str, ...]  # setting any of these fields selects the operation
    required: tuple[str, ...]  # ... and these must then all be set
    run: Runner


def _flag(field: str) -> str:
    return f"--{field.replace('_', '-')} / BATON_{field.upper()}"


def _reader(settings: Any) -> C1zReader:
    path = Path(settings.file)
    try:
        return C1zReader(path, temp_dir=settings.c1z_temp_dir)
    except C1zError as err:
        raise OneShotError(
            f"cannot read {path}: {err} (one-shot provisioning looks ids up in --file: run a sync first)"
        ) from None


def _already(resp: Any, kind: type[Any]) -> bool:
    return model.find_annotation(resp.annotations, kind) is not None


async def _grant(runtime: ConnectorRuntime, settings: Any) -> str:
    with _reader(settings) as reader:
        entitlement = reader.get_entitlement(settings.grant_entitlement)
        principal = reader.get_resource(settings.grant_principal_type, settings.grant_principal)
    if entitlement is None:
        raise OneShotError(f"entitlement {settings.grant_entitlement!r} is not in {settings.file}")
    if principal is None:
        raise OneShotError(
            f"principal {settings.grant_principal_type}:{settings.grant_principal} is not in {settings.file}"
        )
    request = grant_pb2.GrantManagerServiceGrantRequest(entitlement=entitlement, principal=principal)
    resp = await runtime.grant(request)
    who = f"{principal.id.resource_type}:{principal.id.resource}"
    if _already(resp, annotation_grant_pb2.GrantAlreadyExists):
        return f"already granted: {entitlement.id} to {who}"
    return f"granted {entitlement.id} to {who}"


async def _revoke(runtime: ConnectorRuntime, settings: Any) -> str:
    with _reader(settings) as reader:
        grant = next((g for g in reader.grants() if g.id == settings.revoke_grant), None)
    if grant is None:
        raise OneShotError(f"grant {settings.revoke_grant!r} is not in {settings.file}")
    resp = await runtime.revoke(grant_pb2.GrantManagerServiceRevokeRequest(grant=grant))
    if _already(resp, annotation_grant_pb2.GrantAlreadyRevoked):
        return f"already revoked: {grant.id}"
    return f"revoked {grant.id}"


async def _create_account(runtime: ConnectorRuntime, settings: Any) -> str:
    info = resource_pb2.AccountInfo(login=settings.create_account_login)
    if settings.create_account_email:
        info.emails.add(address=settings.create_account_email, is_primary=True)
    request = resource_pb2.CreateAccountRequest(
        account_info=info,
        credential_options=resource_pb2.CredentialOptions(
            no_password=resource_pb2.CredentialOptions.NoPassword()
        ),
    )
    resp = await runtime.create_account(request)
    outcome = resp.WhichOneof("result")
    result = getattr(resp, outcome) if outcome else None
    rid = result.resource.id if result is not None else resource_pb2.ResourceId()
    who = f"{rid.resource_type}:{rid.resource}" if rid.resource else "(no resource returned)"
    if outcome == "action_required":
        return f"account created, action required: {who}: {resp.action_required.message}"
    if outcome == "already_exists":
        return f"account already exists: {who}"
    if outcome == "in_progress":
        return f"account creation in progress: {who}"
    return f"account created: {who}"


OPERATIONS: list[Operation] = [
    Operation(
        "grant",
        ("grant_entitlement", "grant_principal", "grant_principal_type"),
        ("grant_entitlement", "grant_principal", "grant_principal_type"),
        _grant,
    ),
    Operation("revoke", ("revoke_grant",), ("revoke_grant",), _revoke),
    Operation("create account", ("create_account_login", "create_account_email"), (), _create_account),
]


def requested(settings: Any, command: str | None, service: bool) -> Operation | None:
    """The operation the flags ask for, or None for a sync; SettingsError for combinations that cannot
    work (two operations, a missing companion flag, service mode, a subcommand)."""
    chosen = [op for op in OPERATIONS if any(getattr(settings, f, "") for f in op.triggers)]
    one_shot_sync = bool(getattr(settings, "sync_resources", None))
    flags = [_flag(f) for op in chosen for f in op.triggers if getattr(settings, f, "")]
    if one_shot_sync:
        flags.append(_flag("sync_resources"))
    if not flags:
        return None
    if service:
        raise SettingsError(
            f"{flags[0]} is a one-shot operation: it cannot be combined with --client-id or "
            "--sync-interval (service mode)"
        )
    if command is not None:
        raise SettingsError(f"{flags[0]} cannot be combined with the {command} command")
    if len(chosen) + one_shot_sync > 1:
        raise SettingsError(f"give one one-shot operation at a time (got {' and '.join(flags)})")
    if not chosen:
        return None  # --sync-resources: a (partial) sync, run by the standalone scheduler
    op = chosen[0]
    for field in op.required:
        if not getattr(settings, field, ""):
            raise SettingsError(f"missing {_flag(field)}: required to {op.name}")
    return op


async def run(op: Operation, connector: Connector, settings: Any, *, prog: str) -> int:
    """Run `op` against `connector`; print its result line (stdout) or one error line (stderr)."""
    import sys

    runtime = ConnectorRuntime(connector, provisioning=True)
    try:
        line = await op.run(runtime, settings)
    except OneShotError as err:
        print(f"{prog}: error: {err}", file=sys.stderr, flush=True)
        return 1
    except ConnectorError as err:
        print(f"{prog}: error: {op.name} failed: {err.code.name}: {err.message}", file=sys.stderr, flush=True)
        return 1
    finally:
        await runtime.close()
    print(line, flush=True)
    return 0
