//! `crm.v1.ExportService`: validates the request, runs the export use case
//! (`crate::service::export`) into a temporary directory and streams its files in chunks.

use std::io::Read;
use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::AppState;
use crate::error::Violations;
use crate::pb::{self, export_service_server::ExportService};
use crate::service::export::{self, files::Format, ExportSpec};

/// Bytes per streamed chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// The stream type of `ExportData`.
pub type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportDataResponse, Status>> + Send>>;

/// Implementation of `crm.v1.ExportService`.
#[derive(Debug, Clone)]
pub struct ExportApi {
    state: AppState,
}

impl ExportApi {
    /// A service over the shared state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The export a request asks for, every bad field reported.
fn spec_of(req: &pb::ExportDataRequest) -> Result<ExportSpec, crate::error::Error> {
    let mut v = Violations::new();
    let format = match pb::ExportFormat::try_from(req.format) {
        Ok(pb::ExportFormat::Parquet) => Some(Format::Parquet),
        Ok(pb::ExportFormat::Csv) => Some(Format::Csv),
        _ => {
            v.add(
                "format",
                "must be EXPORT_FORMAT_PARQUET or EXPORT_FORMAT_CSV",
            );
            None
        }
    };
    let since = if req.since_watermark.is_empty() {
        None
    } else {
        export::parse_watermark(&mut v, "since_watermark", &req.since_watermark)
    };
    v.finish(())?;
    Ok(ExportSpec {
        format: format.unwrap_or(Format::Parquet),
        since,
    })
}

/// Sends every file of `temp` in chunks, on a blocking thread (file reads); stops when
/// the client is gone.
fn send_files(
    temp: &export::TempExport,
    tx: &tokio::sync::mpsc::Sender<Result<pb::ExportDataResponse, Status>>,
) -> std::io::Result<()> {
    let mut buf = vec![0; CHUNK_BYTES];
    for (path, disk) in temp.files() {
        let mut file = std::fs::File::open(&disk)?;
        let mut offset = 0i64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = file.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            let end_of_file = filled < buf.len();
            let chunk = pb::ExportDataResponse {
                path: path.clone(),
                offset,
                data: buf[..filled].to_vec(),
                end_of_file,
            };
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(());
            }
            offset += filled as i64;
            if end_of_file {
                break;
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl ExportService for ExportApi {
    type ExportDataStream = ExportStream;

    async fn export_data(
        &self,
        request: Request<pb::ExportDataRequest>,
    ) -> Result<Response<Self::ExportDataStream>, Status> {
        let spec = spec_of(request.get_ref())?;
        let db = self.state.db.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let temp = match export::export_to_temp(&db, &spec).await {
                Ok(temp) => temp,
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            };
            let sent = tokio::task::spawn_blocking(move || {
                if let Err(e) = send_files(&temp, &tx) {
                    let _ = tx.blocking_send(Err(Status::from(crate::error::Error::Internal(
                        format!("cannot read an exported file: {e}"),
                    ))));
                }
            })
            .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "export stream task failed");
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
