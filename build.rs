//! With feature `train` and `VIGIL_LINK_TORCH_CUDA=1`, keep libtorch_cuda linked.
//!
//! rustc links with `--as-needed`, and nothing in the binary refers to a symbol of
//! libtorch_cuda.so directly (CUDA kernels register themselves when the library loads), so
//! the linker drops it and CUDA then reports itself unavailable. Forcing it in makes the
//! binary need CUDA's own libraries (cuBLAS, cuSPARSE, …) at start-up, which the CPU-sized
//! libtorch install (scripts/setup-libtorch.sh) does not have; so it is asked for
//! explicitly, for binaries meant for CUDA machines. libtorch is found the way torch-sys
//! finds it: from LIBTORCH.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=VIGIL_LINK_TORCH_CUDA");
    let wanted = std::env::var("VIGIL_LINK_TORCH_CUDA").is_ok_and(|v| v == "1");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() || !wanted {
        return;
    }
    let Some(libtorch) = std::env::var_os("LIBTORCH") else {
        println!("cargo:warning=VIGIL_LINK_TORCH_CUDA=1 needs LIBTORCH to find libtorch_cuda.so");
        return;
    };
    let lib = std::path::Path::new(&libtorch).join("lib");
    if !lib.join("libtorch_cuda.so").exists() {
        println!("cargo:warning=no libtorch_cuda.so in {}: this libtorch has no CUDA", lib.display());
        return;
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch_cuda");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}
