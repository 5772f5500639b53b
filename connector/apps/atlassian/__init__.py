"""Atlassian Cloud organization connector (admin API v2, SCIM for account creation)."""
