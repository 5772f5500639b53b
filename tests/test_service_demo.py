"""`make demo` works: both apps (or the toy fallback) against their sandboxes and the sandbox tenant."""

from __future__ import annotations

import pytest

from connector.demo import main


def test_demo_runs_every_task_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "demo finished: every task ended as expected" in out
    for label in ("sync", "grant", "revoke"):
        assert f"   {label:<11} task " in out
    assert "uploaded c1z:" in out and "error" not in out.lower()


def test_demo_rejects_unknown_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["jira"])
    assert info.value.code == 2
    assert "unknown scenario 'jira'" in capsys.readouterr().err
