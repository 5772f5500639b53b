"""The ActionService behaviour over a connector's `Action`s: schemas, argument checks, invocations.

An invocation runs as its own asyncio task. InvokeAction waits for it up to an inline wait (the request's
`inline_wait`, else `DEFAULT_INLINE_WAIT`) and answers with the outcome, or with PENDING / RUNNING and an
id that GetActionStatus answers for later, as the Go SDK does. A handler that raises is reported as
FAILED with the error text under `error` in the result; the coded error is kept so that the daemon can
finish its task with the right gRPC code.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from connector.ops.logging import get_logger
from connector.pb.c1.config.v1 import config_pb2
from connector.pb.c1.connector.v2 import action_pb2
from connector.sdk.errors import ConnectorError
from connector.sdk.interface import Action, ActionFailed

log = get_logger(__name__)

Status = action_pb2.BatonActionStatus
DEFAULT_INLINE_WAIT = 5.0
MAX_INLINE_WAIT = 600.0
# A handler still running after this is abandoned and reported FAILED (the Go SDK's limit too).
HANDLER_TIMEOUT = 3600.0
# Finished invocations remembered for GetActionStatus; the oldest finished ones are dropped beyond this.
KEEP_FINISHED = 1000

_FINAL = (Status.BATON_ACTION_STATUS_COMPLETE, Status.BATON_ACTION_STATUS_FAILED)


@dataclass
class Invocation:
    id: str
    name: str
    started: float
    status: action_pb2.BatonActionStatus.ValueType = Status.BATON_ACTION_STATUS_PENDING
    response: struct_pb2.Struct | None = None
    error: ConnectorError | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.status in _FINAL


def _kind(arg: config_pb2.Field) -> str:
    return arg.WhichOneof("field") or "string_field"


def _check_value(action: str, arg: config_pb2.Field, value: Any) -> Any:
    """The value in the Python type the schema promises, or INVALID_ARGUMENT naming the argument."""
    kind = _kind(arg)

    def bad(expected: str) -> ConnectorError:
        return ConnectorError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"action {action}: argument {arg.name!r} must be {expected}, got {type(value).__name__}",
        )

    if kind == "string_field":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if kind == "bool_field":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "int_field":
        # Struct numbers are doubles: 3.0 is the integer 3, 3.5 is not one.
        if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
            raise bad("an integer")
        return int(value)
    if kind == "string_slice_field":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        return list(value)
    return value


def _default(arg: config_pb2.Field) -> Any:
    kind = _kind(arg)
    if kind == "string_field":
        return arg.string_field.default_value or None
    if kind == "bool_field":
        return arg.bool_field.default_value if arg.HasField("bool_field") else None
    if kind == "int_field":
        return arg.int_field.default_value if arg.HasField("int_field") else None
    if kind == "string_slice_field":
        return list(arg.string_slice_field.default_value) or None
    return None


def check_args(schema: action_pb2.BatonActionSchema, args: struct_pb2.Struct) -> dict[str, Any]:
    """Arguments as plain values, checked against the schema. Unknown arguments are passed through
    (the Go SDK ignores them too, and automations written for it may send extras)."""
    given: dict[str, Any] = json_format.MessageToDict(args) if args.fields else {}
    out = dict(given)
    for arg in schema.arguments:
        value = given.get(arg.name)
        if value is None or value == "" or value == []:
            if arg.is_required:
                raise ConnectorError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"action {schema.name}: argument {arg.name!r} is required",
                )
            default = _default(arg)
            if default is not None:
                out[arg.name] = default
            else:
                out.pop(arg.name, None)
            continue
        out[arg.name] = _check_value(schema.name, arg, value)
    return out


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(values))
    return out


def inline_wait(d: duration_pb2.Duration | None) -> float:
    seconds = d.ToNanoseconds() / 1e9 if d is not None else 0.0
    if seconds <= 0:
        return DEFAULT_INLINE_WAIT
    return min(seconds, MAX_INLINE_WAIT)


class ActionManager:
    """Registered actions and their invocations. One per runtime; async methods run on its loop."""

    def __init__(
        self,
        actions: Sequence[Action],
        coded: Callable[[Exception, str], ConnectorError],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._actions: dict[str, Action] = {}
        for action in actions:
            if not action.name:
                raise ValueError("an action needs a name")
            if action.name in self._actions:
                raise ValueError(f"two actions named {action.name!r}")
            self._actions[action.name] = action
        self._coded = coded
        self._clock = clock
        self._invocations: dict[str, Invocation] = {}

    def __bool__(self) -> bool:
        return bool(self._actions)

    def schemas(self, resource_type_id: str = "") -> list[action_pb2.BatonActionSchema]:
        return [
            a.schema
            for name, a in sorted(self._actions.items())
            if not resource_type_id or a.schema.resource_type_id == resource_type_id
        ]

    def action(self, name: str, resource_type_id: str = "") -> Action:
        action = self._actions.get(name)
        if action is None or (resource_type_id and action.schema.resource_type_id != resource_type_id):
            where = f" for resource type {resource_type_id!r}" if resource_type_id else ""
            known = ", ".join(sorted(self._actions)) or "none"
            raise ConnectorError(
                grpc.StatusCode.NOT_FOUND, f"action {name!r} not found{where} (this connector has: {known})"
            )
        return action

    async def invoke(
        self,
        name: str,
        args: struct_pb2.Struct,
        resource_type_id: str = "",
        wait: float = DEFAULT_INLINE_WAIT,
    ) -> Invocation:
        action = self.action(name, resource_type_id)
        values = check_args(action.schema, args)
        inv = Invocation(id=uuid.uuid4().hex, name=name, started=self._clock())
        self._invocations[inv.id] = inv
        self._forget_old()
        inv.task = asyncio.create_task(self._run(action, values, inv), name=f"action {name} {inv.id}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(inv.task), wait)
        log.info("action_invoked", action=name, action_id=inv.id, status=Status.Name(inv.status))
        return inv

    async def _run(self, action: Action, values: Mapping[str, Any], inv: Invocation) -> None:
        inv.status = Status.BATON_ACTION_STATUS_RUNNING
        try:
            result = await asyncio.wait_for(action.handler(values), HANDLER_TIMEOUT)
        except asyncio.CancelledError:
            self._fail(inv, ConnectorError(grpc.StatusCode.CANCELLED, f"action {inv.name} cancelled"))
            raise
        except TimeoutError:
            self._fail(
                inv,
                ConnectorError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"action {inv.name} did not finish within {HANDLER_TIMEOUT:g} s",
                ),
            )
        except ConnectorError as err:
            self._fail(inv, err)
        except Exception as err:
            self._fail(inv, self._coded(err, f"action {inv.name}"))
        else:
            inv.response = to_struct(result)
            inv.status = Status.BATON_ACTION_STATUS_COMPLETE

    def _fail(self, inv: Invocation, err: ConnectorError) -> None:
        values: dict[str, Any] = dict(err.response) if isinstance(err, ActionFailed) else {}
        values["error"] = err.message
        inv.response = to_struct(values)
        inv.error = err
        inv.status = Status.BATON_ACTION_STATUS_FAILED
        log.warning("action_failed", action=inv.name, action_id=inv.id, code=err.code.name, error=err.message)

    def status(self, action_id: str) -> Invocation:
        inv = self._invocations.get(action_id)
        if inv is None:
            raise ConnectorError(grpc.StatusCode.NOT_FOUND, f"action id {action_id!r} not found")
        return inv

    def _forget_old(self) -> None:
        finished = [i for i in self._invocations.values() if i.done]
        excess = len(finished) - KEEP_FINISHED
        if excess <= 0:
            return
        for inv in sorted(finished, key=lambda i: i.started)[:excess]:
            del self._invocations[inv.id]

    async def close(self) -> None:
        running = [i.task for i in self._invocations.values() if i.task is not None and not i.task.done()]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(BaseException):
                await task
