"""nas search against a PostgreSQL storage: a private server on 127.0.0.1, started and stopped here."""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from nas.cli import main
from tests.nas.conftest import SEARCH_FLAGS, assert_one_shared_budget, concurrent_searches

pytestmark = pytest.mark.slow
COMMON = SEARCH_FLAGS


def _pg_bin() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return dirs[-1] if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    """URL of a fresh database in a private cluster of Debian's postgresql (`.ci/run` installs it;
    a test installs nothing)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'nas[postgres]')")
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql)")
    # the server refuses to run as root: run it as the package's postgres user, in a directory of
    # its own (pytest's tmp_path is private to root)
    base = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    data, sock = base / "pgdata", base / "sock"
    sock.mkdir()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    run = lambda *cmd: subprocess.run(as_user + list(cmd), check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bin_dir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust")
    run(f"{bin_dir}/pg_ctl", "-D", str(data), "-w", "-l", str(base / "pg.log"), "-o",
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "nas")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/nas"
    finally:
        subprocess.run(as_user + [f"{bin_dir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
        for _ in range(100):   # the server is gone (by PID) within 10 s
            if not _alive(pid):
                break
            time.sleep(0.1)
        assert not _alive(pid), f"PostgreSQL server {pid} still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"   # a zombie has exited


def test_two_concurrent_searches_on_one_postgres_study(postgres, tiny_run, tmp_path):
    argv = ["search", "--target-ms", "0.5", "--supernet", str(tiny_run), "--tables", str(tmp_path / "tables"),
            "--out", str(tmp_path / "search"), "--storage", postgres, "--study", "pg", *COMMON]
    # create the study (and fill the table) first: concurrent creation of a fresh RDB study races
    assert main(argv + ["--trials", "2"]) == 0
    concurrent_searches(argv + ["--trials", "12"])
    assert_one_shared_budget(optuna.load_study(study_name="pg", storage=postgres).trials, 12)
    assert (tmp_path / "search" / "trials.csv").is_file()
