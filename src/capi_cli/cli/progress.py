"""Progress and summaries of long runs: a live bar on a terminal, one line under cron."""

from __future__ import annotations

import sys
from typing import Any

from capi_cli.cli.common import stderr_is_tty, use_color


class DeliveryBar:
    """A rich live line on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool = True, *, dry_run: bool = False, total: int | None = None) -> None:
        self.enabled = enabled and stderr_is_tty()
        self.dry_run = dry_run
        self.total = total  # estimated records of the input, when its size says
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> DeliveryBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            console = Console(file=sys.stderr, no_color=not use_color())
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("reading", total=None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def update(self, p: Any) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task, description=progress_text(p, dry_run=self.dry_run, total=self.total))


def progress_text(p: Any, *, dry_run: bool = False, total: int | None = None) -> str:
    rate = p.events / p.elapsed if p.elapsed > 0 else 0.0
    verb = "would send" if dry_run else "sent"
    of = f" of ~{max(total, p.events):,}" if total else ""
    eta = ""
    if total and rate > 0 and total > p.events:
        seconds = int((total - p.events) / rate)
        eta = f"  ETA {seconds // 60}:{seconds % 60:02d}"
    return (
        f"read {p.events:,}{of}  {verb} {p.sent:,}  skipped {p.skipped:,}  rejected {p.rejected:,}  "
        f"failed {p.failed:,}  uncertain {p.uncertain:,}  in flight {p.in_flight}  {rate:,.0f} events/s{eta}"
    )


_LINE_FORMATS = (".csv", ".tsv", ".ndjson", ".jsonl")
_SAMPLE = 1 << 16


def estimate_records(paths: Any) -> int | None:
    """Records in the inputs, estimated from their size and the lines of their first 64 KiB; None
    when a size is unknown (stdin) or a format has no record per line (YAML, JSON)."""
    import os

    total = 0.0
    for path in paths:
        name = str(path)
        if name == "-" or not name.lower().endswith(_LINE_FORMATS):
            return None
        try:
            size = os.path.getsize(name)
            with open(name, "rb") as stream:
                sample = stream.read(_SAMPLE)
        except OSError:
            return None
        lines = sample.count(b"\n")
        if not lines:
            return None
        total += size * lines / len(sample) - (1 if name.lower().endswith((".csv", ".tsv")) else 0)
    return max(int(total), 0)


def print_problem(problem: Any) -> None:
    where = f"{problem.source}:{problem.line}" if problem.line else str(problem.source)
    field = f" {problem.field}:" if problem.field else ""
    print(f"{where}:{field} {problem.message} [{problem.code}]", file=sys.stderr)


def summary_line(summary: Any) -> str:
    """The one line a cron mail shows: every counter, and whether it was a dry run."""
    verb = "would send" if summary.dry_run else "sent"
    text = (
        f"read {summary.read}, invalid {summary.invalid}, attributed {summary.attributed}, "
        + (f"unattributed {summary.unattributed}, " if getattr(summary, "unattributed", 0) else "")
        + (f"filtered {summary.filtered}, " if getattr(summary, "filtered", 0) else "")
        + f"skipped {summary.skipped}, {verb} {summary.sent}, rejected {summary.rejected}, "
        f"failed {summary.failed}, uncertain {summary.uncertain} "
        f"({summary.batches} batches, {summary.requests} requests)"
    )
    return ("dry run: " if summary.dry_run else "") + text
