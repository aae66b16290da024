"""Building events in worker processes, so that a large file uses more than one core.

This process reads the records (any format) and sends them in chunks to `python -m
capi_cli.events.worker` workers, round robin; each worker maps, reads the head, filters by
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
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from capi_cli.events.staging import Kind, SentKeys, StagedItem, item_of, sent_run
from capi_cli.events.wire import PLAIN, read, write
from capi_cli.events.worker import import_builder, import_driver, serve

if TYPE_CHECKING:
    from capi_cli.events.readers import PlainBlock
    from capi_cli.events.staging import Stager

ENV = "CAPI_WORKERS"
AUTO_MIN_BYTES = 4 << 20  # below this, starting workers (~0.2 s) costs more than it saves
MAX_AUTO_WORKERS = 2
CHUNK = 500  # records per message
AHEAD = 3  # chunks in flight per worker


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


def _feed(stream: IO[bytes], messages: queue.SimpleQueue[bytes | None]) -> None:
    """Writes to one worker from a thread of its own: the main thread never blocks on a full pipe
    while that worker blocks writing an answer nobody reads yet."""
    try:
        while (data := messages.get()) is not None:
            write(stream, data)
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
        [sys.executable, "-m", "capi_cli.events.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
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
                code = serve(os.fdopen(to_child, "rb"), os.fdopen(to_parent, "wb"))
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
        if self.poll() is None and hasattr(os, "pidfd_open"):
            # Woken the moment it exits (Linux): sleeping in steps overshot a worker's exit by ~10 ms.
            try:
                pidfd = os.pidfd_open(self.pid)
            except OSError:
                pass
            else:
                try:
                    select.select([pidfd], [], [], timeout)
                finally:
                    os.close(pidfd)
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
_ROW, _SENT = Kind.ROW, Kind.SENT
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
        import_builder()
        import_driver()  # here, once, rather than in each worker after the fork
        siblings: list[int] = []
        for _ in range(wanted):
            worker = _Forked(siblings)
            siblings += [worker.stdin.fileno(), worker.stdout.fileno()]  # type: ignore[union-attr]
            _warm.append(worker)
        return
    for _ in range(wanted):
        _warm.append(_spawn())


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
        data = read(stdout)
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
        data = pickle.dumps((PLAIN, (block.header, block.delimiter, block.start, block.text)),
                            protocol=pickle.HIGHEST_PROTOCOL)
        worker = self._next
        self._next = (worker + 1) % len(self._procs)
        self._queues[worker].put(data)
        return worker

    def stage(self, stager: Stager, path: str | Path, input_format: str | None) -> Iterator[StagedItem]:
        """staging.local_stage's items for one file, staged (and mostly built) by the workers."""
        from capi_cli.events.readers import PlainBlock, read_items

        in_flight: deque[tuple[int, list[tuple[int, Any]] | PlainBlock]] = deque()
        limit = AHEAD * len(self._procs)
        index = 0

        def answers() -> Iterator[StagedItem]:
            nonlocal index
            worker, sent = in_flight.popleft()
            if type(sent) is PlainBlock:
                lines, replies = self.collect(worker)
                if type(replies) is SentKeys:
                    yield sent_run(replies, lines, index, _Later(sent))
                    index += len(replies)
                    return
                later = _Later(sent)
                chunk: Iterable[tuple[int, Any]] = [(line, later) for line in lines]
            else:
                chunk, replies = sent, self.collect(worker)  # type: ignore[assignment]
                if type(replies) is SentKeys:
                    yield sent_run(replies, [line for line, _ in sent], index, [raw for _, raw in sent])
                    index += len(replies)
                    return
            for (line, raw), answer in zip(chunk, replies, strict=True):
                index += 1
                if type(answer[0]) is str:
                    if len(answer) == 3:  # sent before: (name, id, unknown); its record is needed here
                        # only if it is a duplicate (then it is read again: `raw`, or the block's)
                        yield (_SENT, line, index, answer[2], answer[0], answer[1], None, True, (),
                               None, (raw,) if type(raw) is not _Later else raw)
                        continue
                    # a valid event: (text, name, id, time, time_given, attributed, unknown)
                    yield (_ROW, line, index, answer[6], answer[1], answer[2], answer[3], answer[4], (),
                           (answer[0], answer[5], ()), None)
                    continue
                kind, unknown, head, errors, body = answer
                if kind == Kind.LOCAL:
                    yield item_of(stager.stage(raw), line, index, raw)
                elif head is None:
                    yield (kind, line, index, unknown, None, None, None, True, errors, None, None)
                else:
                    yield (kind, line, index, unknown, head[0], head[1], head[2], head[3], errors, body, None)

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




@contextmanager
def warmed(paths: Sequence[str | Path]) -> Iterator[None]:
    """A command's worker processes: started now (`warm_up`), so their start-up overlaps the
    command's own; any the build did not take are stopped at the end (`cool_down`)."""
    warm_up(paths)
    try:
        yield
    finally:
        cool_down()
