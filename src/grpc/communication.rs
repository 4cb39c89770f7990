//! `crm.v1.CommunicationService`: recording communications and streaming timelines.

use std::{pin::Pin, sync::Arc};

use chrono::NaiveDateTime;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::customer::{decode_position, occur_time, page_token};
use super::{positive_id, read_page, AppState};
use crate::convert::{duration_from_micros, duration_to_micros, now, to_timestamp};
use crate::db::communications::{
    self, BatchOutcome, CommunicationFilter, CommunicationInsertForm, CommunicationRow,
};
use crate::db::timeline::{Source, TimelineFilter};
use crate::db::{customers, Db};
use crate::error::{Error, Violations};
use crate::paging;
use crate::pb::{self, communication::Details, communication_service_server::CommunicationService};
use crate::timeline::TimelineRequest;
use crate::validate;

/// Largest `content`, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Items per import batch (one multi-row INSERT, one transaction).
const IMPORT_BATCH_ROWS: usize = 1000;
/// Content bytes per import batch, so memory stays bounded with large messages.
const IMPORT_BATCH_BYTES: usize = 4 << 20;
/// Batches queued for an import's writer before its reader waits. The request stream
/// must keep being read while a batch is written: grpc-core clients send one small
/// DATA frame per message, and h2 ends the whole connection (GOAWAY
/// ENHANCE_YOUR_CALM) when too many small frames sit unread.
const IMPORT_QUEUE_BATCHES: usize = 256;
/// Memory an import's queued batches may take, in KiB (counted as content bytes plus
/// [`ITEM_OVERHEAD_BYTES`] per item); the reader waits for the writer past it.
const IMPORT_QUEUE_KIB: u32 = 32 * 1024;
/// What one queued item costs besides its content, for the queue's memory bound.
const ITEM_OVERHEAD_BYTES: usize = 512;
/// Rejections listed in an import response; the rest are only counted.
const MAX_LISTED_REJECTIONS: usize = 1000;

/// Implementation of `crm.v1.CommunicationService`.
#[derive(Debug, Clone)]
pub struct CommunicationApi {
    state: AppState,
}

impl CommunicationApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The stream type of `StreamTimeline`.
pub type TimelineStream = Pin<Box<dyn Stream<Item = Result<pb::TimelineEvent, Status>> + Send>>;

/// The proto form of a stored communication.
pub fn communication_to_pb(r: CommunicationRow) -> pb::Communication {
    let details = if let Some(phone_number) = r.phone_number {
        Some(Details::PhoneCall(pb::PhoneCall {
            phone_number,
            duration: r.call_duration_us.map(duration_from_micros),
        }))
    } else if let Some(address) = r.email_address {
        Some(Details::Email(pb::Email {
            address,
            subject: r.email_subject.unwrap_or_default(),
        }))
    } else {
        r.chat_platform.map(|platform| {
            Details::Chat(pb::Chat {
                platform,
                conversation_id: r.chat_conversation_id.unwrap_or_default(),
            })
        })
    };
    pb::Communication {
        id: r.id,
        customer_id: r.customer_id,
        channel: r.channel,
        direction: r.direction,
        occur_time: Some(to_timestamp(r.occur_time)),
        content: r.content,
        outcome: r.outcome,
        details,
        create_time: Some(to_timestamp(r.create_time)),
    }
}

/// Validates a communication to record; every bad field is reported.
pub fn communication_form(
    communication: Option<pb::Communication>,
    request_id: &str,
    now: NaiveDateTime,
) -> Result<CommunicationInsertForm, Error> {
    let mut v = Violations::new();
    let request_id = validate::request_id(&mut v, "request_id", request_id);
    let Some(c) = communication else {
        v.add("communication", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    let customer_id = positive_id(&mut v, "communication.customer_id", c.customer_id);
    validate::known_enum::<pb::Channel>(&mut v, "communication.channel", c.channel, true);
    validate::known_enum::<pb::Direction>(&mut v, "communication.direction", c.direction, true);
    let occur_time = occur_time(
        &mut v,
        "communication.occur_time",
        c.occur_time.as_ref(),
        now,
    );
    if c.content.len() > MAX_CONTENT_BYTES {
        v.add(
            "communication.content",
            format!(
                "must be at most {MAX_CONTENT_BYTES} bytes of UTF-8 (got {})",
                c.content.len()
            ),
        );
    }
    let outcome = validate::optional_text(&mut v, "communication.outcome", &c.outcome, 200);
    let mut form = CommunicationInsertForm {
        customer_id,
        channel: c.channel,
        direction: c.direction,
        occur_time,
        content: c.content,
        outcome,
        phone_number: None,
        call_duration_us: None,
        email_address: None,
        email_subject: None,
        chat_platform: None,
        chat_conversation_id: None,
        create_time: now,
        request_id,
    };
    let channel = pb::Channel::try_from(c.channel).ok();
    match c.details {
        None => {}
        Some(Details::PhoneCall(p)) => {
            let field = "communication.phone_call";
            if channel != Some(pb::Channel::Phone) {
                v.add(field, "is only allowed with CHANNEL_PHONE");
            }
            form.phone_number = Some(validate::phone(
                &mut v,
                &format!("{field}.phone_number"),
                &p.phone_number,
            ));
            if let Some(d) = p.duration {
                match duration_to_micros(&d) {
                    Ok(us) if (0..=86_400_000_000).contains(&us) => {
                        form.call_duration_us = Some(us)
                    }
                    Ok(_) => v.add(
                        format!("{field}.duration"),
                        "must be between 0 and 24 hours",
                    ),
                    Err(why) => v.add(format!("{field}.duration"), why),
                }
            }
        }
        Some(Details::Email(e)) => {
            let field = "communication.email";
            if channel != Some(pb::Channel::Email) {
                v.add(field, "is only allowed with CHANNEL_EMAIL");
            }
            form.email_address = Some(validate::email(
                &mut v,
                &format!("{field}.address"),
                &e.address,
                true,
            ));
            form.email_subject = Some(validate::optional_text(
                &mut v,
                &format!("{field}.subject"),
                &e.subject,
                500,
            ));
        }
        Some(Details::Chat(ch)) => {
            let field = "communication.chat";
            if channel != Some(pb::Channel::Chat) {
                v.add(field, "is only allowed with CHANNEL_CHAT");
            }
            form.chat_platform = Some(validate::required_text(
                &mut v,
                &format!("{field}.platform"),
                &ch.platform,
                50,
            ));
            form.chat_conversation_id = Some(validate::optional_text(
                &mut v,
                &format!("{field}.conversation_id"),
                &ch.conversation_id,
                200,
            ));
        }
    }
    v.finish(form)
}

/// One batch of an import on its way to the writer: the forms and, for each, its
/// stream index and request id.
struct ImportBatch {
    forms: Vec<CommunicationInsertForm>,
    meta: Vec<(i64, String)>,
    bytes: usize,
    /// The batch's share of the queue's memory, given back once it is written.
    _memory: Option<OwnedSemaphorePermit>,
}

impl ImportBatch {
    fn new() -> Self {
        Self {
            forms: Vec::with_capacity(IMPORT_BATCH_ROWS),
            meta: Vec::with_capacity(IMPORT_BATCH_ROWS),
            bytes: 0,
            _memory: None,
        }
    }

    fn push(&mut self, form: CommunicationInsertForm, index: i64, request_id: String) {
        self.bytes += form.content.len() + ITEM_OVERHEAD_BYTES;
        self.forms.push(form);
        self.meta.push((index, request_id));
    }

    fn is_full(&self) -> bool {
        self.forms.len() >= IMPORT_BATCH_ROWS || self.bytes >= IMPORT_BATCH_BYTES
    }

    /// Waits until the queue has room for this batch's memory, then holds it.
    async fn reserve(mut self, memory: &Arc<Semaphore>) -> Self {
        let kib = u32::try_from(self.bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(IMPORT_QUEUE_KIB);
        self._memory = memory.clone().acquire_many_owned(kib).await.ok();
        self
    }
}

/// Outcome counts of an import.
#[derive(Default)]
struct ImportTally {
    response: pb::ImportCommunicationsResponse,
}

impl ImportTally {
    fn reject(&mut self, index: i64, request_id: String, reason: String) {
        self.response.rejected_count += 1;
        if self.response.rejected.len() < MAX_LISTED_REJECTIONS {
            self.response.rejected.push(pb::ImportRejection {
                index,
                request_id,
                reason,
            });
        }
    }

    /// Adds the writer's counts to the reader's.
    fn merge(&mut self, other: ImportTally) {
        let (mine, theirs) = (&mut self.response, other.response);
        mine.accepted_count += theirs.accepted_count;
        mine.duplicate_count += theirs.duplicate_count;
        mine.rejected_count += theirs.rejected_count;
        let room = MAX_LISTED_REJECTIONS.saturating_sub(mine.rejected.len());
        mine.rejected.extend(theirs.rejected.into_iter().take(room));
    }
}

/// The writer of an import: stores each batch in one transaction, in stream order,
/// until the reader closes the queue. Runs on its own task, so the request stream is
/// read while a batch is written. Returns at the first database error; the batches
/// committed before it stay committed.
async fn write_batches(
    db: Db,
    mut queue: mpsc::Receiver<ImportBatch>,
) -> Result<ImportTally, Error> {
    let mut tally = ImportTally::default();
    while let Some(batch) = queue.recv().await {
        let ImportBatch {
            mut forms, meta, ..
        } = batch;
        // Stamp the record time at write time: follow streams find new rows by it.
        let stamp = now();
        for form in &mut forms {
            form.create_time = stamp;
        }
        let outcomes = match communications::insert_batch(&db, forms.clone()).await {
            Ok(o) => o,
            // A concurrent writer used one of the keys between our check and insert:
            // fall back to one row at a time, which resolves each key exactly.
            Err(e) if e.is_unique_violation() => {
                let mut out = Vec::with_capacity(forms.len());
                for form in forms {
                    out.push(match communications::insert_batch(&db, vec![form]).await {
                        Ok(o) => o.first().copied().unwrap_or(BatchOutcome::Duplicate),
                        Err(e) if e.is_unique_violation() => BatchOutcome::Duplicate,
                        Err(e) => return Err(e),
                    });
                }
                out
            }
            Err(e) => return Err(e),
        };
        for (outcome, (index, request_id)) in outcomes.into_iter().zip(meta) {
            match outcome {
                BatchOutcome::Stored => tally.response.accepted_count += 1,
                BatchOutcome::Duplicate => tally.response.duplicate_count += 1,
                BatchOutcome::UnknownCustomer => tally.reject(
                    index,
                    request_id,
                    "communication.customer_id: customer not found".to_owned(),
                ),
            }
        }
    }
    Ok(tally)
}

/// Whether a request-stream error is a message that did not decode (the client's
/// fault) rather than a transport failure. tonic reports both as a `Status`; prost's
/// decode errors are INTERNAL with this prefix.
fn is_decode_error(status: &Status) -> bool {
    status.code() == tonic::Code::Internal
        && status
            .message()
            .starts_with("failed to decode Protobuf message")
}

fn reason(err: Error) -> String {
    match err {
        Error::InvalidArgument(vs) => vs
            .iter()
            .map(|v| format!("{}: {}", v.field, v.description))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

#[tonic::async_trait]
impl CommunicationService for CommunicationApi {
    async fn log_communication(
        &self,
        request: Request<pb::LogCommunicationRequest>,
    ) -> Result<Response<pb::Communication>, Status> {
        let req = request.into_inner();
        let form = communication_form(req.communication, &req.request_id, now())?;
        let row = communications::insert(&self.state.db, &form).await?;
        Ok(Response::new(communication_to_pb(row)))
    }

    async fn import_communications(
        &self,
        request: Request<Streaming<pb::ImportCommunicationsRequest>>,
    ) -> Result<Response<pb::ImportCommunicationsResponse>, Status> {
        let mut stream = request.into_inner();
        let (queue, batches) = mpsc::channel(IMPORT_QUEUE_BATCHES);
        let memory = Arc::new(Semaphore::new(IMPORT_QUEUE_KIB as usize));
        let writer = tokio::spawn(write_batches(self.state.db.clone(), batches));
        let mut tally = ImportTally::default();
        let mut batch = ImportBatch::new();
        let mut index: i64 = 0;
        let mut malformed = None;
        loop {
            let item = match stream.message().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(status) if is_decode_error(&status) => {
                    malformed = Some(Error::invalid(
                        format!("items[{index}]"),
                        format!(
                            "item {index} of the request stream is not a valid \
                             ImportCommunicationsRequest ({}); the items before it were \
                             stored, nothing after it was read",
                            status.message()
                        ),
                    ));
                    break;
                }
                // The client went away or the transport failed: nothing more to store.
                // Batches already queued are still written (they were received).
                Err(status) => return Err(status),
            };
            let request_id = item.request_id.clone();
            match communication_form(item.communication, &item.request_id, now()) {
                Ok(form) => {
                    batch.push(form, index, request_id);
                    if batch.is_full() {
                        let full = std::mem::replace(&mut batch, ImportBatch::new());
                        if queue.send(full.reserve(&memory).await).await.is_err() {
                            // The writer stopped on a database error; reported below.
                            break;
                        }
                    }
                }
                Err(e) => tally.reject(index, request_id, reason(e)),
            }
            index += 1;
        }
        if !batch.forms.is_empty() {
            let _ = queue.send(batch.reserve(&memory).await).await;
        }
        drop(queue);
        let written = writer
            .await
            .map_err(|e| Error::Internal(format!("import writer failed: {e}")))??;
        if let Some(err) = malformed {
            return Err(err.into());
        }
        tally.merge(written);
        let mut response = tally.response;
        // Unknown customers are found at write time, after later invalid items.
        response.rejected.sort_by_key(|r| r.index);
        tracing::info!(
            items = index,
            accepted = response.accepted_count,
            duplicates = response.duplicate_count,
            rejected = response.rejected_count,
            "import finished"
        );
        Ok(Response::new(response))
    }

    async fn get_communication(
        &self,
        request: Request<pb::GetCommunicationRequest>,
    ) -> Result<Response<pb::Communication>, Status> {
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", request.get_ref().id);
        v.finish(())?;
        let row = communications::get(&self.state.db, id).await?;
        Ok(Response::new(communication_to_pb(row)))
    }

    async fn list_communications(
        &self,
        request: Request<pb::ListCommunicationsRequest>,
    ) -> Result<Response<pb::ListCommunicationsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.customer_id < 0 {
            v.add("customer_id", "must be 0 (every customer) or a positive id");
        }
        let channels = channels(&mut v, "channels", &req.channels);
        validate::known_enum::<pb::Direction>(&mut v, "direction", req.direction, false);
        let (start, end) = validate::time_range(
            &mut v,
            "start_time",
            req.start_time.as_ref(),
            "end_time",
            req.end_time.as_ref(),
        );
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let filter = CommunicationFilter {
            customer_id: (req.customer_id > 0).then_some(req.customer_id),
            channels,
            direction: (req.direction != 0).then_some(req.direction),
            start,
            end,
        };
        let fp = paging::Fingerprint::new("communications")
            .field("customer_id", &filter.customer_id)
            .field("channels", &filter.channels)
            .field("direction", &filter.direction)
            .field("start", &filter.start)
            .field("end", &filter.end)
            .finish();
        let after = decode_position(&mut v, "communications", fp, &req.page_token);
        v.finish(())?;
        let db = &self.state.db;
        let (communications, last) = read_page(
            limit,
            after,
            |after, n| communications::list(db, &filter, after, n),
            |r| (r.occur_time, r.id),
            communication_to_pb,
        )
        .await?;
        Ok(Response::new(pb::ListCommunicationsResponse {
            communications,
            next_page_token: page_token("communications", fp, last),
        }))
    }

    async fn delete_communication(
        &self,
        request: Request<pb::DeleteCommunicationRequest>,
    ) -> Result<Response<()>, Status> {
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", request.get_ref().id);
        v.finish(())?;
        communications::delete(&self.state.db, id).await?;
        Ok(Response::new(()))
    }

    type StreamTimelineStream = TimelineStream;

    async fn stream_timeline(
        &self,
        request: Request<pb::StreamTimelineRequest>,
    ) -> Result<Response<Self::StreamTimelineStream>, Status> {
        let timeline = timeline_request(request.into_inner())?;
        if let Some(customer_id) = timeline.filter.customer_id {
            customers::ensure_exists(&self.state.db, customer_id).await?;
        }
        let permit = if timeline.follow {
            let permit = self
                .state
                .follow_permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::ResourceExhausted {
                    reason: "TOO_MANY_FOLLOW_STREAMS",
                    message: "too many open follow streams; retry later".to_owned(),
                })?;
            Some(permit)
        } else {
            None
        };
        let stream = crate::timeline::stream(self.state.clone(), timeline, permit);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Validates a timeline request; every bad field is reported.
fn timeline_request(req: pb::StreamTimelineRequest) -> Result<TimelineRequest, Error> {
    let mut v = Violations::new();
    if req.customer_id < 0 {
        v.add("customer_id", "must be 0 (every customer) or a positive id");
    }
    let channels = channels(&mut v, "channels", &req.channels);
    let (start, end) = validate::time_range(
        &mut v,
        "start_time",
        req.start_time.as_ref(),
        "end_time",
        req.end_time.as_ref(),
    );
    validate::known_enum::<pb::TimelineOrder>(&mut v, "order", req.order, false);
    let descending = req.order == pb::TimelineOrder::NewestFirst as i32;
    if req.follow && descending {
        v.add("follow", "requires TIMELINE_ORDER_OLDEST_FIRST");
    }
    if req.follow && end.is_some() {
        v.add("follow", "cannot be combined with end_time");
    }
    let mut sources = vec![Source::Communications];
    if req.include_transactions {
        sources.push(Source::Transactions);
    }
    if req.include_service_tickets {
        sources.push(Source::Tickets);
    }
    let customer_id = (req.customer_id > 0).then_some(req.customer_id);
    // Cursors are bound to what defines the event set, not to order or range, so a
    // client may read newest-first and then follow from the newest cursor.
    let ranks: Vec<i64> = sources.iter().map(|s| *s as i64).collect();
    let fingerprint = paging::Fingerprint::new("timeline")
        .field("customer_id", &customer_id)
        .field("channels", &channels)
        .field("sources", &ranks)
        .finish();
    let resume = if req.resume_cursor.is_empty() {
        None
    } else {
        v.absorb(crate::timeline::decode_cursor(
            fingerprint,
            &req.resume_cursor,
        ))
    };
    v.finish(TimelineRequest {
        filter: TimelineFilter {
            customer_id,
            channels,
            start,
            end,
        },
        sources,
        descending,
        resume,
        follow: req.follow,
        fingerprint,
    })
}

/// A channel filter: known, non-zero channels, sorted and de-duplicated.
pub(crate) fn channels(v: &mut Violations, field: &str, values: &[i32]) -> Vec<i32> {
    let mut out = Vec::with_capacity(values.len());
    for (i, c) in values.iter().enumerate() {
        validate::known_enum::<pb::Channel>(v, &format!("{field}[{i}]"), *c, true);
        out.push(*c);
    }
    out.sort_unstable();
    out.dedup();
    out
}
