"""`baton-confluence-datacenter`: the console script."""

from __future__ import annotations

import sys

from connector.apps.confluence_datacenter.connector import build_connector
from connector.apps.confluence_datacenter.settings import ConfluenceSettings
from connector.cli import AppSpec, run_app

SPEC = AppSpec(
    name="baton-confluence-datacenter",
    settings_cls=ConfluenceSettings,
    build=build_connector,
    description="ConductorOne connector for Confluence Data Center (users, groups, spaces; 7.19, 8.x, 9.x)",
)


def main() -> None:
    sys.exit(run_app(SPEC))


if __name__ == "__main__":
    main()
