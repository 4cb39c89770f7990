//! The transport side of `StreamTimeline`: validates the request, encodes and decodes
//! resume cursors, and turns the timeline use case's domain events into
//! `TimelineEvent`s (errors into statuses). The use case is `crate::service::timeline`.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::db::timeline::{Event, Key, Source};
use crate::error::{Error, Violations};
use crate::grpc::convert::to_timestamp;
use crate::grpc::paging;
use crate::grpc::pb_conv::{communication_to_pb, ticket_to_pb, transaction_to_pb};
use crate::grpc::validate::{self, channels};
use crate::model::filter::CommunicationFilter;
use crate::model::time::micros;
use crate::pb;
use crate::service::timeline::{EventStream, Mark, Resume, Streamed, TimelineRequest};

/// The stream type of `StreamTimeline`.
pub type TimelineStream = Pin<Box<dyn Stream<Item = Result<pb::TimelineEvent, Status>> + Send>>;

/// The cursor kind of a history event: `(occur_time µs, id, source rank, snapshot µs)`
/// (an earlier form without the snapshot still decodes).
const HISTORY: &str = "timeline";
/// The cursor kind of a live event: `(create_time µs, id, source rank)`.
const RECORDED: &str = "timeline-recorded";

/// Encodes the cursor of an event, in the compact integer form (`paging::encode_ints`);
/// cursors of the earlier JSON form still decode.
pub fn encode_cursor(fingerprint: u64, mark: &Mark) -> String {
    match *mark {
        Mark::History { key, snapshot } => paging::encode_ints(
            HISTORY,
            fingerprint,
            &[micros(key.0), key.1, key.2 as i64, micros(snapshot)],
        ),
        Mark::Recorded(p) => {
            paging::encode_ints(RECORDED, fingerprint, &[micros(p.0), p.1, p.2 as i64])
        }
    }
}

/// A `(time µs, id, source rank)` position, each part in range.
fn key_of(us: i64, id: i64, rank: i64) -> Result<Key, Error> {
    let (t, id) = paging::position("resume_cursor", us, id)?;
    let source = Source::from_rank(rank).ok_or_else(|| {
        Error::invalid(
            "resume_cursor",
            "holds a position out of range; it was not issued by this service",
        )
    })?;
    Ok((t, id, source))
}

/// Decodes a `resume_cursor` issued for the same filters; a position out of range
/// (time, id or source rank) is INVALID_ARGUMENT on `resume_cursor`.
pub fn decode_cursor(fingerprint: u64, cursor: &str) -> Result<Resume, Error> {
    let field = "resume_cursor";
    match paging::decode_ints(field, &[HISTORY, RECORDED], fingerprint, cursor)? {
        Some((0, fields)) => match fields[..] {
            [us, id, rank, snapshot] => return history(us, id, rank, snapshot),
            _ => {
                return Err(Error::invalid(
                    field,
                    "is not a token issued by this service",
                ))
            }
        },
        Some((_, fields)) => match fields[..] {
            [us, id, rank] => return Ok(Resume::Recorded(key_of(us, id, rank)?)),
            _ => {
                return Err(Error::invalid(
                    field,
                    "is not a token issued by this service",
                ))
            }
        },
        None => {}
    }
    // The JSON form, issued before the compact one.
    if let Ok((us, id, rank, snapshot)) =
        paging::decode::<(i64, i64, i64, i64)>(field, HISTORY, fingerprint, cursor)
    {
        return history(us, id, rank, snapshot);
    }
    if let Ok((us, id, rank)) =
        paging::decode::<(i64, i64, i64)>(field, RECORDED, fingerprint, cursor)
    {
        return Ok(Resume::Recorded(key_of(us, id, rank)?));
    }
    let (us, id, rank) = paging::decode::<(i64, i64, i64)>(field, HISTORY, fingerprint, cursor)?;
    Ok(Resume::History {
        key: key_of(us, id, rank)?,
        snapshot: None,
    })
}

/// A history cursor's resume point, each part in range.
fn history(us: i64, id: i64, rank: i64, snapshot: i64) -> Result<Resume, Error> {
    let (snapshot, _) = paging::position("resume_cursor", snapshot, 1)?;
    Ok(Resume::History {
        key: key_of(us, id, rank)?,
        snapshot: Some(snapshot),
    })
}

/// The proto form of a timeline event, with its cursor.
fn to_pb(Streamed { event, mark }: Streamed, fingerprint: u64) -> pb::TimelineEvent {
    let key = event.key();
    let entry = match event {
        Event::Communication(r) => pb::timeline_event::Entry::Communication(communication_to_pb(r)),
        Event::Transaction(r) => pb::timeline_event::Entry::Transaction(transaction_to_pb(r)),
        Event::Ticket(r) => pb::timeline_event::Entry::ServiceTicket(ticket_to_pb(r)),
    };
    pb::TimelineEvent {
        cursor: encode_cursor(fingerprint, &mark),
        occur_time: Some(to_timestamp(key.0)),
        entry: Some(entry),
    }
}

/// The response stream of a timeline: each event in its proto form with a cursor bound
/// to `fingerprint`, the error that ends the stream as a status.
pub fn response_stream(events: EventStream, fingerprint: u64) -> TimelineStream {
    Box::pin(events.map(move |item| match item {
        Ok(streamed) => Ok(to_pb(streamed, fingerprint)),
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
    if descending && matches!(resume, Some(Resume::Recorded(_))) {
        v.add(
            "resume_cursor",
            "is the cursor of a live event of a follow stream; it resumes oldest-first only",
        );
    }
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

/// Properties of resume cursors over arbitrary input: decoding never panics, and
/// anything the service did not issue for the same filters is INVALID_ARGUMENT on
/// `resume_cursor`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod cursor_properties {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    use proptest::prelude::*;

    use super::*;
    use crate::model::time::{from_micros, MAX_TIME, MIN_TIME};

    fn config() -> ProptestConfig {
        // Failures print the minimal input; no regression files in the source tree.
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(256)
        }
    }

    /// Whether `result` is INVALID_ARGUMENT naming exactly `resume_cursor`.
    fn is_invalid_cursor<T>(result: &Result<T, Error>) -> bool {
        matches!(result, Err(Error::InvalidArgument(v)) if v.len() == 1 && v[0].field == "resume_cursor")
    }

    fn source() -> impl Strategy<Value = Source> {
        prop_oneof![
            Just(Source::Communications),
            Just(Source::Transactions),
            Just(Source::Tickets),
        ]
    }

    /// The key of an event the service could stream.
    fn key() -> impl Strategy<Value = Key> {
        (micros(MIN_TIME)..=micros(MAX_TIME), 1..=i64::MAX, source())
            .prop_map(|(us, id, s)| (from_micros(us).unwrap(), id, s))
    }

    /// The mark of an event the service could stream: history or live.
    fn mark() -> impl Strategy<Value = Mark> {
        prop_oneof![
            (key(), micros(MIN_TIME)..=micros(MAX_TIME)).prop_map(|(key, us)| Mark::History {
                key,
                snapshot: from_micros(us).unwrap(),
            }),
            key().prop_map(Mark::Recorded),
        ]
    }

    /// What a cursor of `mark` resumes from.
    fn resume_of(mark: Mark) -> Resume {
        match mark {
            Mark::History { key, snapshot } => Resume::History {
                key,
                snapshot: Some(snapshot),
            },
            Mark::Recorded(p) => Resume::Recorded(p),
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_text_is_never_a_cursor(fingerprint in any::<u64>(), cursor in any::<String>()) {
            prop_assert!(is_invalid_cursor(&decode_cursor(fingerprint, &cursor)));
        }

        #[test]
        fn text_of_the_cursor_alphabet_is_never_a_cursor(
            fingerprint in any::<u64>(),
            cursor in "[A-Za-z0-9_-]{0,160}",
        ) {
            prop_assert!(is_invalid_cursor(&decode_cursor(fingerprint, &cursor)));
        }

        #[test]
        fn any_cursor_in_a_request_is_reported_on_resume_cursor(cursor in "\\PC{1,120}") {
            let request = pb::StreamTimelineRequest {
                resume_cursor: cursor,
                ..Default::default()
            };
            let Err(Error::InvalidArgument(violations)) = timeline_request(request) else {
                return Err(TestCaseError::fail("a made-up cursor was accepted"));
            };
            prop_assert!(violations.iter().any(|v| v.field == "resume_cursor"), "{:?}", violations);
        }

        #[test]
        fn issued_cursors_round_trip_for_their_filters_only(fingerprint in any::<u64>(), mark in mark()) {
            let cursor = encode_cursor(fingerprint, &mark);
            prop_assert_eq!(decode_cursor(fingerprint, &cursor).unwrap(), resume_of(mark));
            prop_assert!(is_invalid_cursor(&decode_cursor(fingerprint ^ 1, &cursor)));
        }

        #[test]
        fn cursors_of_the_json_form_still_resume(fingerprint in any::<u64>(), mark in mark()) {
            // What servers issued before the compact form: a stream resumed across an
            // upgrade continues where it was.
            let cursor = match mark {
                Mark::History { key, snapshot } => paging::encode(
                    HISTORY,
                    fingerprint,
                    &(micros(key.0), key.1, key.2 as i64, micros(snapshot)),
                ),
                Mark::Recorded(p) => {
                    paging::encode(RECORDED, fingerprint, &(micros(p.0), p.1, p.2 as i64))
                }
            };
            prop_assert_eq!(decode_cursor(fingerprint, &cursor).unwrap(), resume_of(mark));
            let compact = encode_cursor(fingerprint, &mark);
            // Form, kind, filter and checksum (21 bytes), at most 10 bytes per field.
            prop_assert!(compact.len() <= (21 + 4 * 10usize).div_ceil(3) * 4, "{}", compact);
        }

        #[test]
        fn compact_cursors_of_another_kind_or_shape_are_rejected(
            fingerprint in any::<u64>(),
            fields in proptest::collection::vec(any::<i64>(), 0..6),
            kind in prop_oneof![Just(HISTORY), Just(RECORDED), Just("communications")],
        ) {
            let cursor = paging::encode_ints(kind, fingerprint, &fields);
            let decoded = decode_cursor(fingerprint, &cursor);
            let fits = match kind {
                HISTORY => fields.len() == 4,
                RECORDED => fields.len() == 3,
                _ => false,
            };
            if !fits {
                prop_assert!(is_invalid_cursor(&decoded), "{:?}", decoded);
            }
        }

        #[test]
        fn a_forged_cursor_decodes_only_with_a_valid_position(
            fingerprint in any::<u64>(),
            us in prop_oneof![any::<i64>(), micros(MIN_TIME)..=micros(MAX_TIME), Just(micros(MIN_TIME) - 1), Just(micros(MAX_TIME) + 1)],
            id in prop_oneof![any::<i64>(), -2i64..=2],
            rank in prop_oneof![any::<i64>(), -1i64..=3],
            kind in prop_oneof![Just("timeline"), Just("communications"), Just("")],
        ) {
            let cursor = paging::encode(kind, fingerprint, &(us, id, rank));
            let valid = from_micros(us)
                .filter(|t| (MIN_TIME..=MAX_TIME).contains(t) && id >= 1 && kind == "timeline")
                .zip(Source::from_rank(rank));
            // A cursor of the form issued before cursors named their snapshot.
            match valid {
                Some((t, source)) => prop_assert_eq!(
                    decode_cursor(fingerprint, &cursor).unwrap(),
                    Resume::History { key: (t, id, source), snapshot: None }
                ),
                None => prop_assert!(is_invalid_cursor(&decode_cursor(fingerprint, &cursor))),
            }
        }

        #[test]
        fn a_cursor_with_one_character_changed_is_rejected(
            fingerprint in any::<u64>(),
            mark in mark(),
            index in any::<proptest::sample::Index>(),
            with in any::<char>(),
        ) {
            let cursor = encode_cursor(fingerprint, &mark);
            let i = index.index(cursor.len());
            prop_assume!(cursor.chars().nth(i) != Some(with));
            let tampered: String = cursor
                .chars()
                .enumerate()
                .map(|(j, c)| if j == i { with } else { c })
                .collect();
            prop_assert!(is_invalid_cursor(&decode_cursor(fingerprint, &tampered)));
        }

        #[test]
        fn a_cursor_with_one_bit_flipped_is_rejected(
            fingerprint in any::<u64>(),
            mark in mark(),
            index in any::<proptest::sample::Index>(),
            bit in 0u32..8,
        ) {
            let mut raw = URL_SAFE_NO_PAD.decode(encode_cursor(fingerprint, &mark)).unwrap();
            let i = index.index(raw.len());
            raw[i] ^= 1 << bit;
            let tampered = URL_SAFE_NO_PAD.encode(raw);
            prop_assert!(is_invalid_cursor(&decode_cursor(fingerprint, &tampered)));
        }
    }
}
