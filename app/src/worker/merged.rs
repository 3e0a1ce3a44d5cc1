//! The merged model export: the base model with the adapter folded into its weights
//! (`adapter::MergePlan`), adapted weights in F16 or Q8_0. A merged SmolLM2-135M is
//! about 270 MB in F16, so it is never one buffer: each base tensor is read from the
//! model's `Blob`, merged, and appended as a part; parts are gathered into a `Blob`
//! every [`PART_BYTES`] (the browser keeps Blob data outside the wasm heap), and the
//! final `Blob` of those goes to the page by reference.

use classtune::adapter::{MergePlan, MergeType};
use classtune::gguf::TensorSource;
use classtune::model::adapter_from_flat;
use wasm_bindgen::JsValue;
use web_sys::{Blob, BlobPropertyBag};

use super::export::{model_name, slug};
use super::{js_message, EngineWorker};
use crate::link::with_blob;
use crate::protocol::{ExportFormat, FromWorker};

/// Bytes of merged tensors gathered before they become one `Blob` part.
const PART_BYTES: usize = 32 << 20;

/// The merge type of a merged export format; None for the adapter formats.
pub fn merge_type(format: ExportFormat) -> Option<MergeType> {
    match format {
        ExportFormat::MergedF16 => Some(MergeType::F16),
        ExportFormat::MergedQ8 => Some(MergeType::Q8_0),
        ExportFormat::Peft | ExportFormat::GgufLora | ExportFormat::Checkpoint => None,
    }
}

fn blob_error(e: JsValue) -> String {
    format!("building the merged file: {}", js_message(&e))
}

/// `parts` (typed arrays or Blobs) as one Blob.
fn gather(parts: &js_sys::Array, mime: &str) -> Result<Blob, String> {
    let options = BlobPropertyBag::new();
    options.set_type(mime);
    Blob::new_with_blob_sequence_and_options(parts, &options).map_err(blob_error)
}

impl EngineWorker {
    /// Builds the merged model and posts it as [`FromWorker::ExportedBlob`].
    pub(super) async fn export_merged(&self, format: ExportFormat) -> Result<(), String> {
        let ty = merge_type(format).ok_or("not a merged export")?;
        let loaded = self.model.borrow().clone().ok_or("no model is loaded")?;
        let (lora, params, step) = {
            let session = self.session.borrow();
            let session = session.as_ref().ok_or("no adapter yet: train one first")?;
            if session.phase.is_active() {
                return Err("training is running: pause it before exporting".into());
            }
            let state = session.state.as_ref().filter(|s| s.step > 0).ok_or("no adapter yet: train one first")?;
            (session.lora.clone(), state.params.clone(), state.step)
        };
        let base_name = model_name(&loaded);
        let config = loaded.model.borrow().config.clone();
        let adapter = adapter_from_flat(&config, &lora, &params, &base_name).map_err(|e| e.to_string())?;
        let plan = MergePlan::new(&loaded.gguf, &adapter, ty).map_err(|e| e.to_string())?;

        let mime = "application/octet-stream";
        let parts = js_sys::Array::new();
        let mut pending = js_sys::Array::of1(&js_sys::Uint8Array::from(plan.header()));
        let mut pending_bytes = plan.header().len();
        for (index, tensor) in plan.tensors().iter().enumerate() {
            let base = loaded.file.tensor(&tensor.base).await.map_err(|e| format!("reading the base model: {e}"))?;
            let merged = plan.tensor_bytes(index, &base).map_err(|e| e.to_string())?;
            pending_bytes += merged.len();
            pending.push(&js_sys::Uint8Array::from(merged.as_slice()));
            if pending_bytes >= PART_BYTES {
                parts.push(gather(&pending, mime)?.as_ref());
                pending = js_sys::Array::new();
                pending_bytes = 0;
            }
        }
        parts.push(gather(&pending, mime)?.as_ref());
        let blob = gather(&parts, mime)?;
        if blob.size() as u64 != plan.len() {
            return Err(format!("the merged file has {} bytes, planned {}", blob.size(), plan.len()));
        }
        let suffix = match ty {
            MergeType::F16 => "f16",
            MergeType::Q8_0 => "q8_0",
        };
        let reply = FromWorker::ExportedBlob {
            format,
            file_name: format!("classtune-{}-step{step}-merged-{suffix}.gguf", slug(&base_name)),
            size: plan.len(),
            url: String::new(),
        };
        self.scope.post_message(&with_blob(&reply.encode(), &blob)).map_err(blob_error)
    }
}
