//! `crm.v1.CommunicationService`: recording communications and streaming timelines.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::AppState;
use crate::pb::{self, communication_service_server::CommunicationService};

/// Implementation of `crm.v1.CommunicationService`.
#[derive(Debug, Clone)]
pub struct CommunicationApi {
    #[allow(dead_code)]
    state: AppState,
}

impl CommunicationApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The stream type of `StreamTimeline`.
pub type TimelineStream = Pin<Box<dyn Stream<Item = Result<pb::TimelineEvent, Status>> + Send>>;

#[tonic::async_trait]
impl CommunicationService for CommunicationApi {
    async fn log_communication(
        &self,
        _request: Request<pb::LogCommunicationRequest>,
    ) -> Result<Response<pb::Communication>, Status> {
        Err(Status::unimplemented(
            "LogCommunication is not implemented yet",
        ))
    }

    async fn import_communications(
        &self,
        _request: Request<Streaming<pb::ImportCommunicationsRequest>>,
    ) -> Result<Response<pb::ImportCommunicationsResponse>, Status> {
        Err(Status::unimplemented(
            "ImportCommunications is not implemented yet",
        ))
    }

    async fn get_communication(
        &self,
        _request: Request<pb::GetCommunicationRequest>,
    ) -> Result<Response<pb::Communication>, Status> {
        Err(Status::unimplemented(
            "GetCommunication is not implemented yet",
        ))
    }

    async fn list_communications(
        &self,
        _request: Request<pb::ListCommunicationsRequest>,
    ) -> Result<Response<pb::ListCommunicationsResponse>, Status> {
        Err(Status::unimplemented(
            "ListCommunications is not implemented yet",
        ))
    }

    async fn delete_communication(
        &self,
        _request: Request<pb::DeleteCommunicationRequest>,
    ) -> Result<Response<()>, Status> {
        Err(Status::unimplemented(
            "DeleteCommunication is not implemented yet",
        ))
    }

    type StreamTimelineStream = TimelineStream;

    async fn stream_timeline(
        &self,
        _request: Request<pb::StreamTimelineRequest>,
    ) -> Result<Response<Self::StreamTimelineStream>, Status> {
        Err(Status::unimplemented(
            "StreamTimeline is not implemented yet",
        ))
    }
}
