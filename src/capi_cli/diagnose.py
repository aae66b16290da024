"""The checks behind `capi doctor`: each says what is wrong and what to do."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capi_cli.errors import CapiError, ExitCode


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    exit_code: ExitCode = ExitCode.SETUP

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def run_checks(profile: str | None, config_file: str | None, online: bool) -> list[Check]:
    from capi_cli.config import config_path, load_settings

    checks: list[Check] = []
    path, explicit = config_path(config_file, os.environ)
    try:
        s = load_settings(profile=profile, config_file=config_file)
    except CapiError as exc:
        return [Check("config", False, exc.message, exc.exit_code)]
    found = "found" if (explicit or path.exists()) else "not found; using environment and defaults"
    checks.append(Check("config", True, f"{path} ({found}), profile `{s.profile}`"))
    checks.append(
        Check(
            "dataset_id",
            bool(s.dataset_id),
            s.dataset_id or "not set: CAPI_DATASET_ID or `capi config set dataset_id`",
        )
    )
    token_source = s.sources.get("access_token", "default")
    checks.append(
        Check(
            "access_token",
            bool(s.access_token),
            f"present (from {token_source})"
            if s.access_token
            else "not set: CAPI_ACCESS_TOKEN or `capi config init`",
        )
    )
    checks.append(_ledger_check(s.ledger))
    if online and s.dataset_id and s.access_token:
        checks.append(_dataset_check(s))
    return checks


def _ledger_check(ledger_path: str) -> Check:
    from capi_cli.ledger import LedgerRef, open_ledger

    ref = LedgerRef.parse(ledger_path)
    try:
        with open_ledger(ref) as ledger:
            counts = ledger.stats()["total"]
    except CapiError as exc:
        return Check("ledger", False, exc.message, exc.exit_code)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "empty"
    uncertain = counts.get("uncertain", 0)
    if ref.kind == "postgres":
        detail = f"{ref.shown} (PostgreSQL, migrated; {summary})"
    else:
        mode = oct(Path(ledger_path).stat().st_mode & 0o777)
        detail = f"{ledger_path} (writable, mode {mode[2:]}; {summary})"
    if uncertain:
        return Check(
            "ledger",
            False,
            detail + f"; {uncertain} uncertain events: `capi ledger list --status uncertain`",
            ExitCode.INCOMPLETE,
        )
    return Check("ledger", True, detail)


def _dataset_check(s: Any) -> Check:
    from capi_cli.delivery.graph import GraphClient

    with GraphClient.from_settings(s) as client:
        result = client.check_dataset(s.dataset_id)
    if result.error is not None:
        return Check("dataset", False, result.error.message, result.error.exit_code)
    name = f" ({result.name})" if result.name else ""
    return Check("dataset", True, f"{result.dataset_id}{name} reachable at {s.graph_url}/{s.api_version}")
