//! Models kept on this device. A model fetched from the app's origin is streamed
//! straight into OPFS (`models/`, see `storage::cached_model_name`) and read back from
//! there one slice at a time, so it is never held whole in memory and the next visit
//! loads it from the device, offline too; the service worker leaves `.gguf` files to
//! this cache, so a model takes its space once. A model the teacher picked from disk
//! is copied there when a run is saved, since a reload loses the picked file.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, DedicatedWorkerGlobalScope, Response};

use super::{js_message, store, EngineWorker};
use crate::protocol::ModelSource;
use crate::storage::{cached_model_name, MODEL_CACHE};

impl EngineWorker {
    /// The file of a model on the origin or in OPFS (a picked file comes with its
    /// request); a copy that could not be kept is reported, and the model loads anyway.
    pub(super) async fn model_blob(&self, source: &ModelSource) -> Result<Blob, String> {
        match source {
            ModelSource::Url { path } => {
                let opened = origin_model(&self.scope, path).await?;
                if let Some(message) = opened.warning {
                    self.post_error("storage", message);
                }
                Ok(opened.blob)
            }
            ModelSource::Opfs { name } => opfs_model(name).await,
            ModelSource::File { name, .. } => {
                Err(format!("{name}: a picked file comes with its request"))
            }
        }
    }
}

/// A model file, and what the teacher should know about keeping it (it could not be
/// stored: the quota message).
struct Opened {
    blob: Blob,
    warning: Option<String>,
}

/// The model at `path` on the origin: the device's copy if there is one, otherwise
/// fetched into OPFS first.
async fn origin_model(scope: &DedicatedWorkerGlobalScope, path: &str) -> Result<Opened, String> {
    if path.contains("://") || path.starts_with("//") {
        return Err(format!(
            "{path}: models load from this app's own origin only"
        ));
    }
    let name = format!("{MODEL_CACHE}/{}", cached_model_name(path));
    let warning = match store::file(&name).await {
        // (Empty: created by a download the tab did not live to finish.)
        Ok(Some(file)) if file.size() > 0.0 => {
            return Ok(Opened {
                blob: file.into(),
                warning: None,
            })
        }
        Ok(_) => {
            let response = fetch(scope, path).await?;
            let size = response
                .headers()
                .get("content-length")
                .ok()
                .flatten()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let body = response
                .body()
                .ok_or_else(|| format!("{path}: the response has no body"))?;
            match store::write_stream(&name, &body, size, &format!("the model {path}")).await {
                Ok(()) => match store::file(&name).await {
                    Ok(Some(file)) => return Ok(Opened { blob: file.into(), warning: None }),
                    Ok(None) => format!("{path}: the copy on this device vanished; loading it from the site"),
                    Err(e) => e.to_string(),
                },
                Err(store::StoreError::Full(message)) => message,
                Err(e) => format!("{path} could not be kept on this device ({e}); it loads from the site each time"),
            }
        }
        // No private file system (a private window in some browsers): no cache.
        Err(e) => format!(
            "{path} could not be kept on this device ({e}); it loads from the site each time"
        ),
    };
    // Not kept: the body was spent (or never fetched), so fetch it again as a Blob.
    let response = fetch(scope, path).await?;
    let blob = response
        .blob()
        .map_err(|e| format!("{path}: {}", js_message(&e)))?;
    let blob = JsFuture::from(blob)
        .await
        .map_err(|e| format!("{path}: {}", js_message(&e)))?
        .dyn_into()
        .map_err(|_| format!("{path}: the response body is not a Blob"))?;
    Ok(Opened {
        blob,
        warning: Some(warning),
    })
}

async fn fetch(scope: &DedicatedWorkerGlobalScope, path: &str) -> Result<Response, String> {
    let response: Response = JsFuture::from(scope.fetch_with_str(path))
        .await
        .map_err(|e| format!("{path}: {}", js_message(&e)))?
        .dyn_into()
        .map_err(|_| format!("{path}: fetch gave no response"))?;
    if !response.ok() {
        return Err(format!(
            "{path}: HTTP {} {}",
            response.status(),
            response.status_text()
        ));
    }
    Ok(response)
}

/// A file in OPFS by its path, e.g. `models/picked.gguf`.
async fn opfs_model(name: &str) -> Result<Blob, String> {
    match store::file(name).await {
        Ok(Some(file)) => Ok(file.into()),
        Ok(None) => Err(format!("{name} is no longer on this device")),
        Err(e) => Err(format!("{name}: {e}")),
    }
}

/// Where a saved run finds its model after a reload: an origin path or an OPFS file
/// as they are; a picked file is copied into OPFS first (as a `Blob`: the browser
/// copies it, not the worker's memory).
pub async fn keep(source: &ModelSource, blob: &Blob) -> Result<ModelSource, store::StoreError> {
    match source {
        ModelSource::Url { .. } | ModelSource::Opfs { .. } => Ok(source.clone()),
        ModelSource::File { name, .. } => {
            let kept = format!("{MODEL_CACHE}/picked%2F{}", cached_model_name(name));
            if store::file(&kept)
                .await?
                .is_none_or(|file| file.size() != blob.size())
            {
                store::write_blob(&kept, blob, &format!("the model {name}")).await?;
            }
            Ok(ModelSource::Opfs { name: kept })
        }
    }
}
