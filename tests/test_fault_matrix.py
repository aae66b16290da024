"""Fault matrix (issue 6): every fault the Graph stand-in can inject, at every position of a run,
with one request in flight and with eight, and the exactly-once invariant checked after each run,
after a plain re-run and after a deliberate `--resend-uncertain`.

Positions: the first request, one in the middle, the last planned one, and two requests of the
isolation of a refused batch (its first half, and the first single-event request). Refused
batches (poison events) are also a case of their own: in the first, a middle and the last batch.

Most cases drive `send_job.run_send` in-process (the whole send path: CSV pipeline, lock,
recovery, delivery, SQLite ledger on disk, HTTP to the stand-in); a subset goes through the CLI.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.config import load_settings
from capi_cli.delivery import run as send_job
from capi_cli.delivery.engine import DeliveryOptions
from capi_cli.events.pipeline import BuildOptions
from capi_cli.sandbox.server import (
    FAULT_KINDS,
    NO_BODY_503,
    RESET_AFTER,
    RESET_BEFORE,
    SLOW,
    THROTTLE,
    TRANSIENT,
    WRONG_COUNT,
    Fault,
    GraphStandin,
    RequestRecord,
)
from support.sending import DATASET, TOKEN, check_exactly_once, send_env, write_events_csv

N_EVENTS = 40
BATCH = 10
PLANNED_REQUESTS = N_EVENTS // BATCH
TIMEOUT = 0.3  # client timeout; SLOW answers after twice that

# What the client can know about each fault: Meta said "not counted" (retry), or nobody knows.
RETRYABLE = {TRANSIENT, THROTTLE}
AMBIGUOUS_BEFORE = {NO_BODY_503, RESET_BEFORE}  # nothing counted, but the client cannot tell
AMBIGUOUS_AFTER = {RESET_AFTER, SLOW, WRONG_COUNT}  # counted, answer lost or wrong
assert RETRYABLE | AMBIGUOUS_BEFORE | AMBIGUOUS_AFTER == set(FAULT_KINDS)


def make_fault(kind: str) -> Fault:
    return Fault(kind, delay=2 * TIMEOUT) if kind == SLOW else Fault(kind)


# -- the invariant ----------------------------------------------------------------------------------


def expected_uncertain(standin: GraphStandin) -> set[str]:
    """Events of requests whose outcome the client could not know: they must end `uncertain`."""
    out: set[str] = set()
    for record in standin.requests:
        if record.fault in AMBIGUOUS_BEFORE or (record.fault in AMBIGUOUS_AFTER and record.error_code is None):
            # (a refused request never reaches the fault: Meta answered it, so it is not ambiguous)
            out.update(str(e["event_id"]) for e in record.body["data"])
    return out


# -- one case -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str | None  # a FAULT_KINDS member, or None: refused batches only
    position: str
    concurrency: int
    poison_batch: int | None = None  # 0-based batch holding the poison events
    poison_count: int = 1

    @property
    def id(self) -> str:
        return f"{self.kind or 'refused'}-{self.position}-c{self.concurrency}"


def fault_rule(position: str) -> Callable[[RequestRecord], bool] | int:
    """Request number, or a predicate picking a split sub-request (fault once only)."""
    if position == "first":
        return 1
    if position == "middle":
        return PLANNED_REQUESTS // 2 + 1
    if position == "last":
        return PLANNED_REQUESTS
    size = {"isolation-half": BATCH // 2, "isolation-single": 1}[position]
    hit: list[int] = []

    def rule(record: RequestRecord) -> bool:
        if record.n_events == size and not hit:
            hit.append(record.number)
            return True
        return False

    return rule


def build_cases() -> list[Case]:
    cases = []
    for concurrency in (1, 8):
        for kind in FAULT_KINDS:
            for position in ("first", "middle", "last"):
                cases.append(Case(kind, position, concurrency))
            for position in ("isolation-half", "isolation-single"):
                cases.append(Case(kind, position, concurrency, poison_batch=1))
        for batch, position in ((0, "first"), (PLANNED_REQUESTS // 2, "middle"), (PLANNED_REQUESTS - 1, "last")):
            cases.append(Case(None, position, concurrency, poison_batch=batch))
        cases.append(Case(None, "middle-3-poisoned", concurrency, poison_batch=1, poison_count=3))
    return cases


CASES = build_cases()


def poison_ids(ids: list[str], case: Case) -> set[str]:
    if case.poison_batch is None:
        return set()
    batch = ids[case.poison_batch * BATCH : (case.poison_batch + 1) * BATCH]
    return {batch[(3 + 4 * k) % BATCH] for k in range(case.poison_count)}


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries in milliseconds: the matrix is about outcomes, not waiting."""
    monkeypatch.setattr(
        send_job,
        "DeliveryOptions",
        functools.partial(DeliveryOptions, backoff_base=0.005, backoff_max=0.02, retry_after_max=0.02),
    )


def run_in_process(home: Path, standin: GraphStandin, csv_path: Path, concurrency: int,
                   **request: bool) -> send_job.SendReport:
    env = send_env(home, standin.url)
    settings = load_settings(
        env=env,
        overrides={"batch_size": BATCH, "concurrency": concurrency, "timeout": TIMEOUT, "max_retries": 3},
    )
    return send_job.run_send(settings, send_job.SendRequest(files=[str(csv_path)], build=BuildOptions(), **request))


def assert_rerun_resent_only_rejected(standin: GraphStandin, posts: int, states: dict[str, str]) -> None:
    """A re-run may only send events the ledger holds `rejected` (Meta counted nothing of them).
    A row without event_time takes "now" as its time, so its payload, hence its hash, changes
    between runs and capi tries the rejected row again; harmless, it cannot double-count."""
    again = [str(e["event_id"]) for r in standin.requests if r.number > posts for e in r.body["data"]]
    assert all(states.get(i) == "rejected" for i in again), [(i, states.get(i)) for i in again]


def expected_exit(uncertain: set[str], rejected: bool) -> int:
    return 4 if uncertain else 1 if rejected else 0


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_matrix_in_process(case: Case, tmp_path: Path, fast_backoff: None) -> None:
    home = tmp_path / "home"
    csv_path = tmp_path / "orders.csv"
    ids = write_events_csv(csv_path, N_EVENTS)
    poison = poison_ids(ids, case)
    valid = [i for i in ids if i not in poison]
    with GraphStandin(token=TOKEN, datasets={DATASET}) as standin:
        standin.poison = set(poison)
        if case.kind is not None:
            standin.inject(make_fault(case.kind), fault_rule(case.position))

        report = run_in_process(home, standin, csv_path, case.concurrency)
        faulted = [r for r in standin.requests if r.fault]
        if case.kind is not None:
            assert len(faulted) == 1, f"the fault was not injected where meant: {[r.number for r in faulted]}"
        uncertain = expected_uncertain(standin)
        states = check_exactly_once(standin, home, valid, poison)
        assert {i for i, s in states.items() if s == "uncertain"} == uncertain
        assert {i for i, s in states.items() if s == "sent"} == {i for (_, i) in standin.received} - uncertain
        assert set(states.values()) <= {"sent", "rejected", "uncertain"}, "a single fault must not exhaust retries"
        summary = report.summary
        assert (summary.sent, summary.uncertain) == (len(valid) - len(uncertain - poison), len(uncertain))
        assert summary.rejected == len(poison - uncertain)
        assert int(report.exit_code) == expected_exit(uncertain, bool(poison - uncertain))

        # A plain re-run sends nothing: sent is skipped, uncertain is held and reported.
        posts = standin.posts
        again = run_in_process(home, standin, csv_path, case.concurrency)
        assert_rerun_resent_only_rejected(standin, posts, states)
        assert again.summary.uncertain == len(uncertain) and again.summary.sent == 0
        assert int(again.exit_code) == expected_exit(uncertain, again.summary.rejected > 0)
        check_exactly_once(standin, home, valid, poison)

        # Resending the uncertain ones is deliberate; then every valid event is sent, and only
        # those Meta had already counted arrive twice.
        if uncertain:
            counted_before = {i for (_, i) in standin.received}
            resend = run_in_process(home, standin, csv_path, case.concurrency, resend_uncertain=True)
            final = check_exactly_once(standin, home, valid, poison, resent=uncertain & counted_before)
            assert all(final[i] == "sent" for i in valid)
            assert all(final[i] == "rejected" for i in poison)
            assert len(poison & uncertain) <= resend.summary.rejected <= len(poison)
            assert int(resend.exit_code) == (1 if resend.summary.rejected else 0)
            for key, n in standin.received.items():
                assert n == (2 if key[1] in uncertain & counted_before else 1), key


# -- through the CLI ----------------------------------------------------------------------------------

CLI_CASES = [Case(kind, "middle", 8) for kind in FAULT_KINDS] + [
    Case(RESET_AFTER, "isolation-half", 8, poison_batch=1),
    Case(TRANSIENT, "isolation-single", 1, poison_batch=1),
    Case(None, "last", 8, poison_batch=PLANNED_REQUESTS - 1),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_fault_matrix_through_the_cli(case: Case, tmp_path: Path) -> None:
    home = tmp_path / "home"
    csv_path = tmp_path / "orders.csv"
    ids = write_events_csv(csv_path, N_EVENTS)
    poison = poison_ids(ids, case)
    valid = [i for i in ids if i not in poison]
    config = tmp_path / "config.yaml"
    config.write_text(f"profiles:\n  default:\n    timeout: {TIMEOUT}\n    max_retries: 2\n")
    with GraphStandin(token=TOKEN, datasets={DATASET}) as standin:
        standin.poison = set(poison)
        if case.kind is not None:
            standin.inject(make_fault(case.kind), fault_rule(case.position))
        env = {**send_env(home, standin.url), "CAPI_CONFIG": str(config)}
        args = ["send", "--no-progress", "--file", str(csv_path), "--batch-size", str(BATCH),
                "--concurrency", str(case.concurrency), "--json"]
        result = CliRunner().invoke(app, args, env=env)
        uncertain = expected_uncertain(standin)
        assert result.exit_code == expected_exit(uncertain, bool(poison - uncertain)), result.output
        assert "Traceback" not in result.output
        summary = json.loads(result.stdout)
        assert summary["uncertain"] == len(uncertain) and summary["failed"] == 0
        assert summary["sent"] + summary["uncertain"] + summary["rejected"] == N_EVENTS
        states = check_exactly_once(standin, home, valid, poison)
        assert {i for i, s in states.items() if s == "uncertain"} == uncertain
        if uncertain:
            assert "--resend-uncertain" in result.stderr
        posts = standin.posts
        again = CliRunner().invoke(app, args, env=env)
        assert_rerun_resent_only_rejected(standin, posts, states)
        rerun = json.loads(again.stdout)
        assert rerun["sent"] == 0 and rerun["uncertain"] == len(uncertain)
        assert again.exit_code == expected_exit(uncertain, rerun["rejected"] > 0), again.output
        check_exactly_once(standin, home, valid, poison)
