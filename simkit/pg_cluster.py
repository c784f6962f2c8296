"""A private PostgreSQL cluster for a test that stops and starts its
database server (the shared one of the test session must stay up): initdb
into a fresh directory owned by `postgres`, on a free loopback port, trust
authentication on loopback only. Needs root (it runs the server as the
`postgres` account, as Debian's own clusters run)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from simkit.sipp import free_port


def _bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries: install Debian's postgresql")
    return Path(found[-1]).parent


class PrivatePostgres:
    def __init__(self):
        self.bin = _bin()
        self.port = free_port(kind=socket.SOCK_STREAM)
        # not under pytest's tmp_path: `postgres` cannot enter root's 0700 directories
        self.dir = Path(tempfile.mkdtemp(prefix="khhf-pg-"))
        self.data = self.dir / "data"
        account = pwd.getpwnam("postgres")
        os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-U", "khhf",
                          "-A", "trust", "--no-sync", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://khhf@127.0.0.1:{self.port}/khhf"

    def _as_postgres(self, *command: str) -> None:
        proc = subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres",
                               "--init-groups", *command], capture_output=True, text=True,
                              cwd=self.dir, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {proc.stderr or proc.stdout}")

    def start(self, options: str = "") -> PrivatePostgres:
        """Start the server; `options`: more of postgres's own (-c name=value)."""
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.dir / "server.log"), "-w", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                          f"-c fsync=off {options}", "start")
        return self

    def create_database(self, name: str = "khhf") -> None:
        self._as_postgres(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", "khhf", name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
                              "-m", "fast", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
