//! The page's handle on the engine worker: spawn it, post [`ToWorker`] requests, get
//! every [`FromWorker`] reply in one callback. Also the wire format both sides use:
//! the JSON text alone, or `[text, ArrayBuffer...]` when a message carries payloads
//! (the buffers are transferred, not copied), or `[text, Blob]` when it carries a file
//! by reference (a model the teacher picked, a merged model built in the worker).

use wasm_bindgen::prelude::*;
use web_sys::{Blob, Event, MessageEvent, Url, Worker, WorkerOptions};

use crate::protocol::{FromWorker, ToWorker};

/// The classic-script shim trunk writes for the `worker` binary (`data-loader-shim`,
/// file hashes off in Trunk.toml so the name is stable).
pub const WORKER_SCRIPT: &str = "./worker_loader.js";

/// A running engine worker. Cheap to clone (a JS handle); not `Send`, so keep it in a
/// `StoredValue::new_local` when a component needs it.
#[derive(Clone)]
pub struct EngineLink {
    worker: Worker,
}

impl EngineLink {
    /// Starts the worker; `on_reply` gets each reply in order. The worker announces
    /// itself with [`FromWorker::Ready`]: send requests only after that, since messages
    /// posted while its wasm is still loading are not guaranteed to be received.
    pub fn spawn(on_reply: impl Fn(&EngineLink, FromWorker) + 'static) -> Result<EngineLink, String> {
        let options = WorkerOptions::new();
        options.set_name("classtune-engine");
        let worker = Worker::new_with_options(WORKER_SCRIPT, &options).map_err(describe)?;
        let link = EngineLink { worker };
        let on_reply = std::rc::Rc::new(on_reply);

        let (handler_link, handler_reply) = (link.clone(), on_reply.clone());
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let blob = wire_blob(&event.data());
            let reply = from_wire(event.data())
                .and_then(|(text, payloads)| {
                    let mut reply = FromWorker::decode(&text).map_err(|e| e.to_string())?;
                    reply.attach(payloads)?;
                    Ok(reply)
                })
                .and_then(|mut reply| {
                    if let FromWorker::ExportedBlob { url, .. } = &mut reply {
                        let blob = blob.ok_or("a file reply without its Blob")?;
                        *url = Url::create_object_url_with_blob(&blob).map_err(describe)?;
                    }
                    Ok(reply)
                })
                .unwrap_or_else(|message| FromWorker::Error {
                    request: "decode".into(),
                    message: format!("unreadable reply from the worker: {message}"),
                });
            handler_reply(&handler_link, reply);
        });
        link.worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        on_message.forget();

        let error_link = link.clone();
        let on_error = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
            let message = js_sys::Reflect::get(&event, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
                .unwrap_or_else(|| format!("could not load {WORKER_SCRIPT}"));
            on_reply(&error_link, FromWorker::GpuUnavailable { message: format!("engine worker failed: {message}") });
        });
        link.worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        on_error.forget();
        Ok(link)
    }

    /// Posts one request to the worker.
    pub fn send(&self, request: &ToWorker) {
        let (message, transfer) = to_wire(&request.encode(), &request.payloads());
        let posted = match transfer {
            Some(transfer) => self.worker.post_message_with_transfer(&message, &transfer),
            None => self.worker.post_message(&message),
        };
        if let Err(e) = posted {
            web_sys::console::error_1(&format!("posting {} failed: {}", request.name(), describe(e)).into());
        }
    }

    /// Posts a request with a file beside it, by reference (the worker reads it in
    /// slices; the browser copies nothing).
    pub fn send_with_blob(&self, request: &ToWorker, blob: &Blob) {
        if let Err(e) = self.worker.post_message(&with_blob(&request.encode(), blob)) {
            web_sys::console::error_1(&format!("posting {} failed: {}", request.name(), describe(e)).into());
        }
    }
}

/// A message as posted with a `Blob`: `[text, blob]`.
pub fn with_blob(text: &str, blob: &Blob) -> JsValue {
    js_sys::Array::of2(&JsValue::from_str(text), blob).into()
}

/// The `Blob` a posted message carries, if any.
pub fn wire_blob(data: &JsValue) -> Option<Blob> {
    if !js_sys::Array::is_array(data) {
        return None;
    }
    js_sys::Array::from(data).iter().find_map(|part| part.dyn_into::<Blob>().ok())
}

/// A message as posted: the text alone, or `[text, buffer...]` with the buffers to
/// transfer.
pub fn to_wire(text: &str, payloads: &[&[u8]]) -> (JsValue, Option<js_sys::Array>) {
    if payloads.is_empty() {
        return (JsValue::from_str(text), None);
    }
    let message = js_sys::Array::of1(&JsValue::from_str(text));
    let transfer = js_sys::Array::new();
    for bytes in payloads {
        let buffer = js_sys::Uint8Array::from(*bytes).buffer();
        message.push(&buffer);
        transfer.push(&buffer);
    }
    (message.into(), Some(transfer))
}

/// The text and payloads of a posted message.
pub fn from_wire(data: JsValue) -> Result<(String, Vec<Vec<u8>>), String> {
    if let Some(text) = data.as_string() {
        return Ok((text, Vec::new()));
    }
    if !js_sys::Array::is_array(&data) {
        return Err("neither text nor [text, buffers]".into());
    }
    let parts = js_sys::Array::from(&data);
    let text = parts.get(0).as_string().ok_or("the message array does not start with its text")?;
    let payloads = (1..parts.length())
        .map(|i| parts.get(i))
        .filter(|part| part.is_instance_of::<js_sys::ArrayBuffer>())
        .map(|buffer| js_sys::Uint8Array::new(&buffer).to_vec())
        .collect();
    Ok((text, payloads))
}

fn describe(value: JsValue) -> String {
    js_sys::Reflect::get(&value, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}
