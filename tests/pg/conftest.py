"""A real PostgreSQL server for the PostgreSQL store's tests.

The session-scoped ``pg_server`` fixture runs initdb and pg_ctl from
/usr/lib/postgresql/*/bin in a temporary folder: a server on loopback on a
free port and on a unix socket in that folder, stopped at the end.  initdb
refuses to run as root, so as root the server runs as the ``postgres``
system user (the folder is given to it).  Logins over TCP need the password
(scram-sha-256), over the socket they are trusted.  ``pg_url`` is a fresh
database per test.
"""

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

import pytest

PASSWORD = "s3cret-pw"
USER = "calltape"
_db_numbers = itertools.count()


@dataclass
class Server:
    bindir: str
    folder: str
    port: int
    as_user: list[str]
    data: str
    opts: str

    def url(self, db: str, password: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}"

    def socket_url(self, db: str) -> str:
        return f"postgresql:///{db}?host={self.folder}&port={self.port}&user={USER}"

    def stop(self) -> None:
        """Stops the server (dropping every connection)."""
        ctl = [*self.as_user, os.path.join(self.bindir, "pg_ctl"), "-D", self.data]
        subprocess.run([*ctl, "-m", "fast", "-w", "stop"], check=True, capture_output=True,
                       env=_server_env())

    def kill(self) -> None:
        """Stops the server at once, as a crash does (pg_ctl stop -m immediate)."""
        ctl = [*self.as_user, os.path.join(self.bindir, "pg_ctl"), "-D", self.data]
        subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], check=True,
                       capture_output=True, env=_server_env())

    def sql(self, db: str, statement: str) -> str:
        """Runs one statement with psql over the socket; returns what it printed."""
        out = subprocess.run([os.path.join(self.bindir, "psql"), "-h", self.folder, "-p",
                              str(self.port), "-U", USER, "-d", db, "-At", "-c", statement],
                             check=True, capture_output=True, text=True, env=_server_env())
        return out.stdout.strip()

    def start(self) -> None:
        ctl = [*self.as_user, os.path.join(self.bindir, "pg_ctl"), "-D", self.data]
        subprocess.run([*ctl, "-o", self.opts, "-l", os.path.join(self.folder, "log"), "-w",
                        "start"], check=True, capture_output=True, env=_server_env())

    def restart(self) -> None:
        """Stops the server (dropping every connection) and starts it again."""
        self.stop()
        self.start()

    def createdb(self, db: str) -> None:
        subprocess.run([os.path.join(self.bindir, "createdb"), "-h", self.folder, "-p",
                        str(self.port), "-U", USER, db], check=True, capture_output=True,
                       env=_server_env())


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env() -> dict[str, str]:
    """The server's environment: without the sanitizers CI preloads into Python."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}


@pytest.fixture(scope="session")
def pg_server():
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql)")
    folder = tempfile.mkdtemp(prefix="calltape-pg-", dir="/tmp")
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    pwfile = os.path.join(folder, "pw")
    with open(pwfile, "w") as f:
        f.write(PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres", "postgres")
    data = os.path.join(folder, "data")
    subprocess.run([*as_user, os.path.join(bindir, "initdb"), "-D", data, "-U", USER,
                    "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True, env=_server_env())
    port = _free_port()
    opts = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run([*as_user, os.path.join(bindir, "pg_ctl"), "-D", data, "-o", opts, "-l",
                    os.path.join(folder, "log"), "-w", "start"], check=True, capture_output=True,
                   env=_server_env())
    try:
        yield Server(bindir, folder, port, as_user, data, opts)
    finally:
        subprocess.run([*as_user, os.path.join(bindir, "pg_ctl"), "-D", data, "-m", "immediate",
                        "-w", "stop"], capture_output=True, env=_server_env())
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    db = f"t{os.getpid()}_{next(_db_numbers)}"
    pg_server.createdb(db)
    return pg_server.url(db)
