//! The engine worker: owns the [`Gpu`], the loaded model, the course files and the
//! training run, and answers [`ToWorker`] requests.
//!
//! Each request runs as its own task on the worker's event loop; GPU work is async
//! (readback through `map_async`), so a [`ToWorker::Cancel`] is handled while a
//! generation awaits its next token, and a pause or cancel of the training is seen by
//! its loop between two steps (`training`). A model file is the device's copy in OPFS
//! of one fetched from the app's own origin (streamed there on first use, `cache`), or
//! the `File` the teacher picked, posted by reference; either is read one tensor at a
//! time (`Blob.slice().arrayBuffer()`), so the file is never held twice in memory.

mod cache;
mod calibrate;
mod course;
mod examples;
mod export;
mod import;
mod merged;
mod persist;
mod probe;
mod recover;
mod store;
mod training;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use classtune::chat::{ChatTemplate, Message};
use classtune::gguf::{Gguf, GgufError, TensorSource};
use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::model::{self, GenerateOptions, Generator, KvCache, LoraWeights, Model};
use classtune::tokenizer::Tokenizer;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, DedicatedWorkerGlobalScope, MessageEvent};

use crate::link::{from_wire, to_wire, wire_blob};
use crate::protocol::{FromWorker, GenerateSettings, GpuLimits, GpuReport, ModelReport, ModelSource, StopReason, ToWorker};

/// Tokens of context each generation may use (prompt and answer).
const CONTEXT: usize = 2048;

/// A model ready to run, with what came from its GGUF header.
struct Loaded {
    source: ModelSource,
    /// Shared while generations or a training run use it; mutable only to attach or
    /// detach the adapter, when nothing runs.
    model: RefCell<Model>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    /// The header (the llama.cpp LoRA export describes its base model from it).
    gguf: Gguf,
    /// The file, for the checkpoint's digest of the base model.
    file: BlobSource,
    /// SHA-256 of the file, hex, once computed.
    sha256: RefCell<Option<String>>,
}

struct EngineWorker {
    scope: DedicatedWorkerGlobalScope,
    gpu: RefCell<Option<Rc<Gpu>>>,
    model: RefCell<Option<Rc<Loaded>>>,
    /// Generations asked to stop (their ids); removed when they end.
    cancelled: RefCell<HashSet<u32>>,
    /// How many generations are running (no model is loaded while any runs).
    running: Cell<u32>,
    course: RefCell<course::Course>,
    /// The current (or last) training run.
    session: RefCell<Option<training::Session>>,
    /// What the training loop should do after its current step: the page's pause
    /// and cancel set it while the loop awaits the GPU.
    control: Cell<training::Control>,
    /// Which session version's weights are attached to the model, if any.
    attached: Cell<Option<u64>>,
    /// The adapter's GPU weights while detached (for the base model), to reattach
    /// without another upload; with the session version they hold.
    spare: RefCell<Option<(u64, LoraWeights)>>,
    /// The held-out questions of the course the last run trained on (probes, quiz).
    questions: RefCell<Vec<probe::Probe>>,
    /// The time the current run's probes took.
    probe_budget: Cell<probe::Budget>,
    /// The version of an imported adapter (in `spare` or attached), which replaces
    /// the trained one until the next run.
    imported: Cell<Option<u64>>,
    /// Model files the page sent (by name), until `load_model` takes them.
    picked: RefCell<HashMap<String, Blob>>,
}

/// Installs the message handler and announces [`FromWorker::Ready`].
pub fn start() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let worker = Rc::new(EngineWorker {
        scope: scope.clone(),
        gpu: RefCell::new(None),
        model: RefCell::new(None),
        cancelled: RefCell::new(HashSet::new()),
        running: Cell::new(0),
        course: RefCell::new(course::Course::default()),
        session: RefCell::new(None),
        control: Cell::new(training::Control::Run),
        attached: Cell::new(None),
        spare: RefCell::new(None),
        questions: RefCell::new(Vec::new()),
        probe_budget: Cell::new(probe::Budget::default()),
        imported: Cell::new(None),
        picked: RefCell::new(HashMap::new()),
    });
    let handler_worker = worker.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let worker = handler_worker.clone();
        let data = event.data();
        let request = from_wire(data.clone()).and_then(|(text, payloads)| {
            let mut request = ToWorker::decode(&text).map_err(|e| e.to_string())?;
            request.attach(payloads)?;
            Ok(request)
        });
        // A picked model file travels by reference beside its request.
        if let (Ok(ToWorker::LoadModel { source: ModelSource::File { name, .. } }), Some(blob)) = (&request, wire_blob(&data)) {
            worker.picked.borrow_mut().insert(name.clone(), blob);
        }
        wasm_bindgen_futures::spawn_local(async move { worker.handle(request).await });
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    worker.post(&FromWorker::Ready);
}

impl EngineWorker {
    fn post(&self, reply: &FromWorker) {
        let (message, transfer) = to_wire(&reply.encode(), &reply.payloads());
        let posted = match transfer {
            Some(transfer) => self.scope.post_message_with_transfer(&message, &transfer),
            None => self.scope.post_message(&message),
        };
        if let Err(e) = posted {
            web_sys::console::error_2(&"worker: posting a reply failed".into(), &e);
        }
    }

    fn post_error(&self, request: &str, message: String) {
        self.post(&FromWorker::Error { request: request.into(), message });
    }

    async fn handle(&self, request: Result<ToWorker, String>) {
        let request = match request {
            Ok(request) => request,
            Err(message) => {
                self.post_error("decode", message);
                return;
            }
        };
        let name = request.name();
        // A device lost while no training ran is reopened (with the model) before the
        // next request; a running training recovers by itself.
        if !matches!(request, ToWorker::LoseDevice) {
            if let Err(message) = self.recover_if_lost().await {
                self.post_error(name, message);
                return;
            }
        }
        match request {
            ToWorker::Probe => self.probe().await,
            ToWorker::LoadModel { source } => match self.load_model(source).await {
                Ok(report) => self.post(&FromWorker::ModelLoaded(report)),
                Err(message) => self.post(&FromWorker::Error { request: "load_model".into(), message }),
            },
            ToWorker::Generate { id, prompt, settings } => self.generate(id, &prompt, &settings).await,
            ToWorker::Cancel { id } => {
                self.cancelled.borrow_mut().insert(id);
            }
            ToWorker::Logits { source, ids } => match self.logits(source, &ids).await {
                Ok(reply) => self.post(&reply),
                Err(message) => self.post(&FromWorker::Error { request: "logits".into(), message }),
            },
            ToWorker::AddCourseFiles { files, data } => {
                let mut course = self.course.borrow_mut();
                for file in files {
                    course.add(file.name, file.bytes);
                }
                drop(course);
                self.report_course(name, &data);
            }
            ToWorker::RemoveCourseFile { name: file, data } => {
                self.course.borrow_mut().remove(&file);
                self.report_course(name, &data);
            }
            ToWorker::PrepareCourse { data } => self.report_course(name, &data),
            ToWorker::CourseExamples { page } => match self.course_examples(page) {
                Ok(page) => self.post(&FromWorker::CourseExamples(page)),
                Err(message) => self.post_error(name, message),
            },
            ToWorker::ChangeExample { id, change, data } => {
                if let Err(message) = self.change_example(&id, &change, &data) {
                    self.post_error(name, message);
                }
            }
            ToWorker::StartTraining { data, train } => {
                if let Err(message) = self.start_training(&data, &train).await {
                    self.post_error(name, message);
                }
            }
            ToWorker::PauseTraining => self.control_training(training::Control::Pause),
            ToWorker::CancelTraining => self.control_training(training::Control::Cancel),
            ToWorker::ResumeTraining => {
                if let Err(message) = self.resume_training().await {
                    self.post_error(name, message);
                }
            }
            ToWorker::Export { format } if merged::merge_type(format).is_some() => {
                if let Err(message) = self.export_merged(format).await {
                    self.post_error(name, message);
                }
            }
            ToWorker::Export { format } => match self.export(format).await {
                Ok(reply) => self.post(&reply),
                Err(message) => self.post_error(name, message),
            },
            ToWorker::Quiz { max_tokens, data } => match self.quiz(max_tokens, &data).await {
                Ok(report) => self.post(&FromWorker::Quiz(report)),
                Err(message) => self.post_error(name, message),
            },
            ToWorker::ImportAdapter { files } => match self.import_adapter(files).await {
                Ok(report) => self.post(&FromWorker::AdapterImported(report)),
                Err(message) => self.post_error(name, message),
            },
            ToWorker::ImportCheckpoint { file, data } => {
                if let Err(message) = self.import_checkpoint(file, &data).await {
                    self.post_error(name, message);
                }
            }
            ToWorker::ResumeSavedRun => {
                if let Err(message) = self.resume_saved_run().await {
                    self.post_error(name, message);
                }
            }
            ToWorker::DiscardSavedRun => self.discard_saved_run().await,
            ToWorker::LoseDevice => {
                if let Some(gpu) = self.gpu.borrow().as_ref() {
                    gpu.device().destroy();
                }
            }
        }
    }

    /// Fetches, parses and uploads a model; it replaces the current one.
    async fn load_model(&self, source: ModelSource) -> Result<ModelReport, String> {
        if self.running.get() > 0 {
            return Err("a generation is running: stop it before loading another model".into());
        }
        if self.training_active() {
            return Err("training is running: cancel it before loading another model".into());
        }
        let started = js_sys::Date::now();
        let gpu = self.gpu().await.map_err(|e| format!("no GPU: {e}"))?;
        let blob = match &source {
            ModelSource::File { name, .. } => {
                self.picked.borrow_mut().remove(name).ok_or_else(|| format!("{name}: the file did not reach the worker"))?
            }
            _ => self.model_blob(&source).await?,
        };
        let file = BlobSource::new(blob);
        let gguf = file.header().await.map_err(|e| format!("{}: {e}", source_name(&source)))?;
        let tokenizer = Tokenizer::from_gguf(&gguf).map_err(|e| format!("{}: {e}", source_name(&source)))?;
        let template = ChatTemplate::from_gguf(&gguf).map_err(|e| format!("{}: {e}", source_name(&source)))?;
        // Free the old model's buffers (and its adapter) before uploading the new one.
        self.model.borrow_mut().take();
        self.forget_training();
        gpu.trim();
        let model =
            Model::load_with_header(&gpu, &file, &gguf).await.map_err(|e| format!("{}: {e}", source_name(&source)))?;
        // The dominant tensor type by bytes: what a person calls the quantization.
        let mut by_type: BTreeMap<&str, u64> = BTreeMap::new();
        for t in gguf.tensors() {
            *by_type.entry(t.ty.name()).or_default() += t.size;
        }
        let quantization = by_type.iter().max_by_key(|(_, bytes)| **bytes).map(|(ty, _)| ty.to_string()).unwrap_or_default();
        let config = &model.config;
        let kv_positions = CONTEXT.min(config.context.max(1));
        let report = ModelReport {
            name: config.name.clone(),
            architecture: config.arch.name().to_string(),
            parameters: config.parameter_count(),
            quantization,
            gpu_bytes: model.weight_bytes(),
            kv_cache_bytes: config.kv_cache_bytes(kv_positions),
            kv_positions: kv_positions as u32,
            vocab: config.vocab as u32,
            context: config.context as u32,
            load_seconds: ((js_sys::Date::now() - started) / 1000.0) as f32,
        };
        *self.model.borrow_mut() = Some(Rc::new(Loaded {
            source,
            model: RefCell::new(model),
            tokenizer,
            template,
            gguf,
            file,
            sha256: RefCell::new(None),
        }));
        Ok(report)
    }

    /// Streams generation `id` as `Token`s and always ends it with `Done`.
    async fn generate(&self, id: u32, prompt: &str, settings: &GenerateSettings) {
        self.running.set(self.running.get() + 1);
        let result = self.run_generation(id, prompt, settings).await;
        self.running.set(self.running.get().saturating_sub(1));
        self.cancelled.borrow_mut().remove(&id);
        match result {
            Ok(done) => self.post(&done),
            Err(message) => {
                self.post(&FromWorker::Error { request: "generate".into(), message });
                self.post(&FromWorker::Done {
                    id,
                    tokens: 0,
                    prompt_tokens: 0,
                    tokens_per_second: 0.0,
                    seconds: 0.0,
                    stop: StopReason::Error,
                });
            }
        }
    }

    // The model stays shared-borrowed while the GPU works: attaching an adapter needs
    // `try_borrow_mut` and refuses (with a message) until this ends.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn run_generation(&self, id: u32, prompt: &str, settings: &GenerateSettings) -> Result<FromWorker, String> {
        let loaded = self.model.borrow().clone().ok_or("no model is loaded")?;
        let gpu = self.gpu().await.map_err(|e| format!("no GPU: {e}"))?;
        self.use_adapter(&gpu, &loaded, settings.adapter)?;
        let model = loaded.model.try_borrow().map_err(|_| "the model is being changed: try again")?;
        let tokenizer = &loaded.tokenizer;
        let (ids, stop) = prompt_ids(&loaded, prompt, settings)?;
        let options = GenerateOptions {
            max_tokens: settings.max_tokens as usize,
            temperature: settings.temperature,
            top_k: settings.top_k,
            top_p: settings.top_p,
            repetition_penalty: 1.0,
            seed: settings.seed,
            stop: stop.clone(),
        };
        let context = CONTEXT.min(model.config.context.max(1));
        let mut generator = Generator::new(&gpu, &model, context).map_err(|e| e.to_string())?;
        let mut decoder = tokenizer.stream_decoder();
        let started = js_sys::Date::now();
        let mut first = None;
        let mut decode_error = None;
        let (tokens, reason) = generator
            .generate(&gpu, &ids, &options, |token| {
                first.get_or_insert_with(js_sys::Date::now);
                if !stop.contains(&token) {
                    match decoder.push(token) {
                        Ok(Some(text)) => self.post(&FromWorker::Token { id, text }),
                        Ok(None) => {}
                        Err(e) => {
                            decode_error = Some(e.to_string());
                            return false;
                        }
                    }
                }
                !self.cancelled.borrow().contains(&id)
            })
            .await
            .map_err(|e| e.to_string())?;
        if let Some(text) = decoder.finish() {
            self.post(&FromWorker::Token { id, text });
        }
        let now = js_sys::Date::now();
        let decode_seconds = first.map_or(0.0, |f| (now - f) / 1000.0);
        let stop = match (decode_error, reason) {
            (Some(message), _) => {
                self.post(&FromWorker::Error { request: "generate".into(), message });
                StopReason::Error
            }
            (None, model::StopReason::StopToken) => StopReason::StopToken,
            (None, model::StopReason::MaxTokens) => StopReason::MaxTokens,
            (None, model::StopReason::ContextFull) => StopReason::ContextFull,
            (None, model::StopReason::Cancelled) => StopReason::Cancelled,
        };
        Ok(FromWorker::Done {
            id,
            tokens: tokens.len() as u32,
            prompt_tokens: ids.len() as u32,
            tokens_per_second: if decode_seconds > 0.0 {
                (tokens.len().saturating_sub(1) as f64 / decode_seconds) as f32
            } else {
                0.0
            },
            seconds: ((now - started) / 1000.0) as f32,
            stop,
        })
    }

    /// Every position's logits for `ids`, with the model at `source`.
    // The model stays shared-borrowed while the GPU works: attaching an adapter needs
    // `try_borrow_mut` and refuses (with a message) until this ends.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn logits(&self, source: ModelSource, ids: &[u32]) -> Result<FromWorker, String> {
        let current = self.model.borrow().clone().filter(|loaded| loaded.source == source);
        let loaded = match current {
            Some(loaded) => loaded,
            None => {
                self.load_model(source).await?;
                self.model.borrow().clone().ok_or("the model did not load")?
            }
        };
        let gpu = self.gpu().await.map_err(|e| format!("no GPU: {e}"))?;
        self.use_adapter(&gpu, &loaded, false)?;
        let model = loaded.model.try_borrow().map_err(|_| "the model is being changed: try again")?;
        let mut cache = KvCache::new(&gpu, &model.config, ids.len().max(1)).map_err(|e| e.to_string())?;
        let logits = model.logits(&gpu, &mut cache, ids).await.map_err(|e| e.to_string())?;
        Ok(FromWorker::Logits { vocab: model.config.vocab as u32, logits })
    }

    /// The device, opened on first use and kept for the worker's lifetime.
    async fn gpu(&self) -> Result<Rc<Gpu>, GpuError> {
        let existing = self.gpu.borrow().clone();
        if let Some(gpu) = existing {
            return Ok(gpu);
        }
        let gpu = Rc::new(Gpu::new(GpuOptions::default()).await?);
        *self.gpu.borrow_mut() = Some(gpu.clone());
        Ok(gpu)
    }

    async fn probe(&self) {
        let gpu = match self.gpu().await {
            Ok(gpu) => gpu,
            Err(e) => {
                self.post(&FromWorker::GpuUnavailable { message: e.to_string() });
                return;
            }
        };
        let self_test = match gpu.self_test().await {
            Ok(()) => true,
            Err(e) => {
                self.post(&FromWorker::Error { request: "probe".into(), message: format!("GPU self-test: {e}") });
                false
            }
        };
        let limits = gpu.limits();
        let (vendor, architecture) = browser_adapter_info().await.unwrap_or_default();
        self.post(&FromWorker::Gpu(GpuReport {
            description: gpu.describe(),
            vendor,
            architecture,
            software: gpu.is_software(),
            subgroups: gpu.has_subgroups(),
            limits: GpuLimits {
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            },
            self_test,
        }));
        self.announce_saved_run().await;
    }
}

fn source_name(source: &ModelSource) -> &str {
    match source {
        ModelSource::Url { path } => path,
        ModelSource::Opfs { name } | ModelSource::File { name, .. } => name,
    }
}

/// The prompt's token ids and the ids that end the answer: a chat (system prompt,
/// earlier turns, the prompt as the next user message) or plain text to continue.
fn prompt_ids(loaded: &Loaded, prompt: &str, settings: &GenerateSettings) -> Result<(Vec<u32>, Vec<u32>), String> {
    let tokenizer = &loaded.tokenizer;
    let (ids, stop) = if settings.chat {
        let mut messages = Vec::new();
        if let Some(system) = settings.system.as_deref().filter(|s| !s.trim().is_empty()) {
            messages.push(Message::system(system));
        }
        for turn in &settings.history {
            messages.push(Message::user(turn.user.as_str()));
            messages.push(Message::assistant(turn.assistant.as_str()));
        }
        messages.push(Message::user(prompt));
        let text = loaded.template.render(&messages, true);
        (tokenizer.encode(&text, true).map_err(|e| e.to_string())?, loaded.template.stop_ids(tokenizer))
    } else {
        let mut ids = tokenizer.encode(prompt, false).map_err(|e| e.to_string())?;
        if let (true, Some(bos)) = (tokenizer.add_bos(), tokenizer.bos_id()) {
            ids.insert(0, bos);
        }
        (ids, tokenizer.eos_id().into_iter().collect())
    };
    if ids.is_empty() {
        return Err("the prompt has no tokens".into());
    }
    Ok((ids, stop))
}

/// A GGUF file in a `Blob`, read one range at a time.
pub struct BlobSource {
    blob: Blob,
    len: u64,
}

impl BlobSource {
    pub fn new(blob: Blob) -> BlobSource {
        let len = blob.size() as u64;
        BlobSource { blob, len }
    }

    pub fn blob(&self) -> &Blob {
        &self.blob
    }
}

impl TensorSource for BlobSource {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, GgufError> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len).ok_or_else(|| GgufError::Truncated {
            what: "tensor data".into(),
            offset,
            needed: len,
            available: self.len,
        })?;
        let io = |e: JsValue| GgufError::Io(format!("reading bytes {offset}..{end} of the model: {}", js_message(&e)));
        let slice = self.blob.slice_with_f64_and_f64(offset as f64, end as f64).map_err(io)?;
        let buffer = JsFuture::from(slice.array_buffer()).await.map_err(io)?;
        Ok(js_sys::Uint8Array::new(&buffer).to_vec())
    }
}

fn js_message(value: &JsValue) -> String {
    js_sys::Reflect::get(value, &"message".into())
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

/// `vendor` and `architecture` of the browser's own `GPUAdapterInfo`, which wgpu does
/// not map. A second `requestAdapter()` is cheap and leaves the engine's device alone.
async fn browser_adapter_info() -> Option<(String, String)> {
    let get = |target: &JsValue, key: &str| js_sys::Reflect::get(target, &key.into()).ok();
    let gpu = get(&get(&js_sys::global(), "navigator")?, "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    if adapter.is_null() || adapter.is_undefined() {
        return None;
    }
    let info = get(&adapter, "info")?;
    let text = |key: &str| get(&info, key).and_then(|v| v.as_string()).unwrap_or_default();
    Some((text("vendor"), text("architecture")))
}

