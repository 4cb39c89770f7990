"""Fixtures of the grpcio client suite: the generated stubs, and a real `crm-comms`
server on a free port over a fresh SQLite file or a fresh, uniquely named MariaDB
database (dropped afterwards). Every test that takes `server` runs on both backends.

Environment:
  CRM_COMMS_BIN       the server binary (run.sh sets it; default target/debug/crm-comms)
  CRM_TEST_MYSQL_URL  MariaDB base URL, default mysql://root@127.0.0.1:3306
  CRM_REQUIRE_MYSQL   1 or true: an unreachable MariaDB fails instead of skipping
"""

import atexit
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

import grpc
import pytest

REPO = Path(__file__).resolve().parents[2]
STUB_DIR = tempfile.mkdtemp(prefix="crm-pystubs-")


def _generate_stubs() -> None:
    """Compiles proto/crm/v1/*.proto into STUB_DIR (never committed)."""
    from grpc_tools import protoc
    import importlib.resources

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto/crm/v1").glob("*.proto"))
    args = [
        "protoc",
        f"-I{REPO / 'proto'}",
        f"-I{well_known}",
        f"--python_out={STUB_DIR}",
        f"--grpc_python_out={STUB_DIR}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")


atexit.register(shutil.rmtree, STUB_DIR, True)
_generate_stubs()
sys.path.insert(0, STUB_DIR)


def _server_binary() -> Path:
    binary = os.environ.get("CRM_COMMS_BIN")
    if binary:
        return Path(binary)
    target = os.environ.get("CARGO_TARGET_DIR", str(REPO / "target"))
    return Path(target) / "debug" / "crm-comms"


def _mysql_required() -> bool:
    return os.environ.get("CRM_REQUIRE_MYSQL", "") in ("1", "true")


class MariaDb:
    """The MariaDB server the MySQL half uses, driven through the `mariadb` CLI over TCP."""

    def __init__(self) -> None:
        url = urllib.parse.urlparse(os.environ.get("CRM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306"))
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 3306
        self.user = urllib.parse.unquote(url.username or "root")
        self.password = urllib.parse.unquote(url.password or "")

    def url(self, database: str) -> str:
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        return f"mysql://{auth}@{self.host}:{self.port}/{database}"

    def run(self, sql: str, database: str = "", timeout: float = 120) -> list[list[str]]:
        """Runs `sql`; returns the rows of the last result set, tab-split."""
        cmd = [
            "mariadb", "--protocol=tcp", "-h", self.host, "-P", str(self.port), "-u", self.user,
            "--connect-timeout=5", "-N", "-B",
        ]
        env = dict(os.environ)
        if self.password:
            env["MYSQL_PWD"] = self.password
        if database:
            cmd += ["-D", database]
        out = subprocess.run(cmd + ["-e", sql], capture_output=True, text=True, timeout=timeout, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"mariadb failed ({out.returncode}) on {sql[:200]!r}: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines()]


class Server:
    """A running `crm-comms` and direct SQL access to the database behind it."""

    def __init__(self, backend: str, workdir: Path, extra_args=(), tls_root: bytes | None = None) -> None:
        self.backend = backend
        # More flags for `crm-comms` (tokens, TLS); with `tls_root` (the CA's PEM) the
        # channels speak TLS to `localhost`.
        self.extra_args = list(extra_args)
        self.tls_root = tls_root
        self.workdir = workdir
        self.mariadb = MariaDb() if backend == "mariadb" else None
        self.database = ""
        self.sqlite_path = workdir / "crm.db"
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None
        self.log_path = workdir / "server.log"

    # -- database ---------------------------------------------------------------

    def create_database(self) -> str:
        if self.mariadb is None:
            return f"sqlite://{self.sqlite_path}"
        self.database = f"crm_py_{os.getpid()}_{uuid.uuid4().hex[:10]}"
        self.mariadb.run(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4")
        return self.mariadb.url(self.database)

    def drop_database(self) -> None:
        if self.mariadb is not None and self.database:
            self.mariadb.run(f"DROP DATABASE IF EXISTS `{self.database}`")

    def query(self, sql: str) -> list[tuple]:
        """Rows of `sql` run directly on the test database (values as text on MariaDB)."""
        if self.mariadb is not None:
            return [tuple(r) for r in self.mariadb.run(sql, self.database)]
        with sqlite3.connect(self.sqlite_path, timeout=60) as conn:
            return conn.execute(sql).fetchall()

    def execute(self, sql: str) -> None:
        """Runs a statement that changes data, committed."""
        if self.mariadb is not None:
            self.mariadb.run(sql, self.database)
            return
        conn = sqlite3.connect(self.sqlite_path, timeout=60)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()

    def scalar(self, sql: str) -> int:
        rows = self.query(sql)
        return int(rows[0][0])

    # -- process ----------------------------------------------------------------

    def start(self) -> None:
        binary = _server_binary()
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `cargo build` first (run.sh does)")
        url = self.create_database()
        for attempt in range(3):
            port = _free_port()
            self.addr = f"127.0.0.1:{port}"
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [str(binary), "--listen", self.addr, "--database-url", url, "--log", "info", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            log.close()
            if self._wait_healthy(deadline=time.monotonic() + 60):
                self.channel = self.new_channel()
                return
            self.stop()
        raise RuntimeError(f"crm-comms did not answer health on {self.backend}:\n{self.log_tail()}")

    def _wait_healthy(self, deadline: float) -> bool:
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited (port taken, bad URL): the caller retries
            with self.new_channel() as ch:
                check = ch.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=lambda _: b"",
                    response_deserializer=lambda b: b,
                )
                try:
                    # HealthCheckResponse { status: SERVING (1) }
                    if check(None, timeout=2) == b"\x08\x01":
                        return True
                except grpc.RpcError:
                    pass
            time.sleep(0.2)
        return False

    def new_channel(self) -> grpc.Channel:
        """A new channel to the server: TLS (trusting `tls_root`) or plaintext."""
        if self.tls_root is None:
            return grpc.insecure_channel(self.addr)
        port = self.addr.rsplit(":", 1)[1]
        return grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=self.tls_root))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; returns the exit code."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_mariadb_reachable: bool | None = None


def _mariadb_ok() -> bool:
    global _mariadb_reachable
    if _mariadb_reachable is None:
        try:
            MariaDb().run("SELECT 1", timeout=15)
            _mariadb_reachable = True
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"MariaDB unreachable: {e}", file=sys.stderr)
            _mariadb_reachable = False
    return _mariadb_reachable


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item, so `server` can show the log of a failed test."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(params=["sqlite", "mariadb"])
def server(request):
    """A fresh server and database per test, on each backend."""
    backend = request.param
    if backend == "mariadb" and not _mariadb_ok():
        if _mysql_required():
            pytest.fail("MariaDB is unreachable and CRM_REQUIRE_MYSQL is set")
        pytest.skip("MariaDB unreachable (set CRM_REQUIRE_MYSQL=1 to fail instead)")
    with tempfile.TemporaryDirectory(prefix=f"crm-py-{backend}-") as tmp:
        srv = Server(backend, Path(tmp))
        try:
            srv.start()
            yield srv
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                print(f"--- last lines of the {backend} server's log ---\n{srv.log_tail()}")
            # A test must not pass while the server died under it.
            if not srv.alive():
                pytest.fail(f"crm-comms exited during the test (code {srv.proc.returncode}):\n{srv.log_tail()}")
        finally:
            srv.stop()
            srv.drop_database()
