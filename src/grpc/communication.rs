//! `crm.v1.CommunicationService`: recording communications and their satisfaction
//! surveys, and streaming timelines.
//! The import engine is `crate::service::import`, the timeline use case
//! `crate::service::timeline` (its transport side is [`super::timeline`]).

use chrono::NaiveDateTime;
use tonic::{Request, Response, Status, Streaming};

use super::customer::{decode_position, occur_time, page_token};
use super::timeline::{response_stream, timeline_request, TimelineStream};
use super::{caller, positive_id, read_page, AppState};
use crate::db::communications::{self, CommunicationFilter, CommunicationInsertForm};
use crate::db::satisfaction;
use crate::error::{Error, Violations};
use crate::grpc::convert::duration_to_micros;
use crate::grpc::paging;
use crate::grpc::pb_conv::communication_to_pb;
use crate::grpc::satisfaction::{survey_form, survey_to_pb};
use crate::grpc::validate::{self, channels};
use crate::model::phone::PhoneRegion;
use crate::model::time::now;
use crate::pb::{self, communication::Details, communication_service_server::CommunicationService};
use crate::service::import::{Import, ImportReport, Rejection};

/// Largest `content`, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;
/// Smallest LogCommunication answer sent compressed to a client that accepts it:
/// deflating a few hundred bytes saves next to nothing on the wire and costs more CPU
/// per call (compressor tables set up anew each time) than storing the row.
const COMPRESS_FROM_BYTES: usize = 1024;
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

/// Validates a communication to record; every bad field is reported.
pub fn communication_form(
    communication: Option<pb::Communication>,
    request_id: &str,
    now: NaiveDateTime,
    region: PhoneRegion,
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
        sentiment: None,
        occur_time_given: c.occur_time.is_some(),
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
                region,
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
    let mut form = v.finish(form)?;
    form.sentiment = Some(crate::analytics::sentiment::score(&form.content));
    Ok(form)
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

#[tonic::async_trait]
impl CommunicationService for CommunicationApi {
    async fn log_communication(
        &self,
        request: Request<pb::LogCommunicationRequest>,
    ) -> Result<Response<pb::Communication>, Status> {
        let caller = caller(&request);
        let deadline = crate::grpc::deadline::of_call(request.metadata());
        let req = request.into_inner();
        let form = communication_form(
            req.communication,
            &req.request_id,
            now(),
            self.state.phone_region,
        )?;
        // The writer stores the row whole or not at all even if the call gives up
        // waiting: a retry with the same request_id then answers with it.
        let row = deadline
            .bound(
                "storing the communication",
                self.state.log_writer.log(form, caller),
            )
            .await?;
        let answer = communication_to_pb(row);
        let small = prost::Message::encoded_len(&answer) < COMPRESS_FROM_BYTES;
        let mut response = Response::new(answer);
        if small {
            response.disable_compression();
        }
        Ok(response)
    }

    async fn import_communications(
        &self,
        request: Request<Streaming<pb::ImportCommunicationsRequest>>,
    ) -> Result<Response<pb::ImportCommunicationsResponse>, Status> {
        let caller = caller(&request);
        let mut stream = request.into_inner();
        let mut import = Import::start(self.state.db.clone(), caller);
        let mut malformed = None;
        let idle = self.state.stream_idle;
        loop {
            let Ok(next) = tokio::time::timeout(idle, stream.message()).await else {
                let index = import.index();
                malformed = Some(Error::ResourceExhausted {
                    reason: crate::error::Reason::StreamStalled,
                    message: format!(
                        "no item for {} s after item {index}; the items before it were stored",
                        idle.as_secs()
                    ),
                });
                break;
            };
            let item = match next {
                Ok(Some(item)) => item,
                Ok(None) => break,
                // The guard refused an item over the size limit from its header.
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    let index = import.index();
                    malformed = Some(Error::ResourceExhausted {
                        reason: crate::error::Reason::MessageTooLarge,
                        message: format!(
                            "item {index}: {}; the items before it were stored, nothing after \
                             it was read",
                            status.message()
                        ),
                    });
                    break;
                }
                Err(status) if is_decode_error(&status) => {
                    let index = import.index();
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
            let form = communication_form(
                item.communication,
                &item.request_id,
                now(),
                self.state.phone_region,
            );
            if !import.push(request_id, form).await {
                // The writer stopped on a database error; `finish` reports it.
                break;
            }
        }
        let report = import.finish(malformed).await?;
        Ok(Response::new(report.into()))
    }

    async fn get_communication(
        &self,
        request: Request<pb::GetCommunicationRequest>,
    ) -> Result<Response<pb::Communication>, Status> {
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", request.get_ref().id);
        v.finish(())?;
        let row = communications::get(&self.state.db.reader(), id).await?;
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
        let customer_id = (req.customer_id > 0).then_some(req.customer_id);
        let filter = CommunicationFilter {
            customer_ids: customer_id.into_iter().collect(),
            channels,
            direction: (req.direction != 0).then_some(req.direction),
            start,
            end,
        };
        let fp = paging::Fingerprint::new("communications")
            .field("customer_id", &customer_id)
            .field("channels", &filter.channels)
            .field("direction", &filter.direction)
            .field("start", &filter.start)
            .field("end", &filter.end)
            .finish();
        let after = decode_position(&mut v, "communications", fp, &req.page_token);
        v.finish(())?;
        let db = &self.state.db.reader();
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
        communications::delete(&self.state.db, id, &caller(&request)).await?;
        Ok(Response::new(()))
    }

    type StreamTimelineStream = TimelineStream;

    async fn stream_timeline(
        &self,
        request: Request<pb::StreamTimelineRequest>,
    ) -> Result<Response<Self::StreamTimelineStream>, Status> {
        let (timeline, fingerprint) = timeline_request(request.into_inner())?;
        // Timelines read the primary, also without `follow`: every stream's cursors
        // carry the recording position its history is complete up to, which a lagging
        // replica could not promise (a resume from such a cursor would skip events).
        let events = self.state.timeline.open(timeline).await?;
        Ok(Response::new(response_stream(events, fingerprint)))
    }

    async fn record_satisfaction(
        &self,
        request: Request<pb::RecordSatisfactionRequest>,
    ) -> Result<Response<pb::SatisfactionSurvey>, Status> {
        let caller = caller(&request);
        let form = survey_form(request.into_inner(), now())?;
        let row = satisfaction::record(&self.state.db, &form, &caller).await?;
        Ok(Response::new(survey_to_pb(row)))
    }
}

impl From<ImportReport> for pb::ImportCommunicationsResponse {
    fn from(r: ImportReport) -> Self {
        pb::ImportCommunicationsResponse {
            accepted_count: r.accepted_count,
            duplicate_count: r.duplicate_count,
            rejected: r.rejected.into_iter().map(rejection_to_pb).collect(),
            rejected_count: r.rejected_count,
        }
    }
}

fn rejection_to_pb(r: Rejection) -> pb::ImportRejection {
    pb::ImportRejection {
        index: r.index,
        request_id: r.request_id,
        reason: r.reason,
    }
}
