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


class _NotInstalled(Exception):
    pass


def _load(module: str, attr: str) -> Callable[[list[str]], int | None]:
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as err:
        # The image's wheel leaves out the sandboxes and the demo (setup.py): they run from a checkout.
        if err.name and module.startswith(err.name):
            raise _NotInstalled(f"{module} is not installed here: run it from a source checkout") from None
        raise
    fn: Callable[[list[str]], int | None] = getattr(loaded, attr)
    return fn


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if args else 2
    try:
        return _dispatch(args[0], args[1:])
    except _NotInstalled as err:
        print(f"python -m connector: error: {err}", file=sys.stderr)
        return 2


def _dispatch(command: str, rest: list[str]) -> int:
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
