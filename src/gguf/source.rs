//! Where tensor bytes come from: a memory-mapped file natively, a `Blob` in the browser
//! (implemented by the app's worker), or bytes already in memory (tests).

use super::{Gguf, GgufError, TensorInfo};

/// Random access to a model file's bytes, one range at a time.
#[allow(async_fn_in_trait)] // used with concrete types only; no Send bound needed in wasm
pub trait TensorSource {
    /// Total length of the file in bytes.
    fn len(&self) -> u64;
    /// `len` bytes starting at `offset`.
    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, GgufError>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parses the header, reading a growing prefix until it is complete.
    async fn header(&self) -> Result<Gguf, GgufError> {
        let file_len = self.len();
        let mut want = file_len.min(1 << 20);
        loop {
            let prefix = self.read(0, want).await?;
            match Gguf::parse(&prefix, file_len) {
                Ok(gguf) => return Ok(gguf),
                Err(error) => match Gguf::header_len_hint(&error, file_len) {
                    Some(next) if next > want => want = next,
                    _ => return Err(error),
                },
            }
        }
    }

    /// The data of one tensor.
    async fn tensor(&self, info: &TensorInfo) -> Result<Vec<u8>, GgufError> {
        self.read(info.offset, info.size).await
    }
}

fn out_of_range(offset: u64, len: u64, file_len: u64) -> GgufError {
    GgufError::Truncated {
        what: "tensor data".into(),
        offset,
        needed: len,
        available: file_len,
    }
}

impl TensorSource for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, GgufError> {
        let end = offset.checked_add(len).filter(|&e| e <= <[u8]>::len(self) as u64);
        match end {
            Some(end) => Ok(self[offset as usize..end as usize].to_vec()),
            None => Err(out_of_range(offset, len, <[u8]>::len(self) as u64)),
        }
    }
}

/// A model file mapped into memory (native hosts).
#[cfg(not(target_arch = "wasm32"))]
pub struct MappedFile {
    map: memmap2::Mmap,
}

#[cfg(not(target_arch = "wasm32"))]
impl MappedFile {
    pub fn open(path: &std::path::Path) -> Result<MappedFile, GgufError> {
        let file = std::fs::File::open(path)
            .map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?;
        // SAFETY: the map is read-only; a file truncated underneath us is the user's
        // doing, as with any mmap-based reader (llama.cpp does the same).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| GgufError::Io(format!("{}: {e}", path.display())))?;
        Ok(MappedFile { map })
    }
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl TensorSource for MappedFile {
    fn len(&self) -> u64 {
        self.map.len() as u64
    }
    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, GgufError> {
        self.map[..].read(offset, len).await
    }
}
