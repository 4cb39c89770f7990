//! `crm.v1.CustomerService`: customers, their transactions and service tickets.

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::{positive_id, AppState};
use crate::convert::{now, to_timestamp};
use crate::db::customers::{
    self, Customer, CustomerFilter, CustomerInsertForm, CustomerUpdateForm,
};
use crate::error::{Error, Violations};
use crate::paging;
use crate::pb::{self, customer_service_server::CustomerService};
use crate::validate;

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

fn insert_form(req: pb::CreateCustomerRequest) -> Result<CustomerInsertForm, Error> {
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
        phone: validate::phone(&mut v, "customer.phone", &c.phone),
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
            "phone" => form.phone = Some(validate::phone(&mut v, &field, &c.phone)),
            "email" => form.email = Some(validate::email(&mut v, &field, &c.email, false)),
            "tags" => form.tags = Some(validate::tags(&mut v, &field, &c.tags)),
            _ => {}
        }
    }
    v.finish((id, expected, form))
}

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
                format!("{p:?} cannot be updated; updatable: {}", allowed.join(", ")),
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
        let form = insert_form(request.into_inner())?;
        let customer = customers::create(&self.state.db, &form, now()).await?;
        Ok(Response::new(customer_to_pb(customer)))
    }

    async fn get_customer(
        &self,
        request: Request<pb::GetCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", request.get_ref().id);
        v.finish(())?;
        let customer = customers::get(&self.state.db, id).await?;
        Ok(Response::new(customer_to_pb(customer)))
    }

    async fn update_customer(
        &self,
        request: Request<pb::UpdateCustomerRequest>,
    ) -> Result<Response<pb::Customer>, Status> {
        let (id, expected, form) = update_form(request.get_ref())?;
        let customer = customers::update(&self.state.db, id, expected, &form, now()).await?;
        Ok(Response::new(customer_to_pb(customer)))
    }

    async fn delete_customer(
        &self,
        request: Request<pb::DeleteCustomerRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = positive_id(&mut v, "id", req.id);
        let expected = etag(&mut v, "etag", &req.etag);
        v.finish(())?;
        customers::delete(&self.state.db, id, req.purge, expected, now()).await?;
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
        let fp = paging::fingerprint(&(&filter.query, &filter.tag));
        let after = if req.page_token.is_empty() {
            0
        } else {
            v.absorb(paging::decode::<i64>(
                "page_token",
                "customers",
                fp,
                &req.page_token,
            ))
            .unwrap_or(0)
        };
        v.finish(())?;
        // One extra row tells whether another page exists.
        let mut page = customers::list(&self.state.db, &filter, after, limit + 1).await?;
        let next_page_token = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            page.last()
                .map(|c| paging::encode("customers", fp, &c.row.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListCustomersResponse {
            customers: page.into_iter().map(customer_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn create_transaction(
        &self,
        _request: Request<pb::CreateTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        Err(Status::unimplemented("todo"))
    }

    async fn list_transactions(
        &self,
        _request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        Err(Status::unimplemented("todo"))
    }

    async fn create_service_ticket(
        &self,
        _request: Request<pb::CreateServiceTicketRequest>,
    ) -> Result<Response<pb::ServiceTicket>, Status> {
        Err(Status::unimplemented("todo"))
    }

    async fn update_service_ticket(
        &self,
        _request: Request<pb::UpdateServiceTicketRequest>,
    ) -> Result<Response<pb::ServiceTicket>, Status> {
        Err(Status::unimplemented("todo"))
    }

    async fn list_service_tickets(
        &self,
        _request: Request<pb::ListServiceTicketsRequest>,
    ) -> Result<Response<pb::ListServiceTicketsResponse>, Status> {
        Err(Status::unimplemented("todo"))
    }
}
