"""Configuration (SPEC §2): precedence, profiles, invalid files, secrets, file modes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from capi_cli.cli.app import app
from capi_cli.config import load_settings
from capi_cli.errors import ConfigError, UsageError

TOKEN = "EAAtesttokenSECRET123456789"

# setting -> (env var, profile value, env value, option value, default)
CASES = {
    "dataset_id": ("CAPI_DATASET_ID", "111", "222", "333", None),
    "graph_url": (
        "CAPI_GRAPH_URL",
        "http://profile.test",
        "http://env.test",
        "http://option.test",
        "https://graph.facebook.com",
    ),
    "api_version": ("CAPI_API_VERSION", "v24.0", "v26.0", "v27.0", "v26.0"),
    "whatsapp_business_account_id": ("CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID", "1", "2", "3", None),
    "page_id": ("CAPI_PAGE_ID", "10", "20", "30", None),
    "ig_account_id": ("CAPI_IG_ACCOUNT_ID", "100", "200", "300", None),
    "channel": ("CAPI_CHANNEL", "messenger", "instagram", "whatsapp", None),
    "default_country": ("CAPI_DEFAULT_COUNTRY", "IN", "TR", "AE", None),
    "currency": ("CAPI_CURRENCY", "INR", "TRY", "AED", None),
    "timezone": ("CAPI_TIMEZONE", "Asia/Kolkata", "Europe/Istanbul", "Asia/Dubai", "UTC"),
    "partner_agent": ("CAPI_PARTNER_AGENT", "p-profile", "p-env", "p-option", None),
}


def write_config(home: Path, data: dict) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("key", sorted(CASES))
def test_precedence_option_env_profile_default(key: str, capi_home: Path) -> None:
    env_name, in_profile, in_env, in_option, default = CASES[key]
    env = {"CAPI_HOME": str(capi_home)}
    assert getattr(load_settings(env=env), key) == default
    write_config(capi_home, {"profiles": {"default": {key: in_profile}}})
    assert getattr(load_settings(env=env), key) == in_profile
    env[env_name] = in_env
    assert getattr(load_settings(env=env), key) == in_env
    settings = load_settings(env=env, overrides={key: in_option})
    assert getattr(settings, key) == in_option
    assert settings.sources[key] == "option"


@pytest.mark.parametrize(
    ("key", "in_profile", "in_option", "default"),
    [
        ("batch_size", 500, 250, 1000),
        ("concurrency", 2, 8, 4),
        ("timeout", 5.0, 2.5, 20.0),
        ("max_retries", 1, 0, 5),
    ],
)
def test_precedence_numeric_settings(key, in_profile, in_option, default, capi_home: Path) -> None:
    env = {"CAPI_HOME": str(capi_home)}
    assert getattr(load_settings(env=env), key) == default
    write_config(capi_home, {"profiles": {"default": {key: in_profile}}})
    assert getattr(load_settings(env=env), key) == in_profile
    assert getattr(load_settings(env=env, overrides={key: in_option}), key) == in_option


def test_ledger_path_precedence(capi_home: Path, tmp_path: Path) -> None:
    env = {"CAPI_HOME": str(capi_home)}
    assert load_settings(env=env).ledger == str(capi_home / "ledger.sqlite3")
    write_config(capi_home, {"profiles": {"default": {"ledger": "shop.sqlite3"}}})
    assert load_settings(env=env).ledger == str(capi_home / "shop.sqlite3")
    env["CAPI_LEDGER"] = str(tmp_path / "env.sqlite3")
    assert load_settings(env=env).ledger == str(tmp_path / "env.sqlite3")


def test_token_sources(capi_home: Path) -> None:
    env = {"CAPI_HOME": str(capi_home), "SHOP_TOKEN": "from-named-env"}
    (capi_home / "tokens").mkdir(parents=True)
    (capi_home / "tokens" / "t").write_text("from-file\n")
    write_config(
        capi_home,
        {"profiles": {"a": {"access_token_env": "SHOP_TOKEN"}, "b": {"access_token_file": "tokens/t"}}},
    )
    assert load_settings(profile="a", env=env).access_token == "from-named-env"
    assert load_settings(profile="b", env=env).access_token == "from-file"
    env["CAPI_ACCESS_TOKEN"] = "from-capi-env"
    assert load_settings(profile="b", env=env).access_token == "from-capi-env"


def test_token_in_config_file_is_refused(capi_home: Path) -> None:
    write_config(capi_home, {"profiles": {"default": {"access_token": TOKEN}}})
    with pytest.raises(ConfigError) as err:
        load_settings(env={"CAPI_HOME": str(capi_home)})
    assert "access_token" in str(err.value) and TOKEN not in str(err.value)


def test_profile_selection(capi_home: Path) -> None:
    write_config(
        capi_home,
        {
            "default_profile": "b",
            "profiles": {"a": {"dataset_id": "1"}, "b": {"dataset_id": "2"}, "c": {"dataset_id": "3"}},
        },
    )
    env = {"CAPI_HOME": str(capi_home)}
    assert load_settings(env=env).dataset_id == "2"
    env["CAPI_PROFILE"] = "c"
    assert load_settings(env=env).dataset_id == "3"
    assert load_settings(profile="a", env=env).dataset_id == "1"
    with pytest.raises(ConfigError, match="no profile `zzz`"):
        load_settings(profile="zzz", env=env)


def test_bad_option_value_is_usage_error(capi_home: Path) -> None:
    with pytest.raises(UsageError, match="--batch-size"):
        load_settings(env={"CAPI_HOME": str(capi_home)}, overrides={"batch_size": 5000})


def test_bad_env_value_names_the_variable(capi_home: Path) -> None:
    with pytest.raises(ConfigError, match="CAPI_TIMEZONE"):
        load_settings(env={"CAPI_HOME": str(capi_home), "CAPI_TIMEZONE": "Mars/Base"})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("profiles:\n  default:\n    dataset_idd: '1'\n", "profiles.default.dataset_idd: unknown key"),
        ("profiles:\n  default:\n    batch_size: lots\n", "profiles.default.batch_size"),
        ("profiles:\n  default:\n    batch_size: 5000\n", "profiles.default.batch_size"),
        ("profiles: [\n", "invalid YAML"),
        ("colour: blue\n", "unknown key `colour`"),
        ("- a\n- b\n", "expected a mapping"),
        (
            "profiles:\n  default:\n    timezone: Nowhere/Land\n",
            "profiles.default.timezone: unknown timezone",
        ),
    ],
)
def test_invalid_config_file_is_one_line_exit_3(content: str, expected: str, capi_home: Path, runner) -> None:
    capi_home.mkdir(parents=True)
    path = capi_home / "config.yaml"
    path.write_text(content)
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and expected in lines[0]
    assert "Traceback" not in result.output


def test_missing_explicit_config_is_setup_error(runner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["--config", str(tmp_path / "nope.yaml"), "config", "show"])
    assert result.exit_code == 3
    assert "config file not found" in result.stderr


def test_global_options_accepted_after_the_command(capi_home: Path, runner) -> None:
    write_config(capi_home, {"profiles": {"default": {"dataset_id": "1"}, "shop": {"dataset_id": "42"}}})
    before = runner.invoke(app, ["--profile", "shop", "config", "show", "--json"])
    after = runner.invoke(app, ["config", "show", "--profile", "shop", "--json"])
    assert before.exit_code == after.exit_code == 0
    assert json.loads(before.stdout)["settings"]["dataset_id"] == "42"
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_config_show_json_shape_and_token_masked(capi_home: Path, runner, monkeypatch) -> None:
    monkeypatch.setenv("CAPI_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("CAPI_APP_SECRET", "appsecretSECRET987")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"profile", "config_file", "home", "settings", "sources"}
    assert doc["settings"]["access_token"] == "********"
    assert doc["sources"]["access_token"] == "env:CAPI_ACCESS_TOKEN"
    for args in (
        ["config", "show"],
        ["config", "show", "--json"],
        ["-v", "config", "show"],
        ["doctor", "--offline"],
        ["doctor", "--offline", "--json"],
        ["config", "path"],
    ):
        out = runner.invoke(app, args)
        assert TOKEN not in out.output and "appsecretSECRET987" not in out.output, args


def test_init_non_interactive_stores_token_in_0600_file(capi_home: Path, runner, monkeypatch) -> None:
    old = os.umask(0o000)
    try:
        result = runner.invoke(
            app,
            [
                "--profile",
                "shop",
                "config",
                "init",
                "--dataset-id",
                "1234",
                "--default-country",
                "in",
                "--token-stdin",
                "--yes",
            ],
            input=TOKEN + "\n",
        )
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    config = capi_home / "config.yaml"
    token_file = capi_home / "tokens" / "shop.token"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert TOKEN not in config.read_text() and TOKEN not in result.output
    data = yaml.safe_load(config.read_text())
    assert data["profiles"]["shop"] == {
        "dataset_id": "1234",
        "default_country": "IN",
        "access_token_file": "tokens/shop.token",
    }
    assert load_settings(profile="shop", env={"CAPI_HOME": str(capi_home)}).access_token == TOKEN


def test_ledger_file_is_0600_with_permissive_umask(capi_home: Path, runner) -> None:
    old = os.umask(0o000)
    try:
        result = runner.invoke(app, ["doctor", "--offline"])
    finally:
        os.umask(old)
    ledger = capi_home / "ledger.sqlite3"
    assert ledger.exists(), result.output
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600


def test_config_set_validates_and_writes(capi_home: Path, runner) -> None:
    ok = runner.invoke(app, ["config", "set", "currency", "inr"])
    assert ok.exit_code == 0
    assert load_settings(env={"CAPI_HOME": str(capi_home)}).currency == "INR"
    bad = runner.invoke(app, ["config", "set", "batch_size", "0"])
    assert bad.exit_code == 2 and "batch_size" in bad.stderr
    unknown = runner.invoke(app, ["config", "set", "colour", "blue"])
    assert unknown.exit_code == 2 and "unknown key `colour`" in unknown.stderr
    token = runner.invoke(app, ["config", "set", "access_token", TOKEN])
    assert token.exit_code == 2 and TOKEN not in token.output


def test_config_profiles_lists_profiles(capi_home: Path, runner) -> None:
    write_config(capi_home, {"default_profile": "b", "profiles": {"a": {}, "b": {}}})
    result = runner.invoke(app, ["config", "profiles", "--json"])
    assert json.loads(result.stdout) == {
        "config_file": str(capi_home / "config.yaml"),
        "default_profile": "b",
        "profiles": ["a", "b"],
    }


def test_doctor_reports_missing_settings_exit_3(runner) -> None:
    result = runner.invoke(app, ["doctor", "--offline", "--json"])
    assert result.exit_code == 3
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["dataset_id"]["ok"] and not checks["access_token"]["ok"] and checks["ledger"]["ok"]


def test_usage_error_exit_2(runner) -> None:
    result = runner.invoke(app, ["config", "show", "--format", "xml"])
    assert result.exit_code == 2


def test_python_dash_m_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "capi_cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert "Exit codes" in out.stdout and "Usage" in out.stdout


def test_version(runner) -> None:
    from capi_cli import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"capi {__version__}"


def test_capi_traceback_env_shows_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "CAPI_HOME": str(tmp_path), "CAPI_TRACEBACK": "1"}
    bad = [sys.executable, "-m", "capi_cli", "--config", str(tmp_path / "missing.yaml"), "config", "show"]
    with_tb = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=60)
    env.pop("CAPI_TRACEBACK")
    without = subprocess.run([*bad[:3], "-v", *bad[3:]], capture_output=True, text=True, env=env, timeout=60)
    assert with_tb.returncode == without.returncode == 3
    assert "Traceback" in with_tb.stderr
    assert "Traceback" not in without.stderr and without.stderr.count("\n") == 1
