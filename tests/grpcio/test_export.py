"""ExportService under a grpcio client, its files read back by DuckDB (a reader this
project did not write), every count and sum compared with the service's own reports:
a full export, then an incremental one after a delete, a merge and new rows, applied
as a BI job would apply them.
"""

import json
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import grpc
import pytest
from google.protobuf import timestamp_pb2

from crm.v1 import analytics_pb2 as apb
from crm.v1 import analytics_pb2_grpc as agrpc
from crm.v1 import common_pb2 as cpb
from crm.v1 import communication_pb2 as mpb
from crm.v1 import communication_pb2_grpc as mgrpc
from crm.v1 import customer_pb2 as upb
from crm.v1 import customer_pb2_grpc as ugrpc
from crm.v1 import export_pb2 as epb
from crm.v1 import export_pb2_grpc as egrpc

SETTLE = 2.5  # seconds: the export covers what is older than the change feed's SETTLE (2 s)


def ts(text: str) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromJsonString(text)
    return t


def export(server, out: Path, fmt, since: str = "") -> dict:
    """Runs ExportData and writes its chunks under `out`; the manifest."""
    stub = egrpc.ExportServiceStub(server.channel)
    handles = {}
    for chunk in stub.ExportData(epb.ExportDataRequest(format=fmt, since_watermark=since), timeout=120):
        path = out / chunk.path
        if chunk.path not in handles:
            path.parent.mkdir(parents=True, exist_ok=True)
            handles[chunk.path] = path.open("wb")
        f = handles[chunk.path]
        assert f.tell() == chunk.offset
        f.write(chunk.data)
        if chunk.end_of_file:
            f.close()
    assert all(f.closed for f in handles.values())
    return json.loads((out / "manifest.json").read_text())


def table(out: Path, name: str, fmt: str) -> str:
    """A DuckDB table expression over one exported table's files (none: an empty list)."""
    ext = "parquet" if fmt == "parquet" else "csv"
    files = sorted(str(p) for p in out.glob(f"{name}/month=*/*.{ext}"))
    if not files:
        return ""
    if fmt == "parquet":
        return f"read_parquet({files!r}, hive_partitioning = true)"
    # CSV has no types: money is declared, as the docs tell CSV readers to (a sniffed
    # DOUBLE would not be exact).
    types = ", types = {'amount': 'DECIMAL(28,9)'}" if name == "transactions" else ""
    return f"read_csv({files!r}, hive_partitioning = true, header = true{types})"


# Words of each sentiment, so the exported classes are compared with the report's split.
MOODS = ["非常满意，谢谢", "太差了，很失望", "see attachment"]


def frequency(server, customer_ids=()) -> apb.GetFrequencyReportResponse:
    return agrpc.AnalyticsServiceStub(server.channel).GetFrequencyReport(
        apb.GetFrequencyReportRequest(
            customer_ids=list(customer_ids),
            start_time=ts("2023-01-01T00:00:00Z"),
            end_time=ts("2025-01-01T00:00:00Z"),
            granularity=apb.GRANULARITY_MONTH,
            include_sentiment=True,
        ),
        timeout=30,
    )


def transactions_total(server, customer_id: int) -> tuple[int, Decimal]:
    """ListTransactions of one customer, every page: (count, sum of amounts)."""
    stub = ugrpc.CustomerServiceStub(server.channel)
    count, total, token = 0, Decimal(0), ""
    while True:
        page = stub.ListTransactions(
            upb.ListTransactionsRequest(customer_id=customer_id, page_size=1000, page_token=token), timeout=30
        )
        for t in page.transactions:
            count += 1
            total += Decimal(t.amount.units) + Decimal(t.amount.nanos) / Decimal(10**9)
        token = page.next_page_token
        if not token:
            return count, total


def seed(server, customers, rounds: int, tag: str):
    comms = mgrpc.CommunicationServiceStub(server.channel)
    stub = ugrpc.CustomerServiceStub(server.channel)
    ids = []
    for i in range(rounds):
        for k, c in enumerate(customers):
            month = 1 + (i + k) % 12
            ids.append(
                comms.LogCommunication(
                    mpb.LogCommunicationRequest(
                        communication=mpb.Communication(
                            customer_id=c,
                            channel=[cpb.CHANNEL_NOTE, cpb.CHANNEL_CHAT, cpb.CHANNEL_MEETING][i % 3],
                            direction=cpb.DIRECTION_INBOUND,
                            occur_time=ts(f"2024-{month:02d}-{1 + i % 28:02d}T12:{k % 60:02d}:00.25Z"),
                            content=f"{tag} 第{i}次 \"quoted\", comma\nnew line 😀 {MOODS[(i + k) % 3]}",
                        )
                    ),
                    timeout=30,
                ).id
            )
            if i % 2 == 0:
                stub.CreateTransaction(
                    upb.CreateTransactionRequest(
                        transaction=upb.Transaction(
                            customer_id=c,
                            order_number=f"{tag}-{c}-{i}",
                            product="茶叶",
                            amount=cpb.Money(currency_code="CNY", units=10 + i, nanos=(i * 123_456_789) % 10**9),
                            occur_time=ts(f"2024-{month:02d}-02T08:00:00Z"),
                        )
                    ),
                    timeout=30,
                )
    return ids


def check(server, con, out_dirs, fmt, customers, survivor_of=lambda c: c):
    """The exported runs in `out_dirs`, applied in order, against the service's reports."""
    comm_parts = [t for t in (table(d, "communications", fmt) for d in out_dirs) if t]
    deleted_parts = [t for t in (table(d, "deleted_communications", fmt) for d in out_dirs) if t]
    merge_parts = [t for t in (table(d, "customer_merges", fmt) for d in out_dirs) if t]
    tx_parts = [t for t in (table(d, "transactions", fmt) for d in out_dirs) if t]
    union = lambda parts: " UNION ALL ".join(f"SELECT * FROM {p}" for p in parts)
    con.execute(f"CREATE OR REPLACE TEMP TABLE comms AS {union(comm_parts)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE tx AS {union(tx_parts)}")
    con.execute("CREATE OR REPLACE TEMP TABLE merges (merged_id BIGINT, customer_id BIGINT)")
    if merge_parts:
        con.execute(f"INSERT INTO merges SELECT merged_id, customer_id FROM ({union(merge_parts)})")
    if deleted_parts:
        con.execute(f"DELETE FROM comms WHERE id IN (SELECT id FROM ({union(deleted_parts)}))")
    # A merge moves everything of the merged customers to the survivor.
    for t in ("comms", "tx"):
        con.execute(
            f"UPDATE {t} SET customer_id = m.customer_id FROM merges m WHERE {t}.customer_id = m.merged_id"
        )

    report = frequency(server)
    total = con.execute("SELECT count(*) FROM comms").fetchone()[0]
    assert total == report.total_count
    # Per month: the export's Hive partitions against the report's monthly buckets.
    by_month = dict(con.execute("SELECT month, count(*) FROM comms GROUP BY month").fetchall())
    buckets = {b.start_time.ToDatetime().strftime("%Y-%m"): b.count for b in report.buckets if b.count}
    assert by_month == buckets
    # Per channel.
    channels = dict(con.execute("SELECT upper(channel), count(*) FROM comms GROUP BY ALL").fetchall())
    assert channels == {cpb.Channel.Name(c.channel).removeprefix("CHANNEL_"): c.count for c in report.channel_counts if c.count}
    # The rollup of the latest run is whole: its counts are the report's.
    rollup = table(out_dirs[-1], "customer_months", fmt)
    assert con.execute(f"SELECT sum(communication_count) FROM {rollup}").fetchone()[0] == report.total_count
    # Sentiment: per row, and the rollup's sums, against the report's split.
    s = report.sentiment
    by_class = dict(con.execute("SELECT sentiment, count(*) FROM comms GROUP BY ALL").fetchall())
    assert by_class.get("negative", 0) == s.negative_count
    assert by_class.get("positive", 0) == s.positive_count
    assert by_class.get("neutral", 0) == s.neutral_count
    sums = con.execute(f"SELECT sum(negative_count), sum(positive_count), sum(sentiment_sum) FROM {rollup}").fetchone()
    assert (sums[0], sums[1]) == (s.negative_count, s.positive_count)
    assert abs(sums[2] / report.total_count - s.mean_score) < 1e-9

    for c in {survivor_of(c) for c in customers}:
        assert con.execute("SELECT count(*) FROM comms WHERE customer_id = ?", [c]).fetchone()[0] == frequency(server, [c]).total_count
        count, amount = transactions_total(server, c)
        got = con.execute("SELECT count(*), coalesce(sum(amount), 0) FROM tx WHERE customer_id = ?", [c]).fetchone()
        assert (got[0], Decimal(got[1])) == (count, amount), c
    return total


def test_exports_read_back_by_duckdb_match_the_services_reports(server, tmp_path):
    stub = ugrpc.CustomerServiceStub(server.channel)
    customers = [stub.CreateCustomer(upb.CreateCustomerRequest(customer=upb.Customer(name=f"客户 {i}")), timeout=30).id for i in range(6)]
    comm_ids = seed(server, customers, 30, "first")
    time.sleep(SETTLE)

    con = duckdb.connect()
    full = tmp_path / "full"
    m1 = export(server, full, epb.EXPORT_FORMAT_PARQUET)
    assert m1["from_watermark"] is None
    # The types a BI tool needs, with no hints.
    types = dict(con.execute(f"DESCRIBE SELECT * FROM {table(full, 'transactions', 'parquet')}").fetchall()[i][:2] for i in range(9))
    assert types["amount"] == "DECIMAL(28,9)"
    assert types["occur_time"] == "TIMESTAMP WITH TIME ZONE"
    assert types["product"] == "VARCHAR"
    assert check(server, con, [full], "parquet", customers) == 180

    csv_full = tmp_path / "full-csv"
    m1c = export(server, csv_full, epb.EXPORT_FORMAT_CSV)
    assert check(server, con, [csv_full], "csv", customers) == 180
    # Both formats say the same.
    p = con.execute(f"SELECT sum(length(content)), min(occur_time) FROM {table(full, 'communications', 'parquet')}").fetchone()
    c = con.execute(f"SELECT sum(length(content)), min(occur_time) FROM {table(csv_full, 'communications', 'csv')}").fetchone()
    assert p == c

    # A delete, a merge and new rows; then the next run, from the first one's watermark.
    comms = mgrpc.CommunicationServiceStub(server.channel)
    for i in comm_ids[:5]:
        comms.DeleteCommunication(mpb.DeleteCommunicationRequest(id=i), timeout=30)
    survivor, merged = customers[0], customers[1]
    stub.MergeCustomers(upb.MergeCustomersRequest(surviving_customer_id=survivor, merged_customer_ids=[merged]), timeout=30)
    live = [c for c in customers if c != merged]
    seed(server, live, 4, "second")
    time.sleep(SETTLE)

    inc = tmp_path / "incremental"
    m2 = export(server, inc, epb.EXPORT_FORMAT_PARQUET, since=m1["to_watermark"])
    assert m2["from_watermark"] == m1["to_watermark"]
    rows = {t["name"]: t["rows"] for t in m2["tables"]}
    assert rows["communications"] == 4 * len(live)
    assert rows["deleted_communications"] == 5
    assert rows["customer_merges"] == 1
    survivor_of = lambda c: survivor if c == merged else c
    assert check(server, con, [full, inc], "parquet", customers, survivor_of) == 180 - 5 + 4 * len(live)
    gone = con.execute(f"SELECT customer_id, kind, merged_into FROM {table(inc, 'deleted_customers', 'parquet')}").fetchall()
    assert gone == [(merged, "merged", survivor)]

    # The CSV chain from the CSV full run gives the same.
    inc_csv = tmp_path / "incremental-csv"
    export(server, inc_csv, epb.EXPORT_FORMAT_CSV, since=m1c["to_watermark"])
    assert check(server, con, [csv_full, inc_csv], "csv", customers, survivor_of) == 180 - 5 + 4 * len(live)


def test_bad_export_requests_name_the_field(server):
    stub = egrpc.ExportServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ExportData(epb.ExportDataRequest(format=epb.EXPORT_FORMAT_CSV, since_watermark="last tuesday"), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "since_watermark" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ExportData(epb.ExportDataRequest(), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "format" in e.value.details()
