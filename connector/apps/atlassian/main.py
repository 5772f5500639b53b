"""Entry point of the `baton-atlassian` console script."""

from __future__ import annotations

import sys

from connector.apps.atlassian.connector import build_connector
from connector.apps.atlassian.settings import AtlassianSettings
from connector.cli import AppSpec, run_app

SPEC = AppSpec(
    name="baton-atlassian",
    settings_cls=AtlassianSettings,
    build=build_connector,
    description="ConductorOne connector for an Atlassian Cloud organization (accounts, groups, workspaces)",
)


def main() -> None:
    sys.exit(run_app(SPEC))


if __name__ == "__main__":
    main()
