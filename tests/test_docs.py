"""The documentation tells the truth: every relative link resolves inside the repository, nothing points
outside it, the health-check default is the one `--help` shows, and the LICENSE is the image label's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.apps.atlassian.settings import AtlassianSettings
from connector.ops.settings import format_help, parse_settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Paths written as code that would only exist on the machine the docs were written on.
OUTSIDE = re.compile(r"`(?:\.\./|/work/|/home/)[^`]*`")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        if ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (missing)")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert broken == []
    assert OUTSIDE.findall(text) == []


def test_health_check_default_is_the_same_in_help_and_docs() -> None:
    settings = parse_settings(AtlassianSettings, [], env={"BATON_API_TOKEN": "k", "BATON_ORG": "o"})
    assert settings.health_check is True
    help_text = format_help(AtlassianSettings, "baton-atlassian")
    block = help_text.split("--health-check\n", 1)[1].split("\n  -", 1)[0]
    assert "(default True)" in block
    rows = [
        line
        for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `--health-check` ")
    ]
    assert len(rows) == 1 and "bool, true" in rows[0]
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "enabled with `BATON_HEALTH_CHECK=true`" not in text, doc
        assert "| off, 8081, 127.0.0.1 |" not in text, doc


def test_license_is_apache_2_like_the_image_label() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in (ROOT / "Dockerfile").read_text(
        encoding="utf-8"
    )
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
