"""The README's cron recipe works as written (SPEC §1 exit codes; issue #13 "the first night").

The script is taken from the README (its ```sh block under "Running from cron"), checked to be the
shipped examples/capi-nightly.sh, and run under `env -i` with cron's environment (HOME, LOGNAME,
SHELL=/bin/sh, PATH=/usr/bin:/bin) against `capi sandbox`, twice. Only the four settings at its
top (CAPI_HOME, CAPI, WEBHOOKS, ORDERS) are pointed at this test's files; the rest runs as written.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from support.sandbox_process import running_sandbox
from support.sending import DATASET, TOKEN, WABA

ROOT = Path(__file__).resolve().parents[1]
CAPI = Path(sys.executable).parent / "capi"


def recipe() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Running from cron\n.*?```sh\n(.*?)```", text, re.S | re.M)
    assert match, "README.md lost its cron recipe"
    script = match.group(1)
    assert script == (ROOT / "examples" / "capi-nightly.sh").read_text(encoding="utf-8")
    return script


def localized(script: str, **settings: str) -> str:
    for name, value in settings.items():
        script, n = re.subn(rf"^((?:export )?{name}=)[^\n#]*?(?=\s*#|$)", lambda m, v=value: m.group(1) + v, script,
                            count=1, flags=re.M)
        assert n == 1, f"the recipe has no {name}= line"
    return script


def cron(script: Path, user_home: Path) -> subprocess.CompletedProcess[str]:
    environment = [f"HOME={user_home}", "LOGNAME=capi", "SHELL=/bin/sh", "PATH=/usr/bin:/bin"]
    return subprocess.run(["/usr/bin/env", "-i", *environment, "/bin/sh", str(script)], capture_output=True,
                          text=True, timeout=180, cwd=user_home)


def set_up_home(home: Path, url: str, token: str) -> None:
    env = {"CAPI_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home.parent)}
    run = [str(CAPI), "-q"]
    done = subprocess.run([*run, "config", "init", "--dataset-id", DATASET, "--waba-id", WABA, "--token-stdin",
                           "-y"], input=token + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*run, "config", "set", "graph_url", url], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_cron_recipe_under_cron_environment_twice(tmp_path: Path) -> None:
    home, user = tmp_path / "srv-capi", tmp_path / "user"
    webhooks, exports = tmp_path / "wa-webhooks", tmp_path / "exports"
    for path in (user, webhooks, exports):
        path.mkdir()
    dump = subprocess.run([sys.executable, str(ROOT / "examples" / "fresh_webhooks.py")], capture_output=True,
                          text=True, check=True).stdout
    # A live log: the webhook receiver is halfway through writing the last delivery.
    (webhooks / "today.ndjson").write_text(dump + dump.splitlines()[0][:120])
    # The export names the customer by phone only: the send needs the referral this run captures.
    (exports / "orders.csv").write_text(
        "event_name,wa_id,order_id,value,currency\nPurchase,+91 98765 43210,ORD-9,1499,INR\n")
    script = tmp_path / "capi-nightly.sh"
    script.write_text(localized(recipe(), CAPI_HOME=str(home), CAPI=str(CAPI), WEBHOOKS=str(webhooks),
                                ORDERS=str(exports / "orders.csv")))
    accepted = tmp_path / "accepted.ndjson"

    with running_sandbox(["--token", TOKEN, "--dataset", DATASET, "-o", str(accepted)]) as url:
        set_up_home(home, url, TOKEN)
        first = cron(script, user)
        second = cron(script, user)
        token_file = next(home.rglob("*.token"))
        token_file.write_text("EAAG-revoked-token\n")
        with (exports / "orders.csv").open("a") as export:
            export.write("OrderShipped,+91 98765 43210,ORD-9,,\n")
        refused = cron(script, user)

    assert (first.returncode, first.stdout, first.stderr) == (0, "", ""), first
    assert (second.returncode, second.stdout, second.stderr) == (0, "", ""), second
    events = [json.loads(line) for line in accepted.read_text().splitlines()]
    assert len(events) == 1, "the second night sent the order again"
    assert events[0]["user_data"]["ctwa_clid"].startswith("ARAkLkA8rmlFei")  # joined the captured referral
    assert "today.ndjson" in (home / "capture.log").read_text()  # the partial line, logged, not mailed
    # A night that needs attention prints (so cron mails) and exits with the code to alert on.
    assert refused.returncode == 3
    assert "capi send: exit 3" in refused.stdout and "190" in refused.stderr
    assert "EAAG-revoked-token" not in refused.stdout + refused.stderr
