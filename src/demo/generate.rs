//! The pure demo-data generator: from a [`DemoSpec`] it plans every customer, order
//! and service ticket, the time and customer of every communication, and writes each
//! communication's text, as the storage layer's insert forms. No I/O.
//!
//! Shape of the data:
//! - **Skew**: customers get Zipf-like activity weights `1 / (rank + 3)` over a random
//!   ranking, so a few are very active and most are quiet; orders and tickets follow
//!   the square root of that weight.
//! - **Rhythm**: each customer's events fall by the hour of their own zone (business
//!   hours for contacts, evenings for orders), weekdays more than weekends, fewer on
//!   public holidays (Spring Festival, National Day; Christmas) and more on shopping
//!   festivals (11.11, 6.18; Black Friday), with slow growth over the range.
//! - **Determinism**: everything is drawn from [`Rng`] streams derived from the seed,
//!   each communication from its own, so the same seed, end and sizes give the same
//!   rows in the same order.

use std::borrow::Cow;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use chrono_tz::Tz;

use super::people::{person, Person, Region};
use super::rng::{Cumulative, Rng};
use super::texts::{self, frames, Lang, PRODUCTS, TOPICS};
use super::DemoSpec;
use crm_comms::db::communications::CommunicationInsertForm;
use crm_comms::db::customers::CustomerInsertForm;
use crm_comms::db::tickets::{status, TicketInsertForm};
use crm_comms::db::transactions::TransactionInsertForm;

/// `Channel` values, as stored.
pub mod channel {
    /// A phone call.
    pub const PHONE: i32 = 1;
    /// An email.
    pub const EMAIL: i32 = 2;
    /// A chat.
    pub const CHAT: i32 = 3;
    /// A meeting.
    pub const MEETING: i32 = 4;
    /// A note by staff.
    pub const NOTE: i32 = 5;
    /// Every channel.
    pub const ALL: [i32; 5] = [PHONE, EMAIL, CHAT, MEETING, NOTE];
}

/// `Direction` values, as stored.
pub mod direction {
    /// The customer contacted us.
    pub const INBOUND: i32 = 1;
    /// We contacted the customer.
    pub const OUTBOUND: i32 = 2;
}

/// Bits of a communication key that hold the customer's index (the rest hold the
/// second of the range), so keys sort by time.
const CUSTOMER_BITS: u32 = 20;
/// Most customers a plan can index in a key.
pub const KEY_CUSTOMERS: u64 = 1 << CUSTOMER_BITS;

/// Purposes of the derived random streams.
mod stream {
    pub const CUSTOMERS: u64 = 1;
    pub const RANKING: u64 = 2;
    pub const ORDERS: u64 = 3;
    pub const TICKETS: u64 = 4;
    pub const KEYS: u64 = 5;
    pub const COMMUNICATIONS: u64 = 6;
}

/// Relative contact rate by local hour: office hours with a lunch dip.
const BUSINESS_HOURS: [f64; 24] = [
    0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.05, 0.15, 0.45, 0.85, 1.0, 0.95, 0.6, 0.75, 0.95, 1.0,
    0.9, 0.7, 0.45, 0.35, 0.3, 0.22, 0.12, 0.05,
];
/// Relative contact rate by weekday, Monday first.
const BUSINESS_DAYS: [f64; 7] = [1.0, 0.97, 0.95, 0.93, 0.88, 0.38, 0.25];
/// Relative order rate by local hour: evenings, after work.
const SHOPPING_HOURS: [f64; 24] = [
    0.15, 0.08, 0.04, 0.02, 0.02, 0.02, 0.04, 0.1, 0.2, 0.3, 0.4, 0.45, 0.55, 0.45, 0.4, 0.4, 0.4,
    0.45, 0.55, 0.7, 0.9, 1.0, 0.85, 0.45,
];
/// Relative order rate by weekday, Monday first.
const SHOPPING_DAYS: [f64; 7] = [0.9, 0.85, 0.85, 0.9, 1.0, 1.1, 1.05];

/// Chinese New Year's Day, 2020 to 2035 (the week after it is Spring Festival).
const LUNAR_NEW_YEAR: [(i32, u32, u32); 16] = [
    (2020, 1, 25),
    (2021, 2, 12),
    (2022, 2, 1),
    (2023, 1, 22),
    (2024, 2, 10),
    (2025, 1, 29),
    (2026, 2, 17),
    (2027, 2, 6),
    (2028, 1, 26),
    (2029, 2, 13),
    (2030, 2, 3),
    (2031, 1, 23),
    (2032, 2, 11),
    (2033, 1, 31),
    (2034, 2, 19),
    (2035, 2, 8),
];

/// How busy a local calendar day is, for contacts (`shopping` false) or orders.
fn day_factor(date: NaiveDate, in_china: bool, shopping: bool) -> f64 {
    let (m, d) = (date.month(), date.day());
    let spring_festival = LUNAR_NEW_YEAR.iter().any(|&(y, lm, ld)| {
        NaiveDate::from_ymd_opt(y, lm, ld).is_some_and(|ny| {
            let offset = (date - ny).num_days();
            (-1..=6).contains(&offset)
        })
    });
    if in_china {
        match (shopping, m, d) {
            (_, _, _) if spring_festival => 0.3,
            (false, 10, 1..=7) => 0.3,
            (true, 11, 11) => 4.0,
            (true, 11, 10 | 12) => 1.8,
            (true, 6, 18) => 2.5,
            _ => 1.0,
        }
    } else {
        match (shopping, m, d) {
            (_, 12, 24..=26) | (_, 1, 1) => 0.3,
            (true, 11, 24..=30) => 1.8,
            _ => 1.0,
        }
    }
}

/// When a zone's customers act: one weight per hour of the range, for contacts and
/// for orders.
#[derive(Debug, Clone)]
struct Rhythm {
    zone: Tz,
    business: Cumulative,
    shopping: Cumulative,
}

impl Rhythm {
    fn new(zone: Tz, in_china: bool, start: NaiveDateTime, hours: usize) -> Self {
        let mut business = Vec::with_capacity(hours);
        let mut shopping = Vec::with_capacity(hours);
        for h in 0..hours {
            // The local hour in the middle of the slot decides its weight.
            let mid = start + Duration::seconds(h as i64 * 3600 + 1800);
            let local = zone.from_utc_datetime(&mid);
            let (hour, weekday) = (
                local.hour() as usize,
                local.weekday().num_days_from_monday(),
            );
            let date = local.date_naive();
            // The business grows through the range.
            let trend = 0.85 + 0.3 * h as f64 / hours as f64;
            business.push(
                BUSINESS_HOURS[hour]
                    * BUSINESS_DAYS[weekday as usize]
                    * day_factor(date, in_china, false)
                    * trend,
            );
            shopping.push(
                SHOPPING_HOURS[hour]
                    * SHOPPING_DAYS[weekday as usize]
                    * day_factor(date, in_china, true)
                    * trend,
            );
        }
        Rhythm {
            zone,
            business: Cumulative::new(business),
            shopping: Cumulative::new(shopping),
        }
    }
}

/// One planned customer.
#[derive(Debug, Clone)]
pub struct PlannedCustomer {
    /// Region, salutation and the customer as stored (tags included).
    pub person: Person,
    /// When the customer was recorded (before the range).
    pub created: NaiveDateTime,
    /// Relative activity (Zipf-like; the most active is 1/4).
    pub weight: f64,
    /// Buys in bulk.
    pub wholesale: bool,
    /// Relative use of each channel, in [`channel::ALL`] order.
    channels: [f64; 5],
    /// Index of the customer's zone in the plan's rhythms.
    rhythm: usize,
}

/// Money in minor units (cents, fen) of a currency with two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    /// ISO 4217 code.
    pub currency: &'static str,
    /// Hundredths of a unit.
    pub minor: i64,
}

impl Amount {
    /// The amount as written for a customer: `¥1,299.00`, `$181.99`.
    pub fn display(&self) -> String {
        let symbol = match self.currency {
            "CNY" => "¥",
            "USD" => "$",
            "EUR" => "€",
            "GBP" => "£",
            other => other,
        };
        let units = (self.minor / 100).to_string();
        let mut grouped = String::with_capacity(units.len() + units.len() / 3);
        for (i, c) in units.chars().enumerate() {
            if i > 0 && (units.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{symbol}{grouped}.{:02}", self.minor % 100)
    }

    /// The list price of a catalog product for a customer of `region`: CNY prices as
    /// listed, other currencies converted and rounded to whole units less 0.01.
    fn list_price(product: usize, region: Region) -> Amount {
        let (currency, per_mille) = region.currency();
        let fen = PRODUCTS[product].price_fen;
        let minor = if per_mille == 1000 {
            fen
        } else {
            let units = (fen * per_mille + 50_000) / 100_000;
            (units * 100 - 1).max(99)
        };
        Amount { currency, minor }
    }
}

/// One planned order.
#[derive(Debug, Clone)]
pub struct PlannedOrder {
    /// Index of the customer.
    pub customer: usize,
    /// When it was placed.
    pub time: NaiveDateTime,
    /// The order number, unique: `SO-<local date>-<sequence>`.
    pub number: String,
    /// Index into [`PRODUCTS`].
    pub product: usize,
    /// Units bought.
    pub quantity: i64,
    /// What was paid.
    pub amount: Amount,
}

/// One planned service ticket.
#[derive(Debug, Clone)]
pub struct PlannedTicket {
    /// Index of the customer.
    pub customer: usize,
    /// The problem.
    pub issue: String,
    /// The solution; empty while open.
    pub solution: String,
    /// `TicketStatus` value.
    pub status: i32,
    /// When it was opened.
    pub open_time: NaiveDateTime,
    /// When it was resolved or closed.
    pub resolve_time: Option<NaiveDateTime>,
}

/// Everything the demo writes, but the communications' text (made one batch at a
/// time by [`Plan::communication`]).
#[derive(Debug, Clone)]
pub struct Plan {
    seed: u64,
    /// First instant of the range (`end - days`).
    pub start: NaiveDateTime,
    /// End of the range (exclusive).
    pub end: NaiveDateTime,
    /// Communications to write.
    pub communications: u64,
    /// The customers, in creation order.
    pub customers: Vec<PlannedCustomer>,
    /// The orders, oldest first.
    pub orders: Vec<PlannedOrder>,
    /// The tickets, oldest first.
    pub tickets: Vec<PlannedTicket>,
    /// Per customer, indices into `orders`, oldest first.
    orders_of: Vec<Vec<usize>>,
    activity: Cumulative,
    rhythms: Vec<Rhythm>,
}

/// A random second inside the sampled hour of `rhythm`, as an offset from `start`.
fn draw_second(rng: &mut Rng, hours: &Cumulative) -> i64 {
    hours.sample(rng) as i64 * 3600 + rng.below(3600) as i64
}

impl Plan {
    /// Plans customers, orders and tickets for `spec`; communications are drawn by
    /// [`Plan::communication_keys`]. `spec` must be valid ([`DemoSpec::check`]).
    pub fn new(spec: &DemoSpec) -> Plan {
        let start = spec.end - Duration::days(i64::from(spec.days));
        let hours = spec.days as usize * 24;
        let n = spec.customers as usize;

        // Activity: Zipf-like weights over a random ranking.
        let mut ranks: Vec<usize> = (0..n).collect();
        Rng::derive(spec.seed, stream::RANKING, 0).shuffle(&mut ranks);
        let mut rhythms: Vec<Rhythm> = Vec::new();
        let mut customers = Vec::with_capacity(n);
        for (i, &rank) in ranks.iter().enumerate() {
            let mut rng = Rng::derive(spec.seed, stream::CUSTOMERS, i as u64);
            let mut person = person(&mut rng);
            let zone = person.region.zone();
            let rhythm = match rhythms.iter().position(|r| r.zone == zone) {
                Some(r) => r,
                None => {
                    rhythms.push(Rhythm::new(zone, person.region.in_china(), start, hours));
                    rhythms.len() - 1
                }
            };
            let weight = 1.0 / (rank as f64 + 4.0);
            let wholesale = rng.chance(0.06);
            let base = match person.region.lang() {
                Lang::Zh => [0.28, 0.08, 0.42, 0.05, 0.17],
                Lang::En => [0.20, 0.34, 0.22, 0.07, 0.17],
            };
            let mut channels = base.map(|w| w * (0.5 + rng.unit()));
            if person.customer.email.is_empty() {
                channels[1] = 0.0;
            }
            if wholesale {
                channels[3] *= 2.0;
            }
            let tags = &mut person.customer.tags;
            if wholesale {
                tags.push("wholesale".to_owned());
            }
            if rank < n.div_ceil(20) || rng.chance(0.02) {
                tags.push("vip".to_owned());
            }
            if rng.chance(0.3) {
                tags.push("newsletter".to_owned());
            }
            if person.region == Region::China && rng.chance(0.15) {
                tags.push("老客户".to_owned());
            }
            if rank >= n / 2 && rng.chance(0.08) {
                tags.push("churn-risk".to_owned());
            }
            let created = start - Duration::seconds(rng.between(30 * 86_400, 1500 * 86_400) as i64);
            customers.push(PlannedCustomer {
                person,
                created,
                weight,
                wholesale,
                channels,
                rhythm,
            });
        }
        let activity = Cumulative::new(customers.iter().map(|c| c.weight));
        let max_weight = 0.25;
        let years = f64::from(spec.days) / 365.0;

        // Orders: more for active and wholesale customers, placed in the evenings.
        let wholesale_products: Vec<usize> = (0..PRODUCTS.len())
            .filter(|&p| p < texts::GOODS && PRODUCTS[p].wholesale)
            .collect();
        let mut orders = Vec::new();
        for (i, c) in customers.iter().enumerate() {
            let mut rng = Rng::derive(spec.seed, stream::ORDERS, i as u64);
            let scale = (c.weight / max_weight).sqrt();
            let mean = (1.0 + 9.0 * scale) * years * if c.wholesale { 1.5 } else { 1.0 };
            for _ in 0..rng.poisson(mean.min(200.0)) {
                let offset = draw_second(&mut rng, &rhythms[c.rhythm].shopping);
                let (product, quantity) = if c.wholesale && rng.chance(0.7) {
                    (*rng.pick(&wholesale_products), rng.between(10, 200) as i64)
                } else {
                    let q = [1, 1, 1, 1, 1, 1, 2, 2, 3];
                    (rng.below(texts::GOODS as u64) as usize, *rng.pick(&q))
                };
                let discount = *rng.pick(&[0, 0, 0, 0, 0, 5, 10, 15]);
                let unit = Amount::list_price(product, c.person.region);
                // Exact: hundredths, rounded half up once.
                let minor = (unit.minor * quantity * (100 - discount) + 50) / 100;
                orders.push(PlannedOrder {
                    customer: i,
                    time: start + Duration::seconds(offset),
                    number: String::new(),
                    product,
                    quantity,
                    amount: Amount {
                        currency: unit.currency,
                        minor,
                    },
                });
            }
        }
        orders.sort_by_key(|o| (o.time, o.customer));
        let mut orders_of = vec![Vec::new(); n];
        for (k, o) in orders.iter_mut().enumerate() {
            let zone = rhythms[customers[o.customer].rhythm].zone;
            let local = zone.from_utc_datetime(&o.time).format("%Y%m%d");
            o.number = format!("SO-{local}-{:06}", k + 1);
            orders_of[o.customer].push(k);
        }

        let mut plan = Plan {
            seed: spec.seed,
            start,
            end: spec.end,
            communications: spec.communications,
            customers,
            orders,
            tickets: Vec::new(),
            orders_of,
            activity,
            rhythms,
        };
        plan.tickets = plan.plan_tickets(years, max_weight);
        plan
    }

    /// Service tickets: opened in business hours; most older ones resolved or closed
    /// after an hour to two weeks, recent ones often still open.
    fn plan_tickets(&self, years: f64, max_weight: f64) -> Vec<PlannedTicket> {
        let mut tickets = Vec::new();
        for (i, c) in self.customers.iter().enumerate() {
            let mut rng = Rng::derive(self.seed, stream::TICKETS, i as u64);
            let mean = (0.25 + 2.0 * (c.weight / max_weight).sqrt()) * years;
            for _ in 0..rng.poisson(mean.min(100.0)) {
                let offset = draw_second(&mut rng, &self.rhythms[c.rhythm].business);
                let open_time = self.start + Duration::seconds(offset);
                let lang = c.person.region.lang();
                let order = self.order_before(i, open_time, &mut rng);
                // Kinds that name an order need one.
                let kinds: Vec<&texts::TicketKind> = texts::TICKET_KINDS
                    .iter()
                    .filter(|k| order.is_some() || !k.issue.get(lang).contains("{order}"))
                    .collect();
                let kind = *rng.pick(&kinds);
                let slots = self.slots(&mut rng, i, lang, order, None, open_time);
                let issue = texts::fill(kind.issue.get(lang), |k| slots.value(k));
                let took = Duration::seconds(rng.log_uniform(1800.0, 14.0 * 86_400.0) as i64);
                let resolved = open_time + took;
                let (status, solution, resolve_time) = if resolved >= self.end || rng.chance(0.03) {
                    (status::OPEN, String::new(), None)
                } else {
                    let status = if rng.chance(0.6) {
                        status::CLOSED
                    } else {
                        status::RESOLVED
                    };
                    let solution = kind.solutions.pick(lang, &mut rng).to_owned();
                    (status, solution, Some(resolved))
                };
                tickets.push(PlannedTicket {
                    customer: i,
                    issue,
                    solution,
                    status,
                    open_time,
                    resolve_time,
                });
            }
        }
        tickets.sort_by_key(|t| (t.open_time, t.customer));
        tickets
    }

    /// The customer's order placed at or before `time` that a conversation is about:
    /// mostly the latest, sometimes an earlier one; `None` before their first order.
    fn order_before(&self, customer: usize, time: NaiveDateTime, rng: &mut Rng) -> Option<usize> {
        let of = &self.orders_of[customer];
        let placed = of.partition_point(|&k| self.orders[k].time <= time);
        if placed == 0 {
            return None;
        }
        let back = if rng.chance(0.75) {
            0
        } else {
            rng.below(placed.min(3) as u64) as usize
        };
        Some(of[placed - 1 - back])
    }

    /// Draws the time (a second of the range) and customer of every communication:
    /// customers by activity, times by their zone's business rhythm. Sorted, so ids
    /// follow time as in a live system. Each key is `second << 20 | customer`.
    pub fn communication_keys(&self) -> Vec<u64> {
        let mut rng = Rng::derive(self.seed, stream::KEYS, 0);
        let mut keys: Vec<u64> = (0..self.communications)
            .map(|_| {
                let c = self.activity.sample(&mut rng);
                let rhythm = &self.rhythms[self.customers[c].rhythm];
                let second = draw_second(&mut rng, &rhythm.business) as u64;
                second << CUSTOMER_BITS | c as u64
            })
            .collect();
        keys.sort_unstable();
        keys
    }

    /// The customer index and time of a communication key.
    pub fn decode_key(&self, key: u64) -> (usize, NaiveDateTime) {
        let customer = (key & (KEY_CUSTOMERS - 1)) as usize;
        let second = (key >> CUSTOMER_BITS) as i64;
        (customer, self.start + Duration::seconds(second))
    }

    /// The customer to store for planned customer `i`.
    pub fn customer_form(&self, i: usize) -> CustomerInsertForm {
        self.customers[i].person.customer.clone()
    }

    /// The transaction to store for planned order `k`; `ids` are the stored
    /// customers' ids by plan index.
    pub fn transaction_form(&self, k: usize, ids: &[i64]) -> TransactionInsertForm {
        let o = &self.orders[k];
        let c = &self.customers[o.customer];
        let lang = c.person.region.lang();
        let name = PRODUCTS[o.product].name.get(lang);
        let product = match (o.quantity, lang) {
            (1, _) => name.to_owned(),
            (q, Lang::Zh) => format!("{name}×{q}"),
            (q, Lang::En) => format!("{name} x{q}"),
        };
        TransactionInsertForm {
            customer_id: ids[o.customer],
            order_number: o.number.clone(),
            product,
            currency_code: o.amount.currency.to_owned(),
            amount_units: o.amount.minor / 100,
            amount_nanos: (o.amount.minor % 100) as i32 * 10_000_000,
            occur_time: o.time,
            // Recorded by the shop system a moment after checkout.
            create_time: o.time + Duration::seconds(2),
            request_id: None,
            occur_time_given: true,
        }
    }

    /// The ticket to store for planned ticket `k`.
    pub fn ticket_form(&self, k: usize, ids: &[i64]) -> TicketInsertForm {
        let t = &self.tickets[k];
        TicketInsertForm {
            customer_id: ids[t.customer],
            issue: t.issue.clone(),
            solution: t.solution.clone(),
            status: t.status,
            open_time: t.open_time,
            resolve_time: t.resolve_time,
            create_time: t.open_time,
            update_time: t.resolve_time.unwrap_or(t.open_time),
            version: 1,
            request_id: None,
            open_time_given: true,
        }
    }

    /// Communication number `index` (its position in the sorted keys), at `key`.
    /// The text depends only on the seed, the index and the key.
    pub fn communication(&self, index: u64, key: u64, ids: &[i64]) -> CommunicationInsertForm {
        let (c, occur_time) = self.decode_key(key);
        let customer = &self.customers[c];
        let person = &customer.person;
        let mut rng = Rng::derive(self.seed, stream::COMMUNICATIONS, index);
        let channel = channel::ALL[rng.weighted(&customer.channels)];
        let direction = match channel {
            channel::NOTE => direction::OUTBOUND,
            channel::PHONE => pick_direction(&mut rng, 0.55),
            channel::CHAT => pick_direction(&mut rng, 0.7),
            channel::MEETING => pick_direction(&mut rng, 0.4),
            _ => pick_direction(&mut rng, 0.5),
        };
        // Customers write in their language; staff notes are often in Chinese.
        let lang = match (person.region.lang(), channel) {
            (Lang::En, channel::NOTE) if rng.chance(0.4) => Lang::Zh,
            (Lang::Zh, _) if rng.chance(0.05) => Lang::En,
            (lang, _) => lang,
        };
        let order = self.order_before(c, occur_time, &mut rng);
        let topic = self.topic(&mut rng, customer.wholesale, order.is_some());
        // A renewal is about the membership, whatever was ordered before.
        let (order, product) = match topic.key {
            "renewal" => (None, Some(texts::MEMBERSHIP)),
            _ => (order, None),
        };
        let slots = self.slots(&mut rng, c, lang, order, product, occur_time);
        let value = |k: &str| slots.value(k);
        let body = texts::fill(topic.body.pick(lang, &mut rng), value);
        let inbound = direction == direction::INBOUND;
        let frame = match channel {
            channel::PHONE if inbound => frames::PHONE_IN,
            channel::PHONE => frames::PHONE_OUT,
            channel::EMAIL if inbound => frames::EMAIL_IN,
            channel::EMAIL => frames::EMAIL_OUT,
            channel::CHAT if inbound => frames::CHAT_IN,
            channel::CHAT => frames::CHAT_OUT,
            channel::MEETING => frames::MEETING,
            _ => frames::NOTE,
        };
        let no_answer = channel == channel::PHONE && !inbound && rng.chance(0.15);
        let (frame, outcome) = if no_answer {
            let outcome = if lang == Lang::Zh {
                "未接通"
            } else {
                "no answer"
            };
            (frames::NO_ANSWER, outcome.to_owned())
        } else if channel == channel::NOTE && rng.chance(0.7) {
            (frame, String::new())
        } else {
            (
                frame,
                texts::fill(topic.outcome.pick(lang, &mut rng), value),
            )
        };
        let content = texts::fill(frame.pick(lang, &mut rng), |k| match k {
            "body" => Some(Cow::Borrowed(body.as_str())),
            _ => value(k),
        });
        let mut logged_after = rng.between(5, 600) as i64;
        // The details of the channel: (phone, email, chat), each a pair of columns.
        let (phone, email, chat) = match channel {
            channel::PHONE => {
                let seconds = if no_answer {
                    0
                } else {
                    rng.log_uniform(20.0, 1800.0) as i64
                };
                logged_after += seconds;
                (
                    Some((person.customer.phone.clone(), seconds * 1_000_000)),
                    None,
                    None,
                )
            }
            channel::EMAIL => {
                let subject = texts::fill(topic.subject.pick(lang, &mut rng), value);
                let reply = !inbound && rng.chance(0.3);
                let subject = match (reply, lang) {
                    (true, Lang::Zh) => format!("回复：{subject}"),
                    (true, Lang::En) => format!("Re: {subject}"),
                    (false, _) => subject,
                };
                (None, Some((person.customer.email.clone(), subject)), None)
            }
            channel::CHAT => {
                let platforms = person.region.chat_platforms();
                let weights: Vec<f64> = platforms.iter().map(|p| p.1).collect();
                let platform = platforms[rng.weighted(&weights)].0;
                let prefix = match platform {
                    "wechat" => "wx",
                    "whatsapp" => "wa",
                    _ => "web",
                };
                // One conversation per customer, platform and day.
                let day = (occur_time - self.start).num_days();
                let conversation = format!("{prefix}-{}-{day}", ids[c]);
                (None, None, Some((platform.to_owned(), conversation)))
            }
            _ => (None, None, None),
        };
        let (phone_number, call_duration_us) = phone.unzip();
        let (email_address, email_subject) = email.unzip();
        let (chat_platform, chat_conversation_id) = chat.unzip();
        let sentiment = Some(crm_comms::analytics::sentiment::score(&content));
        CommunicationInsertForm {
            customer_id: ids[c],
            channel,
            direction,
            occur_time,
            content,
            outcome,
            phone_number,
            call_duration_us,
            email_address,
            email_subject,
            chat_platform,
            chat_conversation_id,
            create_time: occur_time + Duration::seconds(logged_after),
            request_id: None,
            sentiment,
            occur_time_given: true,
        }
    }

    /// A topic for a customer: wholesale customers ask for quotes more; without an
    /// order so far, only topics that need none.
    fn topic(&self, rng: &mut Rng, wholesale: bool, has_order: bool) -> &'static texts::Topic {
        let weights: Vec<f64> = TOPICS
            .iter()
            .map(|t| match t.key {
                _ if t.needs_order && !has_order => 0.0,
                "quote" if wholesale => t.weight * 4.0,
                _ => t.weight,
            })
            .collect();
        &TOPICS[rng.weighted(&weights)]
    }

    /// The values of a text's placeholders: about `order` if given, else about
    /// `product` (at its list price), else about a random product.
    fn slots(
        &self,
        rng: &mut Rng,
        c: usize,
        lang: Lang,
        order: Option<usize>,
        product: Option<usize>,
        time: NaiveDateTime,
    ) -> Slots<'_> {
        let customer = &self.customers[c];
        let region = customer.person.region;
        let order = order.map(|k| &self.orders[k]);
        let product = match (order, product) {
            (Some(o), _) => o.product,
            (None, Some(p)) => p,
            (None, None) => rng.below(texts::GOODS as u64) as usize,
        };
        let amount = order.map_or_else(|| Amount::list_price(product, region), |o| o.amount);
        let zone = self.rhythms[customer.rhythm].zone;
        let date =
            zone.from_utc_datetime(&time).date_naive() + Duration::days(rng.between(1, 5) as i64);
        let tracking = if lang == Lang::Zh {
            format!("SF{}", rng.between(100_000_000_000, 999_999_999_999))
        } else {
            format!("1Z{:X}", rng.next_u64() >> 4)
        };
        Slots {
            lang,
            person: &customer.person,
            order: order.map(|o| o.number.as_str()),
            product: PRODUCTS[product].name.get(lang),
            amount: amount.display(),
            tracking,
            invoice: format!("INV-{}-{:05}", date.year(), rng.below(100_000)),
            company: texts::COMPANIES.pick(lang, rng),
            agent: texts::AGENTS.pick(lang, rng),
            days: rng.between(2, 30),
            qty: rng.between(2, 50) * 10,
            date,
        }
    }
}

/// Inbound with probability `inbound`.
fn pick_direction(rng: &mut Rng, inbound: f64) -> i32 {
    if rng.chance(inbound) {
        direction::INBOUND
    } else {
        direction::OUTBOUND
    }
}

/// The values one text's placeholders take.
struct Slots<'a> {
    lang: Lang,
    person: &'a Person,
    order: Option<&'a str>,
    product: &'static str,
    amount: String,
    tracking: String,
    invoice: String,
    company: &'static str,
    agent: &'static str,
    days: u64,
    qty: u64,
    date: NaiveDate,
}

impl Slots<'_> {
    fn value(&self, key: &str) -> Option<Cow<'_, str>> {
        Some(match key {
            "order" => Cow::Borrowed(self.order.unwrap_or("-")),
            "product" => Cow::Borrowed(self.product),
            "amount" => Cow::Borrowed(self.amount.as_str()),
            "tracking" => Cow::Borrowed(self.tracking.as_str()),
            "invoice" => Cow::Borrowed(self.invoice.as_str()),
            "company" => Cow::Borrowed(self.company),
            "agent" => Cow::Borrowed(self.agent),
            "name" => Cow::Borrowed(self.person.salutation.as_str()),
            "address" => Cow::Borrowed(self.person.customer.address.as_str()),
            "days" => Cow::Owned(self.days.to_string()),
            "qty" => Cow::Owned(self.qty.to_string()),
            "date" => Cow::Owned(match self.lang {
                Lang::Zh => format!("{}月{}日", self.date.month(), self.date.day()),
                Lang::En => self.date.format("%-d %B").to_string(),
            }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use chrono::Weekday;

    use super::*;

    fn spec(seed: u64, customers: u32, communications: u64) -> DemoSpec {
        DemoSpec {
            customers,
            communications,
            seed,
            end: NaiveDate::from_ymd_opt(2026, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default(),
            days: 365,
        }
    }

    /// Every communication of a plan, with ids 1000 + index.
    fn all(plan: &Plan) -> Vec<CommunicationInsertForm> {
        let ids: Vec<i64> = (0..plan.customers.len() as i64).map(|i| 1000 + i).collect();
        plan.communication_keys()
            .iter()
            .enumerate()
            .map(|(i, &k)| plan.communication(i as u64, k, &ids))
            .collect()
    }

    /// The local weekday and hour of a UTC time in `zone`.
    fn local_weekday_hour(zone: Tz, t: NaiveDateTime) -> (Weekday, u32) {
        let local = zone.from_utc_datetime(&t);
        (local.weekday(), local.hour())
    }

    fn has_cjk(s: &str) -> bool {
        s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
    }

    #[test]
    fn a_seed_always_gives_the_same_data_and_another_seed_other_data() {
        let a = Plan::new(&spec(7, 30, 2_000));
        let b = Plan::new(&spec(7, 30, 2_000));
        let c = Plan::new(&spec(8, 30, 2_000));
        let ids: Vec<i64> = (1000..1030).collect();
        let customers = |p: &Plan| -> Vec<String> {
            (0..p.customers.len())
                .map(|i| format!("{:?}", p.customer_form(i)))
                .collect()
        };
        let orders = |p: &Plan| -> Vec<String> {
            (0..p.orders.len())
                .map(|k| format!("{:?}", p.transaction_form(k, &ids)))
                .collect()
        };
        let tickets = |p: &Plan| -> Vec<String> {
            (0..p.tickets.len())
                .map(|k| format!("{:?}", p.ticket_form(k, &ids)))
                .collect()
        };
        assert_eq!(customers(&a), customers(&b));
        assert_eq!(orders(&a), orders(&b));
        assert_eq!(tickets(&a), tickets(&b));
        let texts = |p: &Plan| -> Vec<String> { all(p).iter().map(|r| format!("{r:?}")).collect() };
        assert_eq!(texts(&a), texts(&b));
        assert_ne!(customers(&a), customers(&c));
        assert_ne!(texts(&a), texts(&c));
        // A communication's text depends on its index and key only: the first rows
        // of a longer run are those of a shorter one with the same keys.
        let keys = a.communication_keys();
        let again = a.communication(17, keys[17], &ids);
        assert_eq!(format!("{again:?}"), texts(&a)[17]);
    }

    #[test]
    fn the_generated_stream_is_pinned() {
        // Changing the generator changes every seeded demo database: do it on purpose.
        let plan = Plan::new(&spec(42, 5, 3));
        let names: Vec<&str> = plan
            .customers
            .iter()
            .map(|c| c.person.customer.name.as_str())
            .collect();
        let first = plan.communication(0, plan.communication_keys()[0], &[1, 2, 3, 4, 5]);
        let pinned = format!("{names:?} {} {:?}", first.occur_time, first.content);
        assert_eq!(
            pinned,
            "[\"Grace Edwards\", \"张芳\", \"杨佳怡\", \"郭浩然\", \"高丽\"] 2025-05-27 06:28:35 \
             \"客户询问优惠券为什么不能叠加使用。\""
        );
    }

    #[test]
    fn activity_is_skewed_a_few_busy_customers_and_a_long_quiet_tail() {
        let plan = Plan::new(&spec(42, 200, 20_000));
        let mut counts: HashMap<usize, u64> = HashMap::new();
        for key in plan.communication_keys() {
            *counts.entry(plan.decode_key(key).0).or_default() += 1;
        }
        let mut sorted: Vec<u64> = (0..200)
            .map(|c| counts.get(&c).copied().unwrap_or(0))
            .collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = sorted.iter().sum();
        let top_tenth: u64 = sorted[..20].iter().sum();
        let bottom_half: u64 = sorted[100..].iter().sum();
        assert_eq!(total, 20_000);
        assert!(
            top_tenth * 100 > total * 35,
            "top 10% hold {top_tenth} of {total}"
        );
        assert!(
            bottom_half * 100 < total * 25,
            "bottom half hold {bottom_half} of {total}"
        );
        assert!(sorted[0] > 10 * sorted[100], "{sorted:?}");
        // Orders and tickets follow activity, more gently.
        let per_customer = |c: usize| plan.orders.iter().filter(|o| o.customer == c).count();
        let busiest = (0..200)
            .max_by_key(|c| counts.get(c).copied().unwrap_or(0))
            .unwrap_or(0);
        assert!(per_customer(busiest) >= 3, "{}", per_customer(busiest));
        assert!(plan.orders.len() >= 200, "{}", plan.orders.len());
        assert!(!plan.tickets.is_empty());
    }

    #[test]
    fn contacts_follow_office_hours_and_weekdays_in_the_customers_zone() {
        let plan = Plan::new(&spec(42, 300, 30_000));
        let mut by_weekday = [0u64; 7];
        let mut by_hour = [0u64; 24];
        let mut shanghai = 0u64;
        for key in plan.communication_keys() {
            let (c, t) = plan.decode_key(key);
            assert!(t >= plan.start && t < plan.end, "{t}");
            let zone = plan.customers[c].person.region.zone();
            if zone == Tz::Asia__Shanghai {
                shanghai += 1;
            }
            let (day, hour) = local_weekday_hour(zone, t);
            by_weekday[day.num_days_from_monday() as usize] += 1;
            by_hour[hour as usize] += 1;
        }
        // 52 of each weekday in a year (53 of one).
        let weekday = by_weekday[..5].iter().sum::<u64>() as f64 / 5.0;
        let weekend = by_weekday[5..].iter().sum::<u64>() as f64 / 2.0;
        assert!(weekday > 2.0 * weekend, "{by_weekday:?}");
        let office: u64 = by_hour[9..18].iter().sum();
        let night: u64 = by_hour[1..6].iter().sum();
        assert!(office * 100 > 30_000 * 65, "{by_hour:?}");
        assert!(night * 100 < 30_000 * 2, "{by_hour:?}");
        assert!(by_hour[10] > by_hour[12], "lunch dip: {by_hour:?}");
        assert!(
            shanghai * 2 > 30_000,
            "most customers are in Shanghai: {shanghai}"
        );
    }

    #[test]
    fn every_channel_and_both_languages_and_the_searched_words_are_present() {
        let plan = Plan::new(&spec(42, 200, 20_000));
        let rows = all(&plan);
        let channels: HashSet<i32> = rows.iter().map(|r| r.channel).collect();
        assert_eq!(channels, channel::ALL.into_iter().collect());
        let directions: HashSet<i32> = rows.iter().map(|r| r.direction).collect();
        assert_eq!(directions.len(), 2);
        let chinese = rows.iter().filter(|r| has_cjk(&r.content)).count();
        let english = rows.iter().filter(|r| !has_cjk(&r.content)).count();
        assert!(chinese > 5_000 && english > 3_000, "{chinese} / {english}");
        for word in ["refund", "退款", "invoice", "发票", "complaint", "投诉"] {
            let n = rows
                .iter()
                .filter(|r| r.content.to_lowercase().contains(word))
                .count();
            assert!(n > 100, "{word}: {n}");
        }
        let platforms: HashSet<&str> = rows
            .iter()
            .filter_map(|r| r.chat_platform.as_deref())
            .collect();
        assert_eq!(
            platforms,
            ["wechat", "web", "whatsapp"].into_iter().collect()
        );
        let chinese_names = plan
            .customers
            .iter()
            .filter(|c| has_cjk(&c.person.customer.name))
            .count();
        assert!((90..150).contains(&chinese_names), "{chinese_names} of 200");
    }

    #[test]
    fn rows_are_what_the_api_would_accept() {
        let plan = Plan::new(&spec(9, 100, 5_000));
        for r in all(&plan) {
            assert!(
                !r.content.contains('{') && !r.content.contains('}'),
                "{}",
                r.content
            );
            assert!(!r.content.is_empty() && r.content.len() < 64 * 1024);
            assert!(r.outcome.chars().count() <= 200 && !r.outcome.contains('{'));
            assert!(r.occur_time >= plan.start && r.occur_time < plan.end);
            assert!(r.create_time >= r.occur_time);
            let details = [
                r.phone_number.is_some(),
                r.email_address.is_some(),
                r.chat_platform.is_some(),
            ];
            match r.channel {
                channel::PHONE => {
                    assert_eq!(details, [true, false, false]);
                    let us = r.call_duration_us.unwrap_or(-1);
                    assert!((0..=86_400_000_000).contains(&us));
                }
                channel::EMAIL => {
                    assert_eq!(details, [false, true, false]);
                    assert!(r.email_address.as_deref().is_some_and(|a| a.contains('@')));
                    let subject = r.email_subject.as_deref().unwrap_or("{");
                    assert!(
                        !subject.is_empty()
                            && !subject.contains('{')
                            && subject.chars().count() <= 500
                    );
                }
                channel::CHAT => assert_eq!(details, [false, false, true]),
                _ => assert_eq!(details, [false, false, false]),
            }
            if r.channel == channel::NOTE {
                assert_eq!(r.direction, direction::OUTBOUND);
            }
        }
        let ids: Vec<i64> = (1..=100).collect();
        for k in 0..plan.orders.len() {
            let t = plan.transaction_form(k, &ids);
            assert!(t.amount_units > 0 && t.amount_nanos % 10_000_000 == 0);
            assert!(["CNY", "USD", "EUR", "GBP"].contains(&t.currency_code.as_str()));
            assert!(t.occur_time >= plan.start && t.occur_time < plan.end);
            assert!(!t.product.is_empty() && t.order_number.starts_with("SO-"));
        }
        let numbers: HashSet<&str> = plan.orders.iter().map(|o| o.number.as_str()).collect();
        assert_eq!(numbers.len(), plan.orders.len(), "order numbers are unique");
        let cny = plan
            .orders
            .iter()
            .filter(|o| o.amount.currency == "CNY")
            .count();
        assert!(cny * 2 > plan.orders.len(), "mostly CNY");
        let mut statuses = HashSet::new();
        for k in 0..plan.tickets.len() {
            let t = plan.ticket_form(k, &ids);
            statuses.insert(t.status);
            assert!(!t.issue.is_empty() && !t.issue.contains('{'), "{}", t.issue);
            match t.resolve_time {
                None => assert!(t.status == status::OPEN && t.solution.is_empty()),
                Some(r) => {
                    assert!(t.status != status::OPEN && !t.solution.is_empty());
                    assert!(r > t.open_time && r < plan.end);
                }
            }
        }
        assert_eq!(statuses.len(), 3, "open, resolved and closed tickets");
    }

    #[test]
    fn amounts_are_exact_and_displayed_with_their_symbol() {
        let a = Amount {
            currency: "CNY",
            minor: 129_900,
        };
        assert_eq!(a.display(), "¥1,299.00");
        let b = Amount {
            currency: "USD",
            minor: 1_234_567_899,
        };
        assert_eq!(b.display(), "$12,345,678.99");
        assert_eq!(
            Amount {
                currency: "EUR",
                minor: 5
            }
            .display(),
            "€0.05"
        );
        // 1,299.00 CNY at 140 USD per 1,000 CNY: 181.86, listed at 181.99.
        assert_eq!(Amount::list_price(0, Region::UsEast).minor, 18_199);
        assert_eq!(Amount::list_price(0, Region::China).minor, 129_900);
    }
}
