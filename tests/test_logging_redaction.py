"""Secrets never reach log output, whatever path they take into a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from connector.ops import logging as baton_logging
from connector.ops.logging import REDACTED, configure_logging, get_logger, register_secret
from connector.ops.settings import BatonSettings, parse_settings, reload_secret, secret_values

ENV_SECRET = "env-Secret-7f3a9c"
FILE_SECRET = "file-Secret-b81d2e"
ROTATED_SECRET = "rotated-Secret-55aa01"


class AppSettings(BatonSettings):
    api_token: SecretStr = Field(description="API token")
    password: SecretStr | None = Field(None, description="Password")


Configure = Callable[[str], io.StringIO]


@pytest.fixture
def settings(tmp_path: Path) -> AppSettings:
    secret_file = tmp_path / "password"
    secret_file.write_text(FILE_SECRET + "\n")
    return parse_settings(
        AppSettings, ["--password-file", str(secret_file)], env={"BATON_API_TOKEN": ENV_SECRET}
    )


@pytest.fixture
def configure(settings: AppSettings) -> Iterator[Configure]:
    def setup(fmt: str) -> io.StringIO:
        buf = io.StringIO()
        configure_logging("debug", fmt, secrets=secret_values(settings), stream=buf)
        return buf

    yield setup
    root = logging.getLogger()
    if baton_logging._handler is not None:
        root.removeHandler(baton_logging._handler)
        baton_logging._handler = None
    root.setLevel(logging.WARNING)
    baton_logging.clear_secrets()


def assert_clean(output: str, *secrets: str) -> None:
    assert output.strip(), "nothing was logged"
    for secret in secrets:
        assert secret not in output
        assert json.dumps(secret)[1:-1] not in output


FORMATS = pytest.mark.parametrize("fmt", ["json", "console"])


def test_settings_expose_both_secrets(settings: AppSettings) -> None:
    # The redaction tests below are only meaningful if both secrets were really loaded.
    assert sorted(secret_values(settings)) == sorted([ENV_SECRET, FILE_SECRET])


@FORMATS
def test_plain_line_and_fields(configure: Configure, fmt: str) -> None:
    buf = configure(fmt)
    log = get_logger("test.plain")
    log.info(f"connecting with {ENV_SECRET}", password=FILE_SECRET, user="alice")
    out = buf.getvalue()
    assert_clean(out, ENV_SECRET, FILE_SECRET)
    assert out.count(REDACTED) == 2
    assert "connecting with" in out and "alice" in out


@FORMATS
def test_nested_values(configure: Configure, fmt: str) -> None:
    buf = configure(fmt)
    get_logger("test.nested").warning(
        "config",
        cfg={"auth": [{"token": ENV_SECRET}], "pair": ("x", f"pw={FILE_SECRET}")},
        items=[[FILE_SECRET]],
    )
    out = buf.getvalue()
    assert_clean(out, ENV_SECRET, FILE_SECRET)
    assert out.count(REDACTED) == 3


@FORMATS
def test_exception_message_and_traceback(configure: Configure, fmt: str) -> None:
    buf = configure(fmt)
    log = get_logger("test.exc")
    try:
        raise RuntimeError(f"login rejected for token {ENV_SECRET} / {FILE_SECRET}")
    except RuntimeError:
        log.exception("upstream call failed")
    out = buf.getvalue()
    assert_clean(out, ENV_SECRET, FILE_SECRET)
    assert "RuntimeError: login rejected for token" in out
    assert "Traceback" in out


@FORMATS
def test_stdlib_records_from_other_libraries(configure: Configure, fmt: str) -> None:
    buf = configure(fmt)
    lib = logging.getLogger("some.library")
    lib.warning("sending credentials %s", ENV_SECRET)
    try:
        raise ValueError(FILE_SECRET)
    except ValueError:
        lib.error("failed", exc_info=True)
    out = buf.getvalue()
    assert_clean(out, ENV_SECRET, FILE_SECRET)
    assert "sending credentials" in out and "some.library" in out and "ValueError" in out


def test_json_escaped_and_unicode_secret(configure: Configure) -> None:
    tricky = 'pä"ss\\wörd-123'
    register_secret(tricky)
    buf = configure("json")
    get_logger("t").info("x", value=tricky, text=f"before {tricky} after")
    out = buf.getvalue()
    assert_clean(out, tricky)
    assert "pä" not in out and "p\\u00e4" not in out


def test_rotated_secret_is_redacted(configure: Configure, settings: AppSettings) -> None:
    buf = configure("json")
    path = settings.secret_file("password")
    assert path is not None
    path.write_text(ROTATED_SECRET + "\n")
    assert reload_secret(settings, "password") == ROTATED_SECRET
    other = "registered-at-runtime-99"
    register_secret(other)
    get_logger("t").info("new credentials", pw=ROTATED_SECRET, other=other, old=FILE_SECRET)
    logging.getLogger("lib").info("lib %s", ROTATED_SECRET)
    out = buf.getvalue()
    assert_clean(out, ROTATED_SECRET, other, FILE_SECRET)
    assert out.count(REDACTED) == 4


@FORMATS
def test_authorization_headers_are_scrubbed(configure: Configure, fmt: str) -> None:
    buf = configure(fmt)
    log = get_logger("t")
    log.info("request", headers={"Authorization": "Bearer eyJhbGciOi.payload.sig"})
    log.info("raw header Authorization: Basic dXNlcjpwYXNzd29yZA==")
    log.info("json", body='{"authorization": "Token tok-98765"}')
    logging.getLogger("grpc.lib").warning("metadata bearer abc123def456 sent")
    out = buf.getvalue()
    for leaked in ("eyJhbGciOi", "dXNlcjpwYXNzd29yZA", "tok-98765", "abc123def456"):
        assert leaked not in out
    assert out.count(REDACTED) == 4
    assert "raw header" in out


def test_short_values_are_not_registered(configure: Configure) -> None:
    register_secret("abc")
    buf = configure("json")
    get_logger("t").info("abc is fine")
    assert "abc is fine" in buf.getvalue()


def test_json_shape_level_and_quiet_libraries(settings: AppSettings) -> None:
    buf = io.StringIO()
    try:
        configure_logging("info", "json", secrets=secret_values(settings), stream=buf)
        log = get_logger("shape")
        log.debug("hidden at info")
        log.info("shown", n=1)
        logging.getLogger("httpx").info("HTTP Request: GET https://x/?token=abc")
        logging.getLogger("httpx").warning("httpx warning")
        lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    finally:
        if baton_logging._handler is not None:
            logging.getLogger().removeHandler(baton_logging._handler)
            baton_logging._handler = None
        baton_logging.clear_secrets()
    assert [entry["event"] for entry in lines] == ["shown", "httpx warning"]
    first = lines[0]
    assert first["level"] == "info" and first["logger"] == "shape" and first["n"] == 1
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]


# ------------------------------------------------------------------------------------------ bounded set


def test_a_rotating_secret_keeps_the_pattern_count_bounded(configure: Configure) -> None:
    buf = configure("json")
    fixed = baton_logging.redaction_pattern_count()
    values = [f"tok{i:04d}-{'q' * 24}" for i in range(1000)]
    counts = []
    for value in values:
        register_secret(value, slot="tenant_access_token")
        counts.append(baton_logging.redaction_pattern_count())
    # Each value has one form (plain ASCII): the configured secrets' forms plus the slot's two values.
    assert counts[1] == counts[-1] == max(counts) == fixed + 2
    get_logger("t").info("tokens", new=values[-1], previous=values[-2], old=values[-3], first=values[0])
    out = buf.getvalue()
    # The current value and its predecessor (a request already in flight may carry it) are redacted; older
    # ones are forgotten, like the configured secrets are not.
    assert_clean(out, values[-1], values[-2], ENV_SECRET)
    assert values[-3] in out and values[0] in out
    # Registering the current value again changes nothing; an old value comes back as the current one.
    register_secret(values[-1], slot="tenant_access_token")
    register_secret(values[0], slot="tenant_access_token")
    assert baton_logging.redaction_pattern_count() == fixed + 2
    assert baton_logging.redact_text(values[0]) == REDACTED


def test_slots_are_independent_and_unslotted_secrets_stay(configure: Configure) -> None:
    configure("json")
    register_secret("client-secret-one", slot="client_secret")
    register_secret("access-token-one", slot="tenant_access_token")
    register_secret("access-token-two", slot="tenant_access_token")
    register_secret("access-token-three", slot="tenant_access_token")
    text = baton_logging.redact_text(
        "client-secret-one access-token-one access-token-two access-token-three " + ENV_SECRET
    )
    assert text == f"{REDACTED} access-token-one {REDACTED} {REDACTED} {REDACTED}"


def test_every_secret_is_matched_in_one_pass_longest_first(configure: Configure) -> None:
    configure("json")
    # One secret inside another: the longer one is redacted whole, not as REDACTED plus a tail.
    register_secret("abcd1234")
    register_secret("abcd1234efgh5678")
    # A secret that appears only once an earlier replacement inserted the marker must not match the marker:
    # one pass over the original text.
    register_secret("ED]zz")
    many = [f"svc-{i:03d}-secret" for i in range(300)]
    for value in many:
        register_secret(value)
    line = "x abcd1234efgh5678 y abcd1234 z " + " ".join(many[::37]) + " abcd1234zz"
    out = baton_logging.redact_text(line)
    assert out.startswith(f"x {REDACTED} y {REDACTED} z ")
    assert not any(v in out for v in many)
    assert out.endswith(f" {REDACTED}zz")


async def test_refreshed_tenant_tokens_replace_each_other(configure: Configure, tmp_path: Path) -> None:
    """The daemon's token source against the sandbox tenant: every refresh is a new token to redact, and
    the redactor's set stays the same size however many refreshes there are."""
    from connector.sandbox.tenant import start_tenant
    from connector.service.credentials import CredentialSource, TokenSource, make_ssl_context
    from connector.service.tenant import TenantEndpoint

    buf = configure("json")
    handle = await start_tenant(data_dir=tmp_path / "tenant", token_ttl=0)  # expired at once: always new
    source = CredentialSource(client_id=handle.client_id, client_secret=handle.client_secret)
    creds = source.load()
    tokens = TokenSource(
        source,
        token_url=TenantEndpoint.resolve(creds.client_id, handle.address).token_url,
        verify=make_ssl_context(str(handle.ca_pem)),
        user_agent="tester",
    )
    try:
        seen: list[str] = []
        counts: list[int] = []
        for _ in range(25):
            seen.append((await tokens.authorization()).split(" ", 1)[1])
            counts.append(baton_logging.redaction_pattern_count())
        assert len(set(seen)) == 25 and tokens.exchanges == 25
        assert counts[1] == counts[-1] == max(counts)
        get_logger("t").info("tokens", current=seen[-1], previous=seen[-2])
        assert_clean(buf.getvalue(), seen[-1], seen[-2], handle.client_secret)
    finally:
        await tokens.aclose()
        await handle.close()
