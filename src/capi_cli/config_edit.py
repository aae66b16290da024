"""Writing profiles: `capi config init` and `capi config set`.

Every value is checked with the same rules as when it is read, so a file capi wrote always loads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from capi_cli.config import (
    PROFILE_KEYS,
    config_path,
    read_config_file,
    validate_profile,
    write_config_file,
    write_private,
)
from capi_cli.errors import UsageError


def _load(config_file: str | None) -> tuple[Path, dict[str, Any]]:
    path, _ = config_path(config_file, os.environ)
    data = read_config_file(path) if path.exists() else {}
    data.setdefault("profiles", {})
    return path, data


def _profile_name(requested: str | None, data: Mapping[str, Any]) -> str:
    name = requested or os.environ.get("CAPI_PROFILE") or data.get("default_profile") or "default"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UsageError(f"--profile: {name!r} is not a valid profile name (letters, digits, _ . -)")
    return name


def set_profile_value(config_file: str | None, profile: str | None, key: str, value: str) -> tuple[Path, str]:
    if key in {"access_token", "app_secret"}:
        raise UsageError(
            f"{key} is never stored in the config file; use `capi config init` (token file) "
            "or access_token_env, or the environment variable"
        )
    if key not in PROFILE_KEYS:
        raise UsageError(f"unknown key `{key}`; profile keys: {', '.join(PROFILE_KEYS)}")
    path, data = _load(config_file)
    name = _profile_name(profile, data)
    body = dict(data["profiles"].get(name) or {})
    if value == "":
        body.pop(key, None)
    else:
        body[key] = value
    # validate_profile raises ConfigError naming file, key and problem; for a value the user
    # just typed that is a usage error.
    try:
        checked = validate_profile(path, name, body)
    except Exception as exc:  # noqa: BLE001 - re-raised as the user's usage error
        from capi_cli.errors import ConfigError

        if isinstance(exc, ConfigError):
            raise UsageError(str(exc)) from None
        raise
    data["profiles"][name] = checked
    data.setdefault("default_profile", name)
    write_config_file(path, _ordered(data))
    return path, name


def init_profile(
    config_file: str | None,
    profile: str | None,
    values: Mapping[str, Any],
    *,
    token: str | None,
    token_env: str | None,
    make_default: bool,
) -> tuple[Path, str, Path | None]:
    path, data = _load(config_file)
    name = _profile_name(profile, data)
    body = dict(data["profiles"].get(name) or {})
    body.update({k: v for k, v in values.items() if v not in (None, "")})
    token_file: Path | None = None
    if token_env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token_env):
            raise UsageError(f"--token-env: {token_env!r} is not an environment variable name")
        body["access_token_env"] = token_env
        body.pop("access_token_file", None)
    elif token:
        token_file = path.parent / "tokens" / f"{name}.token"
        write_private(token_file, token + "\n")
        os.chmod(token_file.parent, 0o700)
        body["access_token_file"] = str(Path("tokens") / f"{name}.token")
        body.pop("access_token_env", None)
    try:
        checked = validate_profile(path, name, body)
    except Exception as exc:  # noqa: BLE001
        from capi_cli.errors import ConfigError

        if isinstance(exc, ConfigError):
            raise UsageError(str(exc)) from None
        raise
    data["profiles"][name] = checked
    if make_default or not data.get("default_profile"):
        data["default_profile"] = name
    write_config_file(path, _ordered(data))
    return path, name, token_file


def _ordered(data: Mapping[str, Any]) -> dict[str, Any]:
    return {"default_profile": data.get("default_profile"), "profiles": data.get("profiles") or {}}
