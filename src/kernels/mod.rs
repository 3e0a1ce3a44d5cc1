//! One module per WGSL file in `shaders/`: it loads the file, owns its kernels'
//! dispatch functions and a plain-loop CPU reference used by the tests.
pub mod matmul;

pub mod add;
pub mod attention;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod swiglu;
