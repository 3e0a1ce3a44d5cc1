//! Kernels (a WGSL file, an entry point, compile-time constants) and their pipelines.
//!
//! Every shader is `shaders/common.wgsl` + one `const` line per constant + the kernel's
//! own file, so shared helpers live in one place and variants (tile sizes, weight
//! formats) are constants, not copies of the source.

use std::fmt::Write as _;

/// The shared helpers every kernel file may use.
const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// One entry point of one WGSL file, with the constants it is specialised on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    /// The file's name under `shaders/`, without extension; also the cache key.
    pub file: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    /// `const NAME = VALUE;` lines prepended to the file, e.g. `("TILE", "8u")`.
    pub constants: Vec<(&'static str, String)>,
    /// Uses `subgroupBroadcast` and friends; only valid where the device has subgroups.
    pub subgroups: bool,
}

impl Kernel {
    pub fn new(file: &'static str, source: &'static str, entry: &'static str) -> Self {
        Kernel { file, source, entry, constants: Vec::new(), subgroups: false }
    }
    pub fn with(mut self, name: &'static str, value: impl ToString) -> Self {
        self.constants.push((name, value.to_string()));
        self
    }
    pub fn with_subgroups(mut self) -> Self {
        self.subgroups = true;
        self
    }
    /// A readable name for errors and profiles: `matmul.matmul_forward[TILE=8u]`.
    pub fn name(&self) -> String {
        let mut name = format!("{}.{}", self.file, self.entry);
        if !self.constants.is_empty() {
            let list: Vec<String> = self.constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(name, "[{}]", list.join(","));
        }
        name
    }
    /// The complete WGSL text handed to the compiler.
    pub fn wgsl(&self, web: bool) -> String {
        let mut text = String::new();
        // The browser needs the directive; naga rejects it and enables subgroups from
        // the device feature instead.
        if self.subgroups && web {
            text.push_str("enable subgroups;\n");
        }
        text.push_str(COMMON);
        for (name, value) in &self.constants {
            let _ = writeln!(text, "const {name} = {value};");
        }
        text.push_str(self.source);
        text
    }
}

/// A compiled kernel: the pipeline and the layout of its bind group 0.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub(super) name: String,
    pub(super) raw: wgpu::ComputePipeline,
    pub(super) layout: wgpu::BindGroupLayout,
}

impl Pipeline {
    pub fn name(&self) -> &str {
        &self.name
    }
}
