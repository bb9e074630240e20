//! The CUDA backend's code generation. The CUDA renderer (header-free CUDA C, `kernels.cu`) will
//! live in this folder next to [`nvrtc`], which turns that source into the CUBIN and PTX a CUDA
//! bundle ships, and checks the kernels' resources, on a machine without a GPU.

pub mod nvrtc;
