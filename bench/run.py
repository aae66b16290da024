"""capi's performance targets (SPEC §9), each as a ratio measured in this one run, on this machine.

    .venv/bin/python bench/run.py                 # full sizes: 1,000,000 rows, 100,000 events sent
    .venv/bin/python bench/run.py --quick         # CI: 40,000 rows, 20,000 events, 1 repetition (< 60 s;
                                                  # store and join add ~15 s)
    .venv/bin/python bench/run.py --rows 200000 --only dryrun --only memory

Measurements (every one in a subprocess, the median of --repeat runs; a ratio of two commands is the
median of their ratios in back-to-back pairs, so that a slow minute on a shared machine slows both):
  dryrun   `capi send --file X.csv --dry-run -o /dev/null` against Meta's Python SDK building the same
           events (serverside Event/UserData/CustomData + normalize() + json.dumps): events/s, >= 3x
  memory   peak RSS of that dry run (capi and its worker processes together, polled from /proc):
           < 150 MB on the full file, and flat: at most 1.5x the peak on a tenth of the rows
           (--quick: on half of them, so that both files are large enough for the worker processes)
  send     100,000 events to the Graph API stand-in answering after 300 ms (`capi sandbox`,
           its own process) against the ideal: requests / concurrency x 300 ms + the dry run: <= 1.3x
  rerun    the same send again, every event already `sent` in the ledger, against the dry run: < 0.5x
  extract  `capi extract-referral LOG --no-store` on a generated webhook log: deliveries/s, peak RSS
  store    the same extraction with `--store` (into a new ledger each time) against `--no-store`: <= 1.3x
  join     with 200,000 referrals stored (--referrals), a dry run of the rows where every row is
           joined by the customer's phone, written as people write phones, against the same export
           carrying click ids (bench/bench_join.py): <= 1.5x
  startup  `capi --version` against `python -c "import typer"`: <= 1.5x
  report   `capi report` (the terminal table) over a ledger of 1,000,000 events and 200,000 referrals
           (bench/bench_report.py; --quick: 100,000 and 20,000): < 2 s
  postgres with --postgres URL (a scratch server): send and re-run as above on a PostgreSQL ledger,
           and 4 hosts (processes) splitting one 400,000-event backfill (quick 40,000) with
           `send --shard K/4` against one host: <= 0.5x (bench/bench_postgres.py)

A missed target is marked MISSED in the table; the exit status is non-zero only when a measurement
could not be made (a command failed), so that noise on a shared CI machine does not fail the build.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# The measurement modules import names from `run` (BenchError, Row, ...): run as a script, this is
# `__main__`, and they must get this module, not a second copy whose BenchError main() cannot catch.
sys.modules.setdefault("run", sys.modules[__name__])

from bench_build import generate  # noqa: E402
from bench_extract import generate as generate_webhooks  # noqa: E402
from bench_join import generate as generate_join  # noqa: E402
from bench_report import generate as generate_ledger  # noqa: E402

NAMES = ("dryrun", "memory", "send", "rerun", "extract", "store", "join", "startup", "report", "postgres")
REPORT_TARGET_SECONDS = 2.0
LATENCY = 0.3
STANDIN_DATASET = "1234567890"
STANDIN_TOKEN = "test-token"


@dataclass
class Run:
    seconds: float
    peak_mb: float  # the whole process tree, polled
    output: str


@dataclass
class Row:
    name: str
    capi: str
    reference: str
    ratio: float | None
    target: str
    met: bool | None  # None: informational


class BenchError(Exception):
    pass


# -- measuring -------------------------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree(pid: int) -> list[int]:
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as children:
                    found.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return found


def run(command: Sequence[str], env: dict[str, str], ok: Sequence[int] = (0,)) -> Run:
    """Run `command`; its wall time and the peak RSS of its process tree (sum over the processes)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(list(command), env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while proc.poll() is None:
            if os.path.exists("/proc"):
                peak = max(peak, sum(_rss_kb(pid) for pid in _tree(proc.pid)))
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode not in ok:
        raise BenchError(f"{' '.join(command)} exited {proc.returncode}:\n{text[-2000:]}")
    return Run(elapsed, peak / 1024, text)


def median_run(command: Sequence[str], env: dict[str, str], repeat: int, ok: Sequence[int] = (0,),
               before: Callable[[], None] | None = None) -> Run:
    runs = []
    for _ in range(repeat):
        if before is not None:
            before()
        runs.append(run(command, env, ok))
    return median_of(runs)


def median_of(runs: Sequence[Run]) -> Run:
    """The median time; the highest peak memory."""
    return Run(statistics.median(r.seconds for r in runs), max(r.peak_mb for r in runs), runs[-1].output)


def paired(first: Callable[[], Run], second: Callable[[], Run], repeat: int) -> tuple[Run, Run, float]:
    """Both measurements `repeat` times, back to back in pairs: (median first, median second, median
    of second/first over the pairs). On a shared machine a slow minute slows both runs of a pair,
    so the ratio moves much less than either time does."""
    firsts, seconds, ratios = [], [], []
    for _ in range(repeat):
        a, b = first(), second()
        firsts.append(a)
        seconds.append(b)
        ratios.append(b.seconds / a.seconds)
    return median_of(firsts), median_of(seconds), statistics.median(ratios)


def capi(*args: str) -> list[str]:
    return [sys.executable, "-m", "capi_cli", *args]


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return (f"{model}, {cores} cores, Python {platform.python_version()} ({platform.python_implementation()}), "
            f"{platform.system()} {platform.release()}")


# -- the benchmark ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, tmp: Path, rows: int, small_rows: int, events: int, repeat: int, webhook_mb: int,
                 referrals: int = 200_000) -> None:
        self.tmp = tmp
        self.referrals = referrals
        self._log: tuple[Path, int] | None = None
        self.rows = rows
        self.small_rows = small_rows
        self.events = events
        self.repeat = repeat
        self.webhook_mb = webhook_mb
        self.env = {
            **os.environ,
            "CAPI_HOME": str(tmp / "home"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
            "CAPI_DATASET_ID": STANDIN_DATASET,
            "CAPI_ACCESS_TOKEN": STANDIN_TOKEN,
            "NO_COLOR": "1",
        }
        self.rows_out: list[Row] = []
        self._files: dict[int, Path] = {}
        self._dry: dict[int, Run] = {}
        self.standin_pid: int | None = None

    def file(self, rows: int) -> Path:
        if rows not in self._files:
            path = self.tmp / f"events-{rows}.csv"
            started = time.perf_counter()
            generate(path, rows)
            print(f"  generated {rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) "
                  f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            self._files[rows] = path
        return self._files[rows]

    def dry_once(self, rows: int) -> Run:
        """One `send --dry-run` of a file of `rows` rows, against a ledger that does not exist."""
        env = {**self.env, "CAPI_HOME": str(self.tmp / "dry-home")}
        return run(capi("send", "--file", str(self.file(rows)), "--dry-run", "-o", os.devnull, "--no-progress", "-q"),
                   env)

    def dry_run(self, rows: int) -> Run:
        """The median dry run of `rows` rows (measured once; `dryrun` records its own)."""
        if rows not in self._dry:
            self._dry[rows] = median_of([self.dry_once(rows) for _ in range(self.repeat)])
            print(f"  dry run {rows:,} rows: {self._dry[rows].seconds:.2f} s, {self._dry[rows].peak_mb:.0f} MB",
                  file=sys.stderr)
        return self._dry[rows]

    def add(self, row: Row) -> None:
        self.rows_out.append(row)

    # each measurement

    def dryrun(self) -> None:
        sdk_command = [sys.executable, str(HERE / "bench_build.py"), "--side", "sdk", str(self.file(self.rows))]
        capi_run, sdk, ratio = paired(lambda: self.dry_once(self.rows), lambda: run(sdk_command, self.env),
                                      self.repeat)
        self._dry[self.rows] = capi_run
        print(f"  dry run {self.rows:,} rows: {capi_run.seconds:.2f} s, {capi_run.peak_mb:.0f} MB; "
              f"SDK {sdk.seconds:.2f} s", file=sys.stderr)
        capi_rate = self.rows / capi_run.seconds
        sdk_rate = self.rows / sdk.seconds
        self.add(Row(f"dry run, {self.rows:,} rows (events/s)", f"{capi_rate:,.0f}", f"SDK {sdk_rate:,.0f}",
                     ratio, ">= 3x", ratio >= 3))

    def memory(self) -> None:
        big = self.dry_run(self.rows)
        small_rows = self.small_rows
        small = self.dry_run(small_rows)
        self.add(Row(f"peak RSS, {self.rows:,} rows (MB)", f"{big.peak_mb:.0f}", "150 MB",
                     big.peak_mb / 150, "< 150 MB", big.peak_mb < 150))
        growth = big.peak_mb / small.peak_mb if small.peak_mb else math.inf
        self.add(Row(f"peak RSS, {small_rows:,} -> {self.rows:,} rows", f"{big.peak_mb:.0f}",
                     f"{small.peak_mb:.0f} MB", growth, "<= 1.5x (flat)", growth <= 1.5))

    @contextmanager
    def standin(self) -> Iterator[str]:
        """The Graph API stand-in (`capi sandbox`) for a measurement: its URL; stopped after."""
        standin = subprocess.Popen(
            [sys.executable, "-m", "capi_cli", "-q", "sandbox", "--port", "0", "--latency", str(LATENCY),
             "--dataset", STANDIN_DATASET, "--token", STANDIN_TOKEN],
            stdout=subprocess.PIPE, text=True, env=self.env,
        )
        assert standin.stdout is not None
        self.standin_pid = standin.pid  # its CPU time (bench_postgres)
        url = standin.stdout.readline().strip().removeprefix("CAPI_GRAPH_URL=")
        if not url.startswith("http"):
            standin.kill()
            raise BenchError("the Graph API stand-in did not start")
        try:
            yield url
        finally:
            standin.terminate()
            try:
                standin.wait(timeout=5)
            except subprocess.TimeoutExpired:
                standin.kill()

    def send_and_rerun(self, want_send: bool, want_rerun: bool) -> None:
        path = self.file(self.events)
        dry = self.dry_run(self.events)
        with self.standin() as url:
            home = self.tmp / "send-home"
            env = {**self.env, "CAPI_HOME": str(home), "CAPI_GRAPH_URL": url}
            command = capi("send", "--file", str(path), "--no-progress", "-q")

            def fresh_ledger() -> None:
                for child in sorted(home.rglob("*"), reverse=True) if home.exists() else ():
                    child.unlink() if child.is_file() else child.rmdir()

            sent = median_run(command, env, self.repeat if want_send else 1, before=fresh_ledger)
            requests = math.ceil(self.events / 1000)
            ideal = requests / 4 * LATENCY + dry.seconds
            if want_send:
                ratio = sent.seconds / ideal
                self.add(Row(f"send {self.events:,} events, 300 ms latency (s)", f"{sent.seconds:.2f}",
                             f"ideal {ideal:.2f}", ratio, "<= 1.3x", ratio <= 1.3))
            if want_rerun:
                dry_again, again, ratio = paired(lambda: self.dry_once(self.events), lambda: run(command, env),
                                                 self.repeat)
                self.add(Row(f"re-run, all {self.events:,} sent (s)", f"{again.seconds:.2f}",
                             f"dry run {dry_again.seconds:.2f}", ratio, "< 0.5x", ratio < 0.5))

    def webhook_log(self) -> tuple[Path, int]:
        if self._log is None:
            log = self.tmp / "webhooks.ndjson"
            started = time.perf_counter()
            deliveries = generate_webhooks(log, self.webhook_mb)
            print(f"  generated a {self.webhook_mb} MB webhook log ({deliveries:,} deliveries) "
                  f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            self._log = (log, deliveries)
        return self._log

    def extract(self) -> None:
        log, deliveries = self.webhook_log()
        result = median_run(capi("extract-referral", str(log), "--no-store", "--format", "ndjson", "-o", os.devnull),
                            self.env, self.repeat)
        rate = deliveries / result.seconds
        self.add(Row(f"extract-referral, {self.webhook_mb} MB log (deliveries/s)", f"{rate:,.0f}",
                     f"peak {result.peak_mb:.0f} MB", None, "< 150 MB", result.peak_mb < 150))

    def store(self) -> None:
        log, _ = self.webhook_log()
        home = self.tmp / "store-home"
        env = {**self.env, "CAPI_HOME": str(home)}

        def extract(*store: str) -> Run:
            if home.exists():
                for child in sorted(home.rglob("*"), reverse=True):
                    child.unlink() if child.is_file() else child.rmdir()
            return run(capi("extract-referral", str(log), *store, "--format", "ndjson", "-o", os.devnull, "-q"), env)

        without, stored, ratio = paired(lambda: extract("--no-store"), lambda: extract("--store"), self.repeat)
        self.add(Row(f"extract-referral --store, {self.webhook_mb} MB log (s)", f"{stored.seconds:.2f}",
                     f"--no-store {without.seconds:.2f}", ratio, "<= 1.3x", ratio <= 1.3))

    def join(self) -> None:
        directory = self.tmp / "join"
        directory.mkdir(exist_ok=True)
        started = time.perf_counter()
        referral_path, clicks, phones = generate_join(directory, self.referrals, self.rows)
        home = self.tmp / "join-home"
        env = {**self.env, "CAPI_HOME": str(home)}
        run([sys.executable, str(HERE / "bench_join.py"), "--store", str(referral_path), str(home / "ledger.sqlite3")],
            env)
        print(f"  generated and stored {self.referrals:,} referrals, {self.rows:,} rows joined by phone "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        def dry(path: Path) -> Run:
            return run(capi("send", "--file", str(path), "--dry-run", "-o", os.devnull, "--no-progress", "-q"), env)

        with_clicks, joined, ratio = paired(lambda: dry(clicks), lambda: dry(phones), self.repeat)
        self.add(Row(f"join by phone, {self.rows:,} rows, {self.referrals:,} referrals (s)", f"{joined.seconds:.2f}",
                     f"click ids {with_clicks.seconds:.2f}", ratio, "<= 1.5x", ratio <= 1.5))

    def report(self, events: int, referrals: int) -> None:
        home = self.tmp / "report-home"
        home.mkdir()
        started = time.perf_counter()
        generate_ledger(home / "ledger.sqlite3", events, referrals)
        print(f"  generated a ledger of {events:,} events and {referrals:,} referrals "
              f"in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        env = {**self.env, "CAPI_HOME": str(home), "CAPI_DATASET_ID": "1234567890"}
        run(capi("report"), env)  # a first run reads the file the generator just wrote into the page cache
        result = median_run(capi("report"), env, self.repeat)
        self.add(Row(f"`capi report`, {events:,} events, {referrals:,} referrals (s)", f"{result.seconds:.2f}",
                     f"{REPORT_TARGET_SECONDS:.0f} s", result.seconds / REPORT_TARGET_SECONDS,
                     f"< {REPORT_TARGET_SECONDS:.0f} s", result.seconds < REPORT_TARGET_SECONDS))

    def startup(self) -> None:
        times = max(self.repeat * 5, 5)
        capi_run = median_run(capi("--version"), self.env, times)
        typer_run = median_run([sys.executable, "-c", "import typer"], self.env, times)
        ratio = capi_run.seconds / typer_run.seconds
        self.add(Row("`capi --version` startup (ms)", f"{capi_run.seconds * 1000:.0f}",
                     f"import typer {typer_run.seconds * 1000:.0f}", ratio, "<= 1.5x", ratio <= 1.5))


def table(rows: list[Row]) -> str:
    header = ("measurement", "capi", "reference", "ratio", "target", "")
    lines = [[r.name, r.capi, r.reference, "" if r.ratio is None else f"{r.ratio:.2f}x", r.target,
              "" if r.met is None else ("ok" if r.met else "MISSED")] for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and one repetition (CI)")
    parser.add_argument("--rows", type=int, help="rows of the dry-run file (default 1,000,000; quick 40,000)")
    parser.add_argument("--events", type=int, help="events sent (default 100,000; quick 20,000)")
    parser.add_argument("--repeat", type=int, help="runs per measurement, median reported (default 3; quick 1)")
    parser.add_argument("--webhook-mb", type=int, help="size of the webhook log (default 200; quick 10)")
    parser.add_argument("--referrals", type=int, help="referrals stored for `join` (default 200,000; quick 20,000)")
    parser.add_argument("--report-events", type=int, help="events in the report's ledger (default 1,000,000; "
                        "quick 100,000); its referrals are a fifth of that")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only this measurement (repeatable)")
    parser.add_argument("--postgres", metavar="URL", help="a scratch PostgreSQL server for the PostgreSQL column")
    parser.add_argument("--backfill", type=int, help="events split by 4 hosts (default 400,000; quick 40,000)")
    args = parser.parse_args(argv)
    rows = args.rows or (40_000 if args.quick else 1_000_000)
    small_rows = max(rows // (2 if args.quick else 10), 1)
    events = args.events or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (1 if args.quick else 3)
    webhook_mb = args.webhook_mb or (10 if args.quick else 200)
    referrals = args.referrals or (20_000 if args.quick else 200_000)
    report_events = args.report_events or (100_000 if args.quick else 1_000_000)
    only = set(args.only or NAMES)

    print(f"machine: {machine()}")
    # A PostgreSQL URL's password never reaches the output (capi's own masking).
    from capi_cli.ledger.location import shown

    words = [shown(word) if "://" in word else word for word in (argv if argv is not None else sys.argv[1:])]
    print(f"command: {' '.join(['bench/run.py', *words])}")
    print(f"sizes:   {rows:,} rows, {events:,} events sent, {webhook_mb} MB webhook log, "
          f"{referrals:,} referrals, median of {repeat} run(s)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="capi-bench-") as tmp:
        bench = Bench(Path(tmp), rows, small_rows, events, repeat, webhook_mb, referrals)
        try:
            if "dryrun" in only:
                bench.dryrun()
            if "memory" in only:
                bench.memory()
            if "send" in only or "rerun" in only:
                bench.send_and_rerun("send" in only, "rerun" in only)
            if "extract" in only:
                bench.extract()
            if "store" in only:
                bench.store()
            if "join" in only:
                bench.join()
            if "startup" in only:
                bench.startup()
            if "report" in only:
                bench.report(report_events, report_events // 5)
            if "postgres" in only and not args.postgres:
                print("PostgreSQL column: skipped (no --postgres URL given)", file=sys.stderr)
            elif "postgres" in only:
                from bench_postgres import measure

                backfill = args.backfill or (40_000 if args.quick else 400_000)
                send_only = set(only) == {"postgres"}
                measure(bench, args.postgres, backfill, send_only or "send" in only,
                        send_only or "rerun" in only, True)
        except BenchError as exc:
            print(table(bench.rows_out))
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(table(bench.rows_out))
    missed = [r.name for r in bench.rows_out if r.met is False]
    print(f"{len(bench.rows_out) - len(missed)} of {len(bench.rows_out)} targets met"
          + (f"; MISSED: {', '.join(missed)}" if missed else "") + f" ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
