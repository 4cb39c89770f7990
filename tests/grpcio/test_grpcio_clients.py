"""The server under real grpc-core clients (Python grpcio), on SQLite and MariaDB.

Each test is named after the behaviour it holds the server to, and checks exact counts
read back from the database.
"""

import collections
import concurrent.futures
import random
import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from crm.v1 import analytics_pb2 as apb
from crm.v1 import analytics_pb2_grpc as agrpc
from crm.v1 import common_pb2 as cpb
from crm.v1 import communication_pb2 as mpb
from crm.v1 import communication_pb2_grpc as mgrpc
from crm.v1 import customer_pb2 as upb
from crm.v1 import customer_pb2_grpc as ugrpc
from crm.v1 import satisfaction_pb2 as spb


# -- helpers -----------------------------------------------------------------------


def create_customer(server, name: str, request_id: str = "") -> upb.Customer:
    stub = ugrpc.CustomerServiceStub(server.channel)
    return stub.CreateCustomer(
        upb.CreateCustomerRequest(customer=upb.Customer(name=name), request_id=request_id), timeout=30
    )


def note(customer_id: int, content: str) -> mpb.Communication:
    """A NOTE communication (no channel details needed)."""
    return mpb.Communication(
        customer_id=customer_id,
        channel=cpb.CHANNEL_NOTE,
        direction=cpb.DIRECTION_INBOUND,
        content=content,
    )


def communications_of(server, customer_id: int) -> int:
    return server.scalar(f"SELECT COUNT(*) FROM communications WHERE customer_id = {int(customer_id)}")


def rpc_failure(e: grpc.RpcError) -> str:
    return f"{e.code().name}: {(e.details() or '')[:300]}"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


# -- a. large imports from a client that sends one DATA frame per message ------------

IMPORT_ITEMS = 100_000


def test_import_of_100k_items_from_grpcio_survives(server):
    """grpc-core writes one small HTTP/2 DATA frame per message; the server must keep
    reading the stream while it stores batches, so neither the import nor another call
    on the same connection is cut off (GOAWAY ENHANCE_YOUR_CALM)."""
    customer = create_customer(server, "Bulk Import")
    comms = mgrpc.CommunicationServiceStub(server.channel)
    customers = ugrpc.CustomerServiceStub(server.channel)
    halfway = threading.Event()

    def items():
        for i in range(IMPORT_ITEMS):
            if i == IMPORT_ITEMS // 2:
                halfway.set()
            yield mpb.ImportCommunicationsRequest(
                communication=note(customer.id, f"bulk item {i}"), request_id=f"bulk-{i}"
            )

    started = time.monotonic()
    call = comms.ImportCommunications.future(items(), timeout=200)
    while not halfway.wait(0.1) and not call.done():
        pass
    # A unary call on the same channel (same HTTP/2 connection) while the import runs.
    side_during_import = not call.done()
    try:
        side = customers.GetCustomer(upb.GetCustomerRequest(id=customer.id), timeout=30)
    except grpc.RpcError as e:
        side = e
    if not side_during_import:
        side_outcome = "not made (the import had ended)"
    elif isinstance(side, grpc.RpcError):
        side_outcome = rpc_failure(side)
    else:
        side_outcome = "OK"
    try:
        response = call.result()
    except grpc.RpcError as e:
        pytest.fail(
            f"import failed after {time.monotonic() - started:.1f}s with {rpc_failure(e)}; "
            f"{communications_of(server, customer.id)} of {IMPORT_ITEMS} rows stored; "
            f"concurrent GetCustomer: {side_outcome}"
        )
    assert side_during_import, "the import ended before the concurrent call was made"
    assert not isinstance(side, grpc.RpcError), f"concurrent GetCustomer failed: {rpc_failure(side)}"
    assert side.id == customer.id
    assert (response.accepted_count, response.duplicate_count, response.rejected_count) == (IMPORT_ITEMS, 0, 0)
    assert communications_of(server, customer.id) == IMPORT_ITEMS
    assert server.scalar("SELECT COUNT(DISTINCT request_id) FROM communications") == IMPORT_ITEMS


# -- b. client cancellation must never reach another call ----------------------------

SEED_CUSTOMERS = 20
SEED_TEMPLATES = 1000
# Long-ish content, so a content scan of every customer takes well over 0.3 s.
FILLER = (
    "The customer called about the order and we talked through shipping options, "
    "warranty terms and the loyalty programme; notes follow for the account team. "
)
FILLER_REPEAT = 3
WORDS = ["refund", "delivery delayed", "invoice", "upgrade", "complaint", "thanks", "coupon", "return"]
CANCELLED_REPORTS = 200
MIN_REPORT_SECONDS = 0.6
MAX_SEED_ROWS = 1 << 19


def content_report_request() -> apb.GetContentReportRequest:
    now = time.time()
    return apb.GetContentReportRequest(
        start_time=timestamp(now - 86400 * 30),
        end_time=timestamp(now + 86400),
        keywords=["refund", "delivery delayed", "Order #12"],
        patterns=[r"order #\d+7\b", r"(?i)warranty\s+terms"],
        # No top terms: in a debug build term counting takes seconds per thousand rows
        # (1.8 s against 0.14 s without it, here), and a cancelled call's page already
        # handed to the blocking pool still runs to its end.
        top_terms=0,
        sample_limit=10,
    )


def seed_for_reports(server) -> tuple[list[int], int]:
    """Customers through the API, 1,000 communications through one import, then copies
    of those rows (SQL INSERT ... SELECT, doubling) until one content report over every
    customer takes at least MIN_REPORT_SECONDS. Returns the customer ids and row count."""
    customer_ids = [create_customer(server, f"Report Customer {i}").id for i in range(SEED_CUSTOMERS)]
    comms = mgrpc.CommunicationServiceStub(server.channel)

    def items():
        for i in range(SEED_TEMPLATES):
            words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(3))
            content = f"Order #{1000 + i}: {words}. " + FILLER * FILLER_REPEAT
            yield mpb.ImportCommunicationsRequest(
                communication=note(customer_ids[i % SEED_CUSTOMERS], content), request_id=f"seed-{i}"
            )

    imported = comms.ImportCommunications(items(), timeout=120)
    assert imported.accepted_count == SEED_TEMPLATES, imported

    analytics = agrpc.AnalyticsServiceStub(server.channel)
    rows = SEED_TEMPLATES
    columns = "customer_id, channel, direction, occur_time, content, outcome, create_time"
    while True:
        started = time.monotonic()
        report = analytics.GetContentReport(content_report_request(), timeout=120)
        took = time.monotonic() - started
        print(f"content report over {rows} rows: {took:.2f}s")
        assert report.scanned_count == rows, (report.scanned_count, rows)
        if took >= MIN_REPORT_SECONDS:
            return customer_ids, rows
        assert rows < MAX_SEED_ROWS, f"a report over {rows} rows still takes only {took:.2f}s"
        server.execute(f"INSERT INTO communications ({columns}) SELECT {columns} FROM communications")
        rows *= 2
        assert server.scalar("SELECT COUNT(*) FROM communications") == rows


def test_cancelled_reports_do_not_poison_connections(server):
    """Hundreds of content reports cut off client-side mid-query (cancel or deadline)
    must leave every pooled connection usable: reads answer right, writes land once."""
    customer_ids, rows = seed_for_reports(server)
    analytics = agrpc.AnalyticsServiceStub(server.channel)
    comms = mgrpc.CommunicationServiceStub(server.channel)
    customers = ugrpc.CustomerServiceStub(server.channel)
    request = content_report_request()

    outcomes = collections.Counter()
    details = []

    def cut_off(i: int) -> str:
        rng = random.Random(i)
        after = rng.uniform(0.1, 0.3)
        if i % 2 == 0:
            call = analytics.GetContentReport.future(request)
            time.sleep(after)
            if call.cancel():
                return "cancelled"
            error = call.exception()
        else:
            try:
                analytics.GetContentReport(request, timeout=after)
                error = None
            except grpc.RpcError as e:
                error = e
                # tonic answers CANCELLED ("Timeout expired") when it sees the deadline first.
                if e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                    return "deadline"
        if error is None:
            return "finished first"
        details.append(rpc_failure(error))
        return f"answered {error.code().name}"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes.update(pool.map(cut_off, range(CANCELLED_REPORTS)))
    problems = []
    # A report that was not cut off must have answered OK: another call's cancellation
    # must not reach it either.
    if any(k.startswith("answered") for k in outcomes):
        problems.append(f"reports failed during the cancellations: {dict(outcomes)}, e.g. {details[:2]}")
    cut = outcomes["cancelled"] + outcomes["deadline"]
    assert cut + len(details) >= CANCELLED_REPORTS * 3 // 4, f"too few reports were cut off mid-call: {dict(outcomes)}"

    # Right after the storm: every read answers OK with the right record.
    comm_ids = [int(r[0]) for r in server.query("SELECT id FROM communications ORDER BY id")]
    rng = random.Random(7)
    wanted_comms = rng.sample(comm_ids, 300)
    wanted_customers = [customer_ids[i % len(customer_ids)] for i in range(300)]

    def read(job: tuple[str, int]) -> str | None:
        kind, wanted = job
        try:
            if kind == "communication":
                got = comms.GetCommunication(mpb.GetCommunicationRequest(id=wanted), timeout=15).id
            else:
                got = customers.GetCustomer(upb.GetCustomerRequest(id=wanted), timeout=15).id
        except grpc.RpcError as e:
            return f"{kind} {wanted}: {e.code().name} {(e.details() or '')[:60]}"
        return None if got == wanted else f"{kind} {wanted}: answered id {got}"

    jobs = [("communication", i) for i in wanted_comms] + [("customer", i) for i in wanted_customers]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        failures = [f for f in pool.map(read, jobs) if f]
    if failures:
        codes = collections.Counter(f.split(":", 1)[1].split()[0] for f in failures)
        problems.append(f"{len(failures)} of {len(jobs)} reads failed after them: {dict(codes)}, e.g. {failures[:3]}")

    # Writes: each LogCommunication retried once with its request_id stores one row.
    def write(i: int) -> str | None:
        req = mpb.LogCommunicationRequest(
            communication=note(customer_ids[i % len(customer_ids)], f"after the storm {i}"),
            request_id=f"after-{i}",
        )
        try:
            first = comms.LogCommunication(req, timeout=15)
            again = comms.LogCommunication(req, timeout=15)
        except grpc.RpcError as e:
            return f"write {i}: {e.code().name}"
        return None if first.id == again.id else f"write {i}: retry answered {again.id}, first {first.id}"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        failures = [f for f in pool.map(write, range(100)) if f]
    if failures:
        problems.append(f"{len(failures)} of 100 writes (each sent twice) failed: {failures[:3]}")
    written = server.scalar("SELECT COUNT(*) FROM communications WHERE request_id LIKE 'after-%'")
    if written != 100:
        problems.append(f"{written} rows stored for 100 writes")
    assert not problems, "; ".join(problems)
    assert server.scalar("SELECT COUNT(*) FROM communications") == rows + 100


# -- c. a message that does not decode, mid-import ------------------------------------

VALID_BEFORE_MALFORMED = 1500


def test_malformed_item_mid_import_is_invalid_argument(server):
    """An item whose bytes are not a valid message (invalid UTF-8 in a string field) is
    the client's fault: INVALID_ARGUMENT naming its index, never INTERNAL; and retrying
    the valid items with the same request ids completes the import exactly once."""
    customer = create_customer(server, "Malformed Import")
    valid = [
        mpb.ImportCommunicationsRequest(communication=note(customer.id, f"valid item {i}"), request_id=f"ok-{i}")
        for i in range(VALID_BEFORE_MALFORMED)
    ]
    head = mpb.Communication(
        customer_id=customer.id, channel=cpb.CHANNEL_NOTE, direction=cpb.DIRECTION_INBOUND
    ).SerializeToString()
    bad_communication = head + length_delimited(6, b"invalid \xff\xfe utf-8 \xc3\x28")
    malformed = length_delimited(1, bad_communication) + length_delimited(2, b"bad-item")

    import_raw = server.channel.stream_unary(
        "/crm.v1.CommunicationService/ImportCommunications",
        request_serializer=lambda b: b,
        response_deserializer=mpb.ImportCommunicationsResponse.FromString,
    )

    def stream():
        for item in valid:
            yield item.SerializeToString()
        yield malformed

    with pytest.raises(grpc.RpcError) as failed:
        import_raw(stream(), timeout=60)
    stored_by_failed_import = communications_of(server, customer.id)
    error = failed.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"{rpc_failure(error)} ({stored_by_failed_import} rows stored)"
    )
    assert str(VALID_BEFORE_MALFORMED) in (error.details() or ""), rpc_failure(error)
    # Documented in communication.proto: every valid item before the malformed one is
    # stored, nothing from it on.
    assert stored_by_failed_import == VALID_BEFORE_MALFORMED
    assert server.scalar("SELECT COUNT(*) FROM communications WHERE request_id = 'bad-item'") == 0

    # Finishing it safely: the same items with the same request ids store the rest once.
    comms = mgrpc.CommunicationServiceStub(server.channel)
    retry = comms.ImportCommunications(iter(valid), timeout=60)
    assert retry.rejected_count == 0, retry
    assert retry.accepted_count == VALID_BEFORE_MALFORMED - stored_by_failed_import
    assert retry.duplicate_count == stored_by_failed_import
    assert communications_of(server, customer.id) == VALID_BEFORE_MALFORMED


# -- d. idempotency keys compare byte for byte ----------------------------------------

KEY_PAIRS = [
    ("Repro-Key", "repro-key"),
    ("caf\u00e9", "cafe"),
    ("stra\u00dfe", "strasse"),
    ("\uff2b\uff25\uff39", "KEY"),  # full-width ＫＥＹ
    ("\u00e1", "a\u0301"),  # composed / decomposed á
    ("key", "key\u200b"),  # zero-width space (ignorable in Unicode collations)
]
# Surrounding spaces are invalid in a key (PAD SPACE collations would ignore a trailing
# one): such a key must be rejected, never matched to the key without it.
PADDED_KEY = ("pad", "pad ")


def test_request_ids_differing_in_case_or_accents_are_distinct(server):
    """Two different writes whose request_ids differ only in case, accents, width,
    normalization or an ignorable character are two writes, on every backend; a key
    with a trailing space is rejected, never taken for the key without it."""
    comms = mgrpc.CommunicationServiceStub(server.channel)
    customer = create_customer(server, "Key Owner")
    collided = []
    for n, (a, b) in enumerate(KEY_PAIRS):
        first = comms.LogCommunication(
            mpb.LogCommunicationRequest(communication=note(customer.id, f"pair {n} first"), request_id=a), timeout=15
        )
        second = comms.LogCommunication(
            mpb.LogCommunicationRequest(communication=note(customer.id, f"pair {n} second"), request_id=b), timeout=15
        )
        if first.id == second.id or second.content != f"pair {n} second":
            collided.append(f"LogCommunication {a!a}/{b!a}")
    stored = communications_of(server, customer.id)

    customers_before = server.scalar("SELECT COUNT(*) FROM customers")
    for n, (a, b) in enumerate(KEY_PAIRS):
        first = create_customer(server, f"Pair {n} First", request_id=a)
        second = create_customer(server, f"Pair {n} Second", request_id=b)
        if first.id == second.id or second.name != f"Pair {n} Second":
            collided.append(f"CreateCustomer {a!a}/{b!a}")
    customers_added = server.scalar("SELECT COUNT(*) FROM customers") - customers_before

    # "pad" is stored; "pad " is INVALID_ARGUMENT, not the "pad" row again.
    kept, padded = PADDED_KEY
    comms.LogCommunication(
        mpb.LogCommunicationRequest(communication=note(customer.id, "padded first"), request_id=kept), timeout=15
    )
    create_customer(server, "Padded First", request_id=kept)
    for call in (
        lambda: comms.LogCommunication(
            mpb.LogCommunicationRequest(communication=note(customer.id, "padded second"), request_id=padded),
            timeout=15,
        ),
        lambda: create_customer(server, "Padded Second", request_id=padded),
    ):
        with pytest.raises(grpc.RpcError) as rejected:
            call()
        assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT, rpc_failure(rejected.value)

    assert not collided, f"{len(collided)} of {2 * len(KEY_PAIRS)} key pairs collided: {collided}"
    assert stored == 2 * len(KEY_PAIRS)
    assert customers_added == 2 * len(KEY_PAIRS)
    assert communications_of(server, customer.id) == 2 * len(KEY_PAIRS) + 1
    # Each key is stored exactly as sent, byte for byte.
    sent = {k.encode().hex().upper() for pair in KEY_PAIRS for k in pair} | {kept.encode().hex().upper()}
    for table in ("communications", "customers"):
        stored_keys = {r[0] for r in server.query(f"SELECT HEX(request_id) FROM {table} WHERE request_id IS NOT NULL")}
        assert stored_keys == sent, table


# -- e. the service-level reports and the attention list from grpcio ------------------

WAITING_CUSTOMERS = 50
DAY = 86_400


def test_response_times_and_attention_pages_from_grpcio(server):
    """A known timeline imported from grpcio: customer i's inbound message is answered
    after i + 1 minutes; one more customer is never answered. The report's figures, and
    every page of the stale list walked with its tokens, match what the timeline says,
    also after reports cut off by deadlines."""
    t0 = 1_735_689_600  # 2025-01-01T00:00:00Z
    ids = [create_customer(server, f"Waiting {i}").id for i in range(WAITING_CUSTOMERS + 1)]

    def message(customer_id: int, at: int, direction: int) -> mpb.ImportCommunicationsRequest:
        return mpb.ImportCommunicationsRequest(
            communication=mpb.Communication(
                customer_id=customer_id,
                channel=cpb.CHANNEL_CHAT,
                direction=direction,
                occur_time=timestamp(at),
                content="where is my order?" if direction == cpb.DIRECTION_INBOUND else "on its way",
            )
        )

    def items():
        for i in range(WAITING_CUSTOMERS):
            yield message(ids[i], t0 + 60 * i, cpb.DIRECTION_INBOUND)
            yield message(ids[i], t0 + 60 * i + 60 * (i + 1), cpb.DIRECTION_OUTBOUND)
        yield message(ids[-1], t0 + 60 * WAITING_CUSTOMERS, cpb.DIRECTION_INBOUND)

    comms = mgrpc.CommunicationServiceStub(server.channel)
    assert comms.ImportCommunications(items(), timeout=60).accepted_count == 2 * WAITING_CUSTOMERS + 1

    analytics = agrpc.AnalyticsServiceStub(server.channel)
    request = apb.GetResponseTimeReportRequest(
        start_time=timestamp(t0),
        end_time=timestamp(t0 + DAY),
        sla=duration_pb2.Duration(seconds=30 * 60),
    )
    for cut in range(20):
        try:
            analytics.GetResponseTimeReport(request, timeout=0.001 * (cut % 5 + 1))
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED), rpc_failure(e)
    total = analytics.GetResponseTimeReport(request, timeout=30).total
    assert (total.total_count, total.completed_count, total.pending_count) == (51, 50, 1)
    # Waits of 1..50 minutes: mean and median 25.5 min, p90 the 45th, 20 over 30 min.
    assert total.mean.ToSeconds() == 1530 and total.median.ToSeconds() == 1530
    assert total.p90.ToSeconds() == 45 * 60
    assert (total.completed_over_sla_count, total.pending_over_sla_count) == (20, 1)

    seen = []
    token = ""
    while True:
        page = analytics.ListAttentionCustomers(
            apb.ListAttentionCustomersRequest(
                reason=apb.ATTENTION_REASON_STALE,
                stale_days=30,
                as_of=timestamp(t0 + 100 * DAY),
                page_size=7,
                page_token=token,
            ),
            timeout=30,
        )
        assert len(page.customers) <= 7
        seen.extend((c.last_contact_time.ToSeconds(), c.customer_id) for c in page.customers)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == seen, "oldest last contact first"
    assert sorted(c for _, c in seen) == sorted(ids), "every customer once"
    assert all(c.days_since_last_contact == 99 for c in page.customers)


def test_a_recorded_survey_shows_in_the_satisfaction_report(server):
    """A survey sent and then answered from grpcio is one record, and the report counts
    it: one sent, one answered, score 4, CSAT 100%."""
    t0 = 1_735_689_600  # 2025-01-01T00:00:00Z
    customer = create_customer(server, "Surveyed").id
    comms = mgrpc.CommunicationServiceStub(server.channel)
    contact = comms.LogCommunication(
        mpb.LogCommunicationRequest(
            communication=mpb.Communication(
                customer_id=customer,
                channel=cpb.CHANNEL_CHAT,
                direction=cpb.DIRECTION_INBOUND,
                occur_time=timestamp(t0),
                content="thanks for the help",
            )
        ),
        timeout=30,
    )
    sent = comms.RecordSatisfaction(
        spb.RecordSatisfactionRequest(
            survey=spb.SatisfactionSurvey(communication_id=contact.id, sent_time=timestamp(t0 + 60)),
            request_id="csat-sent",
        ),
        timeout=30,
    )
    answered = comms.RecordSatisfaction(
        spb.RecordSatisfactionRequest(
            survey=spb.SatisfactionSurvey(communication_id=contact.id, score=4, answer_time=timestamp(t0 + 120)),
            request_id="csat-answer",
        ),
        timeout=30,
    )
    assert (answered.id, answered.customer_id, answered.channel) == (sent.id, customer, cpb.CHANNEL_CHAT)
    assert answered.WhichOneof("target") == "communication_id" and answered.score == 4
    assert server.scalar(f"SELECT COUNT(*) FROM satisfaction_surveys WHERE customer_id = {int(customer)}") == 1

    analytics = agrpc.AnalyticsServiceStub(server.channel)
    report = analytics.GetSatisfactionReport(
        apb.GetSatisfactionReportRequest(
            customer_ids=[customer], start_time=timestamp(t0), end_time=timestamp(t0 + DAY)
        ),
        timeout=30,
    )
    total = report.total.overall
    assert (total.sent_count, total.answered_count, total.response_rate) == (1, 1, 1.0)
    assert (total.average_score, total.csat_percent) == (4.0, 100.0)
    assert [c.count for c in total.score_counts] == [0, 0, 0, 1, 0]
    assert [c.channel for c in report.channels] == [cpb.CHANNEL_CHAT]
    assert not report.total.HasField("inside_business_hours")


def test_sentiment_is_scored_and_reported_from_grpcio(server):
    """Communications logged from grpcio carry their sentiment; the frequency report splits
    by it (the same from the rollups, every customer, and from the rows, one customer),
    and the content report reads only the sentiments asked for."""
    t0 = 1_735_689_600  # 2025-01-01T00:00:00Z
    customer = create_customer(server, "Moody").id
    comms = mgrpc.CommunicationServiceStub(server.channel)
    texts = ["质量太差了，退款太慢，很失望", "The refund was fast, thank you, excellent!", "refund form attached"]
    logged = [
        comms.LogCommunication(
            mpb.LogCommunicationRequest(
                communication=mpb.Communication(
                    customer_id=customer,
                    channel=cpb.CHANNEL_CHAT,
                    direction=cpb.DIRECTION_INBOUND,
                    occur_time=timestamp(t0 + 3600 * i),
                    content=text,
                )
            ),
            timeout=30,
        )
        for i, text in enumerate(texts)
    ]
    assert [c.sentiment for c in logged] == [cpb.SENTIMENT_NEGATIVE, cpb.SENTIMENT_POSITIVE, cpb.SENTIMENT_NEUTRAL]
    assert logged[0].sentiment_score < -50 < 50 < logged[1].sentiment_score
    assert logged[2].HasField("sentiment_score")

    analytics = agrpc.AnalyticsServiceStub(server.channel)
    one = analytics.GetFrequencyReport(
        apb.GetFrequencyReportRequest(
            customer_ids=[customer], start_time=timestamp(t0), end_time=timestamp(t0 + DAY),
            granularity=apb.GRANULARITY_DAY, include_sentiment=True,
        ),
        timeout=30,
    )
    s = one.sentiment
    assert (s.negative_count, s.neutral_count, s.positive_count) == (1, 1, 1)
    assert abs(s.mean_score - sum(c.sentiment_score for c in logged) / 3) < 1e-9
    assert one.buckets[0].sentiment == s

    negative = analytics.GetContentReport(
        apb.GetContentReportRequest(
            customer_ids=[customer], start_time=timestamp(t0), end_time=timestamp(t0 + DAY),
            keywords=["退款", "refund"], sentiments=[cpb.SENTIMENT_NEGATIVE],
        ),
        timeout=30,
    )
    assert negative.scanned_count == 1
    assert [k.message_count for k in negative.keywords] == [1, 0]


# -- f. a wallboard watching a report from grpcio ------------------------------------


def test_a_watched_report_from_grpcio_matches_the_unary_report(server):
    """A grpcio client watches a frequency report; from the messages alone (the whole
    report, then changed buckets and the rest) its copy equals GetFrequencyReport after
    every write and delete; a cancelled watch leaves the server serving the next one,
    which resumes from the state token."""
    t0 = 1_735_689_600  # 2025-01-01T00:00:00Z
    customer = create_customer(server, "看板 grpcio").id
    comms = mgrpc.CommunicationServiceStub(server.channel)
    analytics = agrpc.AnalyticsServiceStub(server.channel)
    query = apb.GetFrequencyReportRequest(
        start_time=timestamp(t0),
        end_time=timestamp(t0 + 31 * DAY),
        granularity=apb.GRANULARITY_DAY,
        time_zone="Asia/Shanghai",
        top_n=3,
    )

    def logged(day: int) -> int:
        c = note(customer, f"day {day}")
        c.occur_time.CopyFrom(timestamp(t0 + day * DAY + 3600))
        return comms.LogCommunication(mpb.LogCommunicationRequest(communication=c), timeout=30).id

    logged(2)
    call = analytics.WatchFrequencyReport(apb.WatchFrequencyReportRequest(query=query), timeout=120)
    board = apb.GetFrequencyReportResponse()
    token = ""

    def apply(message) -> None:
        nonlocal token
        if message.WhichOneof("change") == "report":
            board.CopyFrom(message.report)
        else:
            buckets = list(board.buckets)
            for changed in message.update.buckets:
                buckets[changed.index] = changed.bucket
            board.CopyFrom(message.update.summary)
            assert len(board.buckets) == 0
            board.buckets.extend(buckets)
        token = message.state_token

    apply(next(call))
    assert board == analytics.GetFrequencyReport(query, timeout=30)
    ids = []
    for day in (5, 9, 9, 20):
        ids.append(logged(day))
        want = analytics.GetFrequencyReport(query, timeout=30)
        while board != want:
            apply(next(call))
    comms.DeleteCommunication(mpb.DeleteCommunicationRequest(id=ids[1]), timeout=30)
    want = analytics.GetFrequencyReport(query, timeout=30)
    while board != want:
        apply(next(call))
    assert board.total_count == 4
    call.cancel()

    resumed = analytics.WatchFrequencyReport(
        apb.WatchFrequencyReportRequest(query=query, resume_token=token), timeout=60
    )
    first = next(resumed)
    assert first.WhichOneof("change") == "update" and len(first.update.buckets) == 0
    assert first.state_token == token
    resumed.cancel()
