"""Baton-style configuration: every field `foo_bar` is the flag `--foo-bar` and the env var `BATON_FOO_BAR`.

The sources are resolved here rather than by pydantic-settings' own env/CLI sources so that the Go SDK's
conventions hold exactly (Go bool strings, CSV lists, bare boolean flags, `_FILE` secrets, flag > env >
default) and so that every failure becomes one secret-free line naming both the flag and the env var.
pydantic still does the typing, ranges and app-defined validators.

Positional subcommands (`capabilities`, `sync`, ...) are not settings: the CLI removes them before calling
`parse_settings`, which rejects any positional argument it is given.

Apps subclass `BatonSettings`::

    class ConfluenceSettings(BatonSettings):
        hostname: str = Field(description="Base URL of the Confluence server")
        access_token: SecretStr = Field(description="Personal access token")
        org: str = Field("", validation_alias=AliasChoices("org", "organization"), description="...")

A one-letter short flag is declared with `json_schema_extra={"short": "p"}`.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import os
import re
import socket
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TextIO, TypeVar

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connector.ops.logging import register_secret

ENV_PREFIX = "BATON_"
FILE_SUFFIX = "_file"

GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

# Secrets shorter than this are not scrubbed from error messages: replacing "a" everywhere would garble
# the message without protecting anything real (same threshold as the log redactor).
_MIN_SECRET_LEN = 4


class SettingsError(Exception):
    """A configuration problem, as one line that names the flag and env var (never a secret value).

    Deliberately not a ValueError: raised inside an app's pydantic validator it propagates unchanged
    instead of being wrapped into a ValidationError.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class HelpRequested(Exception):
    """`--help` / `-h` was given; the CLI should print `format_help(settings_cls, prog)` and exit 0."""

    def __init__(self, settings_cls: type[BatonSettings]) -> None:
        super().__init__("help requested")
        self.settings_cls = settings_cls


# --------------------------------------------------------------------------------------------------------
# Durations


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_HINT = "must be a duration like 90s, 30m or 1h30m, or a number of seconds"


def parse_duration(value: Any) -> Any:
    """Go `time.ParseDuration` syntax ("1h30m", "90s", "1.5h") or plain seconds ("90", 90, 1.5)."""
    if isinstance(value, dt.timedelta) or value is None:
        return value
    if isinstance(value, bool):
        raise ValueError(_DURATION_HINT)
    if isinstance(value, int | float):
        return dt.timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(_DURATION_HINT)
    text = value.strip()
    try:
        return dt.timedelta(seconds=float(text))
    except ValueError:
        pass
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            raise ValueError(_DURATION_HINT)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(_DURATION_HINT)
    return dt.timedelta(seconds=total)


Duration = Annotated[dt.timedelta, BeforeValidator(parse_duration)]
"""A `timedelta` that also accepts Go duration strings and plain seconds; use it in app settings too."""


def _default_log_format() -> Literal["json", "console"]:
    try:
        return "console" if sys.stderr.isatty() else "json"
    except (AttributeError, ValueError):  # stderr replaced or closed
        return "json"


# --------------------------------------------------------------------------------------------------------
# The common settings


class BatonSettings(BaseSettings):
    """Settings common to every baton connector. Apps subclass this and add their own fields."""

    model_config = SettingsConfigDict(
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        validate_default=True,
    )

    client_id: str = Field("", description="ConductorOne client ID; setting it enables service (daemon) mode")
    client_secret: SecretStr | None = Field(None, description="ConductorOne client secret")
    provisioning: bool = Field(
        False,
        description="Enable provisioning (grant, revoke, account and credential changes)",
        json_schema_extra={"short": "p"},
    )
    skip_full_sync: bool = Field(False, description="Skip full sync tasks in service mode")
    task_concurrency: int = Field(3, ge=1, le=100, description="Number of tasks run concurrently")
    c1z_temp_dir: str | None = Field(None, description="Directory for temporary c1z files (must exist)")
    log_level: Literal["debug", "info", "warn", "error"] = Field(
        "info", description="Log level: debug, info, warn or error"
    )
    log_format: Literal["json", "console"] = Field(
        default_factory=_default_log_format,
        description="Log format: json or console",
        json_schema_extra={"help_default": "console when stderr is a terminal, else json"},
    )
    health_check: bool = Field(
        True,
        description="Serve /live, /ready, /health and /metrics in service mode and with --sync-interval",
    )
    health_check_port: int = Field(8081, ge=1, le=65535, description="Port of the health check server")
    health_check_bind_address: str = Field("127.0.0.1", description="Address the health check server binds")
    http_timeout_seconds: int = Field(
        300, ge=1, le=1800, description="Timeout in seconds of HTTP calls (upstream APIs and ConductorOne)"
    )
    file: str = Field(
        "sync.c1z",
        description="Path of the c1z file written by a one-shot sync",
        json_schema_extra={"short": "f"},
    )
    sync_resource_types: list[str] = Field(
        default_factory=list, description="Only sync these resource type IDs (comma-separated)"
    )
    skip_entitlements_and_grants: bool = Field(
        False, description="One-shot sync: skip entitlements and grants (resources only)"
    )
    skip_grants: bool = Field(False, description="One-shot sync: skip grants")
    sync_interval: Duration | None = Field(
        None, description="Repeat one-shot syncs at this interval (e.g. 30m, 1h30m, 90s); unset = sync once"
    )
    shutdown_grace_seconds: float = Field(
        20.0, ge=0, description="Seconds to let running tasks finish after SIGTERM"
    )
    c1_ca_file: str | None = Field(
        None, description="Extra PEM CA bundle trusted for the ConductorOne API (token endpoint and gRPC)"
    )
    sync_concurrency: int = Field(
        8, ge=1, le=256, description="Maximum concurrent listing calls made by the sync engine"
    )
    # The Go SDK's one-shot operations (connector/oneshot.py); not used in service mode.
    sync_resources: list[str] = Field(
        default_factory=list, description="One-shot: a partial sync of these resources only (TYPE:ID, ...)"
    )
    grant_entitlement: str = Field(
        "", description="One-shot: grant this entitlement ID (looked up in --file)"
    )
    grant_principal: str = Field("", description="One-shot: the principal resource ID to grant to")
    grant_principal_type: str = Field("", description="One-shot: the resource type of --grant-principal")
    revoke_grant: str = Field("", description="One-shot: revoke this grant ID (looked up in --file)")
    create_account_login: str = Field("", description="One-shot: create an account with this login")
    create_account_email: str = Field("", description="One-shot: the email of the account to create")
    # One-shot actions and deletions (connector/oneshot_actions.py), named as in the Go SDK.
    invoke_action: str = Field("", description="One-shot: invoke this action, print its result and exit")
    invoke_action_args: str = Field("", description="One-shot: the action's arguments as a JSON object")
    invoke_action_resource_type: str = Field("", description="One-shot: resource type of a resource action")
    delete_resource: str = Field("", description="One-shot: delete the resource with this id and exit")
    delete_resource_type: str = Field("", description="One-shot: resource type of --delete-resource")

    # Paths of secrets given as files, by field name, so that rotation can re-read them.
    _secret_files: dict[str, Path] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # parse_settings resolves flags, env and files itself; pydantic only validates what it is given.
        return (init_settings,)

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("sync_resources")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for item in value:
            type_id, sep, resource = item.partition(":")
            if not (sep and type_id and resource):
                raise ValueError(f"each must be TYPE:ID, e.g. group:1234 (not {item!r})")
        return value

    @field_validator("sync_interval")
    @classmethod
    def _positive_interval(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError("must be a positive duration")
        return value

    def secret_file(self, name: str) -> Path | None:
        """The file a secret field was read from (absolute path), or None if it was given directly."""
        return self._secret_files.get(name)


S = TypeVar("S", bound=BatonSettings)


# --------------------------------------------------------------------------------------------------------
# Field introspection

Kind = Literal["bool", "list", "secret", "value"]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True)
class _Spec:
    field: str
    kind: Kind
    names: tuple[str, ...]  # the field name and its aliases, snake_case
    short: str | None
    info: FieldInfo

    @property
    def label(self) -> str:
        return f"{_flag(self.names[0])} / {_env(self.names[0])}"

    def label_for(self, name: str) -> str:
        return f"{_flag(name)} / {_env(name)}"


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _strip_optional(args[0])
    if origin is Annotated:
        return _strip_optional(typing.get_args(tp)[0])
    return tp


def _kind(info: FieldInfo) -> Kind:
    tp = _strip_optional(info.annotation)
    if tp is bool:
        return "bool"
    if tp is SecretStr:
        return "secret"
    if typing.get_origin(tp) in (list, tuple, set, frozenset) or tp in (list, tuple, set, frozenset):
        return "list"
    return "value"


def _names(name: str, info: FieldInfo) -> tuple[str, ...]:
    out = [name]
    alias = info.validation_alias
    if isinstance(alias, str):
        out.append(alias)
    elif isinstance(alias, AliasChoices):
        out.extend(c for c in alias.choices if isinstance(c, str))
    if isinstance(info.alias, str):
        out.append(info.alias)
    return tuple(dict.fromkeys(n.replace("-", "_").lower() for n in out))


def _short(info: FieldInfo) -> str | None:
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        short = extra.get("short")
        if isinstance(short, str) and len(short) == 1:
            return short
    return None


_SPEC_CACHE: dict[type[BatonSettings], list[_Spec]] = {}


def _specs(cls: type[BatonSettings]) -> list[_Spec]:
    cached = _SPEC_CACHE.get(cls)
    if cached is not None:
        return cached
    specs = [
        _Spec(name, _kind(info), _names(name, info), _short(info), info)
        for name, info in cls.model_fields.items()
    ]
    # A clash (e.g. a field `token_file` next to a secret `token`) would make a flag ambiguous; catch it
    # when the class is first used rather than silently picking one.
    seen: dict[str, str] = {}
    for spec in specs:
        forms = list(spec.names)
        if spec.kind == "secret":
            forms += [n + FILE_SUFFIX for n in spec.names]
        if spec.short:
            forms.append("-" + spec.short)
        for form in forms:
            if form in seen and seen[form] != spec.field:
                raise TypeError(f"{cls.__name__}: {form!r} is used by both {seen[form]!r} and {spec.field!r}")
            seen[form] = spec.field
    _SPEC_CACHE[cls] = specs
    return specs


def _is_secret_field(cls: type[BatonSettings], name: str) -> bool:
    info = cls.model_fields.get(name)
    return info is not None and _kind(info) == "secret"


# --------------------------------------------------------------------------------------------------------
# Parsing


@dataclass
class _Raw:
    """One field's value before validation, and where it came from (for error messages)."""

    value: Any
    source: str  # e.g. "--task-concurrency" or "BATON_TASK_CONCURRENCY"
    name: str  # the (alias) name that supplied it


@dataclass
class _Collected:
    flags: dict[str, _Raw] = field(default_factory=dict)
    flag_files: dict[str, _Raw] = field(default_factory=dict)
    envs: dict[str, _Raw] = field(default_factory=dict)
    env_files: dict[str, _Raw] = field(default_factory=dict)


def _split_csv(value: str) -> list[str]:
    rows = list(csv.reader([value], skipinitialspace=True))
    return [item.strip() for item in (rows[0] if rows else []) if item.strip()]


def _go_bool(raw: str, spec: _Spec, source: str) -> bool:
    if raw in GO_TRUE:
        return True
    if raw in GO_FALSE:
        return False
    label = spec.label_for(_name_of(spec, source))
    raise SettingsError(f'invalid {label}: must be a boolean (true/false, t/f, 1/0) (got "{_clip(raw)}")')


def _name_of(spec: _Spec, source: str) -> str:
    """Which of a field's names a source string refers to (so messages echo what the user typed)."""
    for name in spec.names:
        if source in (_flag(name), _env(name), _flag(name + FILE_SUFFIX), _env(name + FILE_SUFFIX)):
            return name
    return spec.names[0]


# `<URL of your Confluence Data Center instance>`: the shape of the example Secret's values.
_PLACEHOLDER = re.compile(r"^\s*<[^<>]*>\s*$")
# The password of `scheme://user:password@host`, never echoed back.
_URL_PASSWORD = re.compile(r"((?:^|//)[^/@:\s]*):[^/@\s]*@")


def _clip(text: str, limit: int = 80) -> str:
    text = _URL_PASSWORD.sub(r"\1:***@", text.replace("\n", "\\n"))
    return text if len(text) <= limit else text[:limit] + "..."


def _parse_argv(specs: list[_Spec], argv: Sequence[str], into: _Collected) -> None:
    long_flags: dict[str, tuple[_Spec, str, bool]] = {}
    short_flags: dict[str, _Spec] = {}
    for spec in specs:
        for name in spec.names:
            long_flags[_flag(name)[2:]] = (spec, name, False)
            if spec.kind == "secret":
                long_flags[_flag(name + FILE_SUFFIX)[2:]] = (spec, name, True)
        if spec.short:
            short_flags[spec.short] = spec

    args = list(argv)
    last_bare_bool: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            if i < len(args):
                raise SettingsError(f'unexpected argument "{_clip(args[i])}"')
            break
        if arg.startswith("--"):
            key, eq, inline = arg[2:].partition("=")
            has_eq = eq == "="
            entry = long_flags.get(key)
            if entry is None:
                raise SettingsError(f"unknown flag --{key}")
            spec, name, is_file = entry
            shown = "--" + key
        elif arg.startswith("-") and len(arg) > 1:
            short, rest = arg[1], arg[2:]
            found = short_flags.get(short)
            if found is None:
                raise SettingsError(f"unknown shorthand flag -{short} in {arg}")
            spec, name, is_file = found, found.names[0], False
            has_eq, inline = (True, rest[1:]) if rest.startswith("=") else (bool(rest), rest)
            if spec.kind == "bool" and rest and not rest.startswith("="):
                raise SettingsError(f"unknown shorthand flag -{rest[0]} in {arg}")
            shown = "-" + short
        else:
            hint = ""
            if last_bare_bool is not None and (arg in GO_TRUE or arg in GO_FALSE):
                hint = f" (boolean flags take their value with '=': {last_bare_bool}={arg})"
            raise SettingsError(f'unexpected argument "{_clip(arg)}"{hint}')

        last_bare_bool = None
        value: Any
        if spec.kind == "bool" and not is_file:
            if has_eq:
                value = _go_bool(inline, spec, _flag(name))
            else:
                value = True
                last_bare_bool = shown
        else:
            if has_eq:
                text = inline
            elif i < len(args) and not args[i].startswith("--"):
                text = args[i]
                i += 1
            else:
                raise SettingsError(f"missing value for {shown} ({spec.label_for(name)})")
            value = text
        target = into.flag_files if is_file else into.flags
        source = _flag(name + FILE_SUFFIX) if is_file else _flag(name)
        if spec.kind == "list" and not is_file:
            # Like pflag's string slices: repeated flags accumulate and each may hold a CSV list.
            previous = target.get(spec.field)
            items = (previous.value if previous else []) + _split_csv(value)
            target[spec.field] = _Raw(items, source, name)
        else:
            _same_setting(target.get(spec.field), _Raw(value, source, name))
            target[spec.field] = _Raw(value, source, name)


def _same_setting(first: _Raw | None, second: _Raw | None) -> None:
    """Two flags spelling one setting differently (aliases) must agree; a repeated flag is ordinary
    precedence, as is a flag over an env var (env vars of two spellings are checked in _read_env)."""
    if first is None or second is None or first.name == second.name or first.value == second.value:
        return
    raise SettingsError(
        f"conflicting {first.source} and {second.source}: two names of one setting with different "
        "values; set only one of them"
    )


def _read_env(specs: list[_Spec], env: Mapping[str, str], into: _Collected) -> None:
    for spec in specs:
        forms: list[tuple[str, bool]] = [(n, False) for n in spec.names]
        if spec.kind == "secret":
            forms += [(n, True) for n in spec.names]
        for name, is_file in forms:
            var = _env(name + FILE_SUFFIX) if is_file else _env(name)
            # Like viper without AllowEmptyEnv: an empty variable counts as unset (k8s manifests often
            # carry blank placeholders).
            text = env.get(var, "")
            if text == "":
                continue
            target = into.env_files if is_file else into.envs
            previous = target.get(spec.field)
            if previous is not None:
                if previous.value != text:
                    raise SettingsError(f"conflicting {previous.source} and {var}: set only one of them")
                continue
            target[spec.field] = _Raw(text, var, name)


def _read_secret_file(path: Path, source: str) -> str:
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise SettingsError(f"cannot read {source} ({path}): {reason}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"cannot read {source} ({path}): not UTF-8 text") from None
    value = content.rstrip("\r\n")
    if value == "":
        raise SettingsError(f"invalid {source} ({path}): the file is empty")
    return value


def _scrub(message: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET_LEN:
            message = message.replace(secret, "[REDACTED]")
    return message


def parse_settings(cls: type[S], argv: Sequence[str], env: Mapping[str, str] | None = None) -> S:
    """Build `cls` from flags (argv without the program name and subcommands), env and defaults.

    Raises SettingsError (one line, no secret values) or HelpRequested.
    """
    if env is None:
        env = os.environ
    specs = _specs(cls)
    by_field = {s.field: s for s in specs}
    for arg in argv:
        if arg == "--":
            break
        if arg in ("-h", "--help"):
            raise HelpRequested(cls)

    collected = _Collected()
    _parse_argv(specs, argv, collected)
    _read_env(specs, env, collected)

    values: dict[str, Any] = {}
    sources: dict[str, _Raw] = {}
    secret_files: dict[str, Path] = {}
    secrets_seen: list[str] = []
    for spec in specs:
        direct = collected.flags.get(spec.field) or collected.envs.get(spec.field)
        if spec.kind == "secret":
            from_file = collected.flag_files.get(spec.field) or collected.env_files.get(spec.field)
            if direct is not None and from_file is not None:
                raise SettingsError(
                    f"conflicting {direct.source} and {from_file.source}: "
                    "give the secret either directly or as a file, not both"
                )
            if from_file is not None:
                path = Path(from_file.value).expanduser()
                # absolute() and not resolve(): k8s rotates mounted secrets by swapping a symlink, so the
                # path must be re-followed on every read.
                path = path.absolute()
                direct = _Raw(_read_secret_file(path, from_file.source), from_file.source, from_file.name)
                secret_files[spec.field] = path
            if direct is not None:
                secrets_seen.append(str(direct.value))
        if direct is None:
            continue
        value = direct.value
        if isinstance(value, str) and _PLACEHOLDER.match(value):
            shown = "" if spec.kind == "secret" else f' (got "{_clip(value)}")'
            raise SettingsError(
                f"invalid {spec.label_for(direct.name)}: still the example's placeholder; "
                f"put the real value there{shown}"
            )
        if spec.kind == "bool" and isinstance(value, str):
            value = _go_bool(value, spec, direct.source)
        elif spec.kind == "list" and isinstance(value, str):
            value = _split_csv(value)
        values[spec.field] = value
        sources[spec.field] = direct

    try:
        settings = cls(**values)
    except ValidationError as exc:
        raise SettingsError(_scrub(_describe(cls, by_field, sources, exc), secrets_seen)) from None
    except SettingsError as exc:
        raise SettingsError(_scrub(exc.message, secrets_seen)) from None
    settings._secret_files = secret_files
    has_secret = settings.client_secret is not None and bool(settings.client_secret.get_secret_value())
    if has_secret and not (settings.client_id or env.get("BATON_CLIENT_ID_FILE")):
        raise SettingsError(
            "--client-secret / BATON_CLIENT_SECRET is set without --client-id / BATON_CLIENT_ID: "
            "set both (service mode) or neither (one-shot sync)"
        )
    return settings


def _describe(
    cls: type[BatonSettings], by_field: dict[str, _Spec], sources: dict[str, _Raw], exc: ValidationError
) -> str:
    err = exc.errors(include_url=False)[0]
    loc = err.get("loc", ())
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    spec = _spec_for_loc(by_field, loc[0]) if loc else None
    if spec is None:
        return f"invalid configuration: {msg}"
    raw = sources.get(spec.field)
    label = spec.label_for(raw.name) if raw else spec.label
    kind = err.get("type", "")
    if kind == "missing":
        if spec.kind == "secret":
            return f"missing {label} (or {_env(spec.names[0] + FILE_SUFFIX)}): required"
        return f"missing {label}: required"
    what = _explain(kind, msg, err.get("ctx") or {}, spec.info)
    got = ""
    if spec.kind != "secret" and raw is not None:
        shown = raw.value if isinstance(raw.value, str) else ",".join(map(str, raw.value))
        got = f' (got "{_clip(str(shown))}")'
    return f"invalid {label}: {what}{got}"


def _spec_for_loc(by_field: dict[str, _Spec], key: Any) -> _Spec | None:
    if not isinstance(key, str):
        return None
    if key in by_field:
        return by_field[key]
    for spec in by_field.values():
        if key.replace("-", "_").lower() in spec.names:
            return spec
    return None


def _bounds(info: FieldInfo) -> tuple[Any, Any]:
    low = high = None
    for m in info.metadata:
        low = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else low
        high = getattr(m, "le", None) if getattr(m, "le", None) is not None else high
    return low, high


_COMPARISONS = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}


def _explain(kind: str, msg: str, ctx: Mapping[str, Any], info: FieldInfo) -> str:
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _bounds(info)
        if low is not None and high is not None:
            return f"must be between {low} and {high}"
        op = _COMPARISONS[kind]
        limit = next(iter(ctx.values()), "")
        return f"must be {op} {limit}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be an integer"
    if kind in ("float_parsing", "float_type"):
        return "must be a number"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    return msg[:1].lower() + msg[1:] if msg else "invalid value"


# --------------------------------------------------------------------------------------------------------
# Secrets


def secret_values(settings: BatonSettings) -> list[str]:
    """Every non-empty secret value in `settings` (for the log redactor)."""
    out: list[str] = []
    for name in type(settings).model_fields:
        if _is_secret_field(type(settings), name):
            value = getattr(settings, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
    return out


def reload_secret(settings: BatonSettings, name: str) -> str:
    """Re-read a secret given as a file (credential rotation), update `settings` and return the value.

    The new value is registered with the log redactor before anything can log it. A secret that was
    given directly has nothing to re-read: its current value is returned ("" when unset).
    """
    if not _is_secret_field(type(settings), name):
        raise KeyError(f"{name!r} is not a secret field of {type(settings).__name__}")
    path = settings.secret_file(name)
    if path is None:
        current = getattr(settings, name)
        return current.get_secret_value() if isinstance(current, SecretStr) else ""
    value = _read_secret_file(path, _env(name + FILE_SUFFIX))
    register_secret(value, slot=f"setting:{name}")
    setattr(settings, name, SecretStr(value))
    return value


# --------------------------------------------------------------------------------------------------------
# Non-field environment

# BATON_* variables read outside the settings (service mode, the c1z reader, the Go SDK's temp dir).
KNOWN_ENV = frozenset(
    {
        "BATON_HOST_ID",
        "BATON_C1_API_HOST",
        "BATON_GET_TASKS",
        "BATON_CLIENT_ID_FILE",
        "BATON_TMPDIR",
        "BATON_DECODER_MAX_DECODED_SIZE_MB",
    }
)


def unknown_env_warning(cls: type[BatonSettings], env: Mapping[str, str] | None = None) -> str | None:
    """One line naming the BATON_* variables nothing reads (a typo, another connector's key), each with
    the closest known name when there is one; None when there are none."""
    env = os.environ if env is None else env
    known = set(KNOWN_ENV)
    for spec in _specs(cls):
        known.update(_env(n) for n in spec.names)
        if spec.kind == "secret":
            known.update(_env(n + FILE_SUFFIX) for n in spec.names)
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
    if not unknown:
        return None
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        parts.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return f"ignoring unknown environment variable{'s' if len(parts) > 1 else ''}: {', '.join(parts)}"


def host_id(env: Mapping[str, str] | None = None) -> str:
    """Spec §4.5: BATON_HOST_ID when set (even empty), else the hostname; empty → "baton-sdk"."""
    if env is None:
        env = os.environ
    value = env["BATON_HOST_ID"] if "BATON_HOST_ID" in env else socket.gethostname()
    return value or "baton-sdk"


def c1_api_host(env: Mapping[str, str] | None = None) -> str | None:
    """BATON_C1_API_HOST (`host` or `host:port`) replacing the tenant host, or None."""
    if env is None:
        env = os.environ
    return env.get("BATON_C1_API_HOST") or None


# --------------------------------------------------------------------------------------------------------
# Help and CLI helpers


def _default_text(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("help_default"), str):
        return str(extra["help_default"])
    if info.is_required():
        return ""
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
    else:
        value = info.default
    # Like pflag, zero values are not shown.
    if value is None or value is False or value == "" or value == []:
        return ""
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def format_help(cls: type[BatonSettings], prog: str) -> str:
    """Every flag with its env var, default and description (and the _FILE forms of secrets)."""
    lines = [
        f"Usage: {prog} [flags]",
        "",
        "Flags (each also settable as the env var shown; flag > env > default):",
    ]
    for spec in _specs(cls):
        flags = [_flag(n) for n in spec.names]
        if spec.short:
            flags.insert(0, "-" + spec.short)
        if spec.kind == "list":
            metavar = " strings"
        elif spec.kind == "bool":
            metavar = ""
        elif spec.kind == "secret":
            metavar = " secret"
        else:
            metavar = " " + _metavar(spec.info)
        head = ", ".join(flags) + metavar
        envs = ", ".join(_env(n) for n in spec.names)
        desc = spec.info.description or ""
        default = _default_text(spec.info)
        if spec.info.is_required():
            desc += " (required)"
        elif default:
            desc += f" (default {default})"
        lines.append(f"  {head}")
        lines.append(f"      env {envs}")
        if desc:
            lines.append(f"      {desc}")
        if spec.kind == "secret":
            file_flags = ", ".join(_flag(n + FILE_SUFFIX) for n in spec.names)
            file_envs = ", ".join(_env(n + FILE_SUFFIX) for n in spec.names)
            lines.append(f"  {file_flags} path")
            lines.append(f"      env {file_envs}")
            lines.append("      Read the value from this file instead (re-read on credential rotation)")
    lines += ["", "  -h, --help", "      Show this help"]
    return "\n".join(lines) + "\n"


def _metavar(info: FieldInfo) -> str:
    tp = _strip_optional(info.annotation)
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is dt.timedelta:
        return "duration"
    if typing.get_origin(tp) is Literal:
        return "|".join(map(str, typing.get_args(tp)))
    return "string"


def exit_on_error(error: BaseException | str, *, stream: TextIO | None = None) -> NoReturn:
    """Print `error: <message>` to stderr and exit with status 2, without a traceback."""
    out = stream if stream is not None else sys.stderr
    print(f"error: {error}", file=out)
    out.flush()
    raise SystemExit(2)


def load_settings_or_exit(
    cls: type[S], argv: Sequence[str], prog: str, env: Mapping[str, str] | None = None
) -> S:
    """CLI wrapper: help → stdout and exit 0; a configuration error → `error: ...` on stderr and exit 2."""
    try:
        return parse_settings(cls, argv, env)
    except HelpRequested as req:
        sys.stdout.write(format_help(req.settings_cls, prog))
        sys.stdout.flush()
        raise SystemExit(0) from None
    except SettingsError as exc:
        exit_on_error(exc)
