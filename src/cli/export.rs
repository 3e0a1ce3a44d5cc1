//! `classtune export`: a checkpoint's adapter as PEFT files, a llama.cpp LoRA GGUF, or
//! the base model with the adapter merged in (F16 or Q8_0 GGUF).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use classtune::adapter::{self, Adapter, MergePlan, MergeType};
use classtune::gguf::{Gguf, MappedFile, TensorSource};
use classtune::model::{adapter_from_flat, Config};
use classtune::train::checkpoint::{self, Checkpoint};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Peft,
    GgufLora,
    Merged(MergeType),
}

impl Format {
    pub fn parse(name: &str) -> Result<Format> {
        Ok(match name {
            "peft" => Format::Peft,
            "gguf-lora" => Format::GgufLora,
            "merged-f16" | "merged-gguf" => Format::Merged(MergeType::F16),
            "merged-q8_0" => Format::Merged(MergeType::Q8_0),
            other => return Err(format!("unknown export format {other:?}; choose peft, gguf-lora, merged-f16 or merged-q8_0").into()),
        })
    }

    /// The file (or folder, for PEFT) it writes inside `dir`.
    fn target(self, dir: &Path) -> PathBuf {
        match self {
            Format::Peft => dir.to_path_buf(),
            Format::GgufLora => dir.join("adapter.gguf"),
            // A folder of its own: next to adapter_config.json, transformers would take
            // the GGUF for an adapter and look for the base model online.
            Format::Merged(MergeType::F16) => dir.join("merged").join("merged-f16.gguf"),
            Format::Merged(MergeType::Q8_0) => dir.join("merged").join("merged-q8_0.gguf"),
        }
    }
}

/// Writes `adapter` (made on the base `gguf`, whose file holds `base_bytes`) in
/// `format` into `dir`; returns what it wrote.
pub fn write(format: Format, adapter: &Adapter, gguf: &Gguf, base_bytes: &[u8], dir: &Path) -> Result<PathBuf> {
    let path = format.target(dir);
    let config = Config::from_gguf(gguf)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match format {
        Format::Peft => adapter::write_peft_dir(dir, &adapter::to_peft(adapter, &config)?)?,
        Format::GgufLora => {
            checkpoint::write_atomic(&path, &adapter::to_gguf_lora(adapter, gguf)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Format::Merged(ty) => {
            // Streamed tensor by tensor into a temporary file, renamed when complete.
            let plan = MergePlan::new(gguf, adapter, ty)?;
            let tmp = path.with_extension("tmp");
            let mut out = BufWriter::new(File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?);
            adapter::write_merged(&plan, base_bytes, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
        }
    }
    Ok(path)
}

/// `classtune export --checkpoint C --format F --out DIR [--model M]`.
pub fn run(model: &Path, checkpoint_path: &Path, format: &str, out: &Path) -> Result<()> {
    let format = Format::parse(format)?;
    let bytes = std::fs::read(checkpoint_path).map_err(|e| format!("{}: {e}", checkpoint_path.display()))?;
    let ckpt = Checkpoint::from_bytes(&bytes).map_err(|e| format!("{}: {e}", checkpoint_path.display()))?;
    let file = MappedFile::open(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let gguf = Gguf::parse(file.bytes(), file.len()).map_err(|e| format!("{}: {e}", model.display()))?;
    let sha256 = checkpoint::sha256_hex(file.bytes().chunks(1 << 24));
    if sha256 != ckpt.meta.base.sha256 {
        return Err(format!(
            "{} was trained on `{}`, which is not {} (different file contents); pass the base model with --model",
            checkpoint_path.display(),
            ckpt.meta.base.name,
            model.display()
        )
        .into());
    }
    let config = Config::from_gguf(&gguf)?;
    let adapter = adapter_from_flat(&config, &ckpt.meta.lora, &ckpt.state.params, &ckpt.meta.base.name)?;
    let path = write(format, &adapter, &gguf, file.bytes(), out)?;
    println!("wrote {} (step {})", path.display(), ckpt.meta.step);
    Ok(())
}
