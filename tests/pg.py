"""A real, throwaway PostgreSQL server for tests: Debian's binaries, a data folder in a temp dir, a free port on
127.0.0.1, trust auth; skipped (with the reason) where PostgreSQL is not installed (`make test` installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.net import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """The bin folder of the newest PostgreSQL installed, or None."""
    found = [p / "bin" for p in PG_ROOT.glob("*") if all((p / "bin" / tool).exists() for tool in ("initdb", "pg_ctl"))]
    version = lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)]
    return max(found, key=version) if found else None


@contextmanager
def postgres(tmp_path: Path, database: str = "factory") -> Iterator[str]:
    """Start PostgreSQL, create `database`, yield its SQLAlchemy URL (psycopg 3); stop the server after."""
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL is not installed (no {PG_ROOT}/*/bin/initdb): apt-get install postgresql")
    # initdb refuses to run as root: as root the server runs as the `postgres` user, in a folder it owns under the
    # system temp dir (pytest's tmp_path sits in a root-only folder it could not enter).
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="factory-pg-")) if as_root else tmp_path / "postgres"
    base.mkdir(parents=True, exist_ok=True)
    data, sockets, log = base / "data", base / "sockets", base / "server.log"
    sockets.mkdir()
    if as_root:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")

    def pg(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(bin_dir / tool), *args]
        if as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=base, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                               f"{server_log[-2000:]}")
        return done

    started = False
    try:
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        for attempt in range(3):  # the free port may be taken between free_port() and the server's bind
            port = free_port()
            options = f"-p {port} -k {sockets} -h 127.0.0.1 -c fsync=off -c full_page_writes=off"
            done = pg("pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "30", "-o", options, "start",
                      check=attempt == 2)
            if done.returncode == 0:
                started = True
                break
        pg("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            pg("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        if as_root:
            shutil.rmtree(base, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create the database `name` on the server of `url` (a fresh one per test); returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    with psycopg.connect(host=server.host, port=server.port, user=server.username, dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.set(database=name).render_as_string(hide_password=False)
