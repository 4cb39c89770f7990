//! `crm.v1.AnalyticsService`: frequency, content and per-customer reports.

use tonic::{Request, Response, Status};

use super::AppState;
use crate::pb::{self, analytics_service_server::AnalyticsService};

/// Implementation of `crm.v1.AnalyticsService`.
#[derive(Debug, Clone)]
pub struct AnalyticsApi {
    #[allow(dead_code)]
    state: AppState,
}

impl AnalyticsApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_frequency_report(
        &self,
        _request: Request<pb::GetFrequencyReportRequest>,
    ) -> Result<Response<pb::GetFrequencyReportResponse>, Status> {
        Err(Status::unimplemented(
            "GetFrequencyReport is not implemented yet",
        ))
    }

    async fn get_content_report(
        &self,
        _request: Request<pb::GetContentReportRequest>,
    ) -> Result<Response<pb::GetContentReportResponse>, Status> {
        Err(Status::unimplemented(
            "GetContentReport is not implemented yet",
        ))
    }

    async fn get_customer_insights(
        &self,
        _request: Request<pb::GetCustomerInsightsRequest>,
    ) -> Result<Response<pb::GetCustomerInsightsResponse>, Status> {
        Err(Status::unimplemented(
            "GetCustomerInsights is not implemented yet",
        ))
    }
}
