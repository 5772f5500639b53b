"""Baton-style settings: flags, env, _FILE secrets, and one-line error messages."""

from __future__ import annotations

import datetime as dt
import io
import socket
from pathlib import Path

import pytest
from pydantic import AliasChoices, Field, SecretStr, model_validator

from connector.ops.settings import (
    BatonSettings,
    HelpRequested,
    SettingsError,
    c1_api_host,
    exit_on_error,
    format_help,
    host_id,
    load_settings_or_exit,
    parse_settings,
    reload_secret,
    secret_values,
    unknown_env_warning,
)

TOKEN = "tok-SECRET-abc123"
PASSWORD = "pw-SECRET-xyz789"


class AppSettings(BatonSettings):
    hostname: str = Field(description="Base URL of the server")
    access_token: SecretStr = Field(description="Personal access token")
    password: SecretStr | None = Field(None, description="Password")
    org: str = Field("", validation_alias=AliasChoices("org", "organization"), description="Organization")

    @model_validator(mode="after")
    def _https_only(self) -> AppSettings:
        if self.hostname.startswith("ftp:"):
            raise ValueError(
                f"--hostname must be an http(s) URL; the token {self.access_token} is not checked"
            )
        if self.hostname == "both":
            raise SettingsError(f"bad combination involving {self.access_token.get_secret_value()}")
        return self


BASE_ENV = {"BATON_HOSTNAME": "https://wiki", "BATON_ACCESS_TOKEN": TOKEN}


def parse(argv: list[str], env: dict[str, str] | None = None) -> AppSettings:
    return parse_settings(AppSettings, argv, BASE_ENV if env is None else env)


def error_of(argv: list[str], env: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        parse(argv, env)
    message = str(info.value)
    assert "\n" not in message
    assert TOKEN not in message and PASSWORD not in message
    return message


# --------------------------------------------------------------------------------------------------------
# Sources and precedence


def test_defaults() -> None:
    s = parse([])
    assert s.task_concurrency == 3 and s.http_timeout_seconds == 300 and s.file == "sync.c1z"
    assert s.provisioning is False and s.log_level == "info" and s.sync_interval is None
    assert s.health_check_port == 8081 and s.health_check_bind_address == "127.0.0.1"
    assert s.shutdown_grace_seconds == 20.0 and s.sync_concurrency == 8 and s.sync_resource_types == []
    assert s.log_format == "json"  # stderr is not a terminal under pytest
    assert s.access_token.get_secret_value() == TOKEN and s.secret_file("access_token") is None


def test_precedence_flag_over_env_over_default() -> None:
    env = {**BASE_ENV, "BATON_TASK_CONCURRENCY": "7", "BATON_FILE": "env.c1z"}
    assert parse([], env).task_concurrency == 7
    s = parse(["--task-concurrency", "9", "-f", "flag.c1z"], env)
    assert s.task_concurrency == 9 and s.file == "flag.c1z"
    assert parse(["--task-concurrency=11"], env).task_concurrency == 11
    assert parse(["-f=x.c1z"], env).file == "x.c1z" and parse(["-fy.c1z"], env).file == "y.c1z"
    assert parse(["--hostname", "https://flag"], env).hostname == "https://flag"
    assert parse([], {**env, "BATON_TASK_CONCURRENCY": ""}).task_concurrency == 3  # empty = unset


@pytest.mark.parametrize("text", ["1", "t", "T", "TRUE", "true", "True"])
def test_go_true_strings(text: str) -> None:
    assert parse([], {**BASE_ENV, "BATON_PROVISIONING": text}).provisioning is True
    assert parse([f"--skip-grants={text}"]).skip_grants is True


@pytest.mark.parametrize("text", ["0", "f", "F", "FALSE", "false", "False"])
def test_go_false_strings(text: str) -> None:
    env = {**BASE_ENV, "BATON_PROVISIONING": "true"}
    assert parse([], {**env, "BATON_PROVISIONING": text}).provisioning is False
    assert parse([f"--provisioning={text}"], env).provisioning is False  # flag beats env


def test_bare_bool_flags() -> None:
    assert parse(["--provisioning"]).provisioning is True
    assert parse(["-p"]).provisioning is True
    assert parse(["--health-check", "--skip-full-sync"]).skip_full_sync is True


@pytest.mark.parametrize("bad", ["yes", "on", "tRUE", "2", ""])
def test_bad_bool(bad: str) -> None:
    message = error_of([f"--provisioning={bad}"])
    expected = "invalid --provisioning / BATON_PROVISIONING: must be a boolean (true/false, t/f, 1/0)"
    assert message == f'{expected} (got "{bad}")'


def test_bare_bool_followed_by_value_explains() -> None:
    message = error_of(["--provisioning", "false"])
    assert message.startswith('unexpected argument "false"') and "--provisioning=false" in message


def test_csv_lists() -> None:
    env = {**BASE_ENV, "BATON_SYNC_RESOURCE_TYPES": "user, group,,space"}
    assert parse([], env).sync_resource_types == ["user", "group", "space"]
    s = parse(["--sync-resource-types", "role", "--sync-resource-types=a,b"], env)
    assert s.sync_resource_types == ["role", "a", "b"]  # flags accumulate and replace the env list


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("90", 90), ("1.5h", 5400), ("500ms", 0.5), ("2.5", 2.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse([], {**BASE_ENV, "BATON_SYNC_INTERVAL": text}).sync_interval == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["soon", "10x", "1h30", "-5m", "0s"])
def test_bad_durations(bad: str) -> None:
    message = error_of(["--sync-interval", bad])
    assert message.startswith("invalid --sync-interval / BATON_SYNC_INTERVAL: must be a")
    assert message.endswith(f'(got "{bad}")')


def test_alias_org_organization() -> None:
    assert parse(["--org", "a"]).org == "a"
    assert parse(["--organization", "b"]).org == "b"
    assert parse([], {**BASE_ENV, "BATON_ORG": "c"}).org == "c"
    assert parse([], {**BASE_ENV, "BATON_ORGANIZATION": "d"}).org == "d"
    assert parse(["--org", "e"], {**BASE_ENV, "BATON_ORGANIZATION": "d"}).org == "e"
    message = error_of([], {**BASE_ENV, "BATON_ORG": "x", "BATON_ORGANIZATION": "y"})
    assert "BATON_ORG" in message and "BATON_ORGANIZATION" in message


def test_log_level_case_and_choices() -> None:
    assert parse(["--log-level", "DEBUG"]).log_level == "debug"
    message = error_of(["--log-level", "verbose"])
    assert message.startswith("invalid --log-level / BATON_LOG_LEVEL: must be one of 'debug', 'info'")


# --------------------------------------------------------------------------------------------------------
# Secrets and _FILE


def test_secret_file_read_remembered_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    s = parse([], {"BATON_HOSTNAME": "https://wiki", "BATON_ACCESS_TOKEN_FILE": str(path)})
    assert s.access_token.get_secret_value() == TOKEN
    assert s.secret_file("access_token") == path.absolute()
    assert s.secret_file("password") is None

    path.write_text("rotated-TOKEN-2\r\n")
    assert reload_secret(s, "access_token") == "rotated-TOKEN-2"
    assert s.access_token.get_secret_value() == "rotated-TOKEN-2"

    flagged = parse(["--password-file", str(path)])
    assert flagged.password is not None and flagged.password.get_secret_value() == "rotated-TOKEN-2"
    assert sorted(secret_values(flagged)) == sorted([TOKEN, "rotated-TOKEN-2"])
    assert reload_secret(flagged, "access_token") == TOKEN  # given directly: nothing to re-read
    with pytest.raises(KeyError):
        reload_secret(flagged, "hostname")


def test_secret_file_relative_path_survives_chdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text(PASSWORD)
    monkeypatch.chdir(tmp_path)
    s = parse(["--password-file", "pw"])
    monkeypatch.chdir("/")
    assert reload_secret(s, "password") == PASSWORD


def test_value_and_file_conflict(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    message = error_of([], {**BASE_ENV, "BATON_ACCESS_TOKEN_FILE": str(path)})
    assert "BATON_ACCESS_TOKEN and BATON_ACCESS_TOKEN_FILE" in message
    message = error_of(["--access-token-file", str(path)])
    assert "BATON_ACCESS_TOKEN" in message and "--access-token-file" in message


def test_unreadable_and_empty_secret_files(tmp_path: Path) -> None:
    env = {"BATON_HOSTNAME": "h", "BATON_ACCESS_TOKEN_FILE": "/x/y"}
    assert error_of([], env) == "cannot read BATON_ACCESS_TOKEN_FILE (/x/y): No such file or directory"
    assert error_of([], {**env, "BATON_ACCESS_TOKEN_FILE": str(tmp_path)}).startswith(
        f"cannot read BATON_ACCESS_TOKEN_FILE ({tmp_path}): Is a directory"
    )
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in error_of([], {**env, "BATON_ACCESS_TOKEN_FILE": str(empty)})


def test_secret_values_skip_unset() -> None:
    assert secret_values(parse([])) == [TOKEN]


# --------------------------------------------------------------------------------------------------------
# Error messages


def test_missing_required() -> None:
    assert error_of([], {"BATON_ACCESS_TOKEN": TOKEN}) == "missing --hostname / BATON_HOSTNAME: required"
    message = error_of([], {"BATON_HOSTNAME": "h"})
    assert message == "missing --access-token / BATON_ACCESS_TOKEN (or BATON_ACCESS_TOKEN_FILE): required"


def test_malformed_and_out_of_range_int() -> None:
    assert (
        error_of(["--task-concurrency", "0"])
        == 'invalid --task-concurrency / BATON_TASK_CONCURRENCY: must be between 1 and 100 (got "0")'
    )
    assert (
        error_of([], {**BASE_ENV, "BATON_TASK_CONCURRENCY": "lots"})
        == 'invalid --task-concurrency / BATON_TASK_CONCURRENCY: must be an integer (got "lots")'
    )
    assert error_of(["--http-timeout-seconds=1801"]).startswith(
        "invalid --http-timeout-seconds / BATON_HTTP_TIMEOUT_SECONDS: must be between 1 and 1800"
    )
    assert error_of(["--shutdown-grace-seconds=-1"]).startswith(
        "invalid --shutdown-grace-seconds / BATON_SHUTDOWN_GRACE_SECONDS: must be >= 0"
    )


def test_unknown_flags_and_arguments() -> None:
    assert error_of(["--foo"]) == "unknown flag --foo"
    assert error_of(["--foo=1"]) == "unknown flag --foo"
    assert error_of(["-x"]) == "unknown shorthand flag -x in -x"
    assert error_of(["sync"]) == 'unexpected argument "sync"'
    assert error_of(["--hostname"]) == "missing value for --hostname (--hostname / BATON_HOSTNAME)"
    assert error_of(["--file", "--provisioning"]).startswith("missing value for --file")


def test_validator_errors_are_one_line_and_scrubbed() -> None:
    message = error_of(["--hostname", "ftp://x"])
    assert message.startswith("invalid configuration: --hostname must be an http(s) URL")
    message = error_of(["--hostname", "both"])
    assert message == "bad combination involving [REDACTED]"


def test_secret_never_echoed_on_invalid_value() -> None:
    class Strict(BatonSettings):
        api_key: SecretStr = Field(min_length=30, description="key")

    with pytest.raises(SettingsError) as info:
        parse_settings(Strict, ["--api-key", TOKEN], {})
    assert TOKEN not in str(info.value)
    assert str(info.value).startswith("invalid --api-key / BATON_API_KEY:")


# --------------------------------------------------------------------------------------------------------
# Help, CLI helpers and non-field env


def test_help_requested_and_listing() -> None:
    with pytest.raises(HelpRequested):
        parse(["--task-concurrency", "2", "--help"])
    with pytest.raises(HelpRequested):
        parse(["-h"])
    text = format_help(AppSettings, "baton-test")
    for expected in (
        "--task-concurrency int",
        "env BATON_TASK_CONCURRENCY",
        "(default 3)",
        "-p, --provisioning",
        "--access-token-file path",
        "env BATON_ACCESS_TOKEN_FILE",
        "--org, --organization string",
        "env BATON_ORG, BATON_ORGANIZATION",
        "Base URL of the server (required)",
        "--sync-interval duration",
        "--log-level debug|info|warn|error",
    ):
        assert expected in text, expected


def test_exit_on_error_and_loader(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    with pytest.raises(SystemExit) as info:
        exit_on_error(SettingsError("missing --hostname / BATON_HOSTNAME: required"), stream=stream)
    assert info.value.code == 2
    assert stream.getvalue() == "error: missing --hostname / BATON_HOSTNAME: required\n"

    with pytest.raises(SystemExit) as info:
        load_settings_or_exit(AppSettings, ["--task-concurrency", "0"], "prog", BASE_ENV)
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.err.startswith("error: invalid --task-concurrency")
    assert "Traceback" not in captured.err

    with pytest.raises(SystemExit) as info:
        load_settings_or_exit(AppSettings, ["--help"], "prog", BASE_ENV)
    assert info.value.code == 0 and "Usage: prog" in capsys.readouterr().out


def test_host_id_and_api_host() -> None:
    assert host_id({}) == (socket.gethostname() or "baton-sdk")
    assert host_id({"BATON_HOST_ID": "pod-7"}) == "pod-7"
    assert host_id({"BATON_HOST_ID": ""}) == "baton-sdk"
    assert c1_api_host({}) is None and c1_api_host({"BATON_C1_API_HOST": ""}) is None
    assert c1_api_host({"BATON_C1_API_HOST": "c1.local:8443"}) == "c1.local:8443"


# --------------------------------------------------------------------------------------------------------
# Loud misconfiguration (issue 15)


def test_example_placeholders_are_refused_and_secret_ones_not_echoed() -> None:
    message = error_of([], {**BASE_ENV, "BATON_HOSTNAME": "<URL of your server>"})
    assert message == (
        "invalid --hostname / BATON_HOSTNAME: still the example's placeholder; put the real value there "
        '(got "<URL of your server>")'
    )
    message = error_of(
        ["--access-token", " <Access token for your account> "], {"BATON_HOSTNAME": "https://w"}
    )
    assert (
        message == "invalid --access-token / BATON_ACCESS_TOKEN: still the example's placeholder; "
        "put the real value there"
    )
    assert parse([], {**BASE_ENV, "BATON_ORG": "a<b>c"}).org == "a<b>c"  # only a whole-value placeholder


def test_client_secret_needs_a_client_id() -> None:
    message = error_of([], {**BASE_ENV, "BATON_CLIENT_SECRET": "secret-token:x:v1:abc"})
    assert message.startswith("--client-secret / BATON_CLIENT_SECRET is set without --client-id")
    both = parse([], {**BASE_ENV, "BATON_CLIENT_SECRET": "s3cret-value", "BATON_CLIENT_ID": "a@b/c"})
    assert both.client_id == "a@b/c"
    from_file = parse([], {**BASE_ENV, "BATON_CLIENT_SECRET": "s3cret-value", "BATON_CLIENT_ID_FILE": "/id"})
    assert from_file.client_secret is not None


def test_unknown_baton_variables_are_named_with_the_closest_known_name() -> None:
    env = {
        **BASE_ENV,
        "BATON_ACCESS_TOKEN_FILE": "/x",
        "BATON_HOST_ID": "h",
        "BATON_TASK_CONCURENCY": "4",
        "BATON_SUBDOMAIN": "acme",
        "OTHER": "1",
    }
    assert unknown_env_warning(AppSettings, env) == (
        "ignoring unknown environment variables: BATON_SUBDOMAIN, "
        "BATON_TASK_CONCURENCY (did you mean BATON_TASK_CONCURRENCY?)"
    )
    assert unknown_env_warning(AppSettings, BASE_ENV) is None


def test_url_passwords_are_never_echoed() -> None:
    message = error_of(["--task-concurrency", "https://bob:hunter2@host/x"])
    assert "hunter2" not in message and "bob:***@host" in message


def test_sync_resources_are_type_colon_id() -> None:
    assert parse(["--sync-resources", "group:1,user:a:b"]).sync_resources == ["group:1", "user:a:b"]
    message = error_of(["--sync-resources", "group"])
    assert message.startswith("invalid --sync-resources / BATON_SYNC_RESOURCES: each must be TYPE:ID")
