"""Real exports in (SPEC §4): presets, --where and `filtered`, --group-by, --locale, unattributed
events and dropped optional fields, through the CLI, a ledger on disk and the Graph stand-in."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from capi_cli.cli.app import app
from capi_cli.ledger import Ledger
from capi_cli.sandbox.server import GraphStandin
from support.sending import DATASET, TOKEN, WABA, send_env

FIXTURES = Path(__file__).parent / "fixtures" / "exports"


def dated(name: str, tmp_path: Path) -> Path:
    """A fixture with its dates moved to the last two days (see the README beside the fixtures)."""
    today = datetime.now(UTC).date()
    before, yesterday = today - timedelta(days=2), today - timedelta(days=1)
    text = (FIXTURES / name).read_text(encoding="utf-8")
    for old, new in (("2026-11-27", before.isoformat()), ("2026-11-28", yesterday.isoformat()),
                     ("27/11/2026", before.strftime("%d/%m/%Y")), ("28/11/2026", yesterday.strftime("%d/%m/%Y"))):
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def store_referrals(home: Path, wa_ids: dict[str, str]) -> None:
    """Referrals as `capi extract-referral --store` keeps them: wa_id -> click id, 4 days ago."""
    stamp = datetime.fromtimestamp(time.time() - 4 * 86400, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with Ledger.open(home / "ledger.sqlite3") as ledger:
        ledger.referrals.store_referrals([
            {"channel": "whatsapp", "ctwa_clid": clid, "ad_id": "120210000000001", "source_type": "ad",
             "source_url": None, "ref": None, "user_id": wa_id, "wa_id": wa_id, "bsuid": None, "business_id": WABA,
             "phone_number_id": None, "message_id": f"wamid.{clid}", "timestamp": stamp, "kind": "message",
             "origin": "test:1"}
            for wa_id, clid in wa_ids.items()
        ])


@pytest.fixture
def standin():
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        yield graph


def capi(runner, home: Path, *args: str, url: str = "http://127.0.0.1:9", **extra: str):
    env = send_env(home, url)
    env.update(extra)
    return runner.invoke(app, list(args), env=env)


CHAT_CUSTOMERS = {"919820012345": "ARAkClidPriya01", "919845067890": "ARAkClidRahul05"}


# -- Shopify ------------------------------------------------------------------------------------------


def test_shopify_export_with_the_preset_alone(runner, tmp_path, capi_home, standin) -> None:
    export = dated("shopify_orders_export.csv", tmp_path)
    store_referrals(capi_home, CHAT_CUSTOMERS)
    out = tmp_path / "sent.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(export), "--preset", "shopify", "--no-progress",
                  "--json", "-o", str(out), url=standin.url)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # #1001 and #1005: paid chat orders; #1002 a web order; #1003 refunded and cancelled (2 rows) and
    # #1004 pending COD (1 row) left out by the preset's filters.
    assert {k: summary[k] for k in ("read", "invalid", "attributed", "unattributed", "filtered", "sent")} == {
        "read": 3, "invalid": 0, "attributed": 2, "unattributed": 1, "filtered": 3, "sent": 2}
    assert sorted(standin.received) == sorted([("Purchase", e["event_id"]) for e in map(json.loads, out.read_text().splitlines())])
    events = {e["custom_data"]["order_id"]: e for e in map(json.loads, out.read_text().splitlines())}
    assert set(events) == {"#1001", "#1005"}
    first = events["#1001"]
    assert first["custom_data"]["contents"] == [{"id": "KURTA-BLU-M", "quantity": 1, "item_price": 1499.0},
                                                {"id": "DUPATTA-RED", "quantity": 2, "item_price": 350.0}]
    assert (first["custom_data"]["value"], first["custom_data"]["currency"], first["custom_data"]["num_items"]) == (
        2199, "INR", 3)
    assert first["user_data"]["ctwa_clid"] == "ARAkClidPriya01"
    assert first["user_data"]["whatsapp_business_account_id"] == WABA  # from config: the export cannot know it
    assert {"em", "ph", "fn", "ln", "ct", "st", "zp", "country"} <= set(first["user_data"])  # Billing Name split
    assert len(events["#1005"]["custom_data"]["contents"]) == 3
    assert "shopify_orders_export.csv:4" in result.stderr and "unattributed" in result.stderr
    assert "unknown_column" not in result.stderr  # every documented column is mapped or ignored


def test_shopify_validate_agrees_and_require_attribution_makes_web_orders_errors(runner, tmp_path, capi_home) -> None:
    export = dated("shopify_orders_export.csv", tmp_path)
    store_referrals(capi_home, CHAT_CUSTOMERS)
    result = capi(runner, capi_home, "validate", str(export), "--preset", "shopify", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("records", "valid", "invalid", "attributed", "unattributed", "filtered")} == {
        "records": 3, "valid": 2, "invalid": 0, "attributed": 2, "unattributed": 1, "filtered": 3}
    assert [(p["line"], p["code"], p["severity"]) for p in report["problems"]] == [(4, "unattributed", "warning")]

    strict = capi(runner, capi_home, "validate", str(export), "--preset", "shopify", "--json", "--require-attribution")
    assert strict.exit_code == 1
    assert [(p["line"], p["code"], p["severity"]) for p in json.loads(strict.stdout)["problems"]] == [
        (4, "missing_identifier", "error")]


def test_where_on_the_command_line_replaces_the_presets_filters(runner, tmp_path, capi_home) -> None:
    export = dated("shopify_orders_export.csv", tmp_path)
    store_referrals(capi_home, CHAT_CUSTOMERS)
    # Only chat orders of any payment state except refunded: the pending COD order now counts (it
    # has no `Paid at`, so its time is the time of the run).
    result = capi(runner, capi_home, "validate", str(export), "--preset", "shopify", "--json",
                  "--where", "Tags!=", "--where", "Financial Status=paid|pending")
    report = json.loads(result.stdout)
    assert (report["records"], report["filtered"]) == (3, 3)  # #1001, #1004, #1005 kept; #1002 (no tag), #1003 (2 rows)


def test_group_by_without_a_total_sums_the_line_items_and_repeats_are_duplicates(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "order,event_name,ctwa_clid,sku,quantity,unit_price,currency\n"
        "A-1,Purchase,ARAkClid1,SKU-1,2,10.50,USD\n"
        "A-1,Purchase,ARAkClid1,SKU-2,1,4.00,USD\n"
        "A-2,Purchase,ARAkClid2,SKU-1,1,10.50,USD\n"
        "A-1,Purchase,ARAkClid1,SKU-3,1,1.00,USD\n",
        encoding="utf-8")
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(path), "--group-by", "order", "--map",
                  str(_map(tmp_path, "order: order_id\n")), "--dry-run", "-o", str(out), "--no-progress")
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["custom_data"]["order_id"], e["custom_data"]["value"], e["custom_data"]["num_items"]) for e in events] == [
        ("A-1", 25.0, 3), ("A-2", 10.5, 1)]
    assert result.exit_code == 1 and "duplicate_event_id" in result.stderr and "items.csv:5" in result.stderr


def test_group_by_conflicting_values_warn_and_keep_the_first(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "items.csv"
    path.write_text("order_id,event_name,ctwa_clid,email,sku,value,currency\n"
                    "A-1,Purchase,ARAkClid1,a@example.com,S1,10,USD\n"
                    "A-1,Purchase,ARAkClid1,b@example.com,S2,,\n", encoding="utf-8")
    result = capi(runner, capi_home, "validate", str(path), "--group-by", "order_id", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["valid"] == 1
    assert [(p["field"], p["code"], p["severity"]) for p in report["problems"]] == [("em", "conflicting_value", "warning")]


# -- other platforms ---------------------------------------------------------------------------------


def test_woocommerce_export_of_an_indian_store(runner, tmp_path, capi_home) -> None:
    export = dated("woocommerce_orders.csv", tmp_path)
    store_referrals(capi_home, {"919847012345": "ARAkClidDeepa"})
    result = capi(runner, capi_home, "validate", str(export), "--preset", "woocommerce", "--json",
                  CAPI_DEFAULT_COUNTRY="IN")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    # 2231 from a chat (its phone has a stored referral), 2232 cancelled, 2233 a web order.
    assert {k: report[k] for k in ("valid", "attributed", "unattributed", "filtered")} == {
        "valid": 1, "attributed": 1, "unattributed": 1, "filtered": 1}


def test_razorpay_payments_report(runner, tmp_path, capi_home) -> None:
    export = dated("razorpay_payments.csv", tmp_path)
    store_referrals(capi_home, {"919845012345": "ARAkClidMeera"})
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(export), "--preset", "razorpay", "--locale", "en_IN",
                  "--dry-run", "-o", str(out), "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["sent"], summary["unattributed"], summary["filtered"]) == (1, 1, 1)
    event = json.loads(out.read_text())
    assert event["custom_data"]["value"] == 1499 and event["custom_data"]["currency"] == "INR"
    assert event["custom_data"]["payment_method"] == "upi"
    yesterday = (datetime.now(UTC).date() - timedelta(days=1))
    assert datetime.fromtimestamp(event["event_time"], UTC).date() == yesterday  # 28/11 read day-first


# -- local formats, optional fields -------------------------------------------------------------------


def test_brazilian_sheet_with_locale(runner, tmp_path, capi_home) -> None:
    sheet = dated("pt_BR_leads.csv", tmp_path)
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(sheet), "--map", str(FIXTURES / "pt_BR_leads_map.yaml"),
                  "--locale", "pt_BR", "--dry-run", "-o", str(out), "--no-progress", "--format", "json",
                  CAPI_TIMEZONE="America/Sao_Paulo")
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert (first["custom_data"]["value"], first["custom_data"]["currency"]) == (39.99, "BRL")
    assert second["custom_data"]["value"] == 1499
    from capi_cli.events.normalize import hash_value

    # A national number read in the row's own country (no CAPI_DEFAULT_COUNTRY); Meta's `p:` prefix.
    assert first["user_data"]["ph"] == [hash_value("ph", "+5511987654321")]
    assert second["user_data"]["ph"] == [hash_value("ph", "+5521987654321")]
    assert first["user_data"]["ge"] == [hash_value("ge", "f")]
    assert first["user_data"]["db"] == [hash_value("db", "1990-05-17")]
    assert second["user_data"]["db"] == [hash_value("db", "1988-06-05")]  # 05/06 day-first in pt_BR
    assert (first["user_data"]["fn"], first["user_data"]["ln"]) == ([hash_value("fn", "ana")], [hash_value("ln", "souza")])
    # A bad gender costs the field, not the sale: the event with its click id is sent without `ge`.
    assert "ge" not in second["user_data"] and second["user_data"]["ctwa_clid"] == "ARAkLkA8rmlFeiBrRj0002"
    assert "dropped_field" in result.stderr and "pt_BR_leads.csv:3" in result.stderr

    strict = capi(runner, capi_home, "validate", str(sheet), "--map", str(FIXTURES / "pt_BR_leads_map.yaml"),
                  "--locale", "pt_BR", "--strict-fields", "--json")
    assert strict.exit_code == 1
    assert [(p["line"], p["field"], p["code"]) for p in json.loads(strict.stdout)["problems"]] == [(3, "ge", "invalid_value")]


def test_locale_from_the_environment_and_a_conflicting_currency(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "sales.csv"
    path.write_text("event_name,ctwa_clid,value,currency\nPurchase,ARAkClid1,\"2.499,90 TL\",\n"
                    "Purchase,ARAkClid2,\"2.499,90 TL\",EUR\nPurchase,ARAkClid3,39.99,TRY\n", encoding="utf-8")
    result = capi(runner, capi_home, "validate", str(path), "--json", CAPI_LOCALE="tr_TR")
    problems = [(p["line"], p["field"], p["code"]) for p in json.loads(result.stdout)["problems"]]
    # 39.99 is not how tr_TR writes an amount: refused, never read as 3999.
    assert problems[:2] == [(3, "currency", "invalid_currency"), (4, "value", "invalid_value")]


def test_date_format(runner, tmp_path, capi_home) -> None:
    moment = datetime.now(UTC) - timedelta(hours=3)
    path = tmp_path / "e.csv"
    path.write_text(f"event_name,ctwa_clid,event_time\nLeadSubmitted,ARAkClid1,{moment:%d.%m.%Y %H.%M}\n"
                    "LeadSubmitted,ARAkClid2,yesterday\n", encoding="utf-8")
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(path), "--date-format", "%d.%m.%Y %H.%M", "--dry-run",
                  "-o", str(out), "--no-progress")
    assert result.exit_code == 1 and "does not match --date-format" in result.stderr
    assert json.loads(out.read_text())["event_time"] == int(moment.replace(second=0, microsecond=0).timestamp())


def test_unattributed_is_not_an_error_and_a_whole_run_of_them_warns(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "orders.csv"
    rows = "".join(f"Purchase,O-{i},+90532123{i:04d},10,TRY\n" for i in range(20))
    path.write_text("event_name,order_id,wa_id,value,currency\n" + rows, encoding="utf-8")
    result = capi(runner, capi_home, "send", "--file", str(path), "--dry-run", "--no-progress", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert (summary["unattributed"], summary["sent"], summary["invalid"]) == (20, 0, 0)
    assert "referral capture" in result.stderr
    nineteen = tmp_path / "fewer.csv"
    nineteen.write_text("event_name,order_id,wa_id,value,currency\n" + rows.split("\n", 1)[1], encoding="utf-8")
    result = capi(runner, capi_home, "validate", str(nineteen))
    assert result.exit_code == 0 and "referral capture" not in result.stderr


# -- usage errors: one line, exit 2 -------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("--preset", "shopifi"),
    ("--where", "Financial Status"),
    ("--where", "No Such Column=x"),
    ("--group-by", "No Such Column"),
    ("--locale", "xx_QQ"),
    ("--date-format", "day-month"),
])
def test_bad_values_of_the_new_options(runner, tmp_path, capi_home, args) -> None:
    export = dated("shopify_orders_export.csv", tmp_path)
    for command in (("validate", str(export)), ("send", "--file", str(export), "--dry-run")):
        result = capi(runner, capi_home, *command, *args)
        assert result.exit_code == 2, (command, args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("capi: error: ") and "Traceback" not in result.output


def test_preset_typo_gets_a_suggestion(runner, tmp_path, capi_home) -> None:
    result = capi(runner, capi_home, "validate", str(dated("shopify_orders_export.csv", tmp_path)), "--preset", "shopifi")
    assert "did you mean 'shopify'" in result.stderr


def _map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_single_line_item_row_without_group_by(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "e.csv"
    path.write_text("event_name,ctwa_clid,sku,qty,unit_price,value,currency\nAddToCart,ARAkClid1,SKU-9,2,4.5,9,USD\n",
                    encoding="utf-8")
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(path), "--dry-run", "-o", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["custom_data"]["contents"] == [{"id": "SKU-9", "quantity": 2, "item_price": 4.5}]


def test_workers_build_locale_runs_identically(tmp_path) -> None:
    """--locale is read record by record wherever the record is built: worker processes agree."""
    import os
    import subprocess
    import sys

    when = int(time.time()) - 3600
    lines = ["event_name,event_time,order_id,ctwa_clid,waba_id,value,db,gender"]
    lines += [f'Purchase,{when},P-{i},ARAkClid{i},{WABA},"{_brl(i)}",05/06/1990,{"feminino" if i % 3 else "x"}'
              for i in range(3000)]
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs = []
    for workers in ("0", "2"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
        env.update(CAPI_HOME=str(tmp_path / "home"), CAPI_WORKERS=workers, CAPI_LOCALE="pt_BR")
        done = subprocess.run([sys.executable, "-m", "capi_cli", "validate", str(path), "--json"], env=env,
                              capture_output=True, text=True, timeout=120)
        outputs.append(json.loads(done.stdout))
        sent = subprocess.run([sys.executable, "-m", "capi_cli", "send", "--file", str(path), "--dry-run", "-o", "-",
                               "--no-progress", "-q"], env=env, capture_output=True, text=True, timeout=120)
        outputs.append(sent.stdout)
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert outputs[0]["valid"] == 3000 and {p["code"] for p in outputs[0]["problems"]} == {"dropped_field"}
    assert '"value":1001.01,' in outputs[1] and '"value":999.99,' in outputs[1]


def _brl(amount: int) -> str:
    """R$ 999,99 / R$ 1.001,01: how a Brazilian sheet writes amounts."""
    whole = f"{amount // 1000}.{amount % 1000:03d}" if amount >= 1000 else str(amount)
    return f"R$ {whole},{amount % 100:02d}"


# -- field names: capi fields, suggestions, map warnings --------------------------------------------


def test_capi_fields_json_lists_every_canonical_field(runner, capi_home) -> None:
    from capi_cli.events.fields import CANONICAL_KEYS

    result = runner.invoke(app, ["fields", "--format", "json"])
    assert result.exit_code == 0
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert list(entries) == list(CANONICAL_KEYS)
    assert set(next(iter(entries.values()))) == {"name", "aliases", "required_for", "hashed", "rule", "example"}
    assert {"email"} <= set(entries["em"]["aliases"]) and entries["em"]["hashed"] is True
    assert entries["ctwa_clid"]["required_for"] == ["whatsapp"] and entries["ctwa_clid"]["hashed"] is False
    assert {"name", "customer_name"} <= set(entries["full_name"]["aliases"])
    table = runner.invoke(app, ["fields"])
    assert table.exit_code == 0 and "whatsapp_business_account_id" in table.stdout


def test_capi_fields_shows_a_presets_mapping(runner, capi_home) -> None:
    result = runner.invoke(app, ["fields", "--preset", "shopify", "--json"])
    document = json.loads(result.stdout)
    assert document["columns"]["Lineitem sku"] == "item_id" and document["group_by"] == "Name"
    assert document["where"] == ["Financial Status=paid", "Cancelled at="] and "Shopify" in document["source"]
    assert "Lineitem quantity" in runner.invoke(app, ["fields", "--preset", "shopify"]).stdout


def test_unknown_column_suggestion_unused_map_key_and_null(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "e.csv"
    path.write_text("event_name,ctwa_clid,waba_id,emial,Internal Note,Order Total\n"
                    f"LeadSubmitted,ARAkClid1,{WABA},a@example.com,vip,10\n", encoding="utf-8")
    mapping = _map(tmp_path, "Order Totl: value\nInternal Note: null\n")
    result = capi(runner, capi_home, "validate", str(path), "--map", str(mapping), "--json")
    problems = {(p["field"], p["code"]): p["message"] for p in json.loads(result.stdout)["problems"]}
    assert "did you mean 'email'" in problems[("emial", "unknown_column")]
    assert "did you mean 'Order Total'" in problems[("Order Totl", "unused_map_key")]
    assert ("Internal Note", "unknown_column") not in problems  # null: ignored on purpose
    assert result.exit_code == 0


def test_map_to_an_unknown_field_suggests_one(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "e.csv"
    path.write_text("a\n1\n", encoding="utf-8")
    result = capi(runner, capi_home, "validate", str(path), "--map", str(_map(tmp_path, "a: emal\n")))
    assert result.exit_code == 2 and "did you mean 'email'" in result.stderr


def test_locale_in_the_profile_and_a_bad_one(runner, tmp_path, capi_home) -> None:
    capi_home.mkdir(parents=True, exist_ok=True)
    (capi_home / "config.yaml").write_text("profiles:\n  default:\n    locale: id_ID\n", encoding="utf-8")
    path = tmp_path / "e.csv"
    path.write_text("event_name,ctwa_clid,value\nPurchase,ARAkClid1,Rp 350.000\n", encoding="utf-8")
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(path), "--dry-run", "-o", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["custom_data"] == {"value": 350000, "currency": "IDR"}
    (capi_home / "config.yaml").write_text("profiles:\n  default:\n    locale: klingon\n", encoding="utf-8")
    bad = capi(runner, capi_home, "validate", str(path))
    assert bad.exit_code == 3 and "profiles.default.locale: unknown locale 'klingon'" in bad.stderr


def test_group_by_with_a_locale_sums_the_items_and_json_records_may_leave_keys_out(runner, tmp_path, capi_home) -> None:
    path = tmp_path / "pedidos.ndjson"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"pedido": "77", "event_name": "Purchase", "ctwa_clid": "ARAkClid7", "sku": "A", "quantity": "2",
         "item_price": "R$ 1.000,50", "status": "pago"},
        {"pedido": "77", "sku": "B", "item_price": "R$ 9,50"},
        {"pedido": "78", "event_name": "Purchase", "ctwa_clid": "ARAkClid8", "sku": "A", "item_price": "R$ 1,00"},
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out.ndjson"
    result = capi(runner, capi_home, "send", "--file", str(path), "--group-by", "pedido", "--where", "status=pago",
                  "--locale", "pt_BR", "--set", "currency=BRL", "--map", str(_map(tmp_path, "pedido: order_id\n")),
                  "--dry-run", "-o", str(out), "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    event = json.loads(out.read_text())
    assert (event["custom_data"]["value"], event["custom_data"]["num_items"]) == (2010.5, 3)
    assert event["custom_data"]["contents"][0] == {"id": "A", "quantity": 2, "item_price": 1000.5}
    assert json.loads(result.stdout)["filtered"] == 1  # order 78 has no status: blank, not "pago"
