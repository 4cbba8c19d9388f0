"""A throwaway PostgreSQL cluster for the backend tests: a temp folder, a unix socket, no TCP.

```
start   initdb (trust auth, no fsync) into <tmp>/data, owned by `postgres` when we run as root
        pg_ctl start -o "-k <tmp> -c listen_addresses=''"   (socket <tmp>/.s.PGSQL.5432)
use     create_database(name) -> postgresql+asyncpg://postgres@/<name>?host=<tmp>
stop    pg_ctl stop -m immediate; the postmaster's PID killed if that fails; <tmp> removed
```

Nothing listens on a port and no system service is touched, so concurrent runs on one host do
not collide. Durability is switched off: the data lives only as long as the test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVICE_USER = "postgres"


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL's binaries (Debian: /usr/lib/postgresql/<v>/bin)."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


class PostgresCluster:
    """A running cluster; see the module docstring."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        # PostgreSQL refuses to run as root: the cluster belongs to `postgres` when we are root.
        self._user = SERVICE_USER if os.geteuid() == 0 else None

    def _run(self, tool: str, *args: str) -> None:
        kwargs: dict[str, Any] = {"user": self._user} if self._user else {}
        subprocess.run(
            [str(self.bindir / tool), *args], check=True, capture_output=True, timeout=60, **kwargs
        )

    def start(self) -> None:
        if self._user:
            shutil.chown(self.root, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        options = (
            f"-k {self.root} -c listen_addresses='' -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l", str(self.log), "start")

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@/{database}?host={self.root}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        self._run("createdb", "-h", str(self.root), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server whatever state it is in; never raises."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except (subprocess.SubprocessError, OSError):
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def postgres_cluster(bindir: Path) -> Iterator[PostgresCluster]:
    """Start a cluster in a new temp folder; stop it and remove the folder on exit, always."""
    # Short: the socket path <root>/.s.PGSQL.5432 must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="isr-pg-"))
    cluster = PostgresCluster(bindir, root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
