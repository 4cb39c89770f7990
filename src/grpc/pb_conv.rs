//! The proto form of the stored rows that several services return: customers,
//! transactions, service tickets and communications (timelines and reports reuse them).

use chrono::NaiveDate;

use crate::analytics::sentiment::{Label, Tally};

use crate::db::communications::CommunicationRow;
use crate::db::customers::Customer;
use crate::db::tickets::TicketRow;
use crate::db::transactions::TransactionRow;
use crate::grpc::convert::{duration_from_micros, to_timestamp};
use crate::grpc::validate;
use crate::model::time::now;
use crate::pb::{self, communication::Details};

fn today() -> NaiveDate {
    now().date()
}

/// The proto form of a stored customer.
pub fn customer_to_pb(c: Customer) -> pb::Customer {
    let today = today();
    pb::Customer {
        id: c.row.id,
        age: c.row.birth_date.map(|b| validate::age(b, today)),
        birth_date: c
            .row
            .birth_date
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default(),
        name: c.row.name,
        gender: c.row.gender,
        address: c.row.address,
        phone: c.row.phone,
        email: c.row.email,
        tags: c.tags,
        create_time: Some(to_timestamp(c.row.create_time)),
        update_time: Some(to_timestamp(c.row.update_time)),
        etag: c.row.version.to_string(),
    }
}

/// The proto form of a stored transaction.
pub fn transaction_to_pb(r: TransactionRow) -> pb::Transaction {
    pb::Transaction {
        id: r.id,
        customer_id: r.customer_id,
        order_number: r.order_number,
        product: r.product,
        amount: Some(pb::Money {
            currency_code: r.currency_code,
            units: r.amount_units,
            nanos: r.amount_nanos,
        }),
        occur_time: Some(to_timestamp(r.occur_time)),
        create_time: Some(to_timestamp(r.create_time)),
    }
}

/// The proto form of a stored service ticket.
pub fn ticket_to_pb(r: TicketRow) -> pb::ServiceTicket {
    pb::ServiceTicket {
        id: r.id,
        customer_id: r.customer_id,
        issue: r.issue,
        solution: r.solution,
        status: r.status,
        open_time: Some(to_timestamp(r.open_time)),
        resolve_time: r.resolve_time.map(to_timestamp),
        update_time: Some(to_timestamp(r.update_time)),
        etag: r.version.to_string(),
    }
}

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
        sentiment_score: r.sentiment.map(i32::from),
        sentiment: r
            .sentiment
            .map_or(pb::Sentiment::Unspecified, sentiment_to_pb) as i32,
    }
}

/// The proto form of sentiment figures.
pub fn sentiment_counts(t: &Tally) -> pb::SentimentCounts {
    pb::SentimentCounts {
        negative_count: t.negative,
        neutral_count: t.neutral(),
        positive_count: t.positive,
        mean_score: t.mean(),
    }
}

/// The proto class of a sentiment score.
pub fn sentiment_to_pb(score: i16) -> pb::Sentiment {
    match Label::of(score) {
        Label::Negative => pb::Sentiment::Negative,
        Label::Neutral => pb::Sentiment::Neutral,
        Label::Positive => pb::Sentiment::Positive,
    }
}
