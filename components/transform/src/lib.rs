//! The transform worker: `POST /transform` turns a CSV chunk into JSON records
//! with [`fanout::table`], one error record per bad row.

use fanout::api::{ApiError, ErrorKind};
use fanout::table;
use fanout_spin::{serve, Reply, Request};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route).await
}

async fn route(req: Request) -> Result<Reply, ApiError> {
    if req.path != "/transform" {
        return Err(ApiError::not_found(&req.method, &req.path));
    }
    req.allow(&["POST"])?;
    if let Some(content_type) = req.header("content-type") {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !matches!(essence.as_str(), "text/csv" | "text/plain" | "application/octet-stream") {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!("POST /transform reads text/csv, not {essence:?}"),
            ));
        }
    }
    let body = req.body().await?;
    Ok(Reply::json(&table::to_records(&body)?))
}
