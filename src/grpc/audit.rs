//! `crm.v1.AuditService`: reading the audit trail (admins only; the guard checks the
//! role). The records are written by the storage functions of each write.

use tonic::{Request, Response, Status};

use super::AppState;
use crate::db::audit::{self, AuditFilter, AuditRow};
use crate::error::Violations;
use crate::grpc::convert::to_timestamp;
use crate::grpc::paging;
use crate::grpc::validate;
use crate::pb::{self, audit_service_server::AuditService};

/// Implementation of `crm.v1.AuditService`.
#[derive(Debug, Clone)]
pub struct AuditApi {
    state: AppState,
}

impl AuditApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The proto form of a stored audit record.
pub fn audit_record_to_pb(r: AuditRow) -> pb::AuditRecord {
    pb::AuditRecord {
        id: r.id,
        record_time: Some(to_timestamp(r.record_time)),
        caller: r.caller,
        peer: r.peer,
        client_certificate: r.client_certificate,
        method: r.method,
        customer_id: r.customer_id,
        resource_id: r.resource_id,
        detail: r.detail,
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let limit = paging::page_size(&mut v, "page_size", req.page_size);
        if req.customer_id < 0 {
            v.add("customer_id", "must be 0 (any customer) or a positive id");
        }
        let (start, end) = validate::time_range(
            &mut v,
            "start_time",
            req.start_time.as_ref(),
            "end_time",
            req.end_time.as_ref(),
        );
        let filter = AuditFilter {
            caller: validate::optional_text(&mut v, "caller", &req.caller, 64),
            method: validate::optional_text(&mut v, "method", &req.method, 64),
            customer_id: req.customer_id.max(0),
            start,
            end,
        };
        let fp = paging::Fingerprint::new("audit")
            .field("caller", &filter.caller)
            .field("method", &filter.method)
            .field("customer_id", &filter.customer_id)
            .field("start", &filter.start)
            .field("end", &filter.end)
            .finish();
        let before = paging::after_id(&mut v, "audit", fp, &req.page_token);
        v.finish(())?;
        // One extra row tells whether another page exists.
        let mut page = audit::list(&self.state.db.reader(), &filter, before, limit + 1).await?;
        let next_page_token = paging::next_id_token(&mut page, limit, "audit", fp, |r| r.id);
        Ok(Response::new(pb::ListAuditRecordsResponse {
            audit_records: page.into_iter().map(audit_record_to_pb).collect(),
            next_page_token,
        }))
    }
}
