"""Building events in worker processes, so that a large file uses more than one core.

This process reads the records (any format) and sends them in chunks to `python -m
capi_cli.events.parallel` workers, round robin; each worker maps, reads the head, filters by
time, checks the ledger for `sent` events (when asked), normalizes, hashes and serializes, and
answers with compact tuples in the order it was given. Reading the answers round robin too
keeps the input order, and everything that depends on order stays in pipeline._sequence.

Workers are plain child processes speaking length-prefixed pickles over their stdin/stdout:
when this process ends, even by SIGKILL, a worker reads end-of-file (or writes into a closed
pipe) and exits. They ignore SIGINT, which the terminal sends to the whole process group:
Ctrl-C is this process's business, and it stops them in `close`.

CAPI_WORKERS=N forces N workers (0: build in this process); by default files of a few MB and
more use up to two workers when there are two cores or more.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capi_cli.events.pipeline import Stager
    from capi_cli.events.readers import PlainBlock
    from capi_cli.ledger.types import LedgerRef, LedgerStore

ENV = "CAPI_WORKERS"
AUTO_MIN_BYTES = 4 << 20  # below this, starting workers (~0.2 s) costs more than it saves
MAX_AUTO_WORKERS = 2
CHUNK = 500  # records per message
AHEAD = 3  # chunks in flight per worker
_HEADER = 8


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_count(paths: Sequence[str | Path], referrals: Any) -> int:
    """How many worker processes to build `paths` with (0: in this process)."""
    if referrals is not None and getattr(referrals, "ref", None) is None:
        return 0  # a referral store the workers cannot open themselves
    forced = os.environ.get(ENV, "").strip()
    if forced:
        try:
            return max(0, int(forced))
        except ValueError:
            pass
    cores = _cores()
    if cores < 2:
        return 0
    total = 0
    for path in paths:
        if str(path) == "-":
            return 0
        try:
            total += os.path.getsize(path)
        except OSError:
            return 0  # the reader reports it
    return min(MAX_AUTO_WORKERS, cores) if total >= AUTO_MIN_BYTES else 0


class WorkerFailed(RuntimeError):
    pass


_PLAIN = "plain"  # a message holding a PlainBlock's fields, not records


class _Later:
    """The records of a PlainBlock, parsed in this process only if one is needed here (the body of a
    duplicate of an event already sent is built here, to report its problems)."""

    __slots__ = ("block", "_records")

    def __init__(self, block: PlainBlock) -> None:
        self.block = block
        self._records: dict[int, Any] | None = None

    def raw(self, line: int) -> Any:
        if self._records is None:
            self._records = dict(self.block.records())
        return self._records[line]


def _write(stream: IO[bytes], data: bytes) -> None:
    stream.write(len(data).to_bytes(_HEADER, "little"))
    stream.write(data)
    stream.flush()


def _read(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "little")
    data = stream.read(size)
    return data if len(data) == size else None


def _feed(stream: IO[bytes], messages: queue.SimpleQueue[bytes | None]) -> None:
    """Writes to one worker from a thread of its own: the main thread never blocks on a full pipe
    while that worker blocks writing an answer nobody reads yet."""
    try:
        while (data := messages.get()) is not None:
            _write(stream, data)
    except (OSError, ValueError):
        pass
    finally:
        try:
            stream.close()
        except OSError:
            pass


def _spawn() -> subprocess.Popen[bytes]:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "capi_cli.events.parallel"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )


class _Forked:
    """A worker made by os.fork() of this process, which already holds the builder's modules: no
    interpreter to start, nothing to import. The part of subprocess.Popen the pool uses."""

    def __init__(self, siblings: list[int]) -> None:
        to_child, to_worker = os.pipe()
        from_worker, to_parent = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            code = 1
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the command's handler
            try:
                # Only its own two pipe ends: a sibling holding this worker's input open would keep
                # it from ever reading end-of-file.
                for fd in (to_worker, from_worker, *siblings):
                    os.close(fd)
                # Nor the command's stdin/stdout: a reader of `capi send ... | jq` must see the end
                # of the output when the command ends, whatever a worker is doing.
                quiet = os.open(os.devnull, os.O_RDWR)
                os.dup2(quiet, 0)
                os.dup2(quiet, 1)
                os.close(quiet)
                code = _serve(os.fdopen(to_child, "rb"), os.fdopen(to_parent, "wb"))
            finally:
                os._exit(code)
        os.close(to_child)
        os.close(to_parent)
        self.pid = pid
        self.args = "capi worker (fork)"
        self.returncode: int | None = None
        self.stdin: IO[bytes] | None = os.fdopen(to_worker, "wb")
        self.stdout: IO[bytes] | None = os.fdopen(from_worker, "rb")

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


Worker = subprocess.Popen[bytes] | _Forked
_warm: list[Worker] = []  # started by warm_up, not yet taken by a WorkerPool


def warm_up(paths: Sequence[str | Path], *, fork: bool = False) -> None:
    """Start the worker processes a build of `paths` will use now, so that their start-up (Python
    and the builder's imports, ~0.15 s) overlaps this process's own. A pool takes them; `cool_down`
    stops any left unused.

    `fork`: make them by os.fork() after importing the builder here (which the command needs
    anyway): only for a process with no threads and nothing open yet (capi_cli.cli.entry)."""
    wanted = worker_count(paths, None) - len(_warm)
    if wanted <= 0:
        return
    if not _warm:
        atexit.register(cool_down)  # any a command never took
    if fork and hasattr(os, "fork") and threading.active_count() == 1:
        _import_builder()
        siblings: list[int] = []
        for _ in range(wanted):
            worker = _Forked(siblings)
            siblings += [worker.stdin.fileno(), worker.stdout.fileno()]  # type: ignore[union-attr]
            _warm.append(worker)
        return
    for _ in range(wanted):
        _warm.append(_spawn())


def _import_builder() -> None:
    import capi_cli.events.build
    import capi_cli.events.jsontext
    import capi_cli.events.phones
    import capi_cli.events.pipeline
    import capi_cli.ledger  # noqa: F401


def cool_down() -> None:
    """Stop worker processes started by warm_up and never used (they exit at end of input)."""
    procs, _warm[:] = list(_warm), []
    for proc in procs:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    _reap(procs)


def _reap(procs: Sequence[Worker]) -> None:
    """Wait for workers whose input is closed to exit; kill any that does not within a second."""
    for proc in procs:
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerPool:
    def __init__(self, count: int, config: dict[str, Any]) -> None:
        data = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        self._procs: list[Worker] = []
        self._queues: list[queue.SimpleQueue[bytes | None]] = []
        self._next = 0
        try:
            for _ in range(count):
                proc = _warm.pop(0) if _warm else _spawn()
                self._procs.append(proc)
                messages: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
                assert proc.stdin is not None
                threading.Thread(target=_feed, args=(proc.stdin, messages), daemon=True,
                                 name="capi-feed").start()
                messages.put(data)
                self._queues.append(messages)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def submit(self, items: list[Any]) -> int:
        """Send one chunk of raw records to the next worker; its number, to collect the answer."""
        first = items[0]
        if type(first) is tuple and all(type(item) is tuple and item[0] is first[0] for item in items):
            message: tuple[Any, ...] = (first[0], [item[1] for item in items])  # CSV: the header once
        else:
            message = (None, items)
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except RecursionError:  # a record too deep to pickle is staged in this process
            kept = []
            for item in items:
                try:
                    pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                except RecursionError:
                    item = None
                kept.append(item)
            data = pickle.dumps((None, kept), protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._next
        self._next = (worker + 1) % len(self._procs)
        self._queues[worker].put(data)
        return worker

    def collect(self, worker: int) -> list[tuple[Any, ...]]:
        stdout = self._procs[worker].stdout
        assert stdout is not None
        data = _read(stdout)
        if data is None:
            code = self._procs[worker].poll()
            raise WorkerFailed(f"a worker process ended unexpectedly (exit status {code}); "
                               f"run with {ENV}=0 to build in one process")
        answer = pickle.loads(data)
        if isinstance(answer, str):
            raise WorkerFailed(f"a worker process failed:\n{answer}")
        return answer  # type: ignore[no-any-return]

    def submit_plain(self, block: PlainBlock) -> int:
        """Send one PlainBlock of a CSV file, for the worker to parse too."""
        data = pickle.dumps((_PLAIN, (block.header, block.delimiter, block.start, block.text)),
                            protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._next
        self._next = (worker + 1) % len(self._procs)
        self._queues[worker].put(data)
        return worker

    def stage(self, stager: Stager, path: str | Path, input_format: str | None) -> Iterator[tuple[Any, ...]]:
        """pipeline._local_stage's items for one file, staged (and mostly built) by the workers."""
        from capi_cli.events.pipeline import LOCAL, ROW, SENT
        from capi_cli.events.readers import PlainBlock, read_items

        in_flight: deque[tuple[int, list[tuple[int, Any]] | PlainBlock]] = deque()
        limit = AHEAD * len(self._procs)
        index = 0

        def answers() -> Iterator[tuple[Any, ...]]:
            nonlocal index
            worker, sent = in_flight.popleft()
            if type(sent) is PlainBlock:
                lines, replies = self.collect(worker)
                later = _Later(sent)
                chunk: Iterable[tuple[int, Any]] = [(line, later) for line in lines]
            else:
                chunk, replies = sent, self.collect(worker)  # type: ignore[assignment]
            for (line, raw), answer in zip(chunk, replies, strict=True):
                index += 1
                if type(answer[0]) is str:
                    if len(answer) == 3:  # sent before: (name, id, unknown); its record is needed here
                        # only if it is a duplicate (then it is read again: `raw`, or the block's)
                        yield (SENT, line, index, answer[2], answer[0], answer[1], None, True, (), None,
                               (raw,) if type(raw) is not _Later else raw)
                        continue
                    # a valid event: (text, name, id, time, time_given, attributed, unknown)
                    yield (ROW, line, index, answer[6], answer[1], answer[2], answer[3], answer[4], (),
                           (answer[0], answer[5], ()), None)
                    continue
                kind, unknown, head, errors, body = answer
                local = None
                if kind == LOCAL:
                    kind, unknown, staged, errors, record = stager.stage(raw)
                    if staged is None:
                        yield kind, line, index, unknown, None, None, None, True, errors, None, None
                    else:
                        yield (kind, line, index, unknown, staged.event_name, staged.event_id, staged.event_time,
                               staged.time_given, errors, None, (record, staged))
                elif head is None:
                    yield kind, line, index, unknown, None, None, None, True, errors, None, None
                else:
                    yield kind, line, index, unknown, head[0], head[1], head[2], head[3], errors, body, local

        chunk: list[tuple[int, Any]] = []
        for item in read_items(path, input_format):
            if type(item) is PlainBlock:
                if chunk:
                    in_flight.append((self.submit([raw for _, raw in chunk]), chunk))
                    chunk = []
                in_flight.append((self.submit_plain(item), item))
            else:
                chunk.append(item)  # type: ignore[arg-type]
                if len(chunk) < CHUNK:
                    continue
                in_flight.append((self.submit([raw for _, raw in chunk]), chunk))
                chunk = []
            while len(in_flight) >= limit:
                yield from answers()
        if chunk:
            in_flight.append((self.submit([raw for _, raw in chunk]), chunk))
        while in_flight:
            yield from answers()

    def close(self) -> None:
        """Stop the workers: end of input, then a kill for any that does not exit at once."""
        for messages in self._queues:
            messages.put(None)
        for proc in self._procs:
            if proc.stdout is not None:
                proc.stdout.close()  # a worker blocked writing an answer gets EPIPE
        _reap(self._procs)


# -- the worker side ---------------------------------------------------------------------------


class _Worker:
    def __init__(self, config: dict[str, Any]) -> None:
        from capi_cli.events.build import EventBuilder
        from capi_cli.events.fields import FieldMapper
        from capi_cli.events.pipeline import Stager

        ledgers: dict[LedgerRef, LedgerStore] = {}

        def ledger(ref: LedgerRef) -> LedgerStore:
            from capi_cli.ledger.types import open_ledger

            if ref not in ledgers:
                ledgers[ref] = open_ledger(ref)
            return ledgers[ref]

        from capi_cli.events.pipeline import batched

        referrals = batched(ledger(config["referrals"])) if config.get("referrals") else None
        sent = config.get("sent")
        self.sent_among: Callable[[list[tuple[str, str]]], set[tuple[str, str]]] | None = None
        if sent:
            from capi_cli.events.shard import skipped_among

            store, dataset_id, shard = ledger(sent[0]), sent[1], sent[2]
            self.sent_among = lambda keys: skipped_among(lambda rest: store.sent_among(dataset_id, rest), shard, keys)
        builder = EventBuilder(
            SimpleNamespace(**config["settings"]),
            now=config["now"],
            window_seconds=config["window_seconds"],
            referrals=referrals,
            date_format=config.get("date_format"),
        )
        self.builder = builder
        localize = None
        if config.get("locale"):
            from capi_cli.inputs.reshape import Localizer

            localize = Localizer(config["locale"])
        self.stager = Stager(FieldMapper(config["mapping"], config["sets"]), builder, config["since"], config["until"],
                             localize)
        self._header: list[str] | None = None

    def _same(self, header: list[str]) -> list[str]:
        """One header object for a file's rows, however many messages they came in: the mapper
        works out a header's plan once per object."""
        if header != self._header:
            self._header = header
        return self._header  # type: ignore[return-value]

    def process(self, message: tuple[Any, list[Any]]) -> list[tuple[Any, ...]]:
        from capi_cli.events.jsontext import payload_json
        from capi_cli.events.pipeline import LOCAL, NESTED, ROW, SENT

        header, items = message
        lines: list[int] | None = None
        if header == _PLAIN:
            from capi_cli.events.readers import PlainBlock

            header, delimiter, start, text = items
            records = list(PlainBlock(self._same(header), delimiter, start, text).records())
            lines = [line for line, _ in records]
            raws: list[Any] = [raw for _, raw in records]
        elif header is not None:
            header = self._same(header)
            raws = [(header, row) for row in items]
        else:
            raws = [(self._same(raw[0]), raw[1]) if type(raw) is tuple else raw for raw in items]
        if None in raws:  # records too deep to pickle: staged in the parent
            staged_here = iter(self.stager.stage_chunk([raw for raw in raws if raw is not None], self.sent_among))
            staged: list[Any] = [(LOCAL, (), None, None, None) if raw is None else next(staged_here) for raw in raws]
        else:
            staged = self.stager.stage_chunk(raws, self.sent_among)
        body_of = self.builder.body
        answers: list[tuple[Any, ...]] = []
        for kind, unknown, head, errors, record in staged:
            if kind == SENT:  # short: a re-run answers this for every row
                answers.append((head.event_name, head.event_id, unknown))
                continue
            if kind != ROW:
                answers.append((kind, unknown, None, errors, None))
                continue
            fields = (head.event_name, head.event_id, head.event_time, head.time_given)
            body_errors: list[Any] = []
            try:
                payload, attributed = body_of(record, head, body_errors)
            except RecursionError:
                answers.append((ROW, unknown, fields, errors, NESTED))
                continue
            if errors or body_errors:
                # The payload goes along: problems that only drop a field still send the event.
                answers.append((ROW, unknown, fields, errors, (payload_json(payload), attributed, body_errors)))
            else:
                answers.append((payload_json(payload), *fields, attributed, unknown))
        return answers if lines is None else (lines, answers)  # type: ignore[return-value]


def main() -> int:
    """A worker started as `python -m capi_cli.events.parallel`."""
    # The builder's imports first: a worker started early (warm_up) has them done by the time
    # its configuration comes.
    _import_builder()
    return _serve(sys.stdin.buffer, sys.stdout.buffer)


def _serve(source: IO[bytes], sink: IO[bytes]) -> int:
    """The worker's loop: its configuration, then one answer per message, until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        config = _read(source)
        if config is None:
            return 0
        worker = _Worker(pickle.loads(config))
        while (data := _read(source)) is not None:
            answers = worker.process(pickle.loads(data))
            _write(sink, pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    except BaseException:
        try:
            _write(sink, pickle.dumps(traceback.format_exc()))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # Nothing to tidy: the answers are written and flushed, the ledger was only read. Skipping the
    # interpreter's teardown saves the command ~20 ms of waiting for its workers to exit.
    sys.stdout.flush()
    os._exit(code)
