"""`capi validate` through the CLI: JSON report, grouped human report, exit codes, stdin."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app

WABA = "104123456789012"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"COLUMNS": "200", "NO_COLOR": "1", "CAPI_HOME": str(tmp_path / "home")}


def invoke(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def orders(tmp_path: Path) -> str:
    now = int(time.time())
    return write(tmp_path, "orders.csv", (
        "event_name,event_time,email,phone,click_id,waba_id,value,currency,order_id,Notes\n"
        f"Purchase,{now - 60},ann@example.com,+14155552671,C1,{WABA},10,USD,A-1,x\n"
        f"Purchase,{now - 60},not-an-email,12,C2,{WABA},10,USD,A-2,y\n"
        f"Purchase,{now - 9 * 86400},bob@example.com,+14155552671,C3,{WABA},10,USD,A-3,z\n"
    ))


def test_json_report_and_exit_1(tmp_path: Path, env: dict[str, str]) -> None:
    code, out, err = invoke(env, "validate", orders(tmp_path), "--format", "json", "--strict-fields")
    assert code == 1
    report = json.loads(out)
    assert {k: report[k] for k in ("records", "valid", "invalid", "attributed", "unattributed", "filtered")} == {
        "records": 3, "valid": 1, "invalid": 2, "attributed": 0, "unattributed": 0, "filtered": 0,
    }
    found = {(p["line"], p["field"], p["code"], p["severity"]) for p in report["problems"]}
    assert found == {
        (2, "Notes", "unknown_column", "warning"),
        (3, "em", "invalid_email", "error"),
        (3, "ph", "invalid_phone", "error"),
        (4, "event_time", "event_too_old", "error"),
    }
    assert "2 invalid" in err and "Traceback" not in err


def test_json_shorthand(tmp_path: Path, env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "validate", orders(tmp_path), "--json")
    assert code == 1 and json.loads(out)["records"] == 3


def test_human_report_groups_problems_with_file_line_field_and_advice(tmp_path: Path, env: dict[str, str]) -> None:
    path = orders(tmp_path)
    code, out, err = invoke(env, "validate", path, "--strict-fields")
    assert code == 1
    assert "invalid_phone (error, 1): write the number with its country code" in out
    assert f"{path}:3  ph  invalid phone number '12'" in out
    assert f"{path}:4  event_time" in out
    assert "unknown_column (warning, 1)" in out
    assert out.index("event_too_old") < out.index("unknown_column")  # errors before warnings
    assert "3 record(s): 1 valid, 2 invalid, 0 attributed" in err


def test_valid_file_exits_0(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "ok.ndjson", json.dumps(
        {"event_name": "LeadSubmitted", "ctwa_clid": "C1", "waba_id": WABA, "event_time": int(time.time())}) + "\n")
    code, out, err = invoke(env, "validate", path)
    assert (code, out) == (0, "no problems found\n")
    assert "1 record(s): 1 valid, 0 invalid" in err


def test_map_set_and_input_format_from_stdin(tmp_path: Path, env: dict[str, str]) -> None:
    mapping = write(tmp_path, "map.yaml", "Total: value\nClick: ctwa_clid\n")
    data = "Click,Total\nC1,12.5\nC2,7\n"
    code, out, _ = invoke(env, "validate", "-", "--map", mapping, "--set", "event_name=Purchase", "--set",
                          "currency=EUR", "--set", f"waba_id={WABA}", "--input-format", "csv", "--format", "json",
                          stdin=data)
    assert code == 0, out
    assert json.loads(out)["valid"] == 2


def test_settings_supply_defaults(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, "e.csv", "event_name,click_id,phone\nLeadSubmitted,C1,030 1234567\n")
    code, out, _ = invoke({**env, "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID": WABA, "CAPI_DEFAULT_COUNTRY": "DE"},
                          "validate", path, "--format", "json")
    assert code == 0, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "missing.csv"], "no such file"),
        (["validate", "x.xlsx"], "export it as CSV"),
        (["validate", "x.txt"], "unknown file type"),
        (["validate", "e.csv", "--set", "nokey"], "KEY=VALUE"),
        (["validate", "e.csv", "--input-format", "xml"], "--input-format"),
    ],
)
def test_usage_errors_exit_2_without_traceback(tmp_path: Path, env: dict[str, str], args: list[str], message: str) -> None:
    write(tmp_path, "e.csv", "event_name\nPurchase\n")
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    args = [str(tmp_path / a) if a.endswith((".csv", ".xlsx")) else a for a in args]
    code, _, err = invoke(env, *args)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_help_has_an_example(env: dict[str, str]) -> None:
    code, out, _ = invoke(env, "validate", "--help")
    assert code == 0 and "Example: capi validate" in out
