"""extract-referral on real-shaped payloads (tests/fixtures/real_webhooks, sources in its README)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.webhooks import ExtractStats, Referral, Unreadable, Unrecognised, extract

REAL = Path(__file__).parent / "fixtures" / "real_webhooks"
PAYLOADS = sorted(p for p in REAL.iterdir() if p.suffix in (".json", ".ndjson", ".txt"))


def found(*paths: Path, **options: Any) -> tuple[list[Referral], ExtractStats, list[Any]]:
    stats = ExtractStats()
    items = list(extract([str(p) for p in paths], stats=stats, **options))
    return [i for i in items if isinstance(i, Referral)], stats, [i for i in items if not isinstance(i, Referral)]


# file -> (ad records: (channel, user_id, ctwa_clid prefix or ad_id), non_ad, unrecognised)
EXPECTED: dict[str, tuple[list[tuple[str, str | None, str | None]], int, int]] = {
    "meta_wa_ctwa_ad.json": ([("whatsapp", "919876543210", "ARAkLkA8")], 0, 0),
    "meta_wa_ctwa_post.json": ([("whatsapp", "905321234567", "ARAkPost")], 0, 0),
    "meta_wa_status_ad_no_clid.json": ([("whatsapp", "5511987654321", "120215474372380456")], 0, 0),
    "meta_wa_statuses_multi_entry.json": ([], 0, 0),
    "named_payloads_reaction_text_image.json": ([], 0, 0),
    "meta_wa_order.json": ([], 0, 0),
    "meta_wa_flow_reply.json": ([], 0, 0),
    "meta_wa_system_changed_number.json": ([], 0, 0),
    "meta_wa_unsupported_errors.json": ([], 0, 0),
    "multi_entry_two_businesses.json": (
        [("whatsapp", "919876543210", "ARAkLkA8"), ("whatsapp", "919876543210", "ARAkSecond")],
        0,
        0,
    ),
    "meta_messenger_ad_referral.json": ([("messenger", "6123456789012345", "120210987654321098")], 0, 0),
    "meta_messenger_shortlink.json": ([], 1, 0),
    "meta_messenger_shops_product.json": ([], 1, 0),
    "meta_messenger_chat_plugin_user_ref.json": ([], 1, 0),
    "meta_messenger_echo_reaction_read.json": ([], 0, 0),
    "meta_instagram_ad_message.json": ([("instagram", "1254459154682919", "120219876543210987")], 0, 0),
    "instagram_no_object.json": ([("instagram", "1254459154682920", "120219876543210988")], 0, 0),
    "page_or_instagram_undecided.json": ([("messenger", "6123456789012399", "120210987654321099")], 0, 0),
    "gupshup_v2_ctwa.json": ([("whatsapp", "918877665544", "ARAkGupshup")], 0, 0),
    "gupshup_v2_message_event.json": ([], 0, 0),
    "aws_eum_sns.json": ([("whatsapp", "393462454282", "ARAkAwsEum")], 0, 0),
    "aws_eum_eventbridge.json": ([("whatsapp", "6281234567890", "ARAkEventBridge")], 0, 0),
    "twilio_request_log_date_header.ndjson": ([("whatsapp", "905551234567", "ARAkTwilioDate")], 0, 0),
    "twilio_form_no_time.txt": ([("whatsapp", "905559876543", "ARAkTwilioNoTime")], 0, 0),
    "twilio_event_streams.json": ([("whatsapp", "5511955554444", "ARAkTwilioEvent")], 0, 0),
    "edna_referral.json": ([("whatsapp", "79031234567", "120215474372380555")], 0, 0),
    "api_gateway_twilio_base64.json": ([("whatsapp", "6281398765432", "ARAkTwilioApi")], 0, 0),
    "unknown_provider_shape.ndjson": ([], 0, 2),
}


def test_every_payload_file_has_an_expectation_and_a_readme_line() -> None:
    assert sorted(EXPECTED) == [p.name for p in PAYLOADS]
    readme = (REAL / "README.md").read_text()
    assert all(f"`{p.name}`" in readme for p in PAYLOADS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_real_payload(name: str) -> None:
    ads, non_ad, unrecognised = EXPECTED[name]
    records, stats, others = found(REAL / name)
    got = [(r.channel, r.user_id, r.ctwa_clid or r.ad_id) for r in records]
    assert [(c, u, (k or "")[: len(p or "")]) for (c, u, k), (_, _, p) in zip(got, ads, strict=False)] == ads
    assert len(got) == len(ads)
    assert (stats.non_ad, stats.unrecognised, stats.unreadable) == (non_ad, unrecognised, 0)
    assert not [o for o in others if isinstance(o, Unreadable)]
    assert all(r.timestamp for r in records)  # every record has a time


def test_all_files_through_cat_give_what_each_file_gives() -> None:
    """The issue's `cat *.json | capi extract-referral -`: one-line and pretty documents, form bodies."""
    one_by_one: list[tuple[Any, ...]] = []
    for path in PAYLOADS:
        if path.name == "twilio_form_no_time.txt":
            continue  # its time is the file's date: through a pipe it is the time of reading
        one_by_one += [(r.channel, r.user_id, r.ctwa_clid, r.ad_id, r.message_id, r.timestamp) for r in found(path)[0]]
    stream = b"".join(p.read_bytes() for p in PAYLOADS if p.name != "twilio_form_no_time.txt")
    stats = ExtractStats()
    items = list(extract(["-"], stdin=io.BytesIO(stream), stats=stats))
    piped = [(r.channel, r.user_id, r.ctwa_clid, r.ad_id, r.message_id, r.timestamp) for r in items if isinstance(r, Referral)]
    assert piped == one_by_one and len(piped) >= 15
    assert stats.unreadable == 0 and stats.non_ad == 3 and stats.unrecognised == 2


def test_non_ad_referrals_are_listed_only_with_all_referrals_and_never_carry_an_ad_id() -> None:
    names = ["meta_messenger_shortlink.json", "meta_messenger_shops_product.json", "meta_messenger_chat_plugin_user_ref.json"]
    assert found(*(REAL / n for n in names))[0] == []
    listed, stats, _ = found(*(REAL / n for n in names), all_referrals=True)
    assert [(r.source_type, r.ad_id, r.user_id) for r in listed] == [
        ("SHORTLINK", None, "6123456789012346"),
        ("PRODUCT", None, "6123456789012347"),
        ("CUSTOMER_CHAT_PLUGIN", None, None),  # a user_ref is never a user id
    ]
    assert stats.non_ad == 3


def test_two_businesses_sharing_a_message_id_both_survive() -> None:
    records, stats, _ = found(REAL / "multi_entry_two_businesses.json")
    assert [(r.business_id, r.phone_number_id) for r in records] == [
        ("102290129340398", "106540352242922"),
        ("201987654321098", "209876543210987"),
    ]
    assert stats.duplicates == 0


def test_times_come_from_the_dump_else_the_file_date_marked_estimated() -> None:
    times = {p.name: found(p)[0][0] for p in PAYLOADS if EXPECTED[p.name][0]}
    assert times["twilio_request_log_date_header.ndjson"].timestamp == "2026-01-05T09:30:00Z"  # Date header
    assert times["api_gateway_twilio_base64.json"].timestamp == "2026-01-05T12:00:00Z"  # requestContext
    assert times["edna_referral.json"].timestamp == "2026-01-05T11:20:00Z"  # receivedAt
    assert times["twilio_event_streams.json"].timestamp == "2026-01-05T10:15:00Z"
    assert times["gupshup_v2_ctwa.json"].timestamp == "2026-01-05T10:46:40Z"  # envelope ms
    assert not any(r.timestamp_estimated for n, r in times.items() if n != "twilio_form_no_time.txt")
    no_time = times["twilio_form_no_time.txt"]
    assert no_time.timestamp_estimated
    mtime = (REAL / "twilio_form_no_time.txt").stat().st_mtime
    from datetime import UTC, datetime

    assert no_time.timestamp == datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_echo_with_a_referral_is_the_business_own_message() -> None:
    records, stats, _ = found(REAL / "meta_messenger_echo_reaction_read.json")
    assert records == [] and stats.skipped == 1


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def test_unrecognised_shape_in_the_summary_and_its_keys_with_v(runner: CliRunner, tmp_path: Path) -> None:
    env = ENV | {"CAPI_HOME": str(tmp_path)}
    path = str(REAL / "unknown_provider_shape.ndjson")
    result = runner.invoke(app, ["extract-referral", path, "--no-store", "--json"], env=env)
    assert result.exit_code == 0
    assert "unrecognised 2" in result.stderr and "warning: 2 document(s) in a shape capi does not recognise" in result.stderr
    assert "unrecognised document" not in result.stderr
    result = runner.invoke(app, ["-v", "extract-referral", path, "--no-store", "--json"], env=env)
    assert f"{path}:1: unrecognised document (top-level keys: eventType, waId, senderName, text, whatsappMessageId, created)" in result.stderr
    assert f"{path}:2: unrecognised document (top-level keys: event, ok)" in result.stderr


def test_channel_undecided_is_a_warning_naming_channel(runner: CliRunner, tmp_path: Path) -> None:
    env = ENV | {"CAPI_HOME": str(tmp_path)}
    path = str(REAL / "page_or_instagram_undecided.json")
    result = runner.invoke(app, ["extract-referral", path, "--no-store", "--json"], env=env)
    assert json.loads(result.stdout)[0]["channel"] == "messenger"
    assert "could be Messenger or Instagram" in result.stderr and "--channel instagram" in result.stderr
    result = runner.invoke(app, ["extract-referral", path, "--no-store", "--json", "--channel", "instagram"], env=env)
    assert json.loads(result.stdout)[0]["channel"] == "instagram"
    assert "could be Messenger or Instagram" not in result.stderr
    # An Instagram account id says Instagram: no warning, no guess.
    result = runner.invoke(app, ["extract-referral", str(REAL / "instagram_no_object.json"), "--no-store", "--json"], env=env)
    assert json.loads(result.stdout)[0]["channel"] == "instagram" and "warning" not in result.stderr


def test_items_are_referrals_unreadables_or_unrecognised() -> None:
    _, _, others = found(*PAYLOADS)
    assert all(isinstance(o, Unreadable | Unrecognised) for o in others)


FORM = (REAL / "twilio_form_no_time.txt").read_text().strip()


@pytest.mark.parametrize(
    ("wrapper", "expected"),
    [
        ({"received_at": "2026-01-07T08:00:00+03:00", "raw_body": FORM}, "2026-01-07T05:00:00Z"),  # request log
        ({"uuid": "8d4a", "content": FORM, "created_at": "2026-01-08 00:00:01"}, "2026-01-08T00:00:01Z"),  # webhook.site
        ({"requestContext": {"timeEpoch": 1767830400123}, "body": FORM}, "2026-01-08T00:00:00Z"),  # API GW HTTP API
        ({"headers": {"date": ["Thu, 08 Jan 2026 00:00:00 GMT"]}, "body": FORM}, "2026-01-08T00:00:00Z"),
        ({"data": [{"content": FORM, "created_at": "2026-01-09 10:00:00"}]}, "2026-01-09T10:00:00Z"),  # innermost wins
    ],
)
def test_the_best_time_the_dump_holds(tmp_path: Path, wrapper: dict, expected: str) -> None:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(wrapper))
    (record,), stats, _ = found(path)
    assert (record.timestamp, record.timestamp_estimated, stats.estimated) == (expected, False, 0)


def test_whatsapp_referral_without_ad_source_or_click_id_is_no_ad(tmp_path: Path) -> None:
    doc = json.loads((REAL / "meta_wa_ctwa_ad.json").read_text())
    referral = doc["entry"][0]["changes"][0]["value"]["messages"][0]["referral"]
    for key in ("source_type", "ctwa_clid"):
        del referral[key]
    (tmp_path / "d.json").write_text(json.dumps(doc))
    records, stats, _ = found(tmp_path / "d.json")
    assert records == [] and stats.non_ad == 1
    (listed,), _, _ = found(tmp_path / "d.json", all_referrals=True)
    assert (listed.ad_id, listed.source_type) == (None, "unknown")


def test_messenger_ads_context_without_ad_id_is_an_ad(tmp_path: Path) -> None:
    doc = json.loads((REAL / "meta_messenger_ad_referral.json").read_text())
    referral = doc["entry"][0]["messaging"][0]["referral"]
    del referral["ad_id"], referral["source"]
    (tmp_path / "d.json").write_text(json.dumps(doc))
    (record,), stats, _ = found(tmp_path / "d.json")
    assert record.user_id == "6123456789012345" and stats.non_ad == 0
