"""`capi hash FIELD VALUE...`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"COLUMNS": "200", "NO_COLOR": "1", "CAPI_HOME": str(tmp_path)}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_prints_the_hash(env: dict[str, str]) -> None:
    assert invoke(env, "hash", "em", " John@Example.com ") == (0, sha("john@example.com") + "\n", "")


def test_normalized_and_several_values(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "hash", "phone", "+1 (415) 555-2671", "0044 7911 123456", "--normalized")
    assert code == 0
    assert out.splitlines() == [f"14155552671\t{sha('14155552671')}", f"447911123456\t{sha('447911123456')}"]


def test_json(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "hash", "st", "California", "--normalized", "--format", "json")
    assert code == 0
    assert json.loads(out) == [{"field": "st", "value": "California", "hash": sha("ca"), "normalized": "ca"}]


def test_default_country_from_settings(env: dict[str, str]) -> None:
    code, out, _ = invoke({**env, "CAPI_DEFAULT_COUNTRY": "TR"}, "hash", "ph", "0532 123 45 67", "--normalized")
    assert code == 0 and out.startswith("905321234567\t")


def test_already_hashed_passes_through(env: dict[str, str]) -> None:
    digest = sha("x")
    assert invoke(env, "hash", "external_id", digest.upper())[1] == digest + "\n"


def test_invalid_value_exit_1_others_still_printed(env: dict[str, str]) -> None:
    code, out, err = invoke(env, "hash", "em", "bad", "ok@example.com")
    assert code == 1
    assert out == sha("ok@example.com") + "\n"
    assert "em: not an email address: 'bad'" in err and "Traceback" not in err


def test_unhashed_field_is_a_usage_error(env: dict[str, str]) -> None:
    code, _, err = invoke(env, "hash", "ctwa_clid", "abc")
    assert code == 2 and "not hashed" in err
