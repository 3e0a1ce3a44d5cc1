//! One module per WGSL file in `shaders/`: it loads the file, owns its kernels'
//! dispatch functions and a plain-loop CPU reference used by the tests.
pub mod matmul;

pub mod add;
pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod dropout;
pub mod gather;
pub mod lora;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod swiglu;

use crate::gpu::{Buffer, GpuError};

/// Fails if two of `buffers` are the same device buffer: one dispatch may not bind a
/// buffer both for reading and for writing (and the kernels assume no aliasing).
pub(crate) fn ensure_distinct(kernel: &'static str, buffers: &[(&str, &Buffer)]) -> Result<(), GpuError> {
    for (i, (a, x)) in buffers.iter().enumerate() {
        for (b, y) in &buffers[i + 1..] {
            if x.raw() == y.raw() {
                return Err(GpuError::shape(kernel, format!("`{a}` and `{b}` are the same buffer `{}`", x.label())));
            }
        }
    }
    Ok(())
}

/// Sizes in bytes of the scalar fields of `struct NAME { … }` in WGSL source, for the
/// tests that check a `#[repr(C)]` parameter struct mirrors its shader's.
#[cfg(test)]
pub(crate) fn wgsl_struct_bytes(source: &str, name: &str) -> Option<usize> {
    let start = source.find(&format!("struct {name} {{"))?;
    let body = &source[start..];
    let body = &body[body.find('{')? + 1..body.find('}')?];
    let code: String = body.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join(" ");
    let mut bytes = 0;
    for field in code.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let ty = field.rsplit(':').next()?.trim();
        bytes += match ty {
            "u32" | "i32" | "f32" => 4,
            "vec4<u32>" | "vec4<f32>" => 16,
            _ => return None,
        };
    }
    Some(bytes)
}
