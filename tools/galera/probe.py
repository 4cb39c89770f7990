#!/usr/bin/env python3
"""A cluster conflict probe with real grpc-core clients (Python grpcio).

Two `crm-comms` servers write to one fresh database through different nodes of the local
MariaDB Galera cluster (tools/galera/cluster.sh): server A through node 1, server B
through node 2. 16 client threads (8 per server, one channel each) log communications on
4 shared customers for `--seconds`, while 2 threads merge fresh customer pairs. Then every
failed LogCommunication is replayed with its request_id, and node 3 is asked, in SQL,
whether anything acknowledged was lost, whether any request_id was stored twice, and
whether every merge was applied whole (answered OK) or not at all (answered an error).

    tools/galera/cluster.sh start
    CRM_GALERA_URLS=$(tools/galera/cluster.sh urls) CRM_COMMS_BIN=target/debug/crm-comms \\
        python tools/galera/probe.py --seconds 20        # --seconds 8 for CI
    tools/galera/cluster.sh stop --wipe

Needs the packages of tests/grpcio/requirements.txt (grpcio, grpcio-tools, protobuf) and
the `mariadb` CLI. Prints one summary line; exits 1 when an acknowledged write is lost, a
request_id is stored twice, a merge is partial, a failed call cannot be replayed, or
ABORTED reaches 1 % of the calls; 2 when the probe could not run. Stops its servers and
drops its database (`crm_probe_*`) at the end, also on failure; the server logs are kept
(their directory is printed) when the probe fails.
"""

import argparse
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

WRITERS_PER_SERVER = 8
MERGERS = 2
SHARED_CUSTOMERS = 4
CALL_DEADLINE = 5.0
# Outcomes after which the call may or may not have been stored (the server's answer is
# unknown); any other error means nothing was stored.
AMBIGUOUS = ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL")
RETRYABLE = ("ABORTED", "UNAVAILABLE", "DEADLINE_EXCEEDED")


def say(msg: str) -> None:
    print(f"[probe] {msg}", file=sys.stderr, flush=True)


class ProbeError(Exception):
    """The probe could not run (setup, cluster, server): exit 2."""


# -- stubs ------------------------------------------------------------------------------


def load_stubs(stub_dir: str):
    """Compiles proto/crm/v1/*.proto into `stub_dir` and imports the modules."""
    import importlib.resources

    from grpc_tools import protoc

    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto/crm/v1").glob("*.proto"))
    args = ["protoc", f"-I{REPO / 'proto'}", f"-I{well_known}", f"--python_out={stub_dir}",
            f"--grpc_python_out={stub_dir}", *protos]
    if not protos or protoc.main(args) != 0:
        raise ProbeError(f"protoc failed on {protos}")
    sys.path.insert(0, stub_dir)
    global cpb, mpb, mgrpc, upb, ugrpc
    from crm.v1 import common_pb2 as cpb
    from crm.v1 import communication_pb2 as mpb
    from crm.v1 import communication_pb2_grpc as mgrpc
    from crm.v1 import customer_pb2 as upb
    from crm.v1 import customer_pb2_grpc as ugrpc


# -- SQL through the mariadb CLI --------------------------------------------------------


class Node:
    """One cluster node, from a `mysql://user[:pass]@host:port/db` URL."""

    def __init__(self, url: str, index: int) -> None:
        u = urllib.parse.urlparse(url.strip())
        if u.scheme not in ("mysql", "mariadb") or not u.port:
            raise ProbeError(f"not a mysql://user@host:port/db URL: {url!r}")
        self.index = index
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port
        self.user = urllib.parse.unquote(u.username or "root")
        self.password = urllib.parse.unquote(u.password or "")

    def url(self, database: str) -> str:
        auth = urllib.parse.quote(self.user, safe="")
        if self.password:
            auth += ":" + urllib.parse.quote(self.password, safe="")
        return f"mysql://{auth}@{self.host}:{self.port}/{database}"

    def run(self, sql: str, database: str = "", timeout: float = 120) -> list[list[str]]:
        """Runs `sql` (reads wait for every write the cluster committed before them:
        `wsrep_sync_wait`); the rows of the last result set, tab-split."""
        cmd = ["mariadb", "--protocol=tcp", "-h", self.host, "-P", str(self.port), "-u", self.user,
               "--connect-timeout=5", "-N", "-B", "--max-allowed-packet=256M"]
        if database:
            cmd += ["-D", database]
        env = dict(os.environ)
        if self.password:
            env["MYSQL_PWD"] = self.password
        out = subprocess.run(cmd + ["-e", "SET SESSION wsrep_sync_wait = 1; " + sql],
                             capture_output=True, text=True, timeout=timeout, env=env)
        if out.returncode != 0:
            raise ProbeError(f"node {self.index + 1}: mariadb failed on {sql[:160]!r}: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines()]


# -- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `crm-comms` subprocess on one node, logging to a file."""

    def __init__(self, name: str, binary: str, database_url: str, log_path: Path) -> None:
        self.name = name
        self.binary = binary
        self.database_url = database_url
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.addr = ""

    def start(self, wait: float = 90) -> None:
        for _ in range(3):
            self.addr = f"127.0.0.1:{free_port()}"
            env = dict(os.environ, DATABASE_URL=self.database_url, CRM_LISTEN=self.addr, RUST_LOG="info")
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([self.binary], env=env, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            if self.wait_healthy(time.monotonic() + wait):
                return
            self.stop()
        raise ProbeError(f"server {self.name} did not become healthy:\n{self.log_tail()}")

    def wait_healthy(self, deadline: float) -> bool:
        import grpc

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited (port taken, bad URL): retried on another port
            with grpc.insecure_channel(self.addr) as ch:
                check = ch.unary_unary("/grpc.health.v1.Health/Check",
                                       request_serializer=lambda _: b"", response_deserializer=lambda b: b)
                try:
                    if check(None, timeout=2) == b"\x08\x01":  # HealthCheckResponse{SERVING}
                        return True
                except grpc.RpcError:
                    pass
            time.sleep(0.3)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- calls ------------------------------------------------------------------------------


def code_of(e) -> str:
    code = e.code() if hasattr(e, "code") else None
    return code.name if code is not None else "UNKNOWN"


def note(customer_id: int, content: str):
    return mpb.Communication(customer_id=customer_id, channel=cpb.CHANNEL_NOTE,
                             direction=cpb.DIRECTION_OUTBOUND, content=content)


def with_retries(fn, tries: int = 40, pause: float = 0.25):
    """`fn()`, again after a retryable error (same request, so same request_id)."""
    import grpc

    for attempt in range(tries):
        try:
            return fn()
        except grpc.RpcError as e:
            if code_of(e) not in RETRYABLE or attempt == tries - 1:
                raise
            time.sleep(pause * (0.5 + random.random()))


def create_customer(stub, name: str, request_id: str) -> int:
    req = upb.CreateCustomerRequest(customer=upb.Customer(name=name), request_id=request_id)
    return with_retries(lambda: stub.CreateCustomer(req, timeout=CALL_DEADLINE)).id


LogCall = collections.namedtuple("LogCall", "request_id customer_id content server outcome")
# outcome: ("ok", id) or ("err", CODE)


class MergeCall:
    def __init__(self, survivor: int, source: int, moved: list[int], server: int, outcome) -> None:
        self.survivor, self.source, self.moved, self.server, self.outcome = survivor, source, moved, server, outcome


def writer(task: int, server: int, addr: str, shared: list[int], tag: str, stop_at: float, deadline: float,
           out: list) -> None:
    import grpc

    calls = []
    with grpc.insecure_channel(addr) as ch:
        stub = mgrpc.CommunicationServiceStub(ch)
        seq = 0
        while time.monotonic() < stop_at:
            customer_id = shared[(task + seq) % len(shared)]
            request_id = f"{tag}-w{task}-{seq}"
            content = f"probe {request_id} for {customer_id}"
            req = mpb.LogCommunicationRequest(communication=note(customer_id, content), request_id=request_id)
            try:
                outcome = ("ok", stub.LogCommunication(req, timeout=deadline).id)
            except grpc.RpcError as e:
                outcome = ("err", code_of(e))
            calls.append(LogCall(request_id, customer_id, content, server, outcome))
            seq += 1
    out.extend(calls)


def merger(task: int, addrs: list[str], tag: str, stop_at: float, deadline: float, out: list,
           prep_failures: list) -> None:
    import grpc

    channels = [grpc.insecure_channel(a) for a in addrs]
    try:
        rnd = 0
        while time.monotonic() < stop_at:
            server = (task + rnd) % len(addrs)
            ch = channels[server]
            customers, comms = ugrpc.CustomerServiceStub(ch), mgrpc.CommunicationServiceStub(ch)
            key = f"{tag}-m{task}-{rnd}"
            rnd += 1
            try:
                survivor = create_customer(customers, f"{key} survivor", f"{key}-s")
                source = create_customer(customers, f"{key} source", f"{key}-x")
                moved = []
                for i in range(2):
                    req = mpb.LogCommunicationRequest(communication=note(source, f"probe {key} source note {i}"),
                                                      request_id=f"{key}-n{i}")
                    moved.append(with_retries(lambda: comms.LogCommunication(req, timeout=CALL_DEADLINE)).id)
            except grpc.RpcError as e:
                prep_failures.append(f"{key}: {code_of(e)}")
                continue
            req = upb.MergeCustomersRequest(surviving_customer_id=survivor, merged_customer_ids=[source],
                                            request_id=f"{key}-merge")
            try:
                customers.MergeCustomers(req, timeout=deadline)
                outcome = ("ok", 0)
            except grpc.RpcError as e:
                outcome = ("err", code_of(e))
            out.append(MergeCall(survivor, source, moved, server, outcome))
    finally:
        for ch in channels:
            ch.close()


# -- checks -----------------------------------------------------------------------------


def stored_communications(node: Node, db: str) -> dict[int, tuple[int, str, str]]:
    """id -> (customer_id, content, request_id) of every communication, through `node`."""
    rows = node.run("SELECT id, customer_id, content, IFNULL(request_id, '') FROM communications", db)
    return {int(r[0]): (int(r[1]), r[2], r[3]) for r in rows}


def replay(addrs: list[str], calls: list[LogCall], before: dict) -> dict:
    """Replays each failed call (same request_id and content) through its server."""
    import grpc

    by_key = {key: cid for cid, (_, _, key) in before.items() if key}
    result = {"replayed": 0, "ghosts": 0, "definite_ghosts": [], "mismatches": [], "unreplayed": []}
    channels = [grpc.insecure_channel(a) for a in addrs]
    try:
        for c in calls:
            if c.outcome[0] == "ok":
                continue
            existing = by_key.get(c.request_id)
            result["ghosts"] += existing is not None
            if existing is not None and c.outcome[1] not in AMBIGUOUS:
                # The server answered an error that means "nothing stored", yet it was.
                result["definite_ghosts"].append(f"{c.request_id} answered {c.outcome[1]}, stored as {existing}")
            stub = mgrpc.CommunicationServiceStub(channels[c.server])
            req = mpb.LogCommunicationRequest(communication=note(c.customer_id, c.content), request_id=c.request_id)
            try:
                got = with_retries(lambda: stub.LogCommunication(req, timeout=CALL_DEADLINE)).id
            except grpc.RpcError as e:
                result["unreplayed"].append(f"{c.request_id}: {code_of(e)}")
                continue
            result["replayed"] += 1
            if existing is not None and existing != got:
                result["mismatches"].append(f"{c.request_id}: stored as {existing}, replay answered {got}")
    finally:
        for ch in channels:
            ch.close()
    return result


def merge_states(node: Node, db: str, merges: list[MergeCall]) -> dict[int, tuple]:
    """source -> (merged_into, deleted, owners of its 2 communications, merge records of
    the survivor naming it), through `node`."""
    if not merges:
        return {}
    sources = ",".join(str(m.source) for m in merges)
    survivors = ",".join(str(m.survivor) for m in merges)
    moved = ",".join(str(i) for m in merges for i in m.moved)
    cust = {int(r[0]): (None if r[1] == "NULL" else int(r[1]), r[2] != "NULL")
            for r in node.run(f"SELECT id, merged_into, delete_time FROM customers WHERE id IN ({sources})", db)}
    owner = {int(r[0]): int(r[1])
             for r in node.run(f"SELECT id, customer_id FROM communications WHERE id IN ({moved})", db)}
    records = collections.defaultdict(list)
    for r in node.run(f"SELECT customer_id, merged_ids, communications_moved FROM customer_merges "
                      f"WHERE customer_id IN ({survivors})", db):
        records[int(r[0])].append((r[1].split(","), int(r[2])))
    out = {}
    for m in merges:
        merged_into, deleted = cust.get(m.source, ("missing", None))
        owners = [owner.get(i) for i in m.moved]
        recs = [(ids, n) for ids, n in records.get(m.survivor, [])]
        out[m.source] = (merged_into, deleted, owners, recs)
    return out


def merge_verdict(m: MergeCall, state: tuple) -> tuple[str, str]:
    """("applied" | "none" | "partial", description)."""
    merged_into, deleted, owners, recs = state
    applied = (merged_into == m.survivor and deleted and owners == [m.survivor, m.survivor]
               and len(recs) == 1 and recs[0][0] == [str(m.source)] and recs[0][1] == 2)
    nothing = merged_into is None and not deleted and owners == [m.source, m.source] and not recs
    kind = "applied" if applied else "none" if nothing else "partial"
    desc = (f"merge {m.survivor} <- {m.source} answered {m.outcome[1] if m.outcome[0] == 'err' else 'OK'}: "
            f"merged_into {merged_into}, deleted {deleted}, communications owned by {owners}, records {recs}")
    return kind, desc


# -- the probe --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the write phase (default 20; 8 for CI)")
    ap.add_argument("--deadline", type=float, default=CALL_DEADLINE,
                    help="deadline of the probed LogCommunication and MergeCustomers calls, in seconds (default 5; "
                         "a tiny one exercises the replay and the ambiguous-merge checks)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the server logs also when the probe passes")
    args = ap.parse_args()
    if args.seconds <= 0:
        ap.error("--seconds must be positive")

    urls = [u for u in os.environ.get("CRM_GALERA_URLS", "").split(",") if u.strip()]
    if len(urls) != 3:
        say("CRM_GALERA_URLS must name the three nodes: CRM_GALERA_URLS=$(tools/galera/cluster.sh urls)")
        return 2
    binary = os.environ.get("CRM_COMMS_BIN") or str(Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
                                                    / "debug" / "crm-comms")
    if not os.access(binary, os.X_OK):
        say(f"server binary {binary} is missing (set CRM_COMMS_BIN)")
        return 2

    # SIGTERM (a CI timeout) unwinds like Ctrl-C, so the servers stop and the database goes.
    def on_sigterm(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)

    work = Path(tempfile.mkdtemp(prefix="crm-probe-"))
    stub_dir = work / "stubs"
    stub_dir.mkdir()
    servers: list[Server] = []
    nodes: list[Node] = []
    db_holder: list[str] = []
    code = 2
    try:
        nodes = [Node(u, i) for i, u in enumerate(urls)]
        load_stubs(str(stub_dir))
        code = run(args, nodes, binary, work, servers, db_holder)
    except ProbeError as e:
        say(f"cannot run: {e}")
        code = 2
    except KeyboardInterrupt:
        say("interrupted")
        code = 2
    finally:
        db = db_holder[0] if db_holder else ""
        for s in servers:
            if not s.alive() and s.proc is not None and code == 0:
                code = 1
            s.stop()
        if db and nodes:
            try:
                nodes[0].run(f"DROP DATABASE IF EXISTS `{db}`")
            except (ProbeError, subprocess.TimeoutExpired, OSError) as e:
                say(f"warning: could not drop {db}: {e}")
        shutil.rmtree(stub_dir, ignore_errors=True)
        if code == 0 and not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"server logs: {work}")
    return code


def run(args, nodes: list[Node], binary: str, work: Path, servers: list[Server], db_holder: list) -> int:
    import grpc

    tag = uuid.uuid4().hex[:10]
    db = f"crm_probe_{tag}"
    nodes[0].run(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
    db_holder.append(db)
    say(f"database {db}; logs in {work}")

    # A first (it migrates), then B once node 2 has A's schema.
    a = Server("A", binary, nodes[0].url(db), work / "server-a-node1.log")
    servers.append(a)
    a.start()
    nodes[1].run("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()", db)
    b = Server("B", binary, nodes[1].url(db), work / "server-b-node2.log")
    servers.append(b)
    b.start()
    addrs = [a.addr, b.addr]
    say(f"server A {a.addr} (node 1), server B {b.addr} (node 2)")

    with grpc.insecure_channel(a.addr) as ch_a, grpc.insecure_channel(b.addr) as ch_b:
        shared = [create_customer(ugrpc.CustomerServiceStub(ch_a), f"{tag} shared {i}", f"{tag}-shared-{i}")
                  for i in range(SHARED_CUSTOMERS)]
        get_b = ugrpc.CustomerServiceStub(ch_b)
        for cid in shared:  # written through node 1: wait until B reads them
            for attempt in range(50):
                try:
                    get_b.GetCustomer(upb.GetCustomerRequest(id=cid), timeout=CALL_DEADLINE)
                    break
                except grpc.RpcError:
                    if attempt == 49:
                        raise ProbeError(f"customer {cid} not visible through server B")
                    time.sleep(0.1)

    say(f"{2 * WRITERS_PER_SERVER} writers on customers {shared} and {MERGERS} mergers for {args.seconds:g} s")
    writer_out: list[list[LogCall]] = [[] for _ in range(2 * WRITERS_PER_SERVER)]
    merge_out: list[list[MergeCall]] = [[] for _ in range(MERGERS)]
    prep_failures: list[str] = []
    started = time.monotonic()
    stop_at = started + args.seconds
    threads = []
    for task in range(2 * WRITERS_PER_SERVER):
        server = task % 2
        threads.append(threading.Thread(target=writer, daemon=True,
                                        args=(task, server, addrs[server], shared, tag, stop_at, args.deadline,
                                              writer_out[task])))
    for task in range(MERGERS):
        threads.append(threading.Thread(target=merger, daemon=True,
                                        args=(task, addrs, tag, stop_at, args.deadline, merge_out[task],
                                              prep_failures)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    calls = [c for out in writer_out for c in out]
    merges = [m for out in merge_out for m in out]
    for s in servers:
        if not s.alive():
            raise ProbeError(f"server {s.name} exited during the probe:\n{s.log_tail()}")

    # Merges first (a replay of logs does not touch them), then the replays, then node 3.
    node3 = nodes[2]
    states = merge_states(node3, db, merges)
    partial, merges_ambiguous_applied = [], 0
    for m in merges:
        kind, desc = merge_verdict(m, states[m.source])
        if m.outcome[0] == "ok":
            bad = kind != "applied"
        elif m.outcome[1] in AMBIGUOUS:
            bad = kind == "partial"  # the client cannot know; it must be all or nothing
            merges_ambiguous_applied += kind == "applied"
        else:
            bad = kind != "none"
        if bad:
            partial.append(desc)

    before = stored_communications(node3, db)
    rep = replay(addrs, calls, before)
    after = stored_communications(node3, db)

    lost = []
    for c in calls:
        if c.outcome[0] == "ok":
            row = before.get(c.outcome[1])
            if row != (c.customer_id, c.content, c.request_id):
                lost.append(f"{c.request_id} acknowledged as {c.outcome[1]}, node 3 stores {row}")
    per_key = collections.Counter(key for _, _, key in after.values() if key)
    per_content = collections.Counter(content for _, content, _ in after.values())
    duplicates, missing = [], []
    for c in calls:
        n = per_key.get(c.request_id, 0)
        if n == 0:
            missing.append(c.request_id)
        elif n > 1:
            duplicates.append(f"request_id {c.request_id} stored {n} times")
        if per_content.get(c.content, 0) > 1:
            duplicates.append(f"content {c.content!r} stored {per_content[c.content]} times")

    total = len(calls) + len(merges)
    acked = sum(c.outcome[0] == "ok" for c in calls)
    acked_per = [sum(c.outcome[0] == "ok" and c.server == s for c in calls) for s in (0, 1)]
    failed = collections.Counter(c.outcome[1] for c in calls if c.outcome[0] == "err")
    failed_merges = collections.Counter(m.outcome[1] for m in merges if m.outcome[0] == "err")
    aborted = failed.get("ABORTED", 0) + failed_merges.get("ABORTED", 0)
    aborted_pct = 100.0 * aborted / max(total, 1)
    other = collections.Counter(failed) + collections.Counter(failed_merges)
    other.pop("ABORTED", None)
    other_txt = ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "none"
    merges_ok = sum(m.outcome[0] == "ok" for m in merges)
    problems = []
    if lost:
        problems.append("lost")
    if duplicates or rep["mismatches"]:
        problems.append("duplicates")
    if partial:
        problems.append("partial merges")
    unreplayed = {u.split(":")[0] for u in rep["unreplayed"]} | set(missing)
    if unreplayed:
        problems.append("unreplayed")
    if aborted_pct >= 1.0:
        problems.append("ABORTED >= 1 %")
    if len(calls) < 100 or not merges:
        problems.append("too few calls to judge")

    for what, items in (("lost", lost), ("duplicate", duplicates), ("replay mismatch", rep["mismatches"]),
                        ("unreplayed", rep["unreplayed"]), ("missing after replay", missing),
                        ("partial merge", partial), ("stored despite a definite error", rep["definite_ghosts"]), ("merge preparation failed", prep_failures)):
        for item in items[:10]:
            say(f"{what}: {item}")
    print(
        f"galera probe: {elapsed:.1f} s, {total} calls ({len(calls)} LogCommunication, {len(merges)} MergeCustomers), "
        f"acked {acked} (A/node1 {acked_per[0]}, B/node2 {acked_per[1]}), merges ok {merges_ok}; "
        f"ABORTED {aborted} ({aborted_pct:.2f} %); other failures: {other_txt}; "
        f"replayed {rep['replayed']} of {len(calls) - acked} failed (stored before replay {rep['ghosts']}, "
        f"of them after a definite error {len(rep['definite_ghosts'])}, unreplayed {len(unreplayed)}); lost {len(lost)}; "
        f"duplicates {len(duplicates) + len(rep['mismatches'])}; partial merges {len(partial)}"
        f"{f' (failed merges applied whole {merges_ambiguous_applied})' if merges_ambiguous_applied else ''}; "
        f"{total / elapsed:.1f} calls/s; {'FAIL: ' + ', '.join(problems) if problems else 'PASS'}",
        flush=True,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
