"""`python -m connector`: tools that are not tied to one app.

inspect FILE ...        look inside a .c1z (resources, entitlements, grants, stats, syncs)
sandbox NAME [...]      run a fake upstream or tenant (confluence, atlassian, tenant)
demo                    the daemon against the embedded sandboxes, end to end
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

SANDBOXES = {
    "confluence": "connector.sandbox.confluence.server",
    "atlassian": "connector.sandbox.atlassian.server",
    "tenant": "connector.sandbox.tenant.server",
}


def _load(module: str, attr: str) -> Callable[[list[str]], int | None]:
    fn: Callable[[list[str]], int | None] = getattr(importlib.import_module(module), attr)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "inspect":
        return _load("connector.inspect_cli", "inspect_main")(rest) or 0
    if command == "sandbox":
        if not rest or rest[0] not in SANDBOXES:
            print(f"usage: python -m connector sandbox {{{','.join(SANDBOXES)}}} [options]", file=sys.stderr)
            return 2
        return _load(SANDBOXES[rest[0]], "main")(rest[1:]) or 0
    if command == "demo":
        return _load("connector.demo", "main")(rest) or 0
    print(f"unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
