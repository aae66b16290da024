"""Settings and profiles.

Precedence, highest first (SPEC §2): command-line option > environment variable > profile in the
config file > built-in default. It is written once, in `_resolve`. Everything lives under one
home directory (`CAPI_HOME`) so one variable moves config, token files and ledger together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capi_cli.errors import ConfigError, UsageError
from capi_cli.ledger import location
from capi_cli.rules import API_VERSION, GRAPH_URL
from capi_cli.settings import (
    DEFAULTS,
    ENV_VARS,
    PROFILE_KEYS,
    RESOLVED_SETTINGS,
    SECRET_SETTINGS,
    check_value,
    profile_model,
)

__all__ = [
    "APP_NAME",
    "PROFILE_KEYS",
    "Settings",
    "check_value",
    "load_settings",
    "mask",
]

APP_NAME = "capi"

@dataclass(frozen=True)
class Settings:
    home: Path
    config_file: Path
    profile: str
    dataset_id: str | None = None
    access_token: str | None = field(default=None, repr=False)
    graph_url: str = GRAPH_URL
    api_version: str = API_VERSION
    ledger: str = ""
    whatsapp_business_account_id: str | None = None
    page_id: str | None = None
    ig_account_id: str | None = None
    channel: str | None = None
    default_country: str | None = None
    currency: str | None = None
    timezone: str = "UTC"
    locale: str | None = None
    partner_agent: str | None = None
    app_secret: str | None = field(default=None, repr=False)
    batch_size: int = 1000
    concurrency: int = 4
    timeout: float = 20.0
    max_retries: int = 5
    attribution_window_days: int = 7
    ig_account_field: str = "ig_account_id"
    # where each value came from: option | env:NAME | profile | default
    sources: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def require_send(self) -> None:
        """The settings without which nothing can be sent."""
        if not self.dataset_id:
            raise ConfigError(
                "no dataset id: set CAPI_DATASET_ID, or `capi config set dataset_id ID` in the profile"
            )
        if not self.access_token:
            raise ConfigError(
                "no access token: set CAPI_ACCESS_TOKEN, or run `capi config init` to store it in a "
                "0600 token file referenced by the profile"
            )

    def display(self) -> dict[str, Any]:
        """The settings as shown to a user: secrets masked, never their value."""
        shown: dict[str, Any] = {}
        for name in ("profile", "access_token", *RESOLVED_SETTINGS):
            value = getattr(self, name)
            if name in SECRET_SETTINGS:
                value = mask(value)
            elif name == "ledger" and value:
                value = location.shown(value)  # a PostgreSQL URL's password
            shown[name] = value
        return shown


def mask(secret: str | None) -> str | None:
    """A secret as shown anywhere: that it is set, never any of its characters."""
    return None if not secret else "********"


# -- locating files ------------------------------------------------------------------------------


def home_dir(env: Mapping[str, str]) -> Path | None:
    home = env.get("CAPI_HOME")
    return Path(home).expanduser() if home else None


def config_path(config_file: str | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file and whether the user named it explicitly (then it must exist)."""
    if config_file:
        return Path(config_file).expanduser(), True
    if env.get("CAPI_CONFIG"):
        return Path(env["CAPI_CONFIG"]).expanduser(), True
    home = home_dir(env)
    if home is not None:
        return home / "config.yaml", False
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME)) / "config.yaml", False


def default_ledger_path(env: Mapping[str, str]) -> Path:
    home = home_dir(env)
    if home is not None:
        return home / "ledger.sqlite3"
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME)) / "ledger.sqlite3"


def effective_home(env: Mapping[str, str], config_file: Path) -> Path:
    return home_dir(env) or config_file.parent


# -- reading and writing the config file ---------------------------------------------------------


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (run `capi config init`)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `default_profile` and `profiles`")
    unknown = set(data) - {"default_profile", "profiles"}
    if unknown:
        key = sorted(map(str, unknown))[0]
        raise ConfigError(f"{path}: unknown key `{key}` (the file holds `default_profile` and `profiles`)")
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: `profiles` must be a mapping of profile name to settings")
    for name, body in profiles.items():
        validate_profile(path, str(name), body)
    default_profile = data.get("default_profile")
    if default_profile is not None and not isinstance(default_profile, str):
        raise ConfigError(f"{path}: `default_profile` must be a profile name")
    return data


def validate_profile(path: Path, name: str, body: Any) -> dict[str, Any]:
    from pydantic import ValidationError

    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: profiles.{name} must be a mapping of settings")
    if "access_token" in body:
        raise ConfigError(
            f"{path}: profiles.{name}.access_token: a token is never stored in the config file; "
            "use access_token_env: NAME or access_token_file: PATH"
        )
    try:
        model = profile_model().model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].lower()
        raise ConfigError(f"{path}: profiles.{name}.{key}: {problem}") from None
    checked: dict[str, Any] = model.model_dump(exclude_none=True)
    for key, value in checked.items():
        try:
            checked[key] = check_value(key, value)
        except ValueError as exc:
            raise ConfigError(f"{path}: profiles.{name}.{key}: {exc}") from None
    return checked


def write_private(path: Path, text: str) -> None:
    """Write a file capi creates: mode 0600 whatever the umask, replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_config_file(path: Path, data: Mapping[str, Any]) -> None:
    import yaml

    header = "# capi configuration: see `capi config --help`. Tokens live in files or env vars, not here.\n"
    write_private(path, header + yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True))


# -- the one place precedence lives --------------------------------------------------------------


def _resolve(
    key: str,
    overrides: Mapping[str, Any],
    env: Mapping[str, str],
    profile: Mapping[str, Any],
) -> tuple[Any, str]:
    """option > environment > profile > default, each checked with the same rules."""
    if key in overrides:
        try:
            return check_value(key, overrides[key]), "option"
        except ValueError as exc:
            raise UsageError(f"--{key.replace('_', '-')}: {exc}") from None
    name = ENV_VARS.get(key)
    if name and env.get(name, "") != "":
        try:
            return check_value(key, env[name]), f"env:{name}"
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if key in profile:
        return profile[key], "profile"
    return DEFAULTS.get(key), "default"


def _token_from_profile(
    profile: Mapping[str, Any], env: Mapping[str, str], config_file: Path, name: str
) -> str | None:
    if profile.get("access_token_env"):
        var = profile["access_token_env"]
        token = env.get(var)
        if not token:
            raise ConfigError(
                f"{config_file}: profiles.{name}.access_token_env names {var}, which is not set"
            )
        return token.strip()
    if profile.get("access_token_file"):
        token_path = Path(profile["access_token_file"]).expanduser()
        if not token_path.is_absolute():
            token_path = config_file.parent / token_path
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{config_file}: profiles.{name}.access_token_file: cannot read {token_path}: {exc.strerror}"
            ) from None
        if not token:
            raise ConfigError(f"{config_file}: profiles.{name}.access_token_file: {token_path} is empty")
        return token
    return None


def load_settings(
    profile: str | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    overrides = dict(overrides or {})
    path, explicit = config_path(config_file, env)
    data: dict[str, Any] = {}
    if explicit or path.exists():
        data = read_config_file(path)
    profiles = data.get("profiles") or {}

    requested = profile or env.get("CAPI_PROFILE") or None
    name = requested or data.get("default_profile") or "default"
    if name not in profiles and (requested or data.get("default_profile")):
        available = ", ".join(sorted(map(str, profiles))) or "none"
        raise ConfigError(f"{path}: no profile `{name}` (profiles: {available})")
    body = validate_profile(path, name, profiles.get(name)) if name in profiles else {}

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in RESOLVED_SETTINGS:
        values[key], sources[key] = _resolve(key, overrides, env, body)

    # The token never comes from a plain option: env, then the profile's env var or file.
    if env.get("CAPI_ACCESS_TOKEN"):
        values["access_token"], sources["access_token"] = (
            env["CAPI_ACCESS_TOKEN"].strip(),
            "env:CAPI_ACCESS_TOKEN",
        )
    else:
        values["access_token"] = _token_from_profile(body, env, path, name)
        sources["access_token"] = "profile" if values["access_token"] else "default"

    if not values["ledger"]:
        values["ledger"], sources["ledger"] = str(default_ledger_path(env)), "default"
    elif sources["ledger"] == "profile" and not location.is_postgres(values["ledger"]):
        ledger = Path(values["ledger"]).expanduser()
        values["ledger"] = str(ledger if ledger.is_absolute() else path.parent / ledger)

    return Settings(
        home=effective_home(env, path),
        config_file=path,
        profile=name,
        sources=sources,
        **values,
    )
