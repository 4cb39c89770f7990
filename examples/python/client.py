#!/usr/bin/env python3
"""A tiny crm-comms client in Python (grpcio): what a client team's first program does.

It creates a customer, logs a phone call, imports four more communications over a
client stream (plus one repeated request_id, which the server counts as a duplicate),
streams the customer's timeline, stopping after 2 events and resuming on a new
connection from the second event's cursor, asks for a frequency report, watches it
while it logs one more note (a wallboard), exports the data for BI tools as CSV
(ExportService, streamed in chunks), and records a satisfaction survey about the call
and reads the day's satisfaction report. It prints
each step and exits non-zero on any error or on any answer that differs from what the
calls above imply. It touches only the customer it creates, so it runs against any
server (`--rate-limit 0` or a generous limit; no tokens: loopback).

    python client.py --addr 127.0.0.1:50051 [--stubs DIR]

Stubs: `buf generate` writes them to gen/python (examples/run.sh does that); --stubs
picks another directory. Without generated stubs they are compiled from proto/ at start
with grpc_tools.protoc, as tests/grpcio/conftest.py does. Needs grpcio, grpcio-tools and
protobuf (the versions pinned in tests/grpcio/requirements.txt).
"""

import argparse
import csv
import datetime as dt
import hashlib
import importlib.resources
import io
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0  # seconds, for every call


class Mismatch(Exception):
    """An answer differs from what the example expects."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Mismatch(what)


def have_stubs(stubs: Path) -> bool:
    return (stubs / "crm" / "v1" / "customer_pb2_grpc.py").exists()


def load_stubs(stubs: Path):
    """Imports the generated modules from `stubs`, compiling them there first if absent."""
    if not have_stubs(stubs):
        from grpc_tools import protoc

        well_known = str(importlib.resources.files("grpc_tools") / "_proto")
        protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto/crm/v1").glob("*.proto"))
        args = ["protoc", f"-I{REPO / 'proto'}", f"-I{well_known}", f"--python_out={stubs}",
                f"--grpc_python_out={stubs}", *protos]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {protos}")
    sys.path.insert(0, str(stubs))
    from crm.v1 import (analytics_pb2, analytics_pb2_grpc, common_pb2, communication_pb2,
                        communication_pb2_grpc, customer_pb2, customer_pb2_grpc)
    return (analytics_pb2, analytics_pb2_grpc, common_pb2, communication_pb2,
            communication_pb2_grpc, customer_pb2, customer_pb2_grpc)


def run(addr: str, stubs: Path) -> None:
    (analytics_pb2, analytics_pb2_grpc, common_pb2, communication_pb2,
     communication_pb2_grpc, customer_pb2, customer_pb2_grpc) = load_stubs(stubs)
    from google.protobuf import duration_pb2, timestamp_pb2

    def ts(t: dt.datetime) -> timestamp_pb2.Timestamp:
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(t)
        return out

    # Five contacts one hour apart on one UTC day two days ago: the report below can
    # then predict every count, and the times are safely in the past.
    day = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=2)
    at = [day + dt.timedelta(hours=9 + i) for i in range(5)]
    run_id = uuid.uuid4().hex[:12]  # request_ids unique to this run

    channel = grpc.insecure_channel(addr)
    customers = customer_pb2_grpc.CustomerServiceStub(channel)
    comms = communication_pb2_grpc.CommunicationServiceStub(channel)
    analytics = analytics_pb2_grpc.AnalyticsServiceStub(channel)

    # 1. A customer (request_id makes a retry safe: it returns this same customer).
    customer = customers.CreateCustomer(customer_pb2.CreateCustomerRequest(
        customer=customer_pb2.Customer(
            name="Ada Example", gender=customer_pb2.GENDER_FEMALE, birth_date="1990-12-10",
            phone="+86 138-0000-0000", email="Ada@Example.COM", tags=["example", "vip"]),
        request_id=f"py-customer-{run_id}"), timeout=TIMEOUT)
    check(customer.id > 0, f"customer id {customer.id}")
    check(customer.name == "Ada Example", f"name {customer.name!r}")
    check(customer.phone == "+8613800000000", f"phone not normalized: {customer.phone!r}")
    check(customer.email == "ada@example.com", f"email not lower-cased: {customer.email!r}")
    check(customer.HasField("age") and customer.age >= 30, f"age {customer.age}")
    print(f"created customer {customer.id}: {customer.name}, phone {customer.phone}, "
          f"email {customer.email}, age {customer.age}, tags {list(customer.tags)}")

    # 2. One phone call.
    call = comms.LogCommunication(communication_pb2.LogCommunicationRequest(
        communication=communication_pb2.Communication(
            customer_id=customer.id, channel=common_pb2.CHANNEL_PHONE,
            direction=common_pb2.DIRECTION_INBOUND, occur_time=ts(at[0]),
            content="Asked about the delivery date of order A-1001.", outcome="date confirmed",
            phone_call=communication_pb2.PhoneCall(
                phone_number="+8613800000000", duration=duration_pb2.Duration(seconds=185))),
        request_id=f"py-call-{run_id}"), timeout=TIMEOUT)
    check(call.id > 0 and call.customer_id == customer.id, f"logged {call}")
    check(call.channel == common_pb2.CHANNEL_PHONE and call.phone_call.duration.seconds == 185,
          f"logged call details {call.phone_call}")
    print(f"logged communication {call.id}: phone call, inbound, {call.phone_call.duration.seconds} s, "
          f"at {call.occur_time.ToDatetime(dt.timezone.utc):%Y-%m-%d %H:%M}Z")

    # 3. Bulk import over a client stream: four contacts, then the first one again
    #    (same request_id), which is counted as a duplicate instead of stored twice.
    Comm = communication_pb2.Communication
    imported = [
        ("import-1", Comm(channel=common_pb2.CHANNEL_EMAIL, direction=common_pb2.DIRECTION_OUTBOUND,
                          content="Sent the invoice for order A-1001.",
                          email=communication_pb2.Email(address="ada@example.com", subject="Invoice A-1001"))),
        ("import-2", Comm(channel=common_pb2.CHANNEL_CHAT, direction=common_pb2.DIRECTION_INBOUND,
                          content="Is the invoice VAT-inclusive?",
                          chat=communication_pb2.Chat(platform="wechat", conversation_id="wx-42"))),
        ("import-3", Comm(channel=common_pb2.CHANNEL_MEETING, direction=common_pb2.DIRECTION_OUTBOUND,
                          content="Video call: walked through the renewal options.", outcome="renewal likely")),
        ("import-4", Comm(channel=common_pb2.CHANNEL_NOTE, direction=common_pb2.DIRECTION_OUTBOUND,
                          content="Follow up on the renewal next week.")),
    ]
    for i, (_, comm) in enumerate(imported):
        comm.customer_id = customer.id
        comm.occur_time.CopyFrom(ts(at[i + 1]))

    def import_items():
        for key, comm in imported + imported[:1]:
            yield communication_pb2.ImportCommunicationsRequest(communication=comm, request_id=f"py-{key}-{run_id}")

    result = comms.ImportCommunications(import_items(), timeout=TIMEOUT)
    check((result.accepted_count, result.duplicate_count, result.rejected_count) == (4, 1, 0),
          f"import: accepted {result.accepted_count}, duplicates {result.duplicate_count}, "
          f"rejected {result.rejected_count} {list(result.rejected)} (expected 4, 1, 0)")
    print(f"imported {len(imported) + 1} items over a client stream: accepted {result.accepted_count}, "
          f"duplicates {result.duplicate_count}, rejected {result.rejected_count}")

    # 4. The timeline, oldest first: read 2 events, hang up, reconnect and resume after
    #    the second one's cursor. The two halves must be exactly the 5 contacts, in order.
    expected = [call.content] + [comm.content for _, comm in imported]
    request = communication_pb2.StreamTimelineRequest(customer_id=customer.id)
    stream = comms.StreamTimeline(request, timeout=TIMEOUT)
    first = []
    for event in stream:
        first.append(event)
        if len(first) == 2:
            break
    stream.cancel()
    check(len(first) == 2, f"the timeline ended after {len(first)} events")
    cursor = first[-1].cursor
    print(f"timeline: read {len(first)} events "
          f"({', '.join(common_pb2.Channel.Name(e.communication.channel) for e in first)}), "
          f"hung up; cursor {cursor[:16]}...")
    channel.close()

    channel = grpc.insecure_channel(addr)  # a new connection, as after a network failure
    comms = communication_pb2_grpc.CommunicationServiceStub(channel)
    analytics = analytics_pb2_grpc.AnalyticsServiceStub(channel)
    rest = list(comms.StreamTimeline(communication_pb2.StreamTimelineRequest(
        customer_id=customer.id, resume_cursor=cursor), timeout=TIMEOUT))
    events = first + rest
    check(all(e.WhichOneof("entry") == "communication" for e in events), "timeline holds only communications")
    got = [e.communication.content for e in events]
    check(got == expected, f"timeline contents {got}, expected {expected}")
    check(events[0].communication.id == call.id, "the phone call comes first")
    times = [e.occur_time.ToDatetime(dt.timezone.utc) for e in events]
    check(times == at, f"timeline times {times}, expected {at}")
    print(f"timeline: resumed on a new connection, {len(rest)} more events "
          f"({', '.join(common_pb2.Channel.Name(e.communication.channel) for e in rest)}); "
          f"{len(events)} in all, in order, none twice")

    # 5. How often and how was the customer contacted on that day?
    query = analytics_pb2.GetFrequencyReportRequest(
        customer_ids=[customer.id], start_time=ts(day), end_time=ts(day + dt.timedelta(days=1)),
        granularity=analytics_pb2.GRANULARITY_DAY, time_zone="UTC", top_n=1)
    report = analytics.GetFrequencyReport(query, timeout=TIMEOUT)
    per_channel = {common_pb2.Channel.Name(c.channel): c.count for c in report.channel_counts}
    check(report.total_count == 5 and report.customer_count == 1 and report.span_days == 1,
          f"report totals: {report.total_count} contacts, {report.customer_count} customers, "
          f"{report.span_days} days (expected 5, 1, 1)")
    check(per_channel == {n: 1 for n in ("CHANNEL_PHONE", "CHANNEL_EMAIL", "CHANNEL_CHAT",
                                         "CHANNEL_MEETING", "CHANNEL_NOTE")},
          f"per-channel counts {per_channel}")
    check([b.count for b in report.buckets] == [5], f"buckets {[b.count for b in report.buckets]}")
    check(report.mean_gap.seconds == 3600 and report.median_gap.seconds == 3600,
          f"gaps: mean {report.mean_gap.seconds} s, median {report.median_gap.seconds} s (expected 3600)")
    check([(c.customer_id, c.count) for c in report.top_customers] == [(customer.id, 5)],
          f"top customers {list(report.top_customers)}")
    print(f"frequency report for {day:%Y-%m-%d} (UTC): {report.total_count} contacts, "
          f"{report.per_day_average:g} per day, per channel {per_channel}, "
          f"mean gap {report.mean_gap.seconds // 60} min, median gap {report.median_gap.seconds // 60} min")

    # 6. A wallboard: watch the same report, log one more contact, and apply what the
    #    watch sends (the buckets that changed, every other figure whole).
    watch = analytics.WatchFrequencyReport(analytics_pb2.WatchFrequencyReportRequest(query=query),
                                           timeout=TIMEOUT)
    board = analytics_pb2.GetFrequencyReportResponse()
    board.CopyFrom(next(watch).report)
    check(board == report, "the watch starts with the whole report")
    comms.LogCommunication(communication_pb2.LogCommunicationRequest(
        communication=communication_pb2.Communication(
            customer_id=customer.id, channel=common_pb2.CHANNEL_NOTE,
            direction=common_pb2.DIRECTION_OUTBOUND, occur_time=ts(at[0] + dt.timedelta(minutes=10)),
            content="Wallboard check: one more note."),
        request_id=f"py-note-{run_id}"), timeout=TIMEOUT)
    want = analytics.GetFrequencyReport(query, timeout=TIMEOUT)
    updates = 0
    while board != want:
        update = next(watch).update
        buckets = list(board.buckets)
        for changed in update.buckets:
            buckets[changed.index] = changed.bucket
        board.CopyFrom(update.summary)
        board.buckets.extend(buckets)
        updates += 1
    watch.cancel()
    check(board.total_count == 6, f"the board shows {board.total_count} contacts (expected 6)")
    print(f"wallboard: watched the report, logged a note; {updates} update(s) later it shows "
          f"{board.total_count} contacts, as GetFrequencyReport does")

    # 7. Export for BI tools, with every contact of this customer in it (admin role; a
    #    server without tokens treats callers as admin on loopback): the CSV files
    #    stream in chunks, manifest.json last. Rows show up once settled (2 s after
    #    they were recorded).
    from crm.v1 import export_pb2, export_pb2_grpc
    time.sleep(2.5)
    exporter = export_pb2_grpc.ExportServiceStub(channel)
    files: dict[str, bytearray] = {}
    for chunk in exporter.ExportData(export_pb2.ExportDataRequest(
            format=export_pb2.EXPORT_FORMAT_CSV), timeout=TIMEOUT):
        files.setdefault(chunk.path, bytearray()).extend(chunk.data)
    manifest = json.loads(files["manifest.json"])
    for f in manifest["files"]:
        check(hashlib.sha256(files[f["path"]]).hexdigest() == f["sha256"], f"sha256 of {f['path']}")
    ours = [row for f in manifest["files"] if f["table"] == "communications"
            for row in csv.DictReader(io.StringIO(files[f["path"]].decode("utf-8"), newline=""))
            if row["customer_id"] == str(customer.id)]
    logged = analytics.GetFrequencyReport(analytics_pb2.GetFrequencyReportRequest(
        customer_ids=[customer.id], start_time=ts(day), end_time=ts(day + dt.timedelta(days=1))),
        timeout=TIMEOUT).total_count
    check(len(ours) == logged, f"{len(ours)} exported communications of the customer "
          f"(the frequency report counts {logged})")
    print(f"exported {sum(t['rows'] for t in manifest['tables'])} rows in {len(manifest['files'])} CSV "
          f"files up to {manifest['to_watermark']}; the customer's contacts by channel: "
          f"{sorted(r['channel'] for r in ours)}")

    # 8. A satisfaction survey about the phone call, answered 5, and the day's CSAT.
    from crm.v1 import satisfaction_pb2
    survey = comms.RecordSatisfaction(satisfaction_pb2.RecordSatisfactionRequest(
        survey=satisfaction_pb2.SatisfactionSurvey(
            communication_id=call.id, sent_time=ts(at[0] + dt.timedelta(hours=1)), score=5,
            comment="Clear answer, thanks.", answer_time=ts(at[0] + dt.timedelta(hours=2))),
        request_id=f"py-csat-{run_id}"), timeout=TIMEOUT)
    check(survey.customer_id == customer.id and survey.channel == common_pb2.CHANNEL_PHONE,
          f"survey {survey}")
    csat = analytics.GetSatisfactionReport(analytics_pb2.GetSatisfactionReportRequest(
        customer_ids=[customer.id], start_time=ts(day), end_time=ts(day + dt.timedelta(days=1))),
        timeout=TIMEOUT).total.overall
    check((csat.sent_count, csat.answered_count, csat.average_score, csat.csat_percent) == (1, 1, 5.0, 100.0),
          f"satisfaction report {csat}")
    print(f"satisfaction: survey {survey.id} about call {call.id} scored {survey.score}; the day's "
          f"CSAT {csat.csat_percent:g}% over {csat.answered_count} answer(s)")

    # 9. Sentiment: a complaint in Chinese is scored negative when recorded, and the day's
    #    frequency report splits its contacts by sentiment.
    complaint = comms.LogCommunication(communication_pb2.LogCommunicationRequest(
        communication=communication_pb2.Communication(
            customer_id=customer.id, channel=common_pb2.CHANNEL_CHAT,
            direction=common_pb2.DIRECTION_INBOUND, occur_time=ts(at[0] + dt.timedelta(hours=3)),
            content="快递太慢了，非常失望", chat=communication_pb2.Chat(platform="wechat")),
        request_id=f"py-complaint-{run_id}"), timeout=TIMEOUT)
    check(complaint.sentiment == common_pb2.SENTIMENT_NEGATIVE and complaint.sentiment_score < -50,
          f"complaint scored {complaint.sentiment_score}")
    split = analytics.GetFrequencyReport(analytics_pb2.GetFrequencyReportRequest(
        customer_ids=[customer.id], start_time=ts(day), end_time=ts(day + dt.timedelta(days=1)),
        granularity=analytics_pb2.GRANULARITY_DAY, include_sentiment=True), timeout=TIMEOUT).sentiment
    check(split.negative_count >= 1
          and split.negative_count + split.neutral_count + split.positive_count >= 2,
          f"sentiment split {split}")
    print(f"sentiment: complaint {complaint.id} scored {complaint.sentiment_score}; the day's contacts: "
          f"{split.negative_count} negative, {split.neutral_count} neutral, {split.positive_count} positive")
    channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="host:port of a crm-comms server")
    parser.add_argument("--stubs", type=Path, default=REPO / "gen" / "python",
                        help="directory of the generated Python modules (default: gen/python)")
    args = parser.parse_args()
    temp = None
    stubs = args.stubs
    if not have_stubs(stubs):
        temp = tempfile.mkdtemp(prefix="crm-example-stubs-")
        stubs = Path(temp)
        print(f"no generated stubs in {args.stubs}: compiling proto/ with grpc_tools.protoc")
    try:
        run(args.addr, stubs)
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print(f"RPC FAILED: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    print("python example: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
