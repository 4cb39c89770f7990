//! Satisfaction surveys: recording one per communication or service ticket (sent,
//! answered, or an answer completing a sent one, idempotent by `request_id`), and the
//! reads behind the satisfaction report and the low-satisfaction attention list.

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use super::audit::{self, Change};
use super::dialect::{columns, Conn};
use super::schema::{communications, satisfaction_surveys as surveys, service_tickets};
use super::{query, retry_conflicts, Db};
use crate::error::{Error, Reason, Result};
use crate::model::caller::Caller;
use crate::model::time::now;
use crate::with_conn;

/// What a survey is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A communication, by id.
    Communication(i64),
    /// A service ticket, by id.
    Ticket(i64),
}

impl Target {
    /// `(communication_id, ticket_id)` as stored.
    fn ids(self) -> (Option<i64>, Option<i64>) {
        match self {
            Target::Communication(id) => (Some(id), None),
            Target::Ticket(id) => (None, Some(id)),
        }
    }
}

/// A stored survey.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = surveys)]
pub struct SurveyRow {
    /// Id.
    pub id: i64,
    /// The target's customer.
    pub customer_id: i64,
    /// The surveyed communication.
    pub communication_id: Option<i64>,
    /// The surveyed ticket.
    pub ticket_id: Option<i64>,
    /// The communication's channel; 0 for a ticket.
    pub channel: i32,
    /// When the target happened (UTC).
    pub target_time: NaiveDateTime,
    /// When the survey was sent.
    pub sent_time: NaiveDateTime,
    /// 1..5; 0 while unanswered.
    pub score: i32,
    /// The customer's comment.
    pub comment: String,
    /// When the customer answered.
    pub answer_time: Option<NaiveDateTime>,
    /// When the row was stored.
    pub create_time: NaiveDateTime,
    /// Last change.
    pub update_time: NaiveDateTime,
    /// 1 as created, 2 once an answer completed it.
    pub version: i64,
    /// Idempotency key of the request that created the row.
    pub request_id: Option<String>,
    /// Idempotency key of the answer that completed it.
    pub answer_request_id: Option<String>,
}

impl SurveyRow {
    /// What the survey is about.
    pub fn target(&self) -> Option<Target> {
        match (self.communication_id, self.ticket_id) {
            (Some(id), _) => Some(Target::Communication(id)),
            (None, Some(id)) => Some(Target::Ticket(id)),
            (None, None) => None,
        }
    }
}

/// A validated RecordSatisfaction request.
#[derive(Debug, Clone)]
pub struct SurveyForm {
    /// What the survey is about.
    pub target: Target,
    /// When it was sent (the request's, or its default).
    pub sent_time: NaiveDateTime,
    /// Whether the request set `sent_time` (else a replay does not repeat it).
    pub sent_time_given: bool,
    /// 1..5, or 0 for "sent".
    pub score: i32,
    /// The comment (empty without a score).
    pub comment: String,
    /// When answered; `Some` exactly when `score > 0`.
    pub answer_time: Option<NaiveDateTime>,
    /// Whether the request set `answer_time`.
    pub answer_time_given: bool,
    /// Idempotency key.
    pub request_id: Option<String>,
}

impl SurveyForm {
    /// Whether this form's answer is the one `row` holds (the answer time compared only
    /// when the request set it).
    fn same_answer(&self, row: &SurveyRow) -> bool {
        self.score == row.score
            && self.comment == row.comment
            && (!self.answer_time_given || self.answer_time == row.answer_time)
    }

    /// Whether `row`, found under this form's key `request_id`, is what this form
    /// asked for: the same target and, when set, sent time; the same answer for the
    /// key of an answer, or for the key of a creation while the survey is as created
    /// (once an answer completed it, the creating key answers it as it is now).
    fn replays(&self, row: &SurveyRow, request_id: &str) -> bool {
        let same_send = row.target() == Some(self.target)
            && (!self.sent_time_given || self.sent_time == row.sent_time);
        if row.answer_request_id.as_deref() == Some(request_id) {
            same_send && self.same_answer(row)
        } else {
            same_send && (row.version != 1 || self.same_answer(row))
        }
    }
}

/// The target's owner, channel and time.
#[derive(Debug, Clone, Copy)]
struct TargetFacts {
    customer_id: i64,
    channel: i32,
    time: NaiveDateTime,
}

/// The target's facts; NOT_FOUND naming it when it does not exist.
async fn target_facts<C: Conn>(conn: &mut C, target: Target) -> Result<TargetFacts> {
    let found: Option<(i64, i32, NaiveDateTime)> = match target {
        Target::Communication(id) => {
            let q = communications::table
                .filter(communications::id.eq(id))
                .select((
                    communications::customer_id,
                    communications::channel,
                    communications::occur_time,
                ));
            conn.any().first(q).await?
        }
        Target::Ticket(id) => {
            let q = service_tickets::table
                .filter(service_tickets::id.eq(id))
                .select((service_tickets::customer_id, service_tickets::open_time));
            let row: Option<(i64, NaiveDateTime)> = conn.any().first(q).await?;
            // A ticket has no channel.
            row.map(|(customer_id, open_time)| (customer_id, 0, open_time))
        }
    };
    let (customer_id, channel, time) = found.ok_or(match target {
        Target::Communication(id) => Error::NotFound {
            resource: "communication",
            id,
        },
        Target::Ticket(id) => Error::NotFound {
            resource: "service ticket",
            id,
        },
    })?;
    Ok(TargetFacts {
        customer_id,
        channel,
        time,
    })
}

/// The survey of `target`, if any.
async fn by_target<C: Conn>(conn: &mut C, target: Target) -> Result<Option<SurveyRow>> {
    let found = match target {
        Target::Communication(id) => {
            let q = surveys::table
                .filter(surveys::communication_id.eq(id))
                .select(columns::<SurveyRow>());
            conn.any().first(q).await?
        }
        Target::Ticket(id) => {
            let q = surveys::table
                .filter(surveys::ticket_id.eq(id))
                .select(columns::<SurveyRow>());
            conn.any().first(q).await?
        }
    };
    Ok(found)
}

/// The survey this customer created or answered with `request_id`, if any.
async fn by_request_id<C: Conn>(
    conn: &mut C,
    customer_id: i64,
    request_id: &str,
) -> Result<Option<SurveyRow>> {
    let q = surveys::table
        .filter(surveys::customer_id.eq(customer_id))
        .filter(
            surveys::request_id
                .eq(request_id)
                .or(surveys::answer_request_id.eq(request_id)),
        )
        .select(columns::<SurveyRow>());
    Ok(conn.any().first(q).await?)
}

/// A new survey row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = surveys)]
struct SurveyInsert<'a> {
    customer_id: i64,
    communication_id: Option<i64>,
    ticket_id: Option<i64>,
    channel: i32,
    target_time: NaiveDateTime,
    sent_time: NaiveDateTime,
    score: i32,
    comment: &'a str,
    answer_time: Option<NaiveDateTime>,
    create_time: NaiveDateTime,
    update_time: NaiveDateTime,
    version: i64,
    request_id: Option<&'a str>,
}

/// An ALREADY_EXISTS answer about the survey of `target`.
fn exists(reason: Reason, target: Target, what: &str) -> Error {
    let (kind, id) = match target {
        Target::Communication(id) => ("communication", id),
        Target::Ticket(id) => ("service ticket", id),
    };
    Error::AlreadyExists {
        reason,
        message: format!("the satisfaction survey of {kind} {id} {what}"),
    }
}

/// Records a survey (see the module header and `RecordSatisfaction` in the contract).
/// The target's customer is locked first, as every writer of a customer's rows does,
/// so a concurrent merge moves the survey or waits for it.
pub async fn record(db: &Db, form: &SurveyForm, caller: &Caller) -> Result<SurveyRow> {
    retry_conflicts(|| async {
        with_conn!(db, write, |conn| {
            // Read before the transaction, then checked under the customer's lock: the
            // transaction's first read then sees every merge that committed before it.
            let before = target_facts(conn, form.target).await?;
            crate::db::tx::transaction(conn, async |conn| {
                match query::lock_customer(conn, before.customer_id).await {
                    // Merged since the read: the target moved; read it again.
                    Err(Error::Merged { .. }) => {
                        return Err(crate::db::tx::conflict(
                            "the surveyed target moved to another customer".to_owned(),
                        ))
                    }
                    other => other?,
                }
                let facts = target_facts(conn, form.target).await?;
                if facts.customer_id != before.customer_id {
                    return Err(crate::db::tx::conflict(
                        "the surveyed target moved to another customer".to_owned(),
                    ));
                }
                record_in(conn, form, facts, caller).await
            })
            .await
        })
    })
    .await
}

/// [`record`]'s work under the customer's lock.
async fn record_in<C: Conn>(
    conn: &mut C,
    form: &SurveyForm,
    facts: TargetFacts,
    caller: &Caller,
) -> Result<SurveyRow> {
    if let Some(rid) = form.request_id.as_deref() {
        if let Some(row) = by_request_id(conn, facts.customer_id, rid).await? {
            return if form.replays(&row, rid) {
                Ok(row)
            } else {
                Err(Error::RequestIdReused {
                    resource: "satisfaction survey",
                    request_id: rid.to_owned(),
                })
            };
        }
    }
    let stamp = now();
    let Some(row) = by_target(conn, form.target).await? else {
        if let Some(answered) = form.answer_time {
            if answered < form.sent_time {
                return Err(Error::invalid(
                    "survey.answer_time",
                    "must not be before sent_time",
                ));
            }
        }
        let (communication_id, ticket_id) = form.target.ids();
        let insert = SurveyInsert {
            customer_id: facts.customer_id,
            communication_id,
            ticket_id,
            channel: facts.channel,
            target_time: facts.time,
            sent_time: form.sent_time,
            score: form.score,
            comment: &form.comment,
            answer_time: form.answer_time,
            create_time: stamp,
            update_time: stamp,
            version: 1,
            request_id: form.request_id.as_deref(),
        };
        conn.any()
            .execute(diesel::insert_into(surveys::table).values(&insert))
            .await?;
        let id = conn.last_insert_id().await?;
        let change = Change::new("RecordSatisfaction", facts.customer_id, id);
        audit::record(conn, caller, stamp, &[change]).await?;
        return Ok(SurveyRow {
            id,
            customer_id: facts.customer_id,
            communication_id,
            ticket_id,
            channel: facts.channel,
            target_time: facts.time,
            sent_time: form.sent_time,
            score: form.score,
            comment: form.comment.clone(),
            answer_time: form.answer_time,
            create_time: stamp,
            update_time: stamp,
            version: 1,
            request_id: form.request_id.clone(),
            answer_request_id: None,
        });
    };
    // One survey per target: the request must agree with what is recorded.
    if form.sent_time_given && form.sent_time != row.sent_time {
        return Err(exists(
            Reason::SurveyAlreadySent,
            form.target,
            "was recorded as sent at another time",
        ));
    }
    if form.score == 0 || form.same_answer(&row) {
        // "Sent" again, or the same answer again: nothing to change.
        return Ok(row);
    }
    if row.score != 0 {
        return Err(exists(
            Reason::SurveyAlreadyAnswered,
            form.target,
            "already has a different answer",
        ));
    }
    // The answer completes the survey sent before.
    let answer_time = form.answer_time.unwrap_or(stamp);
    if answer_time < row.sent_time {
        return Err(Error::invalid(
            "survey.answer_time",
            "must not be before the survey's sent_time",
        ));
    }
    let update = diesel::update(
        surveys::table
            .filter(surveys::id.eq(row.id))
            .filter(surveys::version.eq(row.version)),
    )
    .set((
        surveys::score.eq(form.score),
        surveys::comment.eq(&form.comment),
        surveys::answer_time.eq(Some(answer_time)),
        surveys::answer_request_id.eq(form.request_id.as_deref()),
        surveys::update_time.eq(stamp),
        surveys::version.eq(row.version + 1),
    ));
    if conn.any().execute(update).await? != 1 {
        return Err(crate::db::tx::conflict(format!(
            "satisfaction survey {} was changed concurrently",
            row.id
        )));
    }
    let change = Change::new("RecordSatisfaction", row.customer_id, row.id).with_detail("answer");
    audit::record(conn, caller, stamp, &[change]).await?;
    Ok(SurveyRow {
        score: form.score,
        comment: form.comment.clone(),
        answer_time: Some(answer_time),
        update_time: stamp,
        version: row.version + 1,
        answer_request_id: form.request_id.clone(),
        ..row
    })
}

/// One survey as the satisfaction report reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct SurveyReportRow {
    /// Id.
    pub id: i64,
    /// Whether it is about a service ticket.
    pub ticket_id: Option<i64>,
    /// The communication's channel; 0 for a ticket.
    pub channel: i32,
    /// When the target happened.
    pub target_time: NaiveDateTime,
    /// When it was sent.
    pub sent_time: NaiveDateTime,
    /// 1..5, 0 while unanswered.
    pub score: i32,
}

/// The scope of a page of the satisfaction report.
#[derive(Debug, Clone)]
pub struct SurveyScope {
    /// Customers; empty for every customer.
    pub customer_ids: Vec<i64>,
    /// Channels of the surveyed communications; empty for every survey.
    pub channels: Vec<i32>,
    /// Inclusive start of the sent times.
    pub start: NaiveDateTime,
    /// Exclusive end of the sent times.
    pub end: NaiveDateTime,
}

/// One page of the surveys sent in `scope`, by `(sent_time, id)`, strictly after
/// `after`.
pub async fn report_page(
    db: &Db,
    scope: &SurveyScope,
    after: Option<(NaiveDateTime, i64)>,
    limit: i64,
) -> Result<Vec<SurveyReportRow>> {
    let page = report_page_query(scope, after, limit);
    with_conn!(db, |conn| Ok(conn.any().load(page).await?))
}

/// The statement of [`report_page`].
#[diesel::dsl::auto_type]
fn report_page_query(scope: &SurveyScope, after: Option<(NaiveDateTime, i64)>, limit: i64) -> _ {
    let customers: query::When<dsl::EqAny<surveys::customer_id, Vec<i64>>> = query::when(
        (!scope.customer_ids.is_empty())
            .then(|| surveys::customer_id.eq_any(scope.customer_ids.clone())),
    );
    let channels: query::When<dsl::EqAny<surveys::channel, Vec<i32>>> = query::when(
        (!scope.channels.is_empty()).then(|| surveys::channel.eq_any(scope.channels.clone())),
    );
    let page: query::When<query::NewerThan<surveys::sent_time, surveys::id>> =
        query::when(after.map(|a| query::newer_than(surveys::sent_time, surveys::id, a)));
    let start: NaiveDateTime = scope.start;
    let end: NaiveDateTime = scope.end;
    surveys::table
        .filter(surveys::sent_time.ge(start))
        .filter(surveys::sent_time.lt(end))
        .filter(customers)
        .filter(channels)
        .filter(page)
        .order((surveys::sent_time.asc(), surveys::id.asc()))
        .limit(limit)
        .select((
            surveys::id,
            surveys::ticket_id,
            surveys::channel,
            surveys::target_time,
            surveys::sent_time,
            surveys::score,
        ))
}

/// How many answers of one customer in a range gave one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Queryable)]
pub struct ScoreCountRow {
    /// The customer.
    pub customer_id: i64,
    /// The score, 1..5.
    pub score: i32,
    /// Answers with it.
    pub n: i64,
}

/// Answers per customer and score with `answer_time` in `[start, end)`: a range of the
/// covering `(answer_time, customer_id, score)` index, grouped.
pub async fn answers_per_customer(
    db: &Db,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<Vec<ScoreCountRow>> {
    let q = answers_query(start, end);
    with_conn!(db, |conn| Ok(conn.any().load(q).await?))
}

/// The statement of [`answers_per_customer`].
#[diesel::dsl::auto_type]
fn answers_query(start: NaiveDateTime, end: NaiveDateTime) -> _ {
    surveys::table
        .filter(surveys::answer_time.ge(start))
        .filter(surveys::answer_time.lt(end))
        .filter(surveys::score.gt(0_i32))
        .group_by((surveys::customer_id, surveys::score))
        .select((surveys::customer_id, surveys::score, dsl::count_star()))
}

#[cfg(test)]
mod tests {
    //! The satisfaction statements, pinned as insta snapshots per backend.
    use super::*;
    use crate::model::time::march_2024 as at;

    fn answered_row() -> SurveyRow {
        SurveyRow {
            id: 1,
            customer_id: 7,
            communication_id: Some(3),
            ticket_id: None,
            channel: 1,
            target_time: at(1),
            sent_time: at(2),
            score: 4,
            comment: "kind".into(),
            answer_time: Some(at(3)),
            create_time: at(2),
            update_time: at(3),
            version: 2,
            request_id: Some("send".into()),
            answer_request_id: Some("answer".into()),
        }
    }

    fn form(score: i32, comment: &str) -> SurveyForm {
        SurveyForm {
            target: Target::Communication(3),
            sent_time: at(5),
            sent_time_given: false,
            score,
            comment: comment.into(),
            answer_time: (score > 0).then(|| at(5)),
            answer_time_given: false,
            request_id: None,
        }
    }

    #[test]
    fn a_key_replays_its_own_request_and_a_sending_key_the_survey_as_it_is_now() {
        let row = answered_row();
        // The answer's key: the same answer only.
        assert!(form(4, "kind").replays(&row, "answer"));
        assert!(!form(5, "kind").replays(&row, "answer"));
        assert!(!form(4, "").replays(&row, "answer"));
        // The sending key, after the answer: the survey as it is now, but the same target.
        assert!(form(0, "").replays(&row, "send"));
        let other = SurveyForm {
            target: Target::Ticket(3),
            ..form(0, "")
        };
        assert!(!other.replays(&row, "send"), "another target");
        let moved = SurveyForm {
            sent_time_given: true,
            ..form(0, "")
        };
        assert!(!moved.replays(&row, "send"), "another sent time");
        // As created (version 1), the sending key compares the answer too.
        let fresh = SurveyRow {
            version: 1,
            answer_request_id: None,
            ..row
        };
        assert!(form(4, "kind").replays(&fresh, "send"));
        assert!(!form(0, "").replays(&fresh, "send"));
    }

    #[test]
    fn satisfaction_statements_snapshot_per_backend() {
        let scope = SurveyScope {
            customer_ids: vec![7, 9],
            channels: vec![1, 3],
            start: at(1),
            end: at(12),
        };
        let page = report_page_query(&scope, Some((at(2), 3)), 500);
        let answers = answers_query(at(1), at(12));
        insta::assert_snapshot!(
            "satisfaction_report_page_mysql",
            diesel::debug_query::<diesel::mysql::Mysql, _>(&page).to_string()
        );
        insta::assert_snapshot!(
            "satisfaction_report_page_sqlite",
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&page).to_string()
        );
        insta::assert_snapshot!(
            "satisfaction_answers_per_customer_mysql",
            diesel::debug_query::<diesel::mysql::Mysql, _>(&answers).to_string()
        );
        insta::assert_snapshot!(
            "satisfaction_answers_per_customer_sqlite",
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&answers).to_string()
        );
    }
}
