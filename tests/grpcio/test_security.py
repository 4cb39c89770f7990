"""Tokens, roles, TLS and SIGHUP under real grpc-core clients, against the real binary.

The tokens come from `crm-comms token new` and the certificate from the `cryptography`
package, as an operator would make them; the reload is a real SIGHUP to the process.
"""

import datetime
import re
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import conftest
from crm.v1 import audit_pb2 as dpb
from crm.v1 import audit_pb2_grpc as dgrpc
from crm.v1 import customer_pb2 as upb
from crm.v1 import customer_pb2_grpc as ugrpc


def new_token(role: str, name: str) -> tuple[str, str]:
    """`crm-comms token new`: the token and its tokens-file line (stdout, one each)."""
    out = subprocess.run(
        [str(conftest._server_binary()), "token", "new", "--role", role, "--name", name],
        capture_output=True, text=True, check=True,
    )
    token, line = out.stdout.split()[0], " ".join(out.stdout.splitlines()[1].split())
    assert token.startswith("crm_") and line.startswith(f"{role} {name} ")
    assert token not in line, "the file line must hold the hash, never the token"
    return token, line


def self_signed(directory: Path) -> bytes:
    """A certificate for localhost and 127.0.0.1 with its key, written as server.pem and
    server.key; returns the certificate's PEM (the clients' trust root)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "server.pem").write_bytes(pem)
    (directory / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pem


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def create(channel, token: str | None) -> upb.Customer:
    stub = ugrpc.CustomerServiceStub(channel)
    return stub.CreateCustomer(
        upb.CreateCustomerRequest(customer=upb.Customer(name="王芳")),
        metadata=bearer(token) if token else None,
        timeout=30,
    )


@pytest.fixture(params=["sqlite", "mariadb"])
def secured(request):
    """A TLS server with a tokens file holding a reader and an admin (not the writer)."""
    backend = request.param
    if backend == "mariadb" and not conftest._mariadb_ok():
        if conftest._mysql_required():
            pytest.fail("MariaDB is unreachable and CRM_REQUIRE_MYSQL is set")
        pytest.skip("MariaDB unreachable (set CRM_REQUIRE_MYSQL=1 to fail instead)")
    with tempfile.TemporaryDirectory(prefix=f"crm-py-sec-{backend}-") as tmp:
        tmp = Path(tmp)
        root = self_signed(tmp)
        tokens = {role: new_token(role, name) for role, name in [("reader", "dashboards"), ("writer", "billing"), ("admin", "ops")]}
        tokens_file = tmp / "tokens"
        tokens_file.write_text(f"# test\n{tokens['reader'][1]}\n{tokens['admin'][1]}\n")
        srv = conftest.Server(
            backend,
            tmp,
            extra_args=[
                "--auth-tokens-file", str(tokens_file),
                "--tls-cert", str(tmp / "server.pem"),
                "--tls-key", str(tmp / "server.key"),
            ],
            tls_root=root,
        )
        try:
            srv.start()
            srv.tokens = tokens
            srv.tokens_file = tokens_file
            yield srv
            if not srv.alive():
                pytest.fail(f"crm-comms exited during the test:\n{srv.log_tail()}")
        finally:
            srv.stop()
            srv.drop_database()


def test_tokens_roles_and_a_sighup_reload_over_tls(secured):
    channel = secured.channel
    reader, writer, admin = (secured.tokens[r][0] for r in ("reader", "writer", "admin"))
    before = secured.scalar("SELECT COUNT(*) FROM customers")

    # No token, an unknown one (the writer's, not in the file yet), a reader: refused.
    for token, code in [(None, grpc.StatusCode.UNAUTHENTICATED), (writer, grpc.StatusCode.UNAUTHENTICATED), (reader, grpc.StatusCode.PERMISSION_DENIED)]:
        with pytest.raises(grpc.RpcError) as err:
            create(channel, token)
        assert err.value.code() == code, err.value
    assert secured.scalar("SELECT COUNT(*) FROM customers") == before

    # The operator adds the writer and sends SIGHUP: the same channel, no reconnect.
    secured.tokens_file.write_text(secured.tokens_file.read_text() + secured.tokens["writer"][1] + "\n")
    secured.proc.send_signal(__import__("signal").SIGHUP)
    deadline = time.monotonic() + 15
    while True:
        try:
            created = create(channel, writer)
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() < deadline, e
            time.sleep(0.1)
    assert secured.alive()

    # The write is audited under the token's name; only the admin may read the trail.
    audit = dgrpc.AuditServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        audit.ListAuditRecords(dpb.ListAuditRecordsRequest(), metadata=bearer(writer), timeout=30)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    records = audit.ListAuditRecords(dpb.ListAuditRecordsRequest(page_size=1), metadata=bearer(admin), timeout=30).audit_records
    assert (records[0].method, records[0].caller, records[0].customer_id) == ("CreateCustomer", "billing", created.id)
    log = re.sub(r"\x1b\[[0-9;]*m", "", secured.log_path.read_text(errors="replace"))
    assert "tokens file reloaded" in log and "caller=billing" in log, secured.log_tail()

    # A plaintext client gets nothing from the TLS port.
    with grpc.insecure_channel(secured.addr) as plain:
        with pytest.raises(grpc.RpcError) as err:
            create(plain, admin)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
