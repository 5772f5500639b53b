"""Self-hosted ConductorOne baton connectors: Atlassian Cloud organization and Confluence Data Center."""

__version__ = "0.1.0"
