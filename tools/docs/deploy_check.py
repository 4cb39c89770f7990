#!/usr/bin/env python3
"""Exercises the deploy material with the debug binary, as far as this machine can.

* Dockerfile: the runtime stage's ENV, ENTRYPOINT and CMD, run as `docker run` would with
  the tokens and TLS files its header shows: the server must come up on the listen port
  and serve metrics, and drain on SIGTERM (exit 0). With the ENV alone (no tokens, no
  TLS on 0.0.0.0) it must refuse to start. (Building the image needs a Docker daemon;
  its build command is the one tools/docs/check.sh runs, in release.)
* deploy/systemd/crm-comms.service: `systemd-analyze verify` (any complaint fails), then
  ExecStart with the unit's Environment= and deploy/systemd/crm-comms.env.
* deploy/kubernetes/*.yaml: the migrate Job's args, then the Deployment container's args
  and env (secrets replaced by a scratch database and a tokens file); the probes' ports
  must be the container's ports, and the readiness probe (gRPC health) must be SERVING.

Paths are rewritten into a scratch directory and ports to free ones. Exit status 0 when
everything held, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
failures: list[str] = []


def fail(what: str) -> None:
    failures.append(what)
    print(f"FAIL {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serves(argv: list[str], env: dict[str, str], port: int, what: str, work: Path,
           health: bool = True, metrics_port: int | None = None) -> None:
    """Starts argv, waits for the port (and SERVING), checks metrics, then SIGTERM -> 0."""
    log = open(work / f"{what.replace('/', '_')}.log", "w+b")
    proc = subprocess.Popen(argv, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
    ok = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                ok = True
                break
        time.sleep(0.1)
    if ok and health:
        ok = False
        for _ in range(50):
            r = subprocess.run(["buf", "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                                f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check"],
                               capture_output=True, text=True)
            if '"SERVING"' in r.stdout:
                ok = True
                break
            time.sleep(0.2)
    if ok and metrics_port:
        r = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{metrics_port}/metrics"], capture_output=True, text=True)
        ok = "crm_build_info" in r.stdout
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    else:
        rc = proc.returncode
    if not ok or rc != 0:
        log.seek(0)
        fail(f"{what}: did not serve and drain (exit {rc}):\n{log.read().decode(errors='replace')[-2000:]}")
    else:
        print(f"ok   {what}: served on its port{' (SERVING)' if health else ''}, drained on SIGTERM")


def certificates(work: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(work / "server.key"), "-out", str(work / "server.pem")],
                   check=True, capture_output=True)
    line = subprocess.run([BIN, "token", "new", "--role", "admin", "--name", "deploy-check"],
                          check=True, capture_output=True, text=True).stdout.splitlines()[1]
    (work / "tokens").write_text(line + "\n")


def dockerfile(work: Path) -> None:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text.split("\nFROM ")[-1]  # the runtime stage
    env: dict[str, str] = {}
    for m in re.finditer(r"^ENV (.*)$", stage, re.M):
        for k, v in re.findall(r"(\w+)=(\S+)", m.group(1)):
            env[k] = v
    entry = json.loads(re.search(r"^ENTRYPOINT (.*)$", stage, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.*)$", stage, re.M).group(1))
    data = work / "docker-volume"
    data.mkdir()
    port, mport = free_port(), free_port()
    env["DATABASE_URL"] = env["DATABASE_URL"].replace("/var/lib/crm-comms", str(data))
    env["CRM_LISTEN"] = env["CRM_LISTEN"].replace(":50051", f":{port}")
    env["CRM_METRICS_LISTEN"] = env["CRM_METRICS_LISTEN"].replace(":9100", f":{mport}")
    argv = [BIN] + entry[1:] + cmd
    base = {"PATH": os.environ["PATH"], **env}
    r = subprocess.run(argv, env=base, cwd=work, capture_output=True, text=True, timeout=30)
    if r.returncode != 1 or "refusing to serve" not in r.stderr:
        fail(f"Dockerfile: with its ENV alone the server should refuse 0.0.0.0 without tokens and TLS (exit {r.returncode})")
    else:
        print("ok   Dockerfile: with its ENV alone the server refuses 0.0.0.0 without tokens and TLS")
    run_env = dict(base, CRM_AUTH_TOKENS_FILE=str(work / "tokens"), CRM_TLS_CERT=str(work / "server.pem"),
                   CRM_TLS_KEY=str(work / "server.key"))
    serves(argv, run_env, port, "Dockerfile (docker run with tokens and TLS)", work, health=False, metrics_port=mport)
    if not (data / "crm.db").exists():
        fail("Dockerfile: the SQLite database is not in the volume")


def systemd(work: Path) -> None:
    unit = (ROOT / "deploy/systemd/crm-comms.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)(.*)$", unit, re.M)
    copy = work / "crm-comms.service"
    copy.write_text(unit.replace(exec_start.group(1), BIN))
    if shutil.which("systemd-analyze"):
        r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
        if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
            fail(f"deploy/systemd/crm-comms.service: systemd-analyze verify: {r.stdout}{r.stderr}")
        else:
            print("ok   deploy/systemd/crm-comms.service: systemd-analyze verify")
    else:
        print("skip systemd-analyze verify: systemd-analyze is not installed")
    etc, state = work / "etc", work / "state"
    etc.mkdir()
    state.mkdir()
    for f in ("tokens", "server.pem", "server.key"):
        shutil.copy(work / f, etc / f)
    port, mport = free_port(), free_port()

    def rewrite(v: str) -> str:
        v = v.replace("/etc/crm-comms", str(etc)).replace("/var/lib/crm-comms", str(state))
        return v.replace(":50051", f":{port}").replace(":9100", f":{mport}")

    env = {"PATH": os.environ["PATH"]}
    for m in re.finditer(r"^Environment=(\w+)=(.*)$", unit, re.M):
        env[m.group(1)] = rewrite(m.group(2))
    for line in (ROOT / "deploy/systemd/crm-comms.env").read_text().splitlines():
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = rewrite(v)
    serves([BIN] + exec_start.group(2).split(), env, port, "deploy/systemd (ExecStart with its environment)", state,
           health=False, metrics_port=mport)


def kubernetes(work: Path) -> None:
    docs = [d for f in sorted((ROOT / "deploy/kubernetes").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    job = next(d for d in docs if d["kind"] == "Job")
    service = next(d for d in docs if d["kind"] == "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        spec = container[probe]
        kind = next(k for k in ("grpc", "tcpSocket", "httpGet") if k in spec)
        if spec[kind]["port"] not in (ports["grpc"], "grpc"):
            fail(f"deploy/kubernetes: {probe} probes port {spec[kind]['port']}, not the gRPC port {ports['grpc']}")
    if "grpc" not in container["readinessProbe"]:
        fail("deploy/kubernetes: the readiness probe must be the gRPC health check")
    for p in service["spec"]["ports"]:
        if p["targetPort"] not in ports:
            fail(f"deploy/kubernetes: the Service targets unknown port {p['targetPort']}")
    db = f"sqlite://{work}/k8s.db"
    if subprocess.run(["mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-e",
                       "DROP DATABASE IF EXISTS docs_check_k8s; CREATE DATABASE docs_check_k8s"],
                      capture_output=True).returncode == 0:
        db = "mysql://root@127.0.0.1:3306/docs_check_k8s"
    secrets = {"database-url": db, "migrate-database-url": db}
    (work / "k8s-secrets").mkdir()
    shutil.copy(work / "tokens", work / "k8s-secrets" / "tokens")
    port, mport = free_port(), free_port()

    def env_of(c: dict) -> dict[str, str]:
        env = {"PATH": os.environ["PATH"]}
        for e in c.get("env", []):
            v = e["value"] if "value" in e else secrets[e["valueFrom"]["secretKeyRef"]["key"]]
            env[e["name"]] = (v.replace("/etc/crm-comms", str(work / "k8s-secrets"))
                              .replace(f":{ports['grpc']}", f":{port}").replace(f":{ports['metrics']}", f":{mport}"))
        return env

    migrate = job["spec"]["template"]["spec"]["containers"][0]
    r = subprocess.run([BIN] + migrate["args"], env=env_of(migrate), cwd=work, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail(f"deploy/kubernetes/migrate-job.yaml: `crm-comms {' '.join(migrate['args'])}` exited {r.returncode}: {r.stderr[-1500:]}")
    else:
        print(f"ok   deploy/kubernetes/migrate-job.yaml: migrated {db.split('://')[0]}")
    env = env_of(container)
    if env.get("CRM_LISTEN", "").rsplit(":", 1)[-1] != str(port):
        fail("deploy/kubernetes: CRM_LISTEN does not listen on the container's gRPC port")
    serves([BIN] + container["args"], env, port, "deploy/kubernetes (the Deployment's container; readiness SERVING)", work,
           health=True, metrics_port=mport)
    subprocess.run(["mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-e",
                    "DROP DATABASE IF EXISTS docs_check_k8s"], capture_output=True)


if __name__ == "__main__":
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    BIN = str(Path(os.environ.get("CRM_COMMS_BIN") or Path(target) / "debug" / "crm-comms").resolve())
    scratch = Path(tempfile.mkdtemp(prefix="deploy-check-"))
    try:
        certificates(scratch)
        dockerfile(scratch)
        systemd(scratch)
        kubernetes(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"deploy check: {len(failures)} failures")
    sys.exit(1 if failures else 0)
