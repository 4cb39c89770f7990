#!/usr/bin/env python3
"""Runs every shell session in README.md and docs/*.md and compares its output.

Conventions (the rules are in docs/development.md):

* A fenced block with the info string `console` is a session: a line starting with `$ `
  is a command (continued on the next lines while it ends with `\\` or its quotes are
  open), the lines after it, up to the next command, are its expected output (stdout and
  stderr together). A command that exits non-zero shows `[exit status: N]` as its last
  output line.
* In expected output, a line that is exactly `...` matches any number of lines (none
  included), and `[..]` matches any text within one line: ids, times, latencies, ports.
* `<!-- check: server CMD -->` (an HTML comment on its own line, invisible on GitHub)
  starts CMD in the background, in the file's work directory, and waits until it answers;
  it replaces the file's previous server. CMD must be a line of the fenced block just
  above it, so the reader sees the command the check runs. `cargo run --release [--] ARGS`
  runs as `crm-comms ARGS`. `<!-- check: stop -->` stops it (SIGTERM, then waits).
* Every other fenced block (`sh`, `text`, `yaml`, ...) is not run; the summary says how
  many were skipped and why. A block that is not `console` must not hold `$ ` lines.

Each file runs in one bash process (variables and files carry over), in a fresh directory,
with the debug binary first on PATH as `crm-comms`. Addresses are rewritten: the ports
the docs use (50051, 50052, 9100) become free ports, and MariaDB databases `crm_live` /
`crm_restored` become `docs_check_live` / `docs_check_restored` (dropped before and
after); outputs are rewritten back before they are compared. A file whose commands use
MariaDB is skipped when it is unreachable, or fails when CRM_REQUIRE_MYSQL=1.

Exit status: 0 when every session matched, 1 otherwise (each difference shown as a
unified diff under `file:line`).
"""

from __future__ import annotations

import concurrent.futures
import difflib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_PORTS = ("50051", "50052", "9100")
DATABASES = {"crm_live": "docs_check_live", "crm_restored": "docs_check_restored"}
COMMAND_TIMEOUT = 90
SKIP_REASONS = {
    "sh": "commands for the reader's own machine or hosts (cargo run --release, cargo test, "
    "installing files as root); the sessions next to them run what they start",
    "text": "log excerpts and reference output that no command on the page prints",
    "yaml": "Kubernetes manifests and configuration, exercised by tools/docs/check.sh",
    "ini": "systemd unit excerpts, verified by tools/docs/check.sh",
    "dockerfile": "container definition, exercised by tools/docs/check.sh",
    "": "plain blocks",
}


@dataclass
class Command:
    line: int
    text: str
    expected: list[str]


@dataclass
class Step:
    kind: str  # "command", "server", "stop"
    line: int
    command: Command | None = None
    server: str = ""


@dataclass
class Doc:
    path: Path
    steps: list[Step] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def shell_complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    return subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0


def parse(path: Path) -> Doc:
    doc = Doc(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(ROOT)
    i = 0
    prev_block: list[str] = []
    while i < len(lines):
        line = lines[i]
        directive = re.match(r"^<!-- check: (server|stop)\s*(.*?)\s*-->$", line)
        if line.startswith("<!-- check:") and not directive:
            doc.errors.append(f"{rel}:{i + 1}: unknown directive: {line}")
        if directive:
            if directive.group(1) == "stop":
                doc.steps.append(Step("stop", i + 1))
            else:
                cmd = directive.group(2)
                shown = [re.sub(r"\s+#.*$", "", b.removeprefix("$ ")).strip() for b in prev_block]
                if cmd not in shown:
                    doc.errors.append(f"{rel}:{i + 1}: the server command `{cmd}` is not a line of the block above it")
                doc.steps.append(Step("server", i + 1, server=cmd))
            i += 1
            continue
        fence = re.match(r"^(\s*)(`{3,})\s*([\w+-]*)", line)
        if not fence:
            i += 1
            continue
        indent, ticks, info = fence.group(1), fence.group(2), fence.group(3)
        start = i + 1
        i += 1
        body: list[tuple[int, str]] = []
        while i < len(lines) and not lines[i].strip().startswith(ticks):
            body.append((i + 1, lines[i][len(indent):] if lines[i].startswith(indent) else lines[i]))
            i += 1
        i += 1
        prev_block = [b for _, b in body]
        if info != "console":
            doc.skipped[info] = doc.skipped.get(info, 0) + 1
            for n, b in body:
                if b.startswith("$ "):
                    doc.errors.append(f"{rel}:{n}: a `$ ` line in a ```{info} block: sessions must be ```console blocks")
            continue
        cmd: Command | None = None
        j = 0
        while j < len(body):
            n, b = body[j]
            if b.startswith("$ "):
                text = b[2:]
                while not shell_complete(text) and j + 1 < len(body):
                    j += 1
                    text += "\n" + body[j][1]
                cmd = Command(n, text, [])
                doc.steps.append(Step("command", n, command=cmd))
            elif cmd is None:
                doc.errors.append(f"{rel}:{n}: console block (line {start}) has output before its first `$ ` command")
            else:
                cmd.expected.append(b)
            j += 1
        if cmd is None:
            doc.errors.append(f"{rel}:{start}: console block without a `$ ` command")
    return doc


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def check_links(path: Path) -> list[str]:
    """Relative links must name an existing file, and an anchor one of its headings."""
    errors = []
    rel = path.relative_to(ROOT)
    text = path.read_text(encoding="utf-8")
    text_no_code = re.sub(r"```.*?```", "", text, flags=re.S)
    for n, line in enumerate(text_no_code.splitlines(), 1):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                errors.append(f"{rel}: link to a missing file: {target}")
            elif anchor and dest.suffix == ".md":
                slugs = {slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(encoding="utf-8"), re.M)}
                if anchor not in slugs:
                    errors.append(f"{rel}: link to a missing heading: {target}")
    return errors


def check_flags(binary: Path) -> list[str]:
    """Every flag the binary's --help prints is documented: serve's in docs/operations.md
    (the configuration table), the subcommands' own ones somewhere in docs/."""
    def flags(*args: str) -> set[str]:
        out = subprocess.run([str(binary), *args], capture_output=True, text=True).stdout
        return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", out, re.M)) - {"--help", "--version"}

    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    everything = "\n".join(f.read_text(encoding="utf-8") for f in (ROOT / "docs").glob("*.md"))
    serve = flags("--help")
    errors = [f"docs/operations.md: `{f}` (crm-comms --help) is not documented" for f in sorted(serve)
              if f"`{f}`" not in operations]
    for sub in (["migrate"], ["seed-demo"], ["rebuild-rollups"], ["token", "new"]):
        for f in sorted(flags("help", *sub) - serve):
            if f not in everything:
                errors.append(f"docs/: `{f}` (crm-comms help {' '.join(sub)}) is not documented")
    return errors


def pattern_for(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for e in expected:
        if e.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(p) for p in e.rstrip().split("[..]")) + r"\n")
    return re.compile("".join(parts))


def trim(lines: list[str]) -> list[str]:
    lines = [l.rstrip() for l in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mariadb(*sql: str) -> bool:
    args = ["mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "--connect-timeout=3"]
    args += ["-e", "; ".join(sql)]
    try:
        return subprocess.run(args, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Runner:
    def __init__(self, doc: Doc, binary: Path):
        self.doc = doc
        self.rel = doc.path.relative_to(ROOT)
        self.work = Path(tempfile.mkdtemp(prefix="docs-check-"))
        self.ports = {p: str(free_port()) for p in DOC_PORTS}
        bindir = self.work / ".bin"
        bindir.mkdir()
        (bindir / "crm-comms").symlink_to(binary)
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("CRM_") or k in ("DATABASE_URL", "RUST_LOG"):
                del self.env[k]
        self.env.update(PATH=f"{bindir}:{self.env['PATH']}", NO_COLOR="1", TZ="UTC", LC_ALL="C.UTF-8", REPO=str(ROOT))
        self.server: subprocess.Popen | None = None
        self.server_log = None
        self.failures: list[str] = []
        self.ran = 0
        self.blessed: list[tuple[int, list[str]]] = []

    def forward(self, text: str) -> str:
        for doc_port, port in self.ports.items():
            text = re.sub(rf"(?<=:){doc_port}\b", port, text)
        for doc_db, db in DATABASES.items():
            text = text.replace(doc_db, db)
        return text

    def backward(self, text: str) -> str:
        for doc_port, port in self.ports.items():
            text = re.sub(rf"(?<=:){port}\b", doc_port, text)
        for doc_db, db in DATABASES.items():
            text = text.replace(db, doc_db)
        return text

    def fail(self, line: int, message: str) -> None:
        self.failures.append(f"{self.rel}:{line}: {message}")

    def start_server(self, step: Step) -> bool:
        self.stop_server()
        cmd = re.sub(r"^cargo run --release(?: --)?", "crm-comms", step.server)
        env = dict(self.env)
        if "--listen" not in cmd:
            env["CRM_LISTEN"] = f"127.0.0.1:{self.ports['50051']}"
        listen = re.search(r"--listen[ =]\S+:(\d+)", self.forward(cmd))
        port = int(listen.group(1)) if listen else int(self.ports["50051"])
        self.server_log = open(self.work / f".server-{step.line}.log", "w+b")
        self.server = subprocess.Popen(
            ["bash", "-c", "exec " + self.forward(cmd)], cwd=self.work, env=env,
            stdout=self.server_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                break
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    if "--tls-cert" in cmd or self.healthy(port):
                        return True
            time.sleep(0.1)
        self.server_log.seek(0)
        log = self.server_log.read().decode(errors="replace")[-3000:]
        self.fail(step.line, f"the server `{step.server}` did not come up:\n{log}")
        return False

    def healthy(self, port: int) -> bool:
        r = subprocess.run(["buf", "curl", "--protocol", "grpc", "--http2-prior-knowledge",
                            f"http://127.0.0.1:{port}/grpc.health.v1.Health/Check"],
                           capture_output=True, text=True, env=self.env)
        return '"SERVING"' in r.stdout

    def stop_server(self) -> None:
        if self.server and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
        self.server = None

    def run(self) -> None:
        shell = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=self.work, env=self.env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            for step in self.doc.steps:
                if step.kind == "server":
                    if not self.start_server(step):
                        return
                elif step.kind == "stop":
                    self.stop_server()
                elif not self.run_command(shell, step.command):
                    return
        finally:
            self.stop_server()
            try:
                os.killpg(shell.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            shell.wait()

    def run_command(self, shell: subprocess.Popen, cmd: Command) -> bool:
        self.ran += 1
        out = self.work / f".out-{cmd.line}"
        marker = f"__DOCS_CHECK_RC_{cmd.line}="
        script = f"{{ {self.forward(cmd.text)}\n}} >{out} 2>&1 </dev/null\necho \"{marker}$?\"\n"
        shell.stdin.write(script.encode())
        shell.stdin.flush()
        buf = b""
        deadline = time.monotonic() + COMMAND_TIMEOUT
        rc = None
        while rc is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([shell.stdout], [], [], left)[0]:
                self.fail(cmd.line, f"timed out after {COMMAND_TIMEOUT} s: $ {cmd.text}")
                return False
            chunk = os.read(shell.stdout.fileno(), 4096)
            if not chunk:
                self.fail(cmd.line, f"the shell exited: $ {cmd.text}")
                return False
            buf += chunk
            m = re.search(rf"{marker}(\d+)\n".encode(), buf)
            if m:
                rc = int(m.group(1))
        actual = trim(self.backward(out.read_bytes().decode(errors="replace")).splitlines())
        if rc != 0:
            actual.append(f"[exit status: {rc}]")
        expected = trim(cmd.expected)
        if os.environ.get("DOCS_CHECK_BLESS") == "1" and not expected and actual:
            self.blessed.append((cmd.line + cmd.text.count("\n"), actual))
            return True
        if pattern_for(expected).fullmatch("".join(a + "\n" for a in actual)):
            return True
        diff = "\n".join(difflib.unified_diff(expected, actual, "expected (the doc)", "actual", lineterm="", n=2))
        self.fail(cmd.line, f"output differs for `$ {cmd.text.splitlines()[0]}`\n{diff}")
        return True


def uses_mariadb(doc: Doc) -> bool:
    texts = [s.command.text for s in doc.steps if s.command] + [s.server for s in doc.steps]
    return any(re.search(r"\bmariadb|mysql://", t) for t in texts)


def check(doc: Doc, binary: Path) -> tuple[list[str], int, str]:
    if not doc.steps:
        return [], 0, ""
    if uses_mariadb(doc):
        if not mariadb("SELECT 1"):
            if os.environ.get("CRM_REQUIRE_MYSQL") == "1":
                return [f"{doc.path.relative_to(ROOT)}: MariaDB at 127.0.0.1:3306 is unreachable (CRM_REQUIRE_MYSQL=1)"], 0, ""
            return [], 0, f"skipped {doc.path.relative_to(ROOT)}: MariaDB at 127.0.0.1:3306 is unreachable"
        mariadb(*(f"DROP DATABASE IF EXISTS {db}" for db in DATABASES.values()))
    runner = Runner(doc, binary)
    try:
        runner.run()
    finally:
        if uses_mariadb(doc):
            mariadb(*(f"DROP DATABASE IF EXISTS {db}" for db in DATABASES.values()))
        if not runner.failures or os.environ.get("DOCS_CHECK_KEEP") != "1":
            shutil.rmtree(runner.work, ignore_errors=True)
        else:
            runner.failures.append(f"(work directory kept: {runner.work})")
    if runner.blessed:
        # Authoring aid: DOCS_CHECK_BLESS=1 writes the actual output under commands that
        # show none yet; mark what is not deterministic with [..] / ... afterwards.
        lines = doc.path.read_text(encoding="utf-8").splitlines()
        for after, actual in sorted(runner.blessed, reverse=True):
            lines[after:after] = actual
        doc.path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return runner.failures, runner.ran, ""


def main() -> int:
    target = os.environ.get("CARGO_TARGET_DIR") or str(ROOT / "target")
    binary = Path(os.environ.get("CRM_COMMS_BIN") or Path(target) / "debug" / "crm-comms").resolve()
    if not binary.is_file():
        print(f"docs check: {binary} is missing; run `cargo build` first", file=sys.stderr)
        return 1
    if not shutil.which("buf"):
        print("docs check: buf is not on PATH (npm install -g @bufbuild/buf)", file=sys.stderr)
        return 1
    files = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    if len(sys.argv) > 1:
        files = [Path(a).resolve() for a in sys.argv[1:]]
    docs = [parse(f) for f in files]
    failures = [e for d in docs for e in d.errors]
    linked = files + ([ROOT / "BENCHMARKS.md", ROOT / "CHANGELOG.md"] if len(sys.argv) == 1 else [])
    failures += [e for f in linked for e in check_links(f)]
    if len(sys.argv) == 1:
        failures += check_flags(binary)
    started = time.monotonic()
    ran = 0
    notes = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        for fails, n, note in pool.map(lambda d: check(d, binary), docs):
            failures += fails
            ran += n
            if note:
                notes.append(note)
    skipped: dict[str, int] = {}
    for d in docs:
        for k, v in d.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
    for f in failures:
        print(f"FAIL {f}\n")
    for n in notes:
        print(f"docs check: {n}")
    print(f"docs check: {len(docs)} files, {ran} commands run in {time.monotonic() - started:.1f} s, "
          f"{len(failures)} failures")
    for info, n in sorted(skipped.items()):
        print(f"  not run: {n} ```{info or '(no info string)'} blocks: {SKIP_REASONS.get(info, 'not a session')}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
