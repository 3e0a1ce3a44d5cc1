//! The origin private file system (OPFS), as the worker uses it: folders by path,
//! files read as `File`s (so a model is read one slice at a time, never whole), and
//! writes through `createWritable()`, whose changes only replace the file when the
//! stream closes. A write refused for lack of space becomes [`StoreError::Full`] with
//! a message that says how much was needed and what can be deleted.

use js_sys::{AsyncIterator, IteratorNext, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemRemoveOptions, FileSystemWritableFileStream,
    ReadableStream, StorageEstimate, StorageManager, WorkerGlobalScope,
};

use super::js_message;
use crate::storage::{quota_advice, Usage, MODEL_CACHE, RUN_DIR};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("this browser gives the app no private file system: {0}")]
    Unavailable(String),
    /// The quota was reached; the message says what is needed and what to delete.
    #[error("{0}")]
    Full(String),
    #[error("{what}: {message}")]
    Io { what: String, message: String },
}

fn io(what: &str) -> impl Fn(JsValue) -> StoreError + '_ {
    move |e| StoreError::Io {
        what: what.to_string(),
        message: js_message(&e),
    }
}

fn storage() -> Result<StorageManager, StoreError> {
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| StoreError::Unavailable("not running in a worker".into()))?;
    Ok(scope.navigator().storage())
}

async fn promised<T: JsCast>(promise: Promise, what: &str) -> Result<T, StoreError> {
    let value = JsFuture::from(promise).await.map_err(io(what))?;
    value.dyn_into().map_err(|v| StoreError::Io {
        what: what.into(),
        message: format!("unexpected {v:?}"),
    })
}

/// Whether `e` is a DOMException named `name` ("NotFoundError", "QuotaExceededError").
fn is_named(e: &JsValue, name: &str) -> bool {
    js_sys::Reflect::get(e, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .as_deref()
        == Some(name)
}

/// The folder at `path` (`/`-separated, from the OPFS root); `None` if it does not
/// exist and `create` is false.
pub async fn dir(
    path: &str,
    create: bool,
) -> Result<Option<FileSystemDirectoryHandle>, StoreError> {
    let root = JsFuture::from(storage()?.get_directory())
        .await
        .map_err(|e| StoreError::Unavailable(js_message(&e)))?;
    let mut handle: FileSystemDirectoryHandle = root
        .dyn_into()
        .map_err(|_| StoreError::Unavailable("no root".into()))?;
    let options = FileSystemGetDirectoryOptions::new();
    options.set_create(create);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match JsFuture::from(handle.get_directory_handle_with_options(part, &options)).await {
            Ok(next) => handle = next.unchecked_into(),
            Err(e) if is_named(&e, "NotFoundError") => return Ok(None),
            Err(e) => return Err(io(path)(e)),
        }
    }
    Ok(Some(handle))
}

/// The file `path` (its last part is the file name), or `None` if it does not exist.
pub async fn file(path: &str) -> Result<Option<File>, StoreError> {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let Some(folder) = dir(folder, false).await? else {
        return Ok(None);
    };
    let handle: FileSystemFileHandle = match JsFuture::from(folder.get_file_handle(name)).await {
        Ok(handle) => handle.unchecked_into(),
        Err(e) if is_named(&e, "NotFoundError") => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    promised(handle.get_file(), path).await.map(Some)
}

/// The whole file `path` as bytes (for the small ones: checkpoints, course files).
pub async fn read(path: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(file) = file(path).await? else {
        return Ok(None);
    };
    let buffer = JsFuture::from(file.array_buffer())
        .await
        .map_err(io(path))?;
    Ok(Some(js_sys::Uint8Array::new(&buffer).to_vec()))
}

/// A stream writing the file `path` (created if needed, with its folders).
async fn writable(
    path: &str,
    what: &str,
    needed: u64,
) -> Result<FileSystemWritableFileStream, StoreError> {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let folder = dir(folder, true).await?.ok_or_else(|| StoreError::Io {
        what: path.into(),
        message: "no folder".into(),
    })?;
    let options = FileSystemGetFileOptions::new();
    options.set_create(true);
    let handle: FileSystemFileHandle =
        promised(folder.get_file_handle_with_options(name, &options), path).await?;
    // Opening the stream copies the old file aside, which can hit the quota too.
    match JsFuture::from(handle.create_writable()).await {
        Ok(stream) => Ok(stream.unchecked_into()),
        Err(e) => Err(write_error(e, path, what, needed).await),
    }
}

/// A failed write: the quota message if space ran out, else what failed. A file the
/// write had just created is deleted, so no empty file passes for a kept one.
async fn write_error(e: JsValue, path: &str, what: &str, needed: u64) -> StoreError {
    if let Ok(Some(file)) = file(path).await {
        if file.size() == 0.0 {
            let _ = remove(path).await;
        }
    }
    if is_named(&e, "QuotaExceededError") {
        StoreError::Full(quota_advice(what, needed, &usage().await))
    } else {
        io(path)(e)
    }
}

/// Writes `bytes` as the file `path` (replacing it only once all is written); `what`
/// names it in a quota message.
pub async fn write(path: &str, bytes: &[u8], what: &str) -> Result<(), StoreError> {
    write_with(path, what, bytes.len() as u64, |stream| stream.write_with_u8_array(bytes)).await
}

/// Writes a `Blob` as the file `path` (the browser copies it; it never enters the
/// worker's memory).
pub async fn write_blob(path: &str, blob: &web_sys::Blob, what: &str) -> Result<(), StoreError> {
    write_with(path, what, blob.size() as u64, |stream| stream.write_with_blob(blob)).await
}

/// Opens `path` for writing, runs the one write `start` begins, and commits the file;
/// on failure the stream is aborted, so the previous file (if any) stays.
async fn write_with(
    path: &str,
    what: &str,
    needed: u64,
    start: impl FnOnce(&FileSystemWritableFileStream) -> Result<Promise, JsValue>,
) -> Result<(), StoreError> {
    let stream = writable(path, what, needed).await?;
    let written = match start(&stream) {
        Ok(promise) => JsFuture::from(promise).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        let _ = JsFuture::from(stream.abort()).await;
        return Err(write_error(e, path, what, needed).await);
    }
    if let Err(e) = JsFuture::from(stream.close()).await {
        return Err(write_error(e, path, what, needed).await);
    }
    Ok(())
}

/// Streams `body` into the file `path` (a model: never all in memory); `needed` is its
/// size for a quota message, if known.
pub async fn write_stream(
    path: &str,
    body: &ReadableStream,
    needed: u64,
    what: &str,
) -> Result<(), StoreError> {
    let stream = writable(path, what, needed).await?;
    // pipeTo closes the file when the body ends (committing it) and aborts it on error.
    if let Err(e) = JsFuture::from(body.pipe_to(&stream)).await {
        return Err(write_error(e, path, what, needed).await);
    }
    Ok(())
}

/// Deletes `path` (a folder with everything in it); nothing if it does not exist.
pub async fn remove(path: &str) -> Result<(), StoreError> {
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    let Some(folder) = dir(folder, false).await? else {
        return Ok(());
    };
    let options = FileSystemRemoveOptions::new();
    options.set_recursive(true);
    match JsFuture::from(folder.remove_entry_with_options(name, &options)).await {
        Ok(_) => Ok(()),
        Err(e) if is_named(&e, "NotFoundError") => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Every file under `folder` with its size, by path relative to it.
async fn files_in(
    folder: &FileSystemDirectoryHandle,
    prefix: &str,
    out: &mut Vec<(String, u64)>,
) -> Result<(), JsValue> {
    let entries: AsyncIterator = folder.values();
    loop {
        let next: IteratorNext = JsFuture::from(entries.next()?).await?.unchecked_into();
        if next.done() {
            return Ok(());
        }
        let handle = next.value();
        let name = js_sys::Reflect::get(&handle, &"name".into())?
            .as_string()
            .unwrap_or_default();
        let kind = js_sys::Reflect::get(&handle, &"kind".into())?
            .as_string()
            .unwrap_or_default();
        if kind == "directory" {
            Box::pin(files_in(
                handle.unchecked_ref(),
                &format!("{prefix}{name}/"),
                out,
            ))
            .await?;
        } else {
            let file: File =
                JsFuture::from(handle.unchecked_ref::<FileSystemFileHandle>().get_file())
                    .await?
                    .unchecked_into();
            out.push((format!("{prefix}{name}"), file.size() as u64));
        }
    }
}

/// The browser's estimate of this site's storage and what the app keeps in it: each
/// cached model, and the saved run as one item.
pub async fn usage() -> Usage {
    let mut usage = Usage::default();
    if let Some(estimate) = match storage().map(|s| s.estimate()) {
        Ok(Ok(promise)) => JsFuture::from(promise)
            .await
            .ok()
            .map(|e| e.unchecked_into::<StorageEstimate>()),
        _ => None,
    } {
        usage.usage = estimate.get_usage().unwrap_or(0.0) as u64;
        usage.quota = estimate.get_quota().unwrap_or(0.0) as u64;
    }
    if let Ok(Some(models)) = dir(MODEL_CACHE, false).await {
        let mut files = Vec::new();
        if files_in(&models, "", &mut files).await.is_ok() {
            for (name, bytes) in files {
                usage.kept.push((
                    format!("the model {}", name.replace("%2F", "/").replace("%25", "%")),
                    bytes,
                ));
            }
        }
    }
    if let Ok(Some(run)) = dir(RUN_DIR, false).await {
        let mut files = Vec::new();
        if files_in(&run, "", &mut files).await.is_ok() && !files.is_empty() {
            usage
                .kept
                .push(("the saved run".into(), files.iter().map(|f| f.1).sum()));
        }
    }
    usage
}
