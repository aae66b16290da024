"""`capi sandbox`: a local Graph API stand-in to rehearse sends without Meta (SPEC §11)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import typer

from capi_cli.cli.common import state
from capi_cli.errors import UsageError

DEFAULT_PORT = 8765


def register(app: typer.Typer) -> None:
    app.command("sandbox")(sandbox)


def sandbox(
    ctx: typer.Context,
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one)."),
    latency: float = typer.Option(0.0, "--latency", min=0.0, metavar="SECONDS", help="Answer each request after this long."),
    fail: list[str] = typer.Option(
        [], "--fail", metavar="KIND[@N]",
        help="Fault on every events request, or on the Nth only: transient, throttle, bare-503, reset-before, "
             "reset-after, slow, short-count (repeatable).",
    ),
    token: str = typer.Option(None, "--token", help="The only access token accepted (default: any)."),
    dataset: list[str] = typer.Option(
        [], "--dataset", metavar="ID", help="A dataset id that exists (repeatable; default 1234567890)."
    ),
    output: str = typer.Option(None, "-o", "--output", metavar="FILE", help="Append each accepted event to FILE (NDJSON)."),
) -> None:
    """Run a local stand-in of Meta's Graph API and print the CAPI_GRAPH_URL to use with it.

    It checks batches as Meta does, refuses them as Meta does, prints one line per request on
    stderr, and writes the events it accepted to -o FILE. Stop it with Ctrl-C.

    Example: capi sandbox --dataset 1234567890 -o accepted.ndjson
             CAPI_GRAPH_URL=http://127.0.0.1:8765 CAPI_DATASET_ID=1234567890 CAPI_ACCESS_TOKEN=any capi send --file orders.csv
    """
    from capi_cli.sandbox import GraphStandin, add_fails

    quiet = state(ctx).quiet
    accepted = _append(output) if output else None

    def log(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    try:
        standin = GraphStandin(
            token=token, datasets=dataset or ["1234567890"], latency=latency, port=port, log=log, accepted=accepted,
            keep_requests=False,
        )
    except OSError as exc:
        raise UsageError(f"--port {port}: cannot listen on 127.0.0.1: {exc.strerror}") from None
    try:
        add_fails(standin, fail)
    except ValueError as exc:
        raise UsageError(f"--fail {exc}") from None

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # The result (stdout): the one setting a client needs. Everything else goes to stderr.
    print(f"CAPI_GRAPH_URL={standin.url}", flush=True)
    if not quiet:
        token_note = "only the --token given" if token else "any token"
        print(f"sandbox: datasets {', '.join(sorted(standin.datasets))}; accepting {token_note}; Ctrl-C stops",
              file=sys.stderr, flush=True)
    try:
        standin.serve()
    except KeyboardInterrupt:
        pass
    finally:
        standin.close()
        if accepted is not None:
            accepted.close()
        if not quiet:
            print(f"sandbox: {standin.posts} event requests, {sum(standin.received.values())} events accepted",
                  file=sys.stderr)


def _append(path: str) -> Any:
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write: {exc.strerror}") from None
    return os.fdopen(fd, "a", encoding="utf-8")
