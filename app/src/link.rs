//! The page's handle on the engine worker: spawn it, post [`ToWorker`] requests, get
//! every [`FromWorker`] reply in one callback.

use wasm_bindgen::prelude::*;
use web_sys::{Event, MessageEvent, Worker, WorkerOptions};

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
            let reply = match event.data().as_string() {
                Some(text) => FromWorker::decode(&text).unwrap_or_else(|e| FromWorker::Error {
                    request: "decode".into(),
                    message: format!("unreadable reply from the worker: {e}"),
                }),
                None => FromWorker::Error {
                    request: "decode".into(),
                    message: "the worker sent a non-text message".into(),
                },
            };
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
        if let Err(e) = self.worker.post_message(&JsValue::from_str(&request.encode())) {
            web_sys::console::error_1(&format!("posting {} failed: {}", request.name(), describe(e)).into());
        }
    }
}

fn describe(value: JsValue) -> String {
    js_sys::Reflect::get(&value, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}
