//! `crm.v1.CustomerService`: customers, their transactions and service tickets.

use chrono::{NaiveDate, NaiveDateTime};
use tonic::{Request, Response, Status};

use super::{caller, positive_id, read_page, AppState};
use crate::db::customers::{self, CustomerFilter, CustomerInsertForm, CustomerUpdateForm};
use crate::db::merges::{self, DuplicateGroup, DuplicateKey, MergeForm};
use crate::db::secrets;
use crate::db::tickets::{self, status, TicketFilter, TicketInsertForm, TicketUpdateForm};
use crate::db::transactions::{self, TransactionFilter, TransactionInsertForm};
use crate::error::{Error, Violations};
use crate::grpc::convert::to_timestamp;
use crate::grpc::paging;
use crate::grpc::pb_conv::{customer_to_pb, ticket_to_pb, transaction_to_pb};
use crate::grpc::validate;
use crate::model::caller::Role;
use crate::model::phone::PhoneRegion;
use crate::model::time::now;
use crate::pb::{self, customer_service_server::CustomerService};

/// Implementation of `crm.v1.CustomerService`.
#[derive(Debug, Clone)]
pub struct CustomerApi {
    state: AppState,
}

impl CustomerApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn today() -> NaiveDate {
    now().date()
}

/// Parses an etag: empty means "no check"; anything not issued by us is a violation.
pub(crate) fn etag(v: &mut Violations, field: &str, etag: &str) -> Option<i64> {
    if etag.is_empty() {
        return None;
    }
    match etag.parse::<i64>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            v.add(field, "is not an etag issued by this service");
            None
        }
    }
}

fn insert_form(
    req: pb::CreateCustomerRequest,
    region: PhoneRegion,
) -> Result<CustomerInsertForm, Error> {
    let mut v = Violations::new();
    let request_id = validate::request_id(&mut v, "request_id", &req.request_id);
    let Some(c) = req.customer else {
        v.add("customer", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    validate::known_enum::<pb::Gender>(&mut v, "customer.gender", c.gender, false);
    let form = CustomerInsertForm {
        name: validate::required_text(&mut v, "customer.name", &c.name, 200),
        gender: c.gender,
        birth_date: validate::birth_date(&mut v, "customer.birth_date", &c.birth_date, today()),
        address: validate::optional_text(&mut v, "customer.address", &c.address, 500),
        phone: validate::phone(&mut v, "customer.phone", &c.phone, region),
        email: validate::email(&mut v, "customer.email", &c.email, false),
        tags: validate::tags(&mut v, "customer.tags", &c.tags),
        request_id,
    };
    v.finish(form)
}

const UPDATABLE: [&str; 7] = [
    "name",
    "gender",
    "birth_date",
    "address",
    "phone",
    "email",
    "tags",
];

fn update_form(
    req: &pb::UpdateCustomerRequest,
    region: PhoneRegion,
) -> Result<(i64, Option<i64>, CustomerUpdateForm), Error> {
    let mut v = Violations::new();
    let Some(c) = &req.customer else {
        v.add("customer", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    let id = positive_id(&mut v, "customer.id", c.id);
    let expected = etag(&mut v, "customer.etag", &c.etag);
    let paths = mask_paths(&mut v, req.update_mask.as_ref(), &UPDATABLE);
    let mut form = CustomerUpdateForm::default();
    for path in paths {
        let field = format!("customer.{path}");
        match path.as_str() {
            "name" => form.name = Some(validate::required_text(&mut v, &field, &c.name, 200)),
            "gender" => {
                validate::known_enum::<pb::Gender>(&mut v, &field, c.gender, false);
                form.gender = Some(c.gender);
            }
            "birth_date" => {
                form.birth_date = Some(validate::birth_date(&mut v, &field, &c.birth_date, today()))
            }
            "address" => {
                form.address = Some(validate::optional_text(&mut v, &field, &c.address, 500))
            }
            "phone" => form.phone = Some(validate::phone(&mut v, &field, &c.phone, region)),
            "email" => form.email = Some(validate::email(&mut v, &field, &c.email, false)),
            "tags" => form.tags = Some(validate::tags(&mut v, &field, &c.tags)),
            _ => {}
        }
    }
    v.finish((id, expected, form))
}

/// Most paths in one `update_mask`, checked before any path is looked at.
const MAX_MASK_PATHS: usize = 32;

/// The paths of a required field mask, each one of `allowed`; `*` means all of them.
pub(crate) fn mask_paths(
    v: &mut Violations,
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&str],
) -> Vec<String> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        v.add(
            "update_mask",
            "is required: name the fields to change, or \"*\"",
        );
        return Vec::new();
    }
    if paths.len() > MAX_MASK_PATHS {
        v.add(
            "update_mask",
            format!("at most {MAX_MASK_PATHS} paths (got {})", paths.len()),
        );
        return Vec::new();
    }
    if paths.iter().any(|p| p == "*") {
        return allowed.iter().map(|s| (*s).to_owned()).collect();
    }
    let mut out = Vec::new();
    for p in paths {
        if allowed.contains(&p.as_str()) {
            if !out.contains(p) {
                out.push(p.clone());
            }
        } else {
            v.add(
                "update_mask",
                format!(
                    "{} cannot be updated; updatable: {}",
                    crate::error::quote(p),
                    allowed.join(", ")
                ),
            );
        }
    }
    out
}

#[tonic::async_trait]
impl CustomerService for CustomerApi {
    async fn create_customer(
        &self,
        request: Request<pb::CreateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let caller = caller(&request);
        let form = insert_form(request.into_inner(), self.state.phone_region)?;
        let customer = customers::create(&self.state.db, &form, now(), &caller).await?;
        Ok(Response::new(customer_to_pb(customer)))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", request.get_ref().id);
        v.finish(())?;
        let customer = customers::get(&self.state.db.reader(), id).await?;
        Ok(Response::new(customer_to_pb(customer)))
    }

    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let (id, expected, form) = update_form(request.get_ref(), self.state.phone_region)?;
        let customer = customers::update(
            &self.state.db,
            id,
            expected,
            &form,
            now(),
            &caller(&request),
        )
        .await?;
        Ok(Response::new(customer_to_pb(customer)))
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        // Refused before anything else is looked at: a writer learns nothing by trying.
        if req.purge {
            caller.require(Role::Admin, "DeleteCustomer with purge")?;
        }
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", req.id);
        let expected = etag(&mut v, "etag", &req.etag);
        v.finish(())?;
        customers::delete(&self.state.db, id, req.purge, expected, now(), &caller).await?;
        Ok(Response::new(()))
    }

    async fn list_customers(
        &self,
        request: Request<pb::ListCustomersRequest>,
    ) -> Result<Response<pb::ListCustomersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let query = validate::optional_text(&mut v, "query", &req.query, 200).to_lowercase();
        let tag = validate::optional_text(&mut v, "tag", &req.tag, 50);
        let filter = CustomerFilter {
            query: (!query.is_empty()).then_some(query),
            tag: (!tag.is_empty()).then_some(tag),
        };
        let fp = paging::Fingerprint::new("customers")
            .field("query", &filter.query)
            .field("tag", &filter.tag)
            .finish();
        let after = paging::after_id(&mut v, "customers", fp, &req.page_token).unwrap_or(0);
        v.finish(())?;
        // One extra row tells whether another page exists.
        let mut page = customers::list(&self.state.db.reader(), &filter, after, limit + 1).await?;
        let next_page_token =
            paging::next_id_token(&mut page, limit, "customers", fp, |c| c.row.id);
        Ok(Response::new(pb::ListCustomersResponse {
            customers: page.into_iter().map(customer_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_transaction(
        &self,
        request: Request<pb::CreateTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let caller = caller(&request);
        let form = transaction_form(request.into_inner())?;
        let row = transactions::create(&self.state.db, &form, &caller).await?;
        Ok(Response::new(transaction_to_pb(row)))
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = positive_id(&mut v, "customer_id", req.customer_id);
        let (start, end) = validate::time_range(
            &mut v,
            "start_time",
            req.start_time.as_ref(),
            "end_time",
            req.end_time.as_ref(),
        );
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let filter = TransactionFilter {
            customer_id,
            start,
            end,
        };
        let fp = paging::Fingerprint::new("transactions")
            .field("customer_id", &filter.customer_id)
            .field("start", &filter.start)
            .field("end", &filter.end)
            .finish();
        let after = decode_position(&mut v, "transactions", fp, &req.page_token);
        v.finish(())?;
        let mut page =
            transactions::list(&self.state.db.reader(), &filter, after, limit + 1).await?;
        let next_page_token = next_token(&mut page, limit, "transactions", fp, |r| {
            (r.occur_time, r.id)
        });
        Ok(Response::new(pb::ListTransactionsResponse {
            transactions: page.into_iter().map(transaction_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_service_ticket(
        &self,
        request: Request<pb::CreateServiceTicketRequest>,
    ) -> Result<Response<pb::ServiceTicket>, Status> {
        let caller = caller(&request);
        let form = ticket_form(request.into_inner())?;
        let row = tickets::create(&self.state.db, &form, &caller).await?;
        Ok(Response::new(ticket_to_pb(row)))
    }

    async fn update_service_ticket(
        &self,
        request: Request<pb::UpdateServiceTicketRequest>,
    ) -> Result<Response<pb::ServiceTicket>, Status> {
        let (id, expected, form) = ticket_update_form(request.get_ref())?;
        let row = tickets::update(
            &self.state.db,
            id,
            expected,
            &form,
            now(),
            &caller(&request),
        )
        .await?;
        Ok(Response::new(ticket_to_pb(row)))
    }

    async fn list_duplicate_customers(
        &self,
        request: Request<pb::ListDuplicateCustomersRequest>,
    ) -> Result<Response<pb::ListDuplicateCustomersResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let fp = paging::Fingerprint::new("duplicate_customers")
            .field("include_name_groups", &i64::from(req.include_name_groups))
            .finish();
        // The position is a phone, an email or a name: sealed, see `paging`.
        let key = secrets::page_token_key(&self.state.db).await?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            v.absorb(paging::decode_sealed::<(i32, String)>(
                "page_token",
                &key,
                "duplicate_customers",
                fp,
                &req.page_token,
            ))
            .and_then(|(rank, value)| match DuplicateKey::from_rank(rank) {
                Some(key) => Some((key, value)),
                None => {
                    v.add("page_token", "is not a token of this listing");
                    None
                }
            })
        };
        v.finish(())?;
        let (groups, next) = merges::duplicates(
            &self.state.db.reader(),
            after,
            limit,
            req.include_name_groups,
        )
        .await?;
        let next_page_token = match next {
            Some((k, value)) => {
                paging::encode_sealed(&key, "duplicate_customers", fp, &(k.rank(), value))?
            }
            None => String::new(),
        };
        Ok(Response::new(pb::ListDuplicateCustomersResponse {
            groups: groups.into_iter().map(duplicate_group_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn merge_customers(
        &self,
        request: Request<pb::MergeCustomersRequest>,
    ) -> Result<Response<pb::MergeCustomersResponse>, Status> {
        let caller = caller(&request);
        let form = merge_form(request.into_inner())?;
        let done = merges::merge(&self.state.db, &form, &caller).await?;
        Ok(Response::new(pb::MergeCustomersResponse {
            customer: Some(customer_to_pb(done.customer)),
            merged_customer_ids: done.merged,
            communication_count: done.communications,
            transaction_count: done.transactions,
            service_ticket_count: done.service_tickets,
            tag_count: i32::try_from(done.tags_added).unwrap_or(i32::MAX),
            tags_dropped_count: i32::try_from(done.tags_dropped).unwrap_or(i32::MAX),
            merge_time: Some(to_timestamp(done.merge_time)),
        }))
    }

    async fn list_service_tickets(
        &self,
        request: Request<pb::ListServiceTicketsRequest>,
    ) -> Result<Response<pb::ListServiceTicketsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.customer_id < 0 {
            v.add("customer_id", "must be 0 (every customer) or a positive id");
        }
        validate::known_enum::<pb::TicketStatus>(&mut v, "status", req.status, false);
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        let filter = TicketFilter {
            customer_id: (req.customer_id > 0).then_some(req.customer_id),
            status: (req.status != 0).then_some(req.status),
        };
        let fp = paging::Fingerprint::new("service_tickets")
            .field("customer_id", &filter.customer_id)
            .field("status", &filter.status)
            .finish();
        let after = decode_position(&mut v, "service_tickets", fp, &req.page_token);
        v.finish(())?;
        let db = &self.state.db.reader();
        let (service_tickets, last) = read_page(
            limit,
            after,
            |after, n| tickets::list(db, &filter, after, n),
            |r| (r.open_time, r.id),
            ticket_to_pb,
        )
        .await?;
        Ok(Response::new(pb::ListServiceTicketsResponse {
            service_tickets,
            next_page_token: page_token("service_tickets", fp, last),
        }))
    }
}

/// Validates a merge: survivor and merged ids positive, 1..=100 distinct merged ids, the
/// survivor not among them.
fn merge_form(req: pb::MergeCustomersRequest) -> Result<MergeForm, Error> {
    let mut v = Violations::new();
    let request_id = validate::request_id(&mut v, "request_id", &req.request_id);
    let survivor = positive_id(&mut v, "surviving_customer_id", req.surviving_customer_id);
    let ids = &req.merged_customer_ids;
    if ids.is_empty() {
        v.add(
            "merged_customer_ids",
            "is required: name at least one customer to merge",
        );
    } else if ids.len() > merges::MAX_MERGED {
        v.add(
            "merged_customer_ids",
            format!("at most {} ids (got {})", merges::MAX_MERGED, ids.len()),
        );
    }
    let mut merged: Vec<i64> = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate().take(merges::MAX_MERGED) {
        let field = format!("merged_customer_ids[{i}]");
        if id <= 0 {
            v.add(field, "must be a positive id");
        } else if id == survivor {
            v.add(field, "must not be the surviving customer");
        } else if merged.contains(&id) {
            v.add(field, format!("repeats customer {id}"));
        } else {
            merged.push(id);
        }
    }
    merged.sort_unstable();
    v.finish(MergeForm {
        survivor,
        merged,
        request_id,
    })
}

/// The proto form of a duplicate key.
fn duplicate_key_to_pb(key: DuplicateKey) -> pb::DuplicateKey {
    match key {
        DuplicateKey::Phone => pb::DuplicateKey::Phone,
        DuplicateKey::Email => pb::DuplicateKey::Email,
        DuplicateKey::Name => pb::DuplicateKey::Name,
    }
}

/// The proto form of a duplicate group.
fn duplicate_group_to_pb(g: DuplicateGroup) -> pb::DuplicateGroup {
    pb::DuplicateGroup {
        key: duplicate_key_to_pb(g.key) as i32,
        value: g.value,
        matched_keys: g
            .matched
            .into_iter()
            .map(|k| duplicate_key_to_pb(k) as i32)
            .collect(),
        customer_count: i32::try_from(g.count).unwrap_or(i32::MAX),
        customers: g.customers.into_iter().map(customer_to_pb).collect(),
    }
}

/// Decodes a `(time, id)` keyset position from a page token; `None` for the first page.
/// A position out of range is a violation of `page_token` (see [`paging::position`]).
pub(crate) fn decode_position(
    v: &mut Violations,
    kind: &str,
    fingerprint: u64,
    token: &str,
) -> Option<(NaiveDateTime, i64)> {
    if token.is_empty() {
        return None;
    }
    v.absorb(paging::decode_time_id(
        "page_token",
        kind,
        fingerprint,
        token,
    ))
}

/// Trims a page fetched with one extra row and returns the token of the next page
/// (empty when this is the last one).
pub(crate) fn next_token<T>(
    page: &mut Vec<T>,
    limit: i64,
    kind: &str,
    fingerprint: u64,
    key: impl Fn(&T) -> (NaiveDateTime, i64),
) -> String {
    if page.len() as i64 <= limit {
        return String::new();
    }
    page.truncate(limit as usize);
    page_token(kind, fingerprint, page.last().map(key))
}

/// The page token that continues after `last` (empty when nothing follows).
pub(crate) fn page_token(kind: &str, fingerprint: u64, last: Option<super::Position>) -> String {
    last.map(|(t, id)| paging::encode(kind, fingerprint, &(crate::model::time::micros(t), id)))
        .unwrap_or_default()
}

/// Latest accepted occurrence time: a day ahead of now allows for clock skew and
/// time zones, anything later is a client bug.
pub(crate) fn occur_time(
    v: &mut Violations,
    field: &str,
    value: Option<&prost_types::Timestamp>,
    now: NaiveDateTime,
) -> NaiveDateTime {
    match validate::time(v, field, value) {
        Some(t) if t > now + chrono::Duration::days(1) => {
            v.add(field, "must not be more than one day in the future");
            t
        }
        Some(t) => t,
        None => now,
    }
}

fn transaction_form(req: pb::CreateTransactionRequest) -> Result<TransactionInsertForm, Error> {
    let mut v = Violations::new();
    let request_id = validate::request_id(&mut v, "request_id", &req.request_id);
    let Some(t) = req.transaction else {
        v.add("transaction", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    let now = now();
    let customer_id = positive_id(&mut v, "transaction.customer_id", t.customer_id);
    let order_number =
        validate::required_text(&mut v, "transaction.order_number", &t.order_number, 64);
    let product = validate::required_text(&mut v, "transaction.product", &t.product, 200);
    let amount = validate::money(&mut v, "transaction.amount", t.amount.as_ref());
    let occur_time = occur_time(&mut v, "transaction.occur_time", t.occur_time.as_ref(), now);
    let amount = v.finish(amount)?.unwrap_or_default();
    Ok(TransactionInsertForm {
        customer_id,
        order_number,
        product,
        currency_code: amount.currency_code,
        amount_units: amount.units,
        amount_nanos: amount.nanos,
        occur_time,
        create_time: now,
        request_id,
        occur_time_given: t.occur_time.is_some(),
    })
}

fn ticket_form(req: pb::CreateServiceTicketRequest) -> Result<TicketInsertForm, Error> {
    let mut v = Violations::new();
    let request_id = validate::request_id(&mut v, "request_id", &req.request_id);
    let Some(t) = req.service_ticket else {
        v.add("service_ticket", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    let now = now();
    let customer_id = positive_id(&mut v, "service_ticket.customer_id", t.customer_id);
    let issue = validate::required_text(&mut v, "service_ticket.issue", &t.issue, 4000);
    let solution = validate::optional_text(&mut v, "service_ticket.solution", &t.solution, 4000);
    validate::known_enum::<pb::TicketStatus>(&mut v, "service_ticket.status", t.status, false);
    let status = if t.status == 0 {
        status::OPEN
    } else {
        t.status
    };
    if status != status::OPEN && solution.is_empty() {
        v.add(
            "service_ticket.solution",
            "is required for a resolved or closed ticket",
        );
    }
    let open_time = occur_time(
        &mut v,
        "service_ticket.open_time",
        t.open_time.as_ref(),
        now,
    );
    v.finish(TicketInsertForm {
        customer_id,
        issue,
        solution,
        status,
        open_time,
        resolve_time: (status != status::OPEN).then_some(now),
        create_time: now,
        update_time: now,
        version: 1,
        request_id,
        open_time_given: t.open_time.is_some(),
    })
}

const TICKET_UPDATABLE: [&str; 3] = ["issue", "solution", "status"];

fn ticket_update_form(
    req: &pb::UpdateServiceTicketRequest,
) -> Result<(i64, Option<i64>, TicketUpdateForm), Error> {
    let mut v = Violations::new();
    let Some(t) = &req.service_ticket else {
        v.add("service_ticket", "is required");
        return Err(Error::InvalidArgument(v.into_inner()));
    };
    let id = positive_id(&mut v, "service_ticket.id", t.id);
    let expected = etag(&mut v, "service_ticket.etag", &t.etag);
    let mut form = TicketUpdateForm::default();
    for path in mask_paths(&mut v, req.update_mask.as_ref(), &TICKET_UPDATABLE) {
        let field = format!("service_ticket.{path}");
        match path.as_str() {
            "issue" => form.issue = Some(validate::required_text(&mut v, &field, &t.issue, 4000)),
            "solution" => {
                form.solution = Some(validate::optional_text(&mut v, &field, &t.solution, 4000))
            }
            "status" => {
                validate::known_enum::<pb::TicketStatus>(&mut v, &field, t.status, true);
                form.status = Some(t.status);
            }
            _ => {}
        }
    }
    v.finish((id, expected, form))
}
