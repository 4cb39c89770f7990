//! The transport side of `StreamTimeline`: validates the request, encodes and decodes
//! resume cursors, and turns the timeline use case's domain events into
//! `TimelineEvent`s (errors into statuses). The use case is `crate::service::timeline`.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::communication::{channels, communication_to_pb};
use super::customer::{ticket_to_pb, transaction_to_pb};
use crate::db::timeline::{Event, Key, Source};
use crate::error::{Error, Violations};
use crate::grpc::convert::to_timestamp;
use crate::grpc::paging;
use crate::grpc::validate;
use crate::model::filter::CommunicationFilter;
use crate::model::time::micros;
use crate::pb;
use crate::service::timeline::{EventStream, TimelineRequest};

/// The stream type of `StreamTimeline`.
pub type TimelineStream = Pin<Box<dyn Stream<Item = Result<pb::TimelineEvent, Status>> + Send>>;

/// Encodes the cursor of an event.
pub fn encode_cursor(fingerprint: u64, key: &Key) -> String {
    paging::encode(
        "timeline",
        fingerprint,
        &(micros(key.0), key.1, key.2 as i64),
    )
}

/// Decodes a `resume_cursor` issued for the same filters; a position out of range
/// (time, id or source rank) is INVALID_ARGUMENT on `resume_cursor`.
pub fn decode_cursor(fingerprint: u64, cursor: &str) -> Result<Key, Error> {
    let (us, id, rank) =
        paging::decode::<(i64, i64, i64)>("resume_cursor", "timeline", fingerprint, cursor)?;
    let (t, id) = paging::position("resume_cursor", us, id)?;
    let source = Source::from_rank(rank).ok_or_else(|| {
        Error::invalid(
            "resume_cursor",
            "holds a position out of range; it was not issued by this service",
        )
    })?;
    Ok((t, id, source))
}

/// The proto form of a timeline event, with its cursor.
fn to_pb(event: Event, fingerprint: u64) -> pb::TimelineEvent {
    let key = event.key();
    let entry = match event {
        Event::Communication(r) => pb::timeline_event::Entry::Communication(communication_to_pb(r)),
        Event::Transaction(r) => pb::timeline_event::Entry::Transaction(transaction_to_pb(r)),
        Event::Ticket(r) => pb::timeline_event::Entry::ServiceTicket(ticket_to_pb(r)),
    };
    pb::TimelineEvent {
        cursor: encode_cursor(fingerprint, &key),
        occur_time: Some(to_timestamp(key.0)),
        entry: Some(entry),
    }
}

/// The response stream of a timeline: each event in its proto form with a cursor bound
/// to `fingerprint`, the error that ends the stream as a status.
pub fn response_stream(events: EventStream, fingerprint: u64) -> TimelineStream {
    Box::pin(events.map(move |item| match item {
        Ok(event) => Ok(to_pb(event, fingerprint)),
        Err(e) => Err(Status::from(e)),
    }))
}

/// Validates a timeline request; every bad field is reported. Returns the request and
/// the fingerprint its cursors are bound to.
pub fn timeline_request(req: pb::StreamTimelineRequest) -> Result<(TimelineRequest, u64), Error> {
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
        v.absorb(decode_cursor(fingerprint, &req.resume_cursor))
    };
    let request = TimelineRequest {
        filter: CommunicationFilter {
            customer_ids: customer_id.into_iter().collect(),
            channels,
            direction: None,
            start,
            end,
        },
        sources,
        descending,
        resume,
        follow: req.follow,
    };
    v.finish((request, fingerprint))
}
