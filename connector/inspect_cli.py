"""`python -m connector inspect FILE {resources,entitlements,grants,stats,syncs}`: look inside a c1z.

The Go `baton` CLI's order, command first (`inspect stats FILE`), works too.

Reads any v1 c1z (ours or a Go connector's), prints tables for people or `--json` (protojson, camelCase,
in the shapes the `baton` CLI's `-o json` uses) for scripts. Output streams, so large files do not need
to fit in memory. A file that cannot be read gives one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from google.protobuf import any_pb2, descriptor_pool, json_format
from google.protobuf.message import Message

from connector.c1z.container import C1zError
from connector.c1z.reader import C1zReader
from connector.pb.c1.c1z.v1 import annotation_sync_details_pb2  # noqa: F401 - registers Any types
from connector.pb.c1.connector.v2 import (  # noqa: F401 - registers every annotation type for JSON
    annotation_entitlement_pb2,
    annotation_external_link_pb2,
    annotation_grant_pb2,
    annotation_ratelimit_pb2,
    annotation_request_pb2,
    annotation_resource_tree_pb2,
    annotation_trait_pb2,
    annotation_v1_identifier_pb2,
    entitlement_pb2,
    grant_pb2,
    resource_pb2,
)

PROG = "python -m connector inspect"
COMMANDS = ("resources", "entitlements", "grants", "stats", "syncs")
CACHE = 10_000


class _Lru(OrderedDict[Any, Any]):
    def remember(self, key: Any, value: Any) -> Any:
        self[key] = value
        if len(self) > CACHE:
            self.popitem(last=False)
        return value


class _Lookups:
    """Cached lookups of the objects rows refer to, with the baton CLI's placeholders when missing."""

    def __init__(self, reader: C1zReader, sync_id: str | None) -> None:
        self.reader = reader
        self.sync_id = sync_id
        self._types: dict[str, resource_pb2.ResourceType | None] = {}
        self._resources = _Lru()
        self._entitlements = _Lru()

    def resource_type(self, type_id: str) -> resource_pb2.ResourceType | None:
        if type_id not in self._types:
            self._types[type_id] = self.reader.get_resource_type(type_id, sync_id=self.sync_id)
        return self._types[type_id]

    def type_name(self, type_id: str) -> str:
        rt = self.resource_type(type_id)
        if rt is None:
            return f"MISSING RESOURCE TYPE ({type_id})"
        return rt.display_name or rt.id

    def resource(self, rid: resource_pb2.ResourceId) -> resource_pb2.Resource | None:
        key = (rid.resource_type, rid.resource)
        if key in self._resources:
            value: resource_pb2.Resource | None = self._resources[key]
            return value
        found = self.reader.get_resource(rid.resource_type, rid.resource, sync_id=self.sync_id)
        return self._resources.remember(key, found)  # type: ignore[no-any-return]

    def resource_name(self, rid: resource_pb2.ResourceId) -> str:
        res = self.resource(rid)
        if res is None:
            return f"MISSING RESOURCE ({rid.resource_type}:{rid.resource})"
        return res.display_name or res.id.resource

    def entitlement(self, entitlement_id: str) -> entitlement_pb2.Entitlement | None:
        if entitlement_id in self._entitlements:
            value: entitlement_pb2.Entitlement | None = self._entitlements[entitlement_id]
            return value
        found = self.reader.get_entitlement(entitlement_id, sync_id=self.sync_id)
        return self._entitlements.remember(entitlement_id, found)  # type: ignore[no-any-return]


class _Json:
    """protojson with a fallback for Any annotations whose type this program does not know."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.dropped: set[str] = set()

    def __call__(self, msg: Message | None) -> Any:
        if msg is None:
            return None
        try:
            return json_format.MessageToDict(msg)
        except (TypeError, KeyError):
            clean = type(msg)()
            clean.CopyFrom(msg)
            self._strip_unknown(clean)
            return json_format.MessageToDict(clean)

    def _strip_unknown(self, msg: Message) -> None:
        pool = descriptor_pool.Default()
        for field, value in msg.ListFields():
            if field.message_type is None:
                continue
            items = value if field.is_repeated else [value]
            if field.message_type.full_name == "google.protobuf.Any" and field.is_repeated:
                keep = []
                for a in items:
                    name = a.type_url.rsplit("/", 1)[-1]
                    try:
                        pool.FindMessageTypeByName(name)
                        keep.append(a)
                    except KeyError:
                        self.dropped.add(name)
                del value[:]
                value.extend(keep)
                for a in keep:
                    self._strip_unknown(a)
                continue
            if field.message_type.GetOptions().map_entry:
                continue
            for item in items:
                if isinstance(item, Message) and not isinstance(item, any_pb2.Any):
                    self._strip_unknown(item)

    def warn(self) -> None:
        if self.dropped:
            names = ", ".join(sorted(self.dropped))
            print(f"inspect: annotations of unknown types omitted from JSON: {names}", file=self.err)


def _table(out: TextIO, headers: list[str], rows: Iterable[list[str]]) -> int:
    """Print an aligned table. Rows are buffered in chunks so widths fit without holding everything."""
    count = 0
    chunk: list[list[str]] = []
    widths = [len(h) for h in headers]
    printed_header = False

    def flush() -> None:
        nonlocal printed_header
        for row in chunk:
            for i, cell in enumerate(row):
                widths[i] = min(max(widths[i], len(cell)), 60)
        if not printed_header:
            out.write(" | ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip() + "\n")
            out.write("-+-".join("-" * w for w in widths) + "\n")
            printed_header = True
        for row in chunk:
            out.write(" | ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() + "\n")
        chunk.clear()

    for row in rows:
        chunk.append([c.replace("\n", " ") for c in row])
        count += 1
        if len(chunk) >= 1000:
            flush()
    flush()
    return count


def _json_list(out: TextIO, key: str, items: Iterator[dict[str, Any]]) -> None:
    out.write("{" + json.dumps(key) + ": [")
    first = True
    for item in items:
        out.write("\n  " if first else ",\n  ")
        out.write(json.dumps(item, ensure_ascii=False))
        first = False
    out.write("\n]}\n" if not first else "]}\n")


def _principal(value: str) -> resource_pb2.ResourceId:
    type_id, sep, res = value.partition(":")
    if not sep or not type_id or not res:
        raise argparse.ArgumentTypeError(f"expected TYPE:ID, got {value!r}")
    return resource_pb2.ResourceId(resource_type=type_id, resource=res)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Show what a .c1z file holds (v1 files from this program or from Go connectors).",
    )
    p.add_argument("file", help="path to the .c1z file")
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_)
        c.add_argument("--json", action="store_true", help="JSON output (protojson) instead of a table")
        c.add_argument("--sync-id", help="read this sync instead of the latest finished full sync")
        return c

    c = command("resources", "list resources")
    c.add_argument("-t", "--resource-type", help="only resources of this type")
    c = command("entitlements", "list entitlements")
    c.add_argument("-t", "--resource-type", help="only entitlements on resources of this type")
    c = command("grants", "list grants")
    c.add_argument("-t", "--resource-type", help="only grants on resources of this type")
    c.add_argument("-r", "--resource", help="only grants on this resource id (with -t)")
    c.add_argument("-e", "--entitlement", help="only grants of this entitlement id")
    c.add_argument("--principal", type=_principal, metavar="TYPE:ID", help="only grants to this principal")
    command("stats", "counts of the latest finished sync (or --sync-id)")
    command("syncs", "list the sync runs in the file")
    return p


def _resources(reader: C1zReader, args: argparse.Namespace, out: TextIO, js: _Json) -> None:
    look = _Lookups(reader, args.sync_id)
    items = reader.resources(resource_type=args.resource_type, sync_id=args.sync_id)
    if args.json:
        _json_list(
            out,
            "resources",
            ({"resource": js(r), "resourceType": js(look.resource_type(r.id.resource_type))} for r in items),
        )
        return

    def rows() -> Iterator[list[str]]:
        for r in items:
            parent = "-"
            if r.HasField("parent_resource_id"):
                p = r.parent_resource_id
                parent = f"{look.resource_name(p)} ({look.type_name(p.resource_type)})"
            yield [r.id.resource, r.display_name, look.type_name(r.id.resource_type), parent]

    _table(out, ["ID", "Display Name", "Resource Type", "Parent Resource"], rows())


_PURPOSE = {0: "-", 1: "assignment", 2: "permission", 3: "ownership"}


def _entitlements(reader: C1zReader, args: argparse.Namespace, out: TextIO, js: _Json) -> None:
    look = _Lookups(reader, args.sync_id)
    items = reader.entitlements(resource_type=args.resource_type, sync_id=args.sync_id)
    if args.json:
        _json_list(
            out,
            "entitlements",
            (
                {
                    "entitlement": js(e),
                    "resource": js(look.resource(e.resource.id)),
                    "resourceType": js(look.resource_type(e.resource.id.resource_type)),
                }
                for e in items
            ),
        )
        return

    def rows() -> Iterator[list[str]]:
        for e in items:
            rid = e.resource.id
            yield [
                e.id,
                e.display_name,
                look.type_name(rid.resource_type),
                look.resource_name(rid),
                _PURPOSE.get(int(e.purpose), str(e.purpose)),
            ]

    _table(out, ["ID", "Display Name", "Resource Type", "Resource", "Purpose"], rows())


def _grants(reader: C1zReader, args: argparse.Namespace, out: TextIO, js: _Json) -> None:
    look = _Lookups(reader, args.sync_id)
    resource = None
    if args.resource:
        if not args.resource_type:
            raise C1zError("--resource needs --resource-type (-t)")
        resource = resource_pb2.ResourceId(resource_type=args.resource_type, resource=args.resource)
    items = reader.grants(
        resource_type=args.resource_type,
        resource=resource,
        entitlement_id=args.entitlement,
        principal=args.principal,
        sync_id=args.sync_id,
    )
    if args.json:
        _json_list(
            out,
            "grants",
            (
                {
                    "grant": js(g),
                    "entitlement": js(look.entitlement(g.entitlement.id) or g.entitlement),
                    "resource": js(look.resource(g.entitlement.resource.id) or g.entitlement.resource),
                    "principal": js(look.resource(g.principal.id) or g.principal),
                }
                for g in items
            ),
        )
        return

    def rows() -> Iterator[list[str]]:
        for g in items:
            rid = g.entitlement.resource.id
            ent = look.entitlement(g.entitlement.id)
            ent_name = (
                (ent.display_name or ent.id)
                if ent is not None
                else f"MISSING ENTITLEMENT ({g.entitlement.id})"
            )
            srcs = g.sources.sources
            how = "direct" if not srcs or g.entitlement.id in srcs else "via " + ", ".join(sorted(srcs))
            yield [
                g.id,
                look.type_name(rid.resource_type),
                look.resource_name(rid),
                ent_name,
                look.resource_name(g.principal.id),
                how,
            ]

    _table(out, ["ID", "Resource Type", "Resource", "Entitlement", "Principal", "Source"], rows())


def _stats(reader: C1zReader, args: argparse.Namespace, out: TextIO, js: _Json) -> None:
    stats = reader.stats(sync_id=args.sync_id)
    run = reader.stats_sync(args.sync_id)
    if args.json:
        json.dump(
            {
                "syncId": run.sync_id if run else None,
                "syncType": run.sync_type if run else None,
                "stats": stats,
            },
            out,
        )
        out.write("\n")
        return
    if run is not None:
        out.write(f"sync {run.sync_id} ({run.sync_type}, ended {run.ended_at})\n")
    _table(out, ["Type", "Count"], ([k, str(v)] for k, v in sorted(stats.items())))


def _syncs(reader: C1zReader, args: argparse.Namespace, out: TextIO, js: _Json) -> None:
    runs = reader.syncs()
    if args.sync_id:
        runs = [r for r in runs if r.sync_id == args.sync_id]
    if args.json:
        _json_list(out, "syncs", (r.to_dict() for r in runs))
        return
    _table(
        out,
        ["ID", "Started", "Ended", "Type", "Parent"],
        (
            [r.sync_id, r.started_at, r.ended_at or "(unfinished)", r.sync_type, r.parent_sync_id or "-"]
            for r in runs
        ),
    )


_HANDLERS: dict[str, Callable[[C1zReader, argparse.Namespace, TextIO, _Json], None]] = {
    "resources": _resources,
    "entitlements": _entitlements,
    "grants": _grants,
    "stats": _stats,
    "syncs": _syncs,
}


def _file_first(argv: list[str]) -> list[str]:
    """`stats FILE ...` (the baton CLI's order) as `FILE stats ...`; a first word that is not a command
    (or a file literally named like one, given first) is left where it is."""
    if len(argv) >= 2 and argv[0] in COMMANDS and argv[1] not in COMMANDS and not argv[1].startswith("-"):
        return [argv[1], argv[0], *argv[2:]]
    return list(argv)


def inspect_main(argv: list[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the inspect command on `argv` (the arguments after `inspect`). Returns the exit status."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = _parser().parse_args(_file_first(argv))
    except SystemExit as exc:  # argparse already printed usage and the problem
        return int(exc.code) if isinstance(exc.code, int) else 2
    js = _Json(err)
    try:
        with C1zReader(args.file, sync_id=args.sync_id) as reader:
            _HANDLERS[args.command](reader, args, out, js)
    except C1zError as exc:
        print(f"inspect: {args.file}: {exc}", file=err)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        return 0
    except KeyboardInterrupt:
        return 130
    js.warn()
    return 0


def main() -> None:
    sys.exit(inspect_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
