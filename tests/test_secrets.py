"""Secrets and privacy (SPEC §2, §8): with a recognisable token and app secret in force, every
command, with -v, keeps them out of stdout, stderr, output files and every file under CAPI_HOME;
no raw email, phone or name from the input is stored; and every file capi creates is 0600 even
under umask 000. `capi` runs as a subprocess with umask 0 so the modes are its own doing.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capi_cli.sandbox.server import TRANSIENT, GraphStandin

TOKEN = "EAAG-SECRET-TOKEN-CANARY-7f3a"
APP_SECRET = "APP-SECRET-CANARY-91bd"
DATASET = "1234567890"
WABA = "104996122399160"
WA_ID = "905551112233"  # the WhatsApp number in the webhooks: stored only as its SHA-256 (ledger.phone_key)
# Customer data of the events file: none of it may be stored, in any common writing.
EMAILS = ["canary.buyer@example.com", "Canary.Buyer@Example.COM"]
PHONES = ["+14155552671", "14155552671", "4155552671", "+1 415 555 2671", "(415) 555-2671", "415-555-2671"]
NAMES = ["Zebulon", "Quixotica", "zebulon", "quixotica"]
PROFILE_NAMES = ["Priya Canarysdottir", "Canarysdottir"]  # from the webhooks: not stored either


def _umask0() -> None:
    os.umask(0)


def _run(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "capi_cli", "-v", *args], env=env, cwd=cwd, capture_output=True,
        input=(stdin or "").encode(), timeout=60, preexec_fn=_umask0,
    )
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def _events_csv(path: Path, prefix: str, n: int = 4) -> None:
    now = int(time.time()) - 60
    rows = ["event_name,event_time,event_id,ctwa_clid,email,phone,first_name,last_name,value,currency"]
    for i in range(n):
        rows.append(f"Purchase,{now},{prefix}-{i},ARAkCanaryClid{i},{EMAILS[i % 2]},{PHONES[i % len(PHONES)]},"
                    f"Zebulon,Quixotica,{10 + i},USD")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    # A WhatsApp event without click id, joined to the stored referral by its wa_id.
    path.with_suffix(".join.csv").write_text(
        f"event_name,event_time,event_id,wa_id,value,currency\nPurchase,{now},{prefix}-wa,{WA_ID},5,USD\n",
        encoding="utf-8")


def _webhook_dump(path: Path) -> None:
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": PROFILE_NAMES[0], "username": "@canary.user"}, "wa_id": WA_ID}],
            "messages": [{"from": WA_ID, "id": "wamid.CANARY1", "timestamp": str(int(time.time()) - 3600),
                          "referral": {"source_id": "1202", "source_type": "ad", "ctwa_clid": "ARAkStored",
                                       "headline": "Canary headline", "body": "Canary body"}}]}}]}]})
    import hashlib
    import hmac

    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    path.write_text(json.dumps({"headers": {"X-Hub-Signature-256": signature}, "raw_body": body}) + "\n",
                    encoding="utf-8")


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _assert_no_secret(texts: list[str], files: list[Path], secrets: list[str]) -> None:
    for secret in secrets:
        for i, text in enumerate(texts):
            assert secret not in text, f"secret in output #{i}: ...{text[max(0, text.find(secret) - 200):][:400]}"
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"secret in {path}"


def _assert_report_facts_impersonal(path: Path) -> None:
    """The report facts (SPEC §8) are names and codes, never values of the customer's data."""
    import re
    import sqlite3

    from capi_cli.ledger.facts import MATCH_KEYS

    with sqlite3.connect(path) as conn:
        facts = conn.execute("SELECT channel, value, currency, referral_key, ad_id, attribution, match_keys "
                             "FROM events WHERE attribution IS NOT NULL").fetchall()
        referral_keys = {row[0] for row in conn.execute("SELECT message_key FROM referrals")}
        runs = conn.execute("SELECT inputs, dataset_id FROM runs").fetchall()
    assert facts and runs
    for channel, value, currency, referral_key, ad_id, attribution, match_keys in facts:
        assert channel in ("whatsapp", "messenger", "instagram")
        assert value is None or isinstance(value, float)
        assert currency is None or re.fullmatch(r"[A-Z]{3}", currency)
        assert referral_key is None or referral_key in referral_keys  # the referral's own key, nothing new
        assert ad_id is None or ad_id.isdigit()
        assert attribution in ("click_id", "joined", "none")
        assert set(filter(None, match_keys.split(","))) <= set(MATCH_KEYS)
    assert any(row[5] == "joined" for row in facts) and any("em" in row[6] for row in facts)
    for inputs, dataset_id in runs:
        assert dataset_id == DATASET and all(name.endswith(".csv") for name in json.loads(inputs))


def _assert_private(paths: list[Path]) -> None:
    for path in paths:
        assert path.exists(), path
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path} is {oct(mode)}"


@pytest.fixture
def world(tmp_path: Path) -> dict[str, object]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    _events_csv(work / "events.csv", "ev")
    _webhook_dump(work / "dump.ndjson")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(CAPI_HOME=str(home), CAPI_DATASET_ID=DATASET, CAPI_ACCESS_TOKEN=TOKEN, CAPI_APP_SECRET=APP_SECRET,
               CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID=WABA, CAPI_DEFAULT_COUNTRY="US", CANARY_APP_SECRET=APP_SECRET, COLUMNS="200", NO_COLOR="1")
    return {"home": home, "work": work, "env": env}


@pytest.mark.timeout(120)
def test_secrets_never_leak_and_files_are_private(world: dict[str, object]) -> None:
    home, work, base_env = Path(str(world["home"])), Path(str(world["work"])), dict(world["env"])  # type: ignore[call-overload]
    outputs: list[str] = []

    def run(*args: str, env: dict[str, str] | None = None, expect: set[int] | None = None) -> None:
        code, out, err = _run(list(args), env or base_env, work)
        assert "Traceback" not in err, err
        if expect is not None:
            assert code in expect, (args, code, err)
        outputs.extend([out, err])

    with GraphStandin(token=TOKEN, datasets={DATASET}, app_secret=APP_SECRET) as graph:
        env = {**base_env, "CAPI_GRAPH_URL": graph.url}
        run("config", "show", env=env, expect={0})
        run("config", "show", "--json", env=env, expect={0})
        run("config", "path", env=env, expect={0})
        run("config", "profiles", env=env, expect={0})
        run("doctor", "--offline", env=env)
        run("doctor", env=env, expect={0})
        run("extract-referral", "dump.ndjson", "--app-secret-env", "CANARY_APP_SECRET", "-o", "referrals.json",
            "--format", "json", env=env, expect={0})
        referrals = json.loads((work / "referrals.json").read_text())
        assert [r["signature"] for r in referrals] == ["valid"]  # the secret was used, not printed
        run("validate", "events.csv", env=env, expect={0})
        run("send", "--file", "events.csv", "--dry-run", "-o", "dry.ndjson", env=env, expect={0})
        run("send", "--file", "events.csv", "--file", "events.join.csv", "-o", "sent.ndjson", env=env, expect={0})
        assert graph.received, "nothing reached the stand-in"
        assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in graph.requests if r.method == "POST")
        assert all(TOKEN not in r.path for r in graph.requests)  # never in the URL
        # Faults: transient errors are retried, the run still ends well and says nothing secret.
        _events_csv(work / "more.csv", "fault")
        graph.inject(TRANSIENT, on=[graph.posts + 1, graph.posts + 2])
        run("send", "--file", "more.csv", env=env, expect={0, 4})
        # A refused token (a different, also secret, value): exit 3, and neither value printed.
        wrong = "EAAG-WRONG-TOKEN-CANARY-c0de"
        _events_csv(work / "wrong.csv", "wrong")
        run("send", "--file", "wrong.csv", env={**env, "CAPI_ACCESS_TOKEN": wrong}, expect={3})
        run("doctor", env={**env, "CAPI_ACCESS_TOKEN": wrong}, expect={3})
        run("ledger", "stats", env=env, expect={0})
        run("ledger", "list", "--format", "json", env=env, expect={0, 4})
        run("ledger", "export", "-o", "export.csv", "--format", "csv", env=env, expect={0, 4})
        run("referrals", "list", env=env, expect={0})
        run("referrals", "lookup", WA_ID, env=env, expect={0})
        run("hash", "em", EMAILS[0], env=env, expect={0})
        run("report", env=env, expect={0})
        run("report", "--json", "--by", "day", env=env, expect={0})
        wrong_secrets = [wrong]

    files = _files(home) + [work / n for n in ("referrals.json", "dry.ndjson", "sent.ndjson", "export.csv")]
    assert any(p.name.endswith("-wal") for p in _files(home)) or (home / "ledger.sqlite3").exists()
    _assert_no_secret(outputs, files, [TOKEN, APP_SECRET, *wrong_secrets])

    # No raw customer data under CAPI_HOME after extract-referral --store and a real send.
    stored = b"".join(p.read_bytes() for p in _files(home))
    for raw in [*EMAILS, *PHONES, WA_ID, *NAMES, *PROFILE_NAMES, "@canary.user", "Canary body"]:
        assert raw.encode() not in stored, f"raw customer data {raw!r} stored under CAPI_HOME"
    # ... but the referral was stored, and the join used it (the file is really the ledger). The ad's
    # headline is its creative (the advertiser's text, not the customer's): kept for `capi report`.
    assert b"ARAkStored" in stored and b"Canary headline" in stored
    _assert_report_facts_impersonal(home / "ledger.sqlite3")

    _assert_private([home / "ledger.sqlite3", *[p for p in _files(home) if p.name.startswith("ledger")]])
    _assert_private([work / n for n in ("referrals.json", "dry.ndjson", "sent.ndjson", "export.csv")])
    assert {p.name for p in _files(home)} >= {"ledger.sqlite3", "ledger.sqlite3.lock"}


@pytest.mark.timeout(90)
def test_token_file_profile_keeps_the_token_private(world: dict[str, object]) -> None:
    home, work, base_env = Path(str(world["home"])), Path(str(world["work"])), dict(world["env"])  # type: ignore[call-overload]
    env = {k: v for k, v in base_env.items() if k not in ("CAPI_ACCESS_TOKEN", "CAPI_DATASET_ID")}
    outputs: list[str] = []
    with GraphStandin(token=TOKEN, datasets={DATASET}, app_secret=APP_SECRET) as graph:
        env["CAPI_GRAPH_URL"] = graph.url
        code, out, err = _run(["--profile", "shop", "config", "init", "--dataset-id", DATASET, "--waba-id", WABA,
                               "--token-stdin", "-y"], env, work, stdin=TOKEN + "\n")
        assert code == 0, err
        outputs += [out, err]
        for args in (["config", "show"], ["config", "show", "--json"], ["config", "profiles"], ["doctor"],
                     ["send", "--file", "events.csv", "-o", "sent.ndjson"], ["ledger", "export"]):
            code, out, err = _run(["--profile", "shop", *args], env, work)
            assert code == 0 and "Traceback" not in err, (args, err)
            outputs += [out, err]
        assert graph.received
    config = home / "config.yaml"
    token_files = [p for p in _files(home) if TOKEN.encode() in p.read_bytes()]
    assert len(token_files) == 1 and token_files[0] != config, "the token lives in its own file, only there"
    _assert_private([config, token_files[0], work / "sent.ndjson",
                     *[p for p in _files(home) if p.name.startswith("ledger")]])
    others = [p for p in _files(home) if p != token_files[0]] + [work / "sent.ndjson"]
    _assert_no_secret(outputs, others, [TOKEN, APP_SECRET])
