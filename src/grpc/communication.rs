//! `crm.v1.CommunicationService`: recording communications and streaming timelines.

use std::pin::Pin;

use chrono::NaiveDateTime;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::customer::{decode_position, next_token, occur_time};
use super::{positive_id, AppState};
use crate::convert::{duration_from_micros, duration_to_micros, now, to_timestamp};
use crate::db::communications::{
    self, BatchOutcome, CommunicationFilter, CommunicationInsertForm, CommunicationRow,
};
use crate::db::customers;
use crate::db::timeline::{Source, TimelineFilter};
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

/// Accumulates an import's batches and outcome counts.
struct Import<'a> {
    state: &'a AppState,
    batch: Vec<CommunicationInsertForm>,
    /// Stream index and request id of each batched item.
    batch_meta: Vec<(i64, String)>,
    batch_bytes: usize,
    response: pb::ImportCommunicationsResponse,
}

impl Import<'_> {
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

    async fn flush(&mut self) -> Result<(), Error> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut forms = std::mem::take(&mut self.batch);
        // Stamp the record time at write time: follow streams find new rows by it.
        let stamp = now();
        for form in &mut forms {
            form.create_time = stamp;
        }
        let meta = std::mem::take(&mut self.batch_meta);
        self.batch_bytes = 0;
        let outcomes = communications::insert_batch(&self.state.db, forms.clone()).await;
        let outcomes = match outcomes {
            Ok(o) => o,
            // A concurrent writer used one of the keys between our check and insert:
            // fall back to one row at a time, which resolves each key exactly.
            Err(e) if e.is_unique_violation() => {
                let mut out = Vec::with_capacity(forms.len());
                for form in forms {
                    out.push(
                        communications::insert_batch(&self.state.db, vec![form])
                            .await
                            .map_or_else(
                                |e| {
                                    if e.is_unique_violation() {
                                        Ok(BatchOutcome::Duplicate)
                                    } else {
                                        Err(e)
                                    }
                                },
                                |o| Ok(o.first().copied().unwrap_or(BatchOutcome::Duplicate)),
                            )?,
                    );
                }
                out
            }
            Err(e) => return Err(e),
        };
        for (outcome, (index, request_id)) in outcomes.into_iter().zip(meta) {
            match outcome {
                BatchOutcome::Stored => self.response.accepted_count += 1,
                BatchOutcome::Duplicate => self.response.duplicate_count += 1,
                BatchOutcome::UnknownCustomer => self.reject(
                    index,
                    request_id,
                    "communication.customer_id: customer not found".to_owned(),
                ),
            }
        }
        Ok(())
    }
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
        let mut import = Import {
            state: &self.state,
            batch: Vec::with_capacity(IMPORT_BATCH_ROWS),
            batch_meta: Vec::with_capacity(IMPORT_BATCH_ROWS),
            batch_bytes: 0,
            response: pb::ImportCommunicationsResponse::default(),
        };
        let mut index: i64 = 0;
        while let Some(item) = stream.message().await? {
            let request_id = item.request_id.clone();
            match communication_form(item.communication, &item.request_id, now()) {
                Ok(form) => {
                    import.batch_bytes += form.content.len();
                    import.batch.push(form);
                    import.batch_meta.push((index, request_id));
                    if import.batch.len() >= IMPORT_BATCH_ROWS
                        || import.batch_bytes >= IMPORT_BATCH_BYTES
                    {
                        import.flush().await?;
                    }
                }
                Err(e) => import.reject(index, request_id, reason(e)),
            }
            index += 1;
        }
        import.flush().await?;
        // Unknown customers are found at flush time, after later invalid items.
        import.response.rejected.sort_by_key(|r| r.index);
        tracing::info!(
            items = index,
            accepted = import.response.accepted_count,
            duplicates = import.response.duplicate_count,
            rejected = import.response.rejected_count,
            "import finished"
        );
        Ok(Response::new(import.response))
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
        let mut page = communications::list(&self.state.db, &filter, after, limit + 1).await?;
        let next_page_token = next_token(&mut page, limit, "communications", fp, |r| {
            (r.occur_time, r.id)
        });
        Ok(Response::new(pb::ListCommunicationsResponse {
            communications: page.into_iter().map(communication_to_pb).collect(),
            next_page_token,
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
