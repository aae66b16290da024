"""`capi extract-referral` through the real CLI: formats, -o, summary, exit codes, store, signatures."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.webhooks import REFERRAL_KEYS

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
SECRET = "6f1e2d3c4b5a69788796a5b4c3d2e1f0"
WA = str(FIXTURES / "whatsapp/cloud_two_entries.json")
LOG = str(FIXTURES / "logs/retries_and_broken.ndjson")


def test_json_output_is_one_array_with_the_spec_keys(runner: CliRunner) -> None:
    result = runner.invoke(app, ["extract-referral", WA, "--no-store", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    assert len(records) == 2 and all(list(r) == list(REFERRAL_KEYS) for r in records)
    assert records[0]["ctwa_clid"].startswith("ARAkLkA8")
    assert "files 1, deliveries 1, messages 3, referrals 2, skipped 0, unreadable 0" in result.stderr


def test_json_shorthand_and_empty_result_is_an_empty_array(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["extract-referral", str(FIXTURES / "no_referrals.ndjson"), "--no-store", "--json"]
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []
    assert "skipped 3" in result.stderr


def test_ndjson_and_csv(runner: CliRunner) -> None:
    nd = runner.invoke(app, ["extract-referral", WA, "--no-store", "--format", "ndjson"])
    lines = [json.loads(x) for x in nd.stdout.splitlines()]
    rows = list(
        csv.DictReader(
            io.StringIO(runner.invoke(app, ["extract-referral", WA, "--no-store", "--format", "csv"]).stdout)
        )
    )
    assert [r["message_id"] for r in lines] == [r["message_id"] for r in rows]
    assert list(rows[0]) == list(REFERRAL_KEYS)
    assert rows[0]["bsuid"] == "" and lines[0]["bsuid"] is None


def test_table_is_a_readable_subset(runner: CliRunner) -> None:
    result = runner.invoke(app, ["extract-referral", WA, "--no-store"])
    assert result.exit_code == 0
    header = result.stdout.splitlines()[1]
    for column in ("channel", "user_id", "ctwa_clid", "ad_id", "timestamp", "origin"):
        assert column in header
    assert "profile_name" not in header and "905321234567" in result.stdout


def test_output_file(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "refs.ndjson"
    result = runner.invoke(app, ["extract-referral", WA, "--no-store", "--format", "ndjson", "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    assert len(out.read_text().splitlines()) == 2
    assert out.stat().st_mode & 0o777 == 0o600


def test_unreadable_lines_go_to_stderr_and_exit_1_after_the_results(runner: CliRunner) -> None:
    result = runner.invoke(app, ["extract-referral", LOG, "--no-store", "--format", "ndjson"])
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 3  # duplicates removed, the rest still processed
    assert f"{LOG}:3: truncated JSON" in result.stderr
    assert f"{LOG}:5: invalid JSON" in result.stderr
    assert "duplicates 3" in result.stderr and "unreadable 2" in result.stderr
    assert "Traceback" not in result.stderr


def test_stdin(runner: CliRunner) -> None:
    data = (FIXTURES / "twilio/inbound_form.txt").read_bytes()
    result = runner.invoke(app, ["extract-referral", "-", "--no-store", "--format", "json"], input=data)
    assert result.exit_code == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["user_id"] == "905551112233" and record["origin"] == "<stdin>:1"


def test_missing_path_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["extract-referral", str(tmp_path / "nope.json"), "--no-store"])
    assert result.exit_code == 2
    assert "nope.json: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_binary_file_exit_1(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    result = runner.invoke(app, ["extract-referral", str(tmp_path), WA, "--no-store", "--format", "ndjson"])
    assert result.exit_code == 1
    assert "blob.bin:1: binary file" in result.stderr
    assert len(result.stdout.splitlines()) == 2


def test_signatures_with_app_secret_env(runner: CliRunner, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("META_APP_SECRET", SECRET)
    signed = str(FIXTURES / "wrappers/signed.ndjson")
    result = runner.invoke(
        app, ["extract-referral", signed, "--no-store", "--app-secret-env", "META_APP_SECRET", "--json"]
    )
    assert [r["signature"] for r in json.loads(result.stdout)] == [
        "valid",
        "valid",
        "invalid",
        "unverifiable",
        "unverifiable",
    ]
    strict = runner.invoke(
        app,
        [
            "extract-referral",
            signed,
            "--no-store",
            "--app-secret-env",
            "META_APP_SECRET",
            "--require-valid-signature",
            "--json",
        ],
    )
    assert [r["message_id"] for r in json.loads(strict.stdout)] == ["wamid.SIGNED0001", "wamid.SIGNED0002"]
    assert "filtered out 3" in strict.stderr


def test_app_secret_from_capi_app_secret(runner: CliRunner, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CAPI_APP_SECRET", SECRET)
    result = runner.invoke(
        app, ["extract-referral", str(FIXTURES / "wrappers/request_log.ndjson"), "--no-store", "--json"]
    )
    assert [r["signature"] for r in json.loads(result.stdout)] == ["valid", "unverifiable"]


def test_unset_app_secret_env_and_strict_without_secret_are_usage_errors(runner: CliRunner) -> None:
    result = runner.invoke(app, ["extract-referral", WA, "--no-store", "--app-secret-env", "NOPE_SECRET"])
    assert result.exit_code == 2 and "NOPE_SECRET" in result.stderr
    result = runner.invoke(app, ["extract-referral", WA, "--no-store", "--require-valid-signature"])
    assert result.exit_code == 2 and "app secret" in result.stderr


def test_channel_filter(runner: CliRunner) -> None:
    result = runner.invoke(
        app, ["extract-referral", str(FIXTURES), "--no-store", "--channel", "instagram", "--json"]
    )
    assert {r["channel"] for r in json.loads(result.stdout)} == {"instagram"}
    bad = runner.invoke(app, ["extract-referral", WA, "--channel", "telegram"])
    assert bad.exit_code == 2


def test_store_is_idempotent(runner: CliRunner) -> None:
    first = runner.invoke(app, ["extract-referral", str(FIXTURES), "--format", "ndjson"])
    count = len(first.stdout.splitlines())
    assert f"stored {count} new, 0 already known" in first.stderr
    second = runner.invoke(app, ["extract-referral", str(FIXTURES), "--format", "ndjson"])
    assert f"stored 0 new, {count} already known" in second.stderr
    listed = runner.invoke(app, ["referrals", "list", "--format", "json"])
    assert len(json.loads(listed.stdout)) == count


def test_quiet_silences_the_summary_but_not_unreadable_lines(runner: CliRunner) -> None:
    result = runner.invoke(app, ["-q", "extract-referral", LOG, "--no-store", "--format", "ndjson"])
    assert "deliveries" not in result.stderr and ":3: truncated JSON" in result.stderr


def test_help_has_an_example(runner: CliRunner) -> None:
    result = runner.invoke(app, ["extract-referral", "--help"])
    assert result.exit_code == 0 and "Example: capi extract-referral" in result.stdout
