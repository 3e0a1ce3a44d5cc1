//! One module per WGSL file in `shaders/`: it loads the file, owns its kernels'
//! dispatch functions and a plain-loop CPU reference used by the tests.
