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
    # The Atlassian part invokes an action, disable then enable, and both complete.
    for name in ("disable_user", "enable_user"):
        assert f"   {name} task " in out
    assert out.count('BATON_ACTION_STATUS_COMPLETE {"success": true}') == 2


def test_demo_rejects_unknown_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["jira"])
    assert info.value.code == 2
    assert "unknown scenario 'jira'" in capsys.readouterr().err
