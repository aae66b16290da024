"""Progress and summaries of long runs: a live bar on a terminal, one line under cron."""

from __future__ import annotations

import sys
from typing import Any

from capi_cli.cli.common import stderr_is_tty, use_color


class DeliveryBar:
    """A rich live line on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and stderr_is_tty()
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
        rate = p.events / p.elapsed if p.elapsed > 0 else 0.0
        self._progress.update(
            self._task,
            description=(
                f"read {p.events:,}  sent {p.sent:,}  skipped {p.skipped:,}  rejected {p.rejected:,}  "
                f"failed {p.failed:,}  uncertain {p.uncertain:,}  in flight {p.in_flight}  {rate:,.0f} events/s"
            ),
        )


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
