"""The events pipeline: payloads per channel, every validation code, referral join, mapping, ids."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from capi_cli.config import Settings
from capi_cli.errors import UsageError
from capi_cli.events.build import derive_event_id
from capi_cli.events.pipeline import BuildOptions, BuiltEvent, Problem, SeenIds, iter_events
from capi_cli.events.validate import collect
from capi_cli.ledger import Ledger

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()
HOUR = 3600
FIXTURES = Path(__file__).parent / "fixtures" / "events"
WABA = "104123456789012"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(home=tmp_path, config_file=tmp_path / "config.yaml", profile="default",
                    ledger=str(tmp_path / "ledger.sqlite3"), **values)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def run(
    tmp_path: Path,
    rows: list[dict[str, Any]] | None = None,
    *,
    paths: list[Path] | None = None,
    settings: Settings | None = None,
    referrals: Any = None,
    **options: Any,
) -> tuple[list[BuiltEvent], list[Problem]]:
    if paths is None:
        paths = [write_csv(tmp_path / "events.csv", rows or [])]
    options.setdefault("now", NOW)
    skip = options.pop("skip", None)
    items = list(iter_events(paths, settings or make_settings(tmp_path), BuildOptions(**options), referrals, skip))
    return [i for i in items if isinstance(i, BuiltEvent)], [i for i in items if isinstance(i, Problem)]


def wa_row(**values: Any) -> dict[str, Any]:
    row = {"event_name": "LeadSubmitted", "event_time": int(NOW - HOUR), "ctwa_clid": "ARAkClick", "waba_id": WABA}
    row.update(values)
    return {k: v for k, v in row.items() if v is not None}


# -- payloads per channel -----------------------------------------------------------------------------


def test_whatsapp_payload(tmp_path: Path) -> None:
    events, problems = run(tmp_path, [wa_row(
        event_name="purchase", email=" Ann@Example.com ", phone="+1 (415) 555-2671", first_name="Ann",
        value="25.50", currency="usd", order_id="A-1", country="US", state="California",
    )])
    assert problems == []
    (event,) = events
    assert event.payload == {
        "event_name": "Purchase",
        "event_time": int(NOW - HOUR),
        "event_id": derive_event_id("Purchase", "order", "A-1"),
        "action_source": "business_messaging",
        "messaging_channel": "whatsapp",
        "user_data": {
            "em": [sha("ann@example.com")],
            "ph": [sha("14155552671")],
            "fn": [sha("ann")],
            "st": [sha("ca")],
            "country": [sha("us")],
            "ctwa_clid": "ARAkClick",
            "whatsapp_business_account_id": WABA,
        },
        "custom_data": {"value": 25.5, "currency": "USD", "order_id": "A-1"},
    }
    assert (event.source, event.line, event.record, event.attributed) == (str(tmp_path / "events.csv"), 2, 1, False)


def test_messenger_payload_from_meta_shape_json() -> None:
    settings = Settings(home=Path("."), config_file=Path("c.yaml"), profile="default")
    items = list(iter_events([FIXTURES / "orders.json"], settings, BuildOptions(now=NOW)))
    assert [type(i).__name__ for i in items] == ["BuiltEvent", "BuiltEvent"]
    messenger, instagram = items
    assert isinstance(messenger, BuiltEvent) and isinstance(instagram, BuiltEvent)
    assert messenger.event_time == 1773136800  # milliseconds detected
    assert messenger.payload["user_data"] == {
        "em": [sha("ann@example.com")], "page_scoped_user_id": "998877665544", "page_id": "1122334455",
    }
    assert messenger.payload["custom_data"] == {"value": 12.5, "currency": "USD", "order_id": "M-1", "coupon": "SPRING"}
    assert instagram.payload["messaging_channel"] == "instagram"
    assert instagram.event_time == int(datetime(2026, 3, 10, 8, 0, tzinfo=UTC).timestamp())
    assert instagram.payload["user_data"] == {"ig_sid": "5566778899", "ig_account_id": "1789"}
    assert "custom_data" not in instagram.payload


def test_instagram_account_field_name_is_configurable(tmp_path: Path) -> None:
    row = {"event_name": "ViewContent", "event_time": int(NOW), "igsid": "5566", "channel": "Instagram"}
    settings = make_settings(tmp_path, ig_account_id="1789", ig_account_field="instagram_business_account_id")
    events, problems = run(tmp_path, [row], settings=settings)
    assert problems == []
    assert events[0].payload["user_data"] == {"ig_sid": "5566", "instagram_business_account_id": "1789"}


def test_defaults_from_config(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, whatsapp_business_account_id=WABA, currency="eur", channel="whatsapp",
                             default_country="GB")
    events, problems = run(tmp_path, [{"event_name": "Purchase", "ctwa_clid": "C1", "value": "10",
                                       "phone": "07911 123456", "event_time": int(NOW)}], settings=settings)
    assert problems == []
    payload = events[0].payload
    assert payload["user_data"]["whatsapp_business_account_id"] == WABA
    assert payload["user_data"]["ph"] == [sha("447911123456")]
    assert payload["custom_data"]["currency"] == "EUR"


def test_all_fixture_formats_build(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    for name, count in (("orders.csv", 2), ("orders.yaml", 2), ("orders.ndjson", 2)):
        items = list(iter_events([FIXTURES / name], settings, BuildOptions(now=NOW)))
        built = [i for i in items if isinstance(i, BuiltEvent)]
        errors = [i for i in items if isinstance(i, Problem) and i.is_error]
        assert (len(built), errors) == (count, []), name
    yaml_events = [i for i in iter_events([FIXTURES / "orders.yaml"], settings, BuildOptions(now=NOW))
                   if isinstance(i, BuiltEvent)]
    assert yaml_events[0].payload["user_data"]["country"] == [sha("no")]
    assert yaml_events[0].payload["user_data"]["zp"] == [sha("02134")]
    assert yaml_events[1].payload["user_data"]["em"] == [sha("bob@example.com")]  # same after normalization: once


def test_wa_id_is_hashed_as_phone_unless_phone_given(tmp_path: Path) -> None:
    events, _ = run(tmp_path, [wa_row(wa_id="905321234567"), wa_row(wa_id="905321234567", phone="+14155552671",
                                                                       event_name="AddToCart")])
    assert events[0].payload["user_data"]["ph"] == [sha("905321234567")]
    assert events[1].payload["user_data"]["ph"] == [sha("14155552671")]


def test_several_values_deduplicated_in_order(tmp_path: Path) -> None:
    events, _ = run(tmp_path, [wa_row(em="b@x.com|A@x.com| a@x.com ", ph="+14155552671")])
    assert events[0].payload["user_data"]["em"] == [sha("b@x.com"), sha("a@x.com")]


def test_custom_data_fields(tmp_path: Path) -> None:
    row = wa_row(event_name="AddToCart", contents='[{"id": "sku-1", "quantity": 2}]', content_ids="sku-1|sku-2",
                 num_items="2", delivery_category="Home_Delivery", **{"custom_data.coupon": "X1"})
    events, problems = run(tmp_path, [row])
    assert problems == []
    assert events[0].payload["custom_data"] == {
        "content_ids": ["sku-1", "sku-2"], "contents": [{"id": "sku-1", "quantity": 2}], "num_items": 2,
        "delivery_category": "home_delivery", "coupon": "X1",
    }


def test_payload_json_and_hash(tmp_path: Path) -> None:
    events, _ = run(tmp_path, [wa_row(em="ann@example.com", ct="São Paulo", value="1.5", currency="BRL",
                                      **{"custom_data.note": 'say "hi"'})])
    event = events[0]
    assert event.payload_json == json.dumps(event.payload, ensure_ascii=False, separators=(",", ":"))
    assert event.payload_hash == sha(event.payload_json)
    again, _ = run(tmp_path, [wa_row(em="ann@example.com", ct="São Paulo", value="1.5", currency="BRL",
                                     **{"custom_data.note": 'say "hi"'})], now=NOW + 5)
    assert again[0].payload_hash == event.payload_hash


# -- validation codes ------------------------------------------------------------------------------------

CASES = [
    ("unknown_event_name", "event_name", wa_row(event_name="Lead")),
    ("missing_field", "event_name", wa_row(event_name="")),
    ("missing_field", "whatsapp_business_account_id", wa_row(waba_id=None)),
    ("missing_field", "currency", wa_row(event_name="Purchase", value="10")),
    ("missing_field", "messaging_channel", {"event_name": "Purchase", "em": "a@b.co"}),
    ("missing_identifier", "ctwa_clid", wa_row(ctwa_clid=None, wa_id="905321234567")),
    ("missing_identifier", "page_scoped_user_id", {"event_name": "AddToCart", "channel": "messenger", "page_id": "1"}),
    ("event_too_old", "event_time", wa_row(event_time=int(NOW - 8 * 24 * HOUR))),
    ("event_in_future", "event_time", wa_row(event_time=int(NOW + HOUR))),
    ("bad_timestamp", "event_time", wa_row(event_time="yesterday")),
    ("invalid_email", "em", wa_row(email="not-an-email")),
    ("invalid_phone", "ph", wa_row(phone="12345")),
    ("invalid_country", "country", wa_row(country="Atlantis")),
    ("invalid_currency", "currency", wa_row(value="5", currency="dollars")),
    ("invalid_value", "value", wa_row(event_name="Purchase", value="-5", currency="USD")),
    ("invalid_value", "value", wa_row(event_name="Purchase", value="12,50", currency="USD")),
    ("invalid_value", "value", wa_row(event_name="Purchase", currency="USD")),
    ("invalid_value", "messaging_channel", wa_row(channel="telegram")),
    ("invalid_value", "ge", wa_row(gender="x")),
    ("invalid_date", "db", wa_row(dob="05/06/1990")),  # day/month or month/day: no locale says
]


@pytest.mark.parametrize(("code", "field", "row"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_validation_codes(tmp_path: Path, code: str, field: str, row: dict[str, Any]) -> None:
    # The strict options make bad optional fields and unattributed events errors, as they were.
    events, problems = run(tmp_path, [wa_row(event_name="ViewContent", order_id="ok-1"), row],
                           strict_fields=True, require_attribution=True)
    assert len(events) == 1
    assert (code, field, "error", 3, 2) in {(p.code, p.field, p.severity, p.line, p.record) for p in problems}
    assert all(p.line == 3 for p in problems)


def test_every_problem_of_a_record_is_reported(tmp_path: Path) -> None:
    _, problems = run(tmp_path, [wa_row(event_name="Lead", email="bad", phone="1", country="zz", ctwa_clid=None)],
                      strict_fields=True)
    assert {p.code for p in problems} == {"unknown_event_name", "invalid_email", "invalid_phone", "invalid_country",
                                          "missing_identifier"}


def test_duplicate_event_id(tmp_path: Path) -> None:
    events, problems = run(tmp_path, [wa_row(order_id="A-1"), wa_row(order_id="A-1"), wa_row(order_id="A-2")])
    assert len(events) == 2
    assert [(p.code, p.field, p.line) for p in problems] == [("duplicate_event_id", "event_id", 3)]


def test_unknown_column_warned_once_per_file(tmp_path: Path) -> None:
    first = write_csv(tmp_path / "a.csv", [wa_row(Notes="x", order_id="1"), wa_row(Notes="y", order_id="2")])
    second = write_csv(tmp_path / "b.csv", [wa_row(Notes="z", order_id="3")])
    events, problems = run(tmp_path, paths=[first, second])
    assert len(events) == 3
    assert [(Path(p.source).name, p.code, p.severity, p.field) for p in problems] == [
        ("a.csv", "unknown_column", "warning", "Notes"), ("b.csv", "unknown_column", "warning", "Notes"),
    ]


@pytest.mark.parametrize(("value", "found"), [("a@example.com", "text"), (["a@example.com"], "a list"), (5, "a number")])
def test_user_data_or_custom_data_that_is_not_an_object_is_an_error_not_an_unknown_column(
    tmp_path: Path, value: Any, found: str
) -> None:
    """In Meta's shape the customer fields sit inside user_data; a user_data that is text (or a list)
    loses them, which an "unknown column" warning would hide."""
    path = tmp_path / "e.ndjson"
    records = [{**wa_row(order_id="1"), "user_data": value}, {**wa_row(order_id="2", value="5", currency="USD"), "custom_data": value}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    events, problems = run(tmp_path, paths=[path])
    assert events == []
    assert [(p.line, p.code, p.field, p.severity) for p in problems] == [
        (1, "invalid_value", "user_data", "error"), (2, "invalid_value", "custom_data", "error"),
    ]
    assert f"found {found}" in problems[0].message and '{"em": ..., "ph": ...}' in problems[0].message


def test_malformed_record(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text(f"event_name,ctwa_clid,waba_id\nLeadSubmitted,C1,{WABA}\nLeadSubmitted,C2,{WABA},extra\n",
                    encoding="utf-8")
    events, problems = run(tmp_path, paths=[path])
    assert len(events) == 1
    assert [(p.code, p.line, p.record, p.field) for p in problems] == [("malformed_record", 3, 2, None)]


def test_oversized_value_in_json_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "e.ndjson"
    path.write_text(json.dumps(wa_row(em="a" * 9000 + "@x.com")) + "\n", encoding="utf-8")
    _, problems = run(tmp_path, paths=[path], strict_fields=True)
    assert [(p.code, p.field) for p in problems] == [("invalid_value", "em")]
    events, problems = run(tmp_path, paths=[path])  # an optional field: dropped, the event kept
    assert [(p.code, p.field) for p in problems] == [("dropped_field", "em")]
    assert len(events) == 1 and "em" not in events[0].payload["user_data"]


def test_tally_and_report(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", [wa_row(order_id="1"), wa_row(email="bad", phone="1", order_id="2"),
                                          wa_row(Notes="x", order_id="3")])
    report = collect(iter_events([path], make_settings(tmp_path), BuildOptions(now=NOW, strict_fields=True)))
    document = report.to_dict()
    assert {k: document[k] for k in ("records", "valid", "invalid", "attributed", "unattributed", "filtered")} == {
        "records": 3, "valid": 2, "invalid": 1, "attributed": 0, "unattributed": 0, "filtered": 0,
    }
    assert set(document["problems"][0]) == {"source", "line", "record", "field", "code", "severity", "message"}


# -- time -------------------------------------------------------------------------------------------------


def test_naive_times_read_in_the_configured_timezone(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, timezone="Europe/Istanbul")
    events, _ = run(tmp_path, [wa_row(event_time="2026-03-10 10:00:00"), wa_row(event_time="2026-03-10T10:00:00Z",
                                                                                event_name="AddToCart")],
                    settings=settings)
    assert events[0].event_time == int(datetime(2026, 3, 10, 7, 0, tzinfo=UTC).timestamp())
    assert events[1].event_time == int(datetime(2026, 3, 10, 10, 0, tzinfo=UTC).timestamp())


def test_absent_time_is_now(tmp_path: Path) -> None:
    events, _ = run(tmp_path, [wa_row(event_time=None)])
    assert events[0].event_time == int(NOW)


def test_since_until_limit(tmp_path: Path) -> None:
    rows = [wa_row(event_time=int(NOW - h * HOUR), order_id=str(h)) for h in range(1, 6)]
    events, _ = run(tmp_path, rows, since="3h", until=int(NOW - 2 * HOUR))
    assert [e.payload["custom_data"]["order_id"] for e in events] == ["2", "3"]
    events, _ = run(tmp_path, rows, limit=2)
    assert len(events) == 2
    with pytest.raises(UsageError):
        run(tmp_path, rows, since="last tuesday")


def test_skip_is_asked_before_hashing_and_leaves_the_row_out(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    def skip(name: str, event_id: str) -> bool:
        asked.append((name, event_id))
        return event_id == derive_event_id("LeadSubmitted", "order", "1")

    events, problems = run(tmp_path, [wa_row(order_id="1", email="bad"), wa_row(order_id="2")], skip=skip, limit=1)
    assert problems == []  # the skipped row is not even validated further
    assert [e.payload["custom_data"]["order_id"] for e in events] == ["2"]  # limit counts rows not skipped
    assert len(asked) == 2


# -- deterministic ids ---------------------------------------------------------------------------------------


def test_event_ids_are_deterministic(tmp_path: Path) -> None:
    rows = [wa_row(order_id="A-1"), wa_row(phone="+14155552671"), wa_row(event_time=None, phone="+14155552671"),
            wa_row(event_id="given-1")]
    first, _ = run(tmp_path, rows)
    second, _ = run(tmp_path, rows, now=NOW + 60)
    assert [e.event_id for e in first] == [e.event_id for e in second]
    assert first[0].event_id == derive_event_id("LeadSubmitted", "order", "A-1")
    assert first[3].event_id == "given-1"
    assert len({e.event_id for e in first}) == 4
    moved, _ = run(tmp_path, [wa_row(phone="+14155552671", event_time=int(NOW - 2 * HOUR))])
    assert moved[0].event_id != first[1].event_id  # another time is another event


def test_same_order_different_event_names_are_different_events(tmp_path: Path) -> None:
    events, problems = run(tmp_path, [wa_row(order_id="A-1", event_name="OrderCreated"),
                                      wa_row(order_id="A-1", event_name="OrderShipped")])
    assert problems == [] and len(events) == 2


# -- --map / --set ---------------------------------------------------------------------------------------------


def test_map_and_set(tmp_path: Path) -> None:
    mapping = tmp_path / "map.yaml"
    mapping.write_text('"Order Total": value\n"Customer Phone": phone\n"Internal Ref": null\n"Coupon": custom_data.coupon\n',
                       encoding="utf-8")
    rows = [
        {"Order Total": "10", "Customer Phone": "+14155552671", "Internal Ref": "x", "Coupon": "C", "click_id": "c1",
         "event_time": int(NOW)},
        {"Order Total": "12", "currency": "USD", "click_id": "c2", "event_time": int(NOW)},
    ]
    events, problems = run(tmp_path, rows, map_file=mapping,
                           sets=["event_name=Purchase", "currency=eur", f"waba_id={WABA}"])
    assert problems == []  # "Internal Ref" mapped to null: ignored without a warning
    assert events[0].payload["custom_data"] == {"value": 10, "currency": "EUR", "coupon": "C"}
    assert events[0].payload["user_data"]["ph"] == [sha("14155552671")]
    assert events[1].payload["custom_data"]["currency"] == "USD"  # --set fills, a row's own value wins


def test_bad_map_and_set_are_usage_errors(tmp_path: Path) -> None:
    mapping = tmp_path / "map.yaml"
    mapping.write_text("Total: price_in_cents\n", encoding="utf-8")
    with pytest.raises(UsageError, match="price_in_cents"):
        run(tmp_path, [wa_row()], map_file=mapping)
    with pytest.raises(UsageError):
        run(tmp_path, [wa_row()], sets=["currency"])
    with pytest.raises(UsageError):
        run(tmp_path, [wa_row()], sets=["colour=red"])


# -- referral join ---------------------------------------------------------------------------------------------


def _store(ledger: Ledger, **values: Any) -> None:
    record = {"channel": "whatsapp", "ctwa_clid": None, "ad_id": "ad-1", "source_type": "ad", "source_url": None,
              "ref": None, "user_id": None, "wa_id": None, "bsuid": None, "business_id": None,
              "phone_number_id": None, "message_id": None, "timestamp": None, "kind": "message", "origin": "t:1"}
    record.update(values)
    ledger.referrals.store_referrals([record])


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_referral_join_found_outside_window_and_none(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        _store(ledger, ctwa_clid="CLID-RECENT", wa_id="905321234567", user_id="905321234567", business_id=WABA,
               message_id="wamid.1", timestamp=_iso(NOW - 5 * HOUR))
        _store(ledger, ctwa_clid="CLID-OLD", wa_id="14155552671", user_id="14155552671", business_id=WABA,
               message_id="wamid.2", timestamp=_iso(NOW - 3 * 24 * HOUR))
        rows = [
            wa_row(ctwa_clid=None, waba_id=None, wa_id="905321234567", order_id="found"),
            wa_row(ctwa_clid=None, phone="+90 532 123 45 67", order_id="found-by-phone"),
            wa_row(ctwa_clid=None, phone="+1 415 555 2671", order_id="outside-window"),
            wa_row(ctwa_clid=None, phone="+44 7911 123456", order_id="none"),
        ]
        events, problems = run(tmp_path, rows, referrals=ledger.referrals, attribution_window_days=2)
    assert [(e.payload["custom_data"]["order_id"], e.payload["user_data"]["ctwa_clid"], e.attributed) for e in events] == [
        ("found", "CLID-RECENT", True), ("found-by-phone", "CLID-RECENT", True),
    ]
    assert events[0].payload["user_data"]["whatsapp_business_account_id"] == WABA  # from the referral
    assert [(p.code, p.severity, p.line) for p in problems] == [
        ("unattributed", "warning", 4), ("unattributed", "warning", 5)]


def test_referral_join_messenger_and_instagram_accounts(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        _store(ledger, channel="messenger", user_id="24680", business_id="112233", message_id="m1",
               timestamp=_iso(NOW - HOUR))
        _store(ledger, channel="instagram", user_id="13579", business_id="445566", message_id="m2",
               timestamp=_iso(NOW - HOUR))
        rows = [{"event_name": "AddToCart", "psid": "24680", "event_time": int(NOW)},
                {"event_name": "AddToCart", "igsid": "13579", "event_time": int(NOW)},
                {"event_name": "AddToCart", "psid": "99999", "event_time": int(NOW)}]
        events, problems = run(tmp_path, rows, referrals=ledger.referrals)
        report = collect(iter_events([tmp_path / "events.csv"], make_settings(tmp_path), BuildOptions(now=NOW), ledger.referrals))
    assert events[0].payload["user_data"] == {"page_scoped_user_id": "24680", "page_id": "112233"}
    assert events[1].payload["user_data"] == {"ig_sid": "13579", "ig_account_id": "445566"}
    assert [e.attributed for e in events] == [True, True]
    assert [(p.code, p.field) for p in problems] == [("missing_field", "page_id")]
    assert report.tally.attributed == 2


def test_seen_ids_grow_and_detect_repeats() -> None:
    seen = SeenIds(capacity=8)
    assert not any(seen.add(f"id-{i}") for i in range(1000))
    assert all(seen.add(f"id-{i}") for i in range(1000))
    assert len(seen) == 1000


def test_sent_events_are_skipped_with_one_query_per_chunk_not_per_row(tmp_path, monkeypatch) -> None:
    from capi_cli.config import load_settings
    from capi_cli.delivery.engine import LedgerSkip
    from capi_cli.events.pipeline import BuiltEvent, iter_events
    from capi_cli.ledger import Ledger, PendingEvent

    monkeypatch.setenv("CAPI_WORKERS", "0")
    rows = ["event_name,event_id,ctwa_clid,whatsapp_business_account_id"]
    rows += [f"LeadSubmitted,lead-{i},ARAkClid{i},104996122399160" for i in range(1200)]
    (tmp_path / "leads.csv").write_text("\n".join(rows) + "\n")
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    sent = [PendingEvent("LeadSubmitted", f"lead-{i}", 0) for i in range(0, 1200, 2)]
    ledger.begin_batch("42", "b1", sent)
    ledger.settle("42", "b1", [(e.event_name, e.event_id) for e in sent], "sent")
    queries = []
    real_sent_among = ledger.sent_among
    monkeypatch.setattr(ledger, "state_of", lambda *a: pytest.fail("a ledger query per row"))
    monkeypatch.setattr(ledger, "sent_among", lambda ds, keys: queries.append(len(keys)) or real_sent_among(ds, keys))
    skip = LedgerSkip(ledger, "42")
    settings = load_settings(env={"CAPI_HOME": str(tmp_path)})
    built = [e for e in iter_events([tmp_path / "leads.csv"], settings, skip=skip) if isinstance(e, BuiltEvent)]
    assert [e.event_id for e in built] == [f"lead-{i}" for i in range(1, 1200, 2)]
    assert skip.skipped == 600
    assert queries == [500, 500, 200]
