"""Referral extraction per channel and shape, from fixtures written after Meta's and Twilio's documented payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capi_cli.webhooks import REFERRAL_KEYS, ExtractStats, Referral, Unreadable, extract

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
SECRET = "6f1e2d3c4b5a69788796a5b4c3d2e1f0"

SPEC_KEYS = (
    "channel ctwa_clid ad_id source_type source_url headline body media_type ref user_id wa_id bsuid "
    "username profile_name business_id phone_number_id message_id timestamp kind signature origin"
).split()


def records(*names: str, **options: Any) -> tuple[list[dict[str, Any]], ExtractStats]:
    stats = ExtractStats()
    found = [
        item.to_dict()
        for item in extract([str(FIXTURES / n) for n in names], stats=stats, **options)
        if isinstance(item, Referral)
    ]
    return found, stats


def by_message(found: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {r["message_id"]: r for r in found}


def test_record_has_exactly_the_spec_keys_in_order() -> None:
    assert list(REFERRAL_KEYS) == SPEC_KEYS
    found, _ = records("whatsapp/cloud_two_entries.json")
    assert all(list(r) == SPEC_KEYS for r in found)


def test_whatsapp_all_entries_changes_and_messages_with_contacts_matched() -> None:
    found, stats = records("whatsapp/cloud_two_entries.json")
    assert len(found) == 2
    tr = by_message(found)["wamid.HBgMOTA1MzIxMjM0NTY3FQIAEhggQTFCMkMzRDRFNUY2"]
    assert tr["ctwa_clid"].startswith("ARAkLkA8rmlFeiCktEJQ")
    assert tr["ad_id"] == "120211889912340567"
    assert tr["source_type"] == "ad"
    assert tr["headline"] == "Kış indirimi %30"
    assert tr["media_type"] == "image"
    # the contact listed second is matched by phone, not by position
    assert tr["profile_name"] == "Emre Yılmaz"
    assert tr["user_id"] == tr["wa_id"] == "905321234567"
    assert tr["bsuid"] is None
    assert tr["business_id"] == "102290129340398"
    assert tr["phone_number_id"] == "106540352242922"
    assert tr["timestamp"] == "2026-01-01T00:00:00Z"
    assert tr["kind"] == "message"
    assert tr["signature"] is None
    assert tr["origin"].endswith("cloud_two_entries.json:1")
    de = by_message(found)["wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABIYIEQ5QzhCN0E2"]
    assert de["business_id"] == "184703621188544"  # second entry's WABA
    assert de["phone_number_id"] == "219846077893102"
    assert de["profile_name"] == "Jonas Weber"
    assert de["media_type"] == "video"
    assert stats.messages == 3 and stats.deliveries == 1 and stats.referrals == 2


def test_whatsapp_business_scoped_user_ids_and_usernames() -> None:
    found = by_message(records("whatsapp/bsuid_username.json")[0])
    priya = found["wamid.HBgUVVMuMTM0OTEyMDg2NTUzMDI3NDE5MTgVAgASGCA"]
    assert priya["wa_id"] is None
    assert priya["bsuid"] == priya["user_id"] == "US.13491208655302741918"
    assert priya["username"] == "@priya.designs"
    assert priya["profile_name"] == "Priya"
    marco = found["wamid.HBgMMzkzNDcxMjM0NTY3FQIAEhgg"]
    assert marco["user_id"] == marco["wa_id"] == "393471234567"  # phone wins when known
    assert marco["bsuid"] == "IT.55510293847566372819"
    # an organic post referral is still a referral, but its source id is no ad id
    assert marco["source_type"] == "post" and marco["ad_id"] is None and marco["ctwa_clid"] is None


def test_whatsapp_empty_click_id_is_absent() -> None:
    (record,), _ = records("whatsapp/status_ad_empty_clid.json")
    assert record["ctwa_clid"] is None
    assert record["ad_id"] == "120218887776665554"


def test_whatsapp_automatic_events() -> None:
    (record,), _ = records("whatsapp/automatic_events.json")
    assert record["kind"] == "automatic_event"
    assert record["ctwa_clid"].startswith("ARAkLkA8")
    assert record["timestamp"] == "2026-01-04T00:00:00Z"  # integer seconds here
    assert record["business_id"] == "102290129340398"
    assert record["message_id"].startswith("wamid.")


def test_whatsapp_legacy_on_premises_shape() -> None:
    (record,), _ = records("whatsapp/onprem_legacy.json")
    assert record["channel"] == "whatsapp"
    assert record["user_id"] == "16315551234"
    assert record["ad_id"] == "23842837480870066"
    assert record["business_id"] is None and record["phone_number_id"] is None
    assert record["timestamp"] == "2018-02-15T11:30:35Z"


def test_whatsapp_bare_value_and_bare_change() -> None:
    found, stats = records("whatsapp/bare_fragments.ndjson")
    assert [r["ctwa_clid"] for r in found] == ["ARBareValueClid_0001", "ARBareChangeClid_0002"]
    assert [r["origin"].rsplit(":", 1)[1] for r in found] == ["1", "2"]
    assert found[1]["profile_name"] == "Lucía"


def test_deliveries_without_referrals_are_skipped_and_counted() -> None:
    found, stats = records("no_referrals.ndjson")
    assert found == []
    assert stats.deliveries == 3 and stats.skipped == 3 and stats.unreadable == 0


def test_messenger_referral_at_messaging_level() -> None:
    (record,), _ = records("messenger/referral_existing_thread.json")
    assert record["channel"] == "messenger"
    assert record["kind"] == "referral"
    assert record["user_id"] == "6123456789012345"
    assert record["business_id"] == "109876543210987"
    assert record["ad_id"] == "120214443332221110"
    assert record["ref"] == "winter-sale"
    assert record["source_type"] == "ADS"
    assert record["headline"] == "Winter sale"
    assert record["timestamp"] == "2026-01-06T00:00:00Z"  # from milliseconds
    assert record["ctwa_clid"] is None and record["wa_id"] is None


def test_messenger_referral_inside_postback() -> None:
    (record,), _ = records("messenger/postback_get_started.json")
    assert record["kind"] == "postback"
    assert record["message_id"] == "m_POSTBACK_Gx7Qk2"
    assert record["user_id"] == "7234567890123456"
    assert record["media_type"] == "video"


def test_messenger_referral_inside_message() -> None:
    (record,), _ = records("messenger/message_referral.json")
    assert (record["kind"], record["message_id"], record["ref"]) == ("message", "m_AbCdEf123456", "sku-42")
    assert record["business_id"] == "223344556677889"


def test_messenger_dashboard_test_payload_with_changes() -> None:
    # Its referral is an m.me link (SHORTLINK): no ad, so listed only with --all-referrals.
    assert records("messenger/dashboard_test_changes.json")[0] == []
    (record,), _ = records("messenger/dashboard_test_changes.json", all_referrals=True)
    assert record["ad_id"] is None
    assert record["user_id"] == "12334"
    assert record["business_id"] == "23245"  # entry id "0" of test payloads is no page
    assert record["source_type"] == "SHORTLINK"
    assert record["timestamp"] == "2018-05-27T22:23:44Z"  # seconds as a string in test payloads


def test_instagram_message_referral_and_echo_skipped() -> None:
    found, stats = records("instagram/message_referral.json")
    assert len(found) == 1
    (record,) = found
    assert record["channel"] == "instagram"
    assert record["user_id"] == "987654321098765"
    assert record["business_id"] == "17841400000000001"
    assert record["ad_id"] == "120217778889990001"
    assert record["kind"] == "message"


def test_instagram_igme_link_referral() -> None:
    found, stats = records("instagram/igme_link.json")
    assert not found and stats.non_ad == 1 and stats.referrals == 0
    (record,), _ = records("instagram/igme_link.json", all_referrals=True)
    assert (record["channel"], record["kind"], record["ref"]) == ("instagram", "referral", "bio-link")
    assert record["source_type"] == "IGME-SOURCE-LINK"


def test_twilio_form_encoded() -> None:
    (record,), _ = records("twilio/inbound_form.txt")
    assert record["channel"] == "whatsapp"
    assert record["ctwa_clid"] == "ARTwilioClid_ZXhhbXBsZS1jbGljay1pZA"
    assert record["ad_id"] == "120219990001112223"
    assert record["user_id"] == record["wa_id"] == "905551112233"
    assert record["profile_name"] == "Ayşe"
    assert record["message_id"] == "SM3f1c2b5a9e8d7c6b5a4f3e2d1c0b9a8f"
    assert record["headline"] == "Yeni sezon" and record["body"] == "Sohbet edin"


def test_twilio_json_uses_from_without_waid_and_skips_plain_messages() -> None:
    found, stats = records("twilio/inbound.json")
    assert [r["user_id"] for r in found] == ["447911123456"]  # from whatsapp:+447911123456
    assert stats.deliveries == 2 and stats.skipped == 1


@pytest.mark.parametrize(
    ("name", "channel", "message_id"),
    [
        ("wrappers/body_json_string.json", "instagram", None),
        ("wrappers/body_form_string.json", "whatsapp", "SM3f1c2b5a9e8d7c6b5a4f3e2d1c0b9a8f"),
        ("wrappers/body_params.json", "whatsapp", "SM99aa88bb77cc66dd55ee44ff33aa22bb"),
        ("wrappers/webhook_site_export.json", "messenger", "m_AbCdEf123456"),
    ],
)
def test_wrappers(name: str, channel: str, message_id: str | None) -> None:
    (record,), _ = records(name, all_referrals=True)
    assert record["channel"] == channel
    assert record["message_id"] == message_id


def test_request_log_with_raw_body_and_with_parsed_body() -> None:
    found, stats = records("wrappers/request_log.ndjson", app_secret=SECRET)
    assert [(r["channel"], r["signature"]) for r in found] == [
        ("whatsapp", "valid"),
        ("messenger", "unverifiable"),
    ]


def test_concatenated_documents_across_and_within_lines() -> None:
    found, stats = records("concatenated.json", all_referrals=True)
    assert [r["channel"] for r in found] == ["messenger", "instagram", "whatsapp", "whatsapp"]
    assert [int(r["origin"].rsplit(":", 1)[1]) for r in found] == [1, 32, 57, 57]
    assert stats.unreadable == 0
    ads, stats = records("concatenated.json")
    assert [r["channel"] for r in ads] == ["messenger", "whatsapp", "whatsapp"] and stats.non_ad == 1


def test_top_level_array_elements_keep_their_line() -> None:
    found, stats = records("array.json")
    assert [(r["kind"], r["origin"].rsplit(":", 1)[1]) for r in found] == [
        ("postback", "2"),
        ("automatic_event", "38"),
    ]
    assert stats.deliveries == 3 and stats.skipped == 1


def test_meta_retries_yield_one_record_and_broken_lines_do_not_stop_the_log() -> None:
    stats = ExtractStats()
    items = list(extract([str(FIXTURES / "logs/retries_and_broken.ndjson")], stats=stats))
    broken = [i for i in items if isinstance(i, Unreadable)]
    assert [b.line for b in broken] == [3, 5]
    assert str(broken[0]).endswith(
        "retries_and_broken.ndjson:3: truncated JSON: the document ends before it is complete"
    )
    found = [i.to_dict() for i in items if isinstance(i, Referral)]
    assert [r["message_id"] for r in found] == [
        "m_AbCdEf123456",
        "wamid.HBgUVVMuMTM0OTEyMDg2NTUzMDI3NDE5MTgVAgASGCA",
        "wamid.HBgMMzkzNDcxMjM0NTY3FQIAEhgg",
    ]
    assert stats.duplicates == 3 and stats.unreadable == 2 and stats.referrals == 3


def test_channel_filter() -> None:
    found, stats = records("concatenated.json", channel="whatsapp", all_referrals=True)
    assert {r["channel"] for r in found} == {"whatsapp"}
    assert stats.filtered == 2


def test_duplicates_without_message_id_are_keyed_by_their_fields(tmp_path: Path) -> None:
    body = (FIXTURES / "messenger/referral_existing_thread.json").read_text()
    other = body.replace("6123456789012345", "6999999999999999")
    (tmp_path / "a.json").write_text(body + body + other)
    stats = ExtractStats()
    found = [i for i in extract([str(tmp_path / "a.json")], stats=stats) if isinstance(i, Referral)]
    assert [r.user_id for r in found] == ["6123456789012345", "6999999999999999"]
    assert stats.duplicates == 1


def test_a_whole_directory_is_read_recursively_in_order() -> None:
    stats = ExtractStats()
    items = list(extract([str(FIXTURES)], stats=stats))
    assert stats.files == len([p for p in FIXTURES.rglob("*") if p.is_file()])
    assert stats.unreadable == 2  # only the two broken lines of the log
    origins = [str(i.origin) for i in items if isinstance(i, Referral)]
    assert origins[0].startswith(str(FIXTURES / "array.json"))
