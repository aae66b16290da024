"""`capi referrals list|lookup`: stored referrals read back, users found however they are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


@pytest.fixture
def stored(runner: CliRunner) -> CliRunner:
    result = runner.invoke(app, ["-q", "extract-referral", str(FIXTURES), "--format", "ndjson"])
    assert result.exit_code == 1  # the fixture log has two broken lines
    return runner


@pytest.mark.parametrize(
    "written", ["905321234567", "+90 532 123 45 67", "+90 (532) 123-45-67", "0090 532 123 45 67"]
)
def test_lookup_phone_however_written(stored: CliRunner, written: str) -> None:
    result = stored.invoke(app, ["referrals", "lookup", written, "--format", "json"])
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert {r["message_id"] for r in found} == {"wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggQTFCMkMzRDRFNUY2"}
    assert found[0]["ctwa_clid"].startswith("ARAkLkA8")
    assert "profile_name" not in found[0]  # names are never stored


@pytest.mark.parametrize(
    ("user", "channel"),
    [
        ("US.13491208655302741918", "whatsapp"),
        ("6123456789012345", "messenger"),
        ("987654321098765", "instagram"),
    ],
)
def test_lookup_bsuid_psid_igsid(stored: CliRunner, user: str, channel: str) -> None:
    found = json.loads(stored.invoke(app, ["referrals", "lookup", user, "--json"]).stdout)
    assert found and {r["channel"] for r in found} == {channel}
    assert all(r["user_id"] == user for r in found)


def test_lookup_unknown_user(stored: CliRunner) -> None:
    result = stored.invoke(app, ["referrals", "lookup", "+1 555 000 0000", "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert "no referral stored" in result.stderr


def test_list_filters(stored: CliRunner) -> None:
    every = json.loads(stored.invoke(app, ["referrals", "list", "--json"]).stdout)
    ig = json.loads(stored.invoke(app, ["referrals", "list", "--channel", "instagram", "--json"]).stdout)
    assert ig and {r["channel"] for r in ig} == {"instagram"} and len(ig) < len(every)
    recent = json.loads(stored.invoke(app, ["referrals", "list", "--since", "2026-01-08", "--json"]).stdout)
    assert recent and all(r["timestamp"] >= "2026-01-08" for r in recent)
    timestamps = [r["timestamp"] for r in every if r["timestamp"]]
    assert timestamps == sorted(timestamps, reverse=True)
    user = json.loads(
        stored.invoke(app, ["referrals", "list", "--user", "+90 555 111 22 33", "--json"]).stdout
    )
    assert [r["message_id"] for r in user] == [
        "SM3f1c2b5a9e8d7c6b5a4f3e2d1c0b9a8f"
    ]  # the ledger keeps no clear phone


def test_list_csv_and_table(stored: CliRunner) -> None:
    csv_out = stored.invoke(app, ["referrals", "list", "--channel", "messenger", "--format", "csv"]).stdout
    assert csv_out.splitlines()[0].startswith("channel,ctwa_clid,ad_id")
    table = stored.invoke(app, ["referrals", "list"]).stdout
    assert "6123456789012345" in table


def test_bad_options(stored: CliRunner) -> None:
    assert stored.invoke(app, ["referrals", "list", "--channel", "sms"]).exit_code == 2
    result = stored.invoke(app, ["referrals", "list", "--since", "last tuesday"])
    assert result.exit_code == 2 and "--since" in result.stderr


def test_since_is_parsed_like_every_other_since(runner) -> None:
    bad = runner.invoke(app, ["referrals", "list", "--since", "soon"])
    assert bad.exit_code == 2 and "--since 'soon'" in bad.stderr
    ok = runner.invoke(app, ["referrals", "list", "--since", "2026-01-01T03:00", "--json"],
                       env={"CAPI_TIMEZONE": "Europe/Istanbul"})
    assert ok.exit_code == 0, ok.output



@pytest.mark.parametrize("written", ["0532 123 45 67", "532 123 45 67"])
def test_lookup_reads_a_national_number_with_default_country_as_validate_does(
    stored: CliRunner, written: str
) -> None:
    without = stored.invoke(app, ["referrals", "lookup", written, "--format", "json"])
    assert json.loads(without.stdout) == [] and "no referral stored" in without.stderr
    for env in ({"CAPI_DEFAULT_COUNTRY": "TR"}, {}):
        if not env:  # the profile's default_country counts the same as the env variable
            paths = json.loads(stored.invoke(app, ["config", "path", "--format", "json"]).stdout)
            Path(paths["config_file"]).write_text("profiles:\n  default:\n    default_country: TR\n")
        result = stored.invoke(app, ["referrals", "lookup", written, "--format", "json"], env=env)
        assert result.exit_code == 0, result.stderr
        assert {r["message_id"] for r in json.loads(result.stdout)} == {
            "wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggQTFCMkMzRDRFNUY2"
        }
