// A tiny crm-comms client in TypeScript: Connect-ES v2 speaking the gRPC protocol over
// HTTP/2 (@connectrpc/connect-node), with the code protoc-gen-es v2 generates
// (@bufbuild/protobuf v2). The same steps as examples/python/client.py: create a
// customer, log a phone call, import four more communications over a client stream
// (plus one repeated request_id, counted as a duplicate), stream the timeline, hanging
// up after 2 events and resuming on a new connection from the second event's cursor,
// get a frequency report, then watch it while logging one more note. Prints each step;
// exits non-zero on any error or on any answer that differs from what the calls imply.
// It touches only the customer it creates.
//
//   npx tsx src/client.ts [http://127.0.0.1:50051]
//
// The generated code is read from src/gen: `buf generate` writes it to gen/ts at the
// repository root and examples/run.sh copies it here (Node resolves @bufbuild/protobuf
// from the importing file's directory, so it has to sit inside this package).

import { randomUUID } from "node:crypto";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { equals, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { AnalyticsService, GetFrequencyReportResponseSchema, Granularity } from "./gen/crm/v1/analytics_pb.js";
import { Channel, Direction, Sentiment } from "./gen/crm/v1/common_pb.js";
import {
  CommunicationService,
  type ImportCommunicationsRequestSchema,
  type TimelineEvent,
} from "./gen/crm/v1/communication_pb.js";
import { CustomerService, Gender } from "./gen/crm/v1/customer_pb.js";

const baseUrl = process.argv[2] ?? "http://127.0.0.1:50051";
const timeoutMs = 10_000; // for every call

class Mismatch extends Error {}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Mismatch(what);
}

/** One HTTP/2 connection and the three clients on it. */
function connect(): {
  session: Http2SessionManager;
  customers: Client<typeof CustomerService>;
  comms: Client<typeof CommunicationService>;
  analytics: Client<typeof AnalyticsService>;
} {
  // createGrpcTransport always speaks HTTP/2 (Connect-ES v2 has no httpVersion option
  // for it); an explicit session manager lets us close the connection ourselves.
  const session = new Http2SessionManager(baseUrl);
  const transport = createGrpcTransport({ baseUrl, sessionManager: session, defaultTimeoutMs: timeoutMs });
  return {
    session,
    customers: createClient(CustomerService, transport),
    comms: createClient(CommunicationService, transport),
    analytics: createClient(AnalyticsService, transport),
  };
}

const channelName = (c: Channel) => `CHANNEL_${Channel[c]}`;
const hhmm = (d: Date) => d.toISOString().slice(0, 16).replace("T", " ") + "Z";

async function run(): Promise<void> {
  // Five contacts one hour apart on one UTC day two days ago.
  const day = new Date();
  day.setUTCHours(0, 0, 0, 0);
  day.setUTCDate(day.getUTCDate() - 2);
  const at = [0, 1, 2, 3, 4].map((i) => new Date(day.getTime() + (9 + i) * 3_600_000));
  const runId = randomUUID().slice(0, 12); // request_ids unique to this run

  let conn = connect();

  // 1. A customer (request_id makes a retry safe: it returns this same customer).
  const customer = await conn.customers.createCustomer({
    customer: {
      name: "Ada Example",
      gender: Gender.FEMALE,
      birthDate: "1990-12-10",
      phone: "+86 138-0000-0000",
      email: "Ada@Example.COM",
      tags: ["example", "vip"],
    },
    requestId: `ts-customer-${runId}`,
  });
  check(customer.id > 0n, `customer id ${customer.id}`);
  check(customer.name === "Ada Example", `name ${customer.name}`);
  check(customer.phone === "+8613800000000", `phone not normalized: ${customer.phone}`);
  check(customer.email === "ada@example.com", `email not lower-cased: ${customer.email}`);
  check(customer.age !== undefined && customer.age >= 30, `age ${customer.age}`);
  console.log(
    `created customer ${customer.id}: ${customer.name}, phone ${customer.phone}, ` +
      `email ${customer.email}, age ${customer.age}, tags ${JSON.stringify(customer.tags)}`,
  );

  // 2. One phone call.
  const call = await conn.comms.logCommunication({
    communication: {
      customerId: customer.id,
      channel: Channel.PHONE,
      direction: Direction.INBOUND,
      occurTime: timestampFromDate(at[0]),
      content: "Asked about the delivery date of order A-1001.",
      outcome: "date confirmed",
      details: { case: "phoneCall", value: { phoneNumber: "+8613800000000", duration: { seconds: 185n } } },
    },
    requestId: `ts-call-${runId}`,
  });
  check(call.id > 0n && call.customerId === customer.id, `logged ${call.id} for ${call.customerId}`);
  check(
    call.details.case === "phoneCall" && call.details.value.duration?.seconds === 185n,
    `logged call details ${JSON.stringify(call.details.case)}`,
  );
  console.log(
    `logged communication ${call.id}: phone call, inbound, ${call.details.value.duration?.seconds} s, ` +
      `at ${hhmm(timestampDate(call.occurTime!))}`,
  );

  // 3. Bulk import over a client stream: four contacts, then the first one again
  //    (same request_id), which is counted as a duplicate instead of stored twice.
  type Item = MessageInitShape<typeof ImportCommunicationsRequestSchema>;
  const imported: Item[] = [
    {
      requestId: `ts-import-1-${runId}`,
      communication: {
        channel: Channel.EMAIL,
        direction: Direction.OUTBOUND,
        content: "Sent the invoice for order A-1001.",
        details: { case: "email", value: { address: "ada@example.com", subject: "Invoice A-1001" } },
      },
    },
    {
      requestId: `ts-import-2-${runId}`,
      communication: {
        channel: Channel.CHAT,
        direction: Direction.INBOUND,
        content: "Is the invoice VAT-inclusive?",
        details: { case: "chat", value: { platform: "wechat", conversationId: "wx-42" } },
      },
    },
    {
      requestId: `ts-import-3-${runId}`,
      communication: {
        channel: Channel.MEETING,
        direction: Direction.OUTBOUND,
        content: "Video call: walked through the renewal options.",
        outcome: "renewal likely",
      },
    },
    {
      requestId: `ts-import-4-${runId}`,
      communication: {
        channel: Channel.NOTE,
        direction: Direction.OUTBOUND,
        content: "Follow up on the renewal next week.",
      },
    },
  ];
  imported.forEach((item, i) => {
    item.communication = { ...item.communication, customerId: customer.id, occurTime: timestampFromDate(at[i + 1]) };
  });
  async function* items(): AsyncGenerator<Item> {
    yield* [...imported, imported[0]];
  }
  const result = await conn.comms.importCommunications(items());
  check(
    result.acceptedCount === 4n && result.duplicateCount === 1n && result.rejectedCount === 0n,
    `import: accepted ${result.acceptedCount}, duplicates ${result.duplicateCount}, ` +
      `rejected ${result.rejectedCount} ${JSON.stringify(result.rejected.map((r) => r.reason))} (expected 4, 1, 0)`,
  );
  console.log(
    `imported ${imported.length + 1} items over a client stream: accepted ${result.acceptedCount}, ` +
      `duplicates ${result.duplicateCount}, rejected ${result.rejectedCount}`,
  );

  // 4. The timeline, oldest first: read 2 events, hang up, reconnect and resume after
  //    the second event's cursor. The two halves must be exactly the 5 contacts, in order.
  //    Leaving a `for await` does not end a Connect-ES call: aborting its signal does
  //    (it resets the HTTP/2 stream; a `follow` stream would otherwise stay open). And a
  //    Connect deadline (timeoutMs) on a stream left early keeps its timer, and with it
  //    the process, alive until it expires (connect 2.1.2): this call is bounded by an
  //    AbortSignal.timeout instead, which does neither.
  const expected = [call.content, ...imported.map((i) => (i.communication as { content: string }).content)];
  const first: TimelineEvent[] = [];
  const hangUp = new AbortController();
  const signal = AbortSignal.any([hangUp.signal, AbortSignal.timeout(timeoutMs)]);
  for await (const event of conn.comms.streamTimeline({ customerId: customer.id }, { signal, timeoutMs: 0 })) {
    first.push(event);
    if (first.length === 2) break;
  }
  hangUp.abort();
  check(first.length === 2, `the timeline ended after ${first.length} events`);
  conn.session.abort(); // drop the connection too, as a network failure would
  const cursor = first[1].cursor;
  const names = (events: TimelineEvent[]) =>
    events.map((e) => (e.entry.case === "communication" ? channelName(e.entry.value.channel) : e.entry.case)).join(", ");
  console.log(`timeline: read ${first.length} events (${names(first)}), hung up; cursor ${cursor.slice(0, 16)}...`);

  conn = connect(); // a new connection, as after a network failure
  const rest: TimelineEvent[] = [];
  for await (const event of conn.comms.streamTimeline({ customerId: customer.id, resumeCursor: cursor })) {
    rest.push(event);
  }
  const events = [...first, ...rest];
  const contents = events.map((e) => (e.entry.case === "communication" ? e.entry.value.content : `<${e.entry.case}>`));
  check(JSON.stringify(contents) === JSON.stringify(expected), `timeline contents ${JSON.stringify(contents)}`);
  check(events[0].entry.case === "communication" && events[0].entry.value.id === call.id, "the phone call comes first");
  const times = events.map((e) => timestampDate(e.occurTime!).getTime());
  check(
    JSON.stringify(times) === JSON.stringify(at.map((d) => d.getTime())),
    `timeline times ${times.map((t) => new Date(t).toISOString())}`,
  );
  console.log(
    `timeline: resumed on a new connection, ${rest.length} more events (${names(rest)}); ` +
      `${events.length} in all, in order, none twice`,
  );

  // 5. How often and how was the customer contacted on that day?
  const query = {
    customerIds: [customer.id],
    startTime: timestampFromDate(day),
    endTime: timestampFromDate(new Date(day.getTime() + 86_400_000)),
    granularity: Granularity.DAY,
    timeZone: "UTC",
    topN: 1,
  };
  const report = await conn.analytics.getFrequencyReport(query);
  const perChannel = Object.fromEntries(report.channelCounts.map((c) => [channelName(c.channel), Number(c.count)]));
  check(
    report.totalCount === 5n && report.customerCount === 1n && report.spanDays === 1,
    `report totals: ${report.totalCount} contacts, ${report.customerCount} customers, ${report.spanDays} days (expected 5, 1, 1)`,
  );
  check(
    JSON.stringify(perChannel) ===
      JSON.stringify({ CHANNEL_PHONE: 1, CHANNEL_EMAIL: 1, CHANNEL_CHAT: 1, CHANNEL_MEETING: 1, CHANNEL_NOTE: 1 }),
    `per-channel counts ${JSON.stringify(perChannel)}`,
  );
  check(
    JSON.stringify(report.buckets.map((b) => Number(b.count))) === "[5]",
    `buckets ${report.buckets.map((b) => b.count)}`,
  );
  check(
    report.meanGap?.seconds === 3600n && report.medianGap?.seconds === 3600n,
    `gaps: mean ${report.meanGap?.seconds} s, median ${report.medianGap?.seconds} s (expected 3600)`,
  );
  check(
    report.topCustomers.length === 1 &&
      report.topCustomers[0].customerId === customer.id &&
      report.topCustomers[0].count === 5n,
    `top customers ${report.topCustomers.map((c) => `${c.customerId}:${c.count}`)}`,
  );
  console.log(
    `frequency report for ${day.toISOString().slice(0, 10)} (UTC): ${report.totalCount} contacts, ` +
      `${report.perDayAverage} per day, per channel ${JSON.stringify(perChannel)}, ` +
      `mean gap ${Number(report.meanGap!.seconds) / 60} min, median gap ${Number(report.medianGap!.seconds) / 60} min`,
  );

  // 6. A wallboard: watch the same report, log one more note, and apply what the watch
  //    sends (the buckets that changed, every other figure whole). Aborting the signal
  //    ends the watch, as for the timeline above.
  const stop = new AbortController();
  const watchSignal = AbortSignal.any([stop.signal, AbortSignal.timeout(timeoutMs)]);
  const watch = conn.analytics
    .watchFrequencyReport({ query }, { signal: watchSignal, timeoutMs: 0 })
    [Symbol.asyncIterator]();
  const opening = await watch.next();
  check(!opening.done && opening.value.change.case === "report", "the watch starts with the whole report");
  let board = opening.value.change.value;
  check(equals(GetFrequencyReportResponseSchema, board, report), "the watched report equals the unary one");
  await conn.comms.logCommunication({
    communication: {
      customerId: customer.id,
      channel: Channel.NOTE,
      direction: Direction.OUTBOUND,
      occurTime: timestampFromDate(new Date(at[0].getTime() + 600_000)),
      content: "Wallboard check: one more note.",
    },
    requestId: `ts-note-${runId}`,
  });
  const want = await conn.analytics.getFrequencyReport(query);
  let updates = 0;
  while (!equals(GetFrequencyReportResponseSchema, board, want)) {
    const next = await watch.next();
    check(!next.done && next.value.change.case === "update", "the watch sends updates");
    const update = next.value.change.value;
    const buckets = [...board.buckets];
    for (const changed of update.buckets) buckets[changed.index] = changed.bucket!;
    board = update.summary!;
    board.buckets = buckets;
    updates++;
  }
  stop.abort();
  check(board.totalCount === 6n, `the board shows ${board.totalCount} contacts (expected 6)`);
  console.log(
    `wallboard: watched the report, logged a note; ${updates} update(s) later it shows ` +
      `${board.totalCount} contacts, as GetFrequencyReport does`,
  );

  // 7. Sentiment: a complaint in Chinese is scored negative when recorded, and the day's
  //    report split by sentiment counts it.
  const complaint = await conn.comms.logCommunication({
    communication: {
      customerId: customer.id,
      channel: Channel.CHAT,
      direction: Direction.INBOUND,
      occurTime: timestampFromDate(new Date(at[0].getTime() + 3 * 3_600_000)),
      content: "快递太慢了，非常失望",
      details: { case: "chat", value: { platform: "wechat" } },
    },
    requestId: `ts-complaint-${runId}`,
  });
  check(
    complaint.sentiment === Sentiment.NEGATIVE && (complaint.sentimentScore ?? 0) < -50,
    `complaint scored ${complaint.sentimentScore}`,
  );
  const split = (await conn.analytics.getFrequencyReport({ ...query, includeSentiment: true })).sentiment!;
  check(split.negativeCount >= 1n, `sentiment split ${split.negativeCount} negative`);
  console.log(
    `sentiment: complaint ${complaint.id} scored ${complaint.sentimentScore}; the day's contacts: ` +
      `${split.negativeCount} negative, ${split.neutralCount} neutral, ${split.positiveCount} positive`,
  );

  // 8. A satisfaction survey about the phone call, answered 5, and the day's CSAT.
  const survey = await conn.comms.recordSatisfaction({
    survey: {
      target: { case: "communicationId", value: call.id },
      sentTime: timestampFromDate(new Date(at[0].getTime() + 3_600_000)),
      score: 5,
      comment: "Clear answer, thanks.",
      answerTime: timestampFromDate(new Date(at[0].getTime() + 7_200_000)),
    },
    requestId: `ts-csat-${runId}`,
  });
  check(survey.customerId === customer.id && survey.channel === Channel.PHONE, `survey ${survey.id}`);
  const csat = (
    await conn.analytics.getSatisfactionReport({
      customerIds: [customer.id],
      startTime: query.startTime,
      endTime: query.endTime,
    })
  ).total!.overall!;
  check(
    csat.sentCount === 1n && csat.answeredCount === 1n && csat.averageScore === 5 && csat.csatPercent === 100,
    `satisfaction report: ${csat.sentCount} sent, ${csat.answeredCount} answered, CSAT ${csat.csatPercent}%`,
  );
  console.log(
    `satisfaction: survey ${survey.id} about call ${call.id} scored ${survey.score}; the day's ` +
      `CSAT ${csat.csatPercent}% over ${csat.answeredCount} answer(s)`,
  );
  conn.session.abort();
}

try {
  await run();
  console.log("typescript example: OK");
} catch (e) {
  if (e instanceof Mismatch) {
    console.error(`MISMATCH: ${e.message}`);
  } else if (e instanceof ConnectError) {
    console.error(`RPC FAILED: ${Code[e.code]}: ${e.rawMessage}`);
  } else {
    console.error(e);
  }
  process.exitCode = 1;
}
