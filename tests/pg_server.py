"""A private PostgreSQL server for the tests and the benchmark, from the machine's own binaries.

Started in a temporary directory on a free port of 127.0.0.1, with password authentication over
TCP (so the tests see credentials go through the URL, PGPASSFILE or libpq's environment), and
stopped by the PID of its postmaster. initdb refuses to run as root: as root the server runs as
`nobody`.

As a process (.ci/run):  python tests/pg_server.py start DIR   -> prints URL and PID
                         python tests/pg_server.py stop DIR
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

USER = "capi"
PASSWORD = "pg-Secret-5e1f"  # recognisable, so the tests can check it is never printed
SERVER_USER = "nobody"


def binaries() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, /usr/local/bin, or Debian's layout."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates.append(Path("/usr/local/bin"))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    return [runuser, "-u", SERVER_USER, "--", *argv] if runuser else ["su", SERVER_USER, "-s", "/bin/sh", "-c",
                                                                      " ".join(argv)]


@dataclass
class PgServer:
    base: Path
    port: int
    bindir: Path

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.base, SERVER_USER)
            shutil.chown(pwfile, SERVER_USER)
        self.base.chmod(0o700)
        _run(_as_server_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, "-E", "UTF8",
                              "--no-sync", "--auth-local=trust", "--auth-host=scram-sha-256",
                              f"--pwfile={pwfile}"]), 120)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        _run(_as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", options,
                              "-l", str(self.base / "log"), "-w", "-t", "60", "start"]), 90)

    def stop(self, *, fast: bool = True) -> None:
        """Stop the postmaster by its PID (SIGINT: fast shutdown; SIGQUIT: immediate) and wait."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT if fast else signal.SIGQUIT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)


def _run(argv: list[str], timeout: float) -> None:
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if done.returncode:
        raise RuntimeError(f"{Path(argv[-1] if argv[-1] == 'start' else argv[0]).name}: {done.stderr.strip()[-500:]}")


def start(base: Path) -> PgServer:
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl): install Debian's `postgresql`")
    server = PgServer(Path(base), _free_port(), bindir)
    server.init()
    server.start()
    return server


def main(argv: list[str]) -> int:
    command, base = argv[0], Path(argv[1])
    if command == "start":
        server = start(base)
        (base / "port").write_text(str(server.port))
        print(server.url, server.pid)
        return 0
    if command == "stop":
        port = int((base / "port").read_text()) if (base / "port").exists() else 0
        PgServer(base, port, binaries() or Path("/")).stop()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
