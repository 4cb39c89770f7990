//! Requests and responses of satisfaction surveys: a RecordSatisfaction request into a
//! validated [`SurveyForm`], a stored survey into its proto, and the satisfaction
//! report's request and figures. The handlers are in `grpc::communication` and
//! `grpc::analytics`.

use chrono::NaiveDateTime;

use super::customer::occur_time;
use super::positive_id;
use crate::analytics::satisfaction::{SatisfactionFigures, SatisfactionStats, MIN_SCORE};
use crate::db::satisfaction::{SurveyForm, SurveyRow, Target};
use crate::error::{Error, Violations};
use crate::grpc::convert::to_timestamp;
use crate::grpc::report_query::{bucketed_window, finish};
use crate::grpc::validate::{self, channels};
use crate::pb::{self, satisfaction_survey};
use crate::service::satisfaction::{SatisfactionQuery, SatisfactionReport};

/// Longest survey comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1000;

/// Validates a survey to record; every bad field is reported.
pub fn survey_form(
    req: pb::RecordSatisfactionRequest,
    now: NaiveDateTime,
) -> Result<SurveyForm, Error> {
    let mut v = Violations::new();
    let request_id = validate::request_id(&mut v, "request_id", &req.request_id);
    let Some(s) = req.survey else {
        v.add("survey", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    let target = match s.target {
        Some(satisfaction_survey::Target::CommunicationId(id)) => {
            Target::Communication(positive_id(&mut v, "survey.communication_id", id))
        }
        Some(satisfaction_survey::Target::TicketId(id)) => {
            Target::Ticket(positive_id(&mut v, "survey.ticket_id", id))
        }
        None => {
            v.add(
                "survey.target",
                "is required: communication_id or ticket_id",
            );
            Target::Communication(0)
        }
    };
    if !(0..=5).contains(&s.score) {
        v.add(
            "survey.score",
            format!(
                "must be 1..5, or 0 for sent and not answered (got {})",
                s.score
            ),
        );
    }
    let answered = s.score > 0;
    let comment = validate::optional_text(&mut v, "survey.comment", &s.comment, MAX_COMMENT_CHARS);
    if !answered && !comment.is_empty() {
        v.add("survey.comment", "is only allowed with a score");
    }
    if !answered && s.answer_time.is_some() {
        v.add("survey.answer_time", "is only allowed with a score");
    }
    let answer_time =
        answered.then(|| occur_time(&mut v, "survey.answer_time", s.answer_time.as_ref(), now));
    let sent_given = s.sent_time.is_some();
    let sent_time = occur_time(&mut v, "survey.sent_time", s.sent_time.as_ref(), now);
    // Left out, the survey was sent now, or when it was answered if that is earlier.
    let sent_time = match answer_time {
        Some(a) if !sent_given => sent_time.min(a),
        _ => sent_time,
    };
    if let (true, Some(a)) = (sent_given && s.answer_time.is_some(), answer_time) {
        if a < sent_time {
            v.add("survey.answer_time", "must not be before sent_time");
        }
    }
    v.finish(SurveyForm {
        target,
        sent_time,
        sent_time_given: sent_given,
        score: s.score,
        comment,
        answer_time,
        answer_time_given: s.answer_time.is_some(),
        request_id,
    })
}

/// The proto form of a stored survey.
pub fn survey_to_pb(r: SurveyRow) -> pb::SatisfactionSurvey {
    let target = match r.target() {
        Some(Target::Communication(id)) => Some(satisfaction_survey::Target::CommunicationId(id)),
        Some(Target::Ticket(id)) => Some(satisfaction_survey::Target::TicketId(id)),
        None => None,
    };
    pb::SatisfactionSurvey {
        id: r.id,
        customer_id: r.customer_id,
        target,
        channel: r.channel,
        target_time: Some(to_timestamp(r.target_time)),
        sent_time: Some(to_timestamp(r.sent_time)),
        score: r.score,
        comment: r.comment,
        answer_time: r.answer_time.map(to_timestamp),
        create_time: Some(to_timestamp(r.create_time)),
        update_time: Some(to_timestamp(r.update_time)),
    }
}

impl TryFrom<pb::GetSatisfactionReportRequest> for SatisfactionQuery {
    type Error = Error;

    fn try_from(req: pb::GetSatisfactionReportRequest) -> Result<Self, Error> {
        let mut v = Violations::new();
        let (customer_ids, granularity, window) = bucketed_window(
            &mut v,
            &req.customer_ids,
            req.granularity,
            (req.start_time.as_ref(), req.end_time.as_ref()),
            &req.time_zone,
        );
        let channels = channels(&mut v, "channels", &req.channels);
        let business_hours_id = (req.business_hours_id != 0)
            .then(|| positive_id(&mut v, "business_hours_id", req.business_hours_id));
        let ((start, end), time_zone) = finish(v, window)?;
        Ok(SatisfactionQuery {
            customer_ids,
            channels,
            start,
            end,
            time_zone,
            granularity,
            business_hours_id,
        })
    }
}

fn stats(s: &SatisfactionStats) -> pb::SatisfactionStats {
    pb::SatisfactionStats {
        sent_count: s.sent,
        answered_count: s.answered,
        response_rate: s.response_rate,
        average_score: s.average_score,
        score_counts: s
            .scores
            .iter()
            .zip(MIN_SCORE..)
            .map(|(&count, score)| pb::ScoreCount { score, count })
            .collect(),
        csat_percent: s.csat_percent,
    }
}

fn figures(f: &SatisfactionFigures) -> pb::SatisfactionFigures {
    pb::SatisfactionFigures {
        overall: Some(stats(&f.overall)),
        inside_business_hours: f.inside.as_ref().map(stats),
        outside_business_hours: f.outside.as_ref().map(stats),
    }
}

impl From<SatisfactionReport> for pb::GetSatisfactionReportResponse {
    fn from(r: SatisfactionReport) -> Self {
        pb::GetSatisfactionReportResponse {
            total: Some(figures(&r.total)),
            channels: r
                .channels
                .iter()
                .map(|(&channel, f)| pb::ChannelSatisfaction {
                    channel,
                    figures: Some(figures(f)),
                })
                .collect(),
            service_tickets: Some(figures(&r.service_tickets)),
            buckets: r
                .buckets
                .iter()
                .map(|(b, f)| pb::SatisfactionBucket {
                    start_time: Some(to_timestamp(b.start.naive_utc())),
                    end_time: Some(to_timestamp(b.end.naive_utc())),
                    figures: Some(figures(f)),
                })
                .collect(),
            time_zone: r.time_zone.name().to_owned(),
            business_hours_id: r.business_hours_id,
        }
    }
}
