//! NVRTC with no GPU: header-free CUDA C to CUBIN and PTX for sm_80 and sm_90, ptxas's resource
//! report and its check (which must be able to fail: a spilling kernel), compile errors with the
//! log, the CUBIN cache, and which builtins compile without any header (what the CUDA renderer
//! may use). Every test needs NVRTC (`bash scripts/fetch-nvrtc.sh`); where it cannot be located
//! each test prints a SKIP line and passes, unless `E2ENC_REQUIRE_NVRTC=1` (CI), which makes a
//! missing NVRTC a failure. All of that lives in [`nvrtc_or_skip`].

use std::path::Path;

use e2enc_codegen::artifact::Launch;
use e2enc_codegen::cuda::nvrtc::{self, check_resources, Nvrtc, NvrtcError};

/// NVRTC, or `None` after a SKIP line when it cannot be located (a failure instead with
/// `E2ENC_REQUIRE_NVRTC=1`). NVRTC that is found but cannot be used always fails the test.
fn nvrtc_or_skip(test: &str) -> Option<Nvrtc> {
    match nvrtc::load() {
        Ok(n) => Some(n),
        Err(e @ NvrtcError::NotFound { .. }) => {
            if std::env::var("E2ENC_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
                panic!("E2ENC_REQUIRE_NVRTC=1 and {e}");
            }
            eprintln!("SKIP {test}: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A small header-free kernel using what generated kernels use: static shared memory, a
/// barrier, loops, float math builtins, `long long` index math, a warp shuffle.
const KERNEL: &str = r#"
extern "C" __global__ void softnorm(const float* __restrict__ x, float* __restrict__ y,
                                    long long n, int reps) {
    __shared__ float tile[256];
    __shared__ float warp_sums[8];
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    tile[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    float s = 0.0f;
    for (int r = 0; r < reps; ++r) {
        for (int k = 0; k < 256; ++k) {
            s = fmaf(tile[k], expf(-fabsf(tile[(k + r) & 255])), s);
        }
    }
    for (int off = 16; off > 0; off >>= 1) {
        s += __shfl_down_sync(0xffffffffu, s, off);
    }
    if ((threadIdx.x & 31) == 0) {
        warp_sums[threadIdx.x >> 5] = s;
    }
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < 8; ++w) {
        total += warp_sums[w];
    }
    if (i < n) {
        y[i] = sqrtf(fabsf(total)) * rsqrtf(1.0f + x[i] * x[i]);
    }
}
"#;

/// 48 accumulators live across a loop, with `__launch_bounds__(1024, 2)` capping ptxas at 32
/// registers per thread: ptxas must spill.
const SPILLING: &str = r#"
extern "C" __global__ void __launch_bounds__(1024, 2)
spill(const float* __restrict__ x, float* __restrict__ y, int n) {
    float acc[48];
#pragma unroll
    for (int j = 0; j < 48; ++j) acc[j] = x[threadIdx.x + j * 1024];
    for (int k = 0; k < n; ++k) {
#pragma unroll
        for (int j = 0; j < 48; ++j) acc[j] = fmaf(acc[j], acc[(j + 7) % 48], x[k + j]);
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 48; ++j) s += acc[j] * (float)j;
    y[threadIdx.x] = s;
}
"#;

fn launch(block: u32, shared_bytes: u32) -> Launch {
    Launch {
        grid: [64, 1, 1],
        block: [block, 1, 1],
        shared_bytes,
        sync: true,
    }
}

#[test]
fn loads_nvrtc_12_9_with_its_builtins_from_its_folder() {
    let Some(nv) = nvrtc_or_skip("loads_nvrtc_12_9_with_its_builtins_from_its_folder") else {
        return;
    };
    let (major, minor) = nv.version();
    eprintln!("NVRTC {major}.{minor} at {}", nv.path().display());
    assert!(
        major >= 12,
        "NVRTC {major}.{minor}: the CUDA backend pins 12.9"
    );
    assert_eq!(nv.min_driver(), nvrtc::min_driver((major, minor)));
    for sm in [80, 90] {
        assert!(
            nv.supported_archs().contains(&sm),
            "{:?}",
            nv.supported_archs()
        );
    }
    // Compiling loads libnvrtc-builtins; it must come from the folder of libnvrtc itself (no
    // LD_LIBRARY_PATH needed).
    nv.compile(KERNEL, 80).unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let builtins = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libnvrtc-builtins"))
        .expect("libnvrtc-builtins is mapped after a compile");
    let dir = std::fs::canonicalize(nv.path())
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(
        Path::new(builtins).parent(),
        Some(dir.as_path()),
        "{builtins}"
    );
}

#[test]
fn compiles_a_header_free_kernel_for_sm80_and_sm90() {
    let Some(nv) = nvrtc_or_skip("compiles_a_header_free_kernel_for_sm80_and_sm90") else {
        return;
    };
    for sm in [80, 90] {
        let c = nv.compile(KERNEL, sm).unwrap();
        assert_eq!(c.sm, sm);
        assert!(c.cubin.starts_with(b"\x7fELF"), "sm_{sm}: CUBIN is not ELF");
        assert!(c.ptx.contains(".entry softnorm("), "sm_{sm}: {}", c.ptx);
        // The PTX of an sm_XX compile targets sm_XX: the driver JIT-compiles it for any newer GPU.
        assert!(
            c.ptx.contains(&format!(".target sm_{sm}\n")),
            "sm_{sm}: {}",
            c.ptx
        );
        let r = c
            .resources
            .iter()
            .find(|r| r.name == "softnorm")
            .unwrap_or_else(|| {
                panic!(
                    "sm_{sm}: softnorm not in the report: {:?}\n{}",
                    c.resources, c.log
                )
            });
        eprintln!("sm_{sm}: {r:?}");
        assert!(r.entry);
        assert!(r.registers > 0, "{r:?}\n{}", c.log);
        assert_eq!((r.spill_stores, r.spill_loads), (0, 0), "{}", c.log);
        assert_eq!(r.shared_bytes, (256 + 8) * 4, "{}", c.log);
        assert!(r.barriers >= 1, "{r:?}");
        check_resources(&c.resources, &[("softnorm".into(), launch(256, 0))], sm).unwrap();
        // The same source compiles to the same bytes (what makes the cache sound).
        let again = nv.compile(KERNEL, sm).unwrap();
        assert!(
            again.cubin == c.cubin && again.ptx == c.ptx,
            "sm_{sm}: not deterministic"
        );
    }
}

#[test]
fn a_spilling_kernel_fails_the_resource_check() {
    let Some(nv) = nvrtc_or_skip("a_spilling_kernel_fails_the_resource_check") else {
        return;
    };
    for sm in [80, 90] {
        let c = nv.compile(SPILLING, sm).unwrap();
        let r = c.resources.iter().find(|r| r.name == "spill").unwrap();
        assert!(
            r.spill_stores > 0 && r.spill_loads > 0,
            "sm_{sm}: no spill: {r:?}\n{}",
            c.log
        );
        assert!(r.registers <= 32, "{r:?}");
        let e =
            check_resources(&c.resources, &[("spill".into(), launch(1024, 0))], sm).unwrap_err();
        assert!(e.contains("spill: spills"), "{e}");
    }
    // And the launch side: a kernel not in the source, too much dynamic shared memory.
    let c = nv.compile(KERNEL, 80).unwrap();
    let e = check_resources(
        &c.resources,
        &[
            ("softnorm".into(), launch(256, 200 * 1024)),
            ("absent".into(), launch(32, 0)),
        ],
        80,
    )
    .unwrap_err();
    assert!(
        e.contains("shared memory") && e.contains("absent: launched"),
        "{e}"
    );
}

#[test]
fn a_syntax_error_gives_the_log() {
    let Some(nv) = nvrtc_or_skip("a_syntax_error_gives_the_log") else {
        return;
    };
    let bad = "extern \"C\" __global__ void broken(float* y) {\n    y[threadIdx.x] = 1.0f\n}\n";
    let e = nv.compile(bad, 90).unwrap_err();
    let NvrtcError::Compile { sm, ref log, .. } = e else {
        panic!("not a compile error: {e}");
    };
    assert_eq!(sm, 90);
    assert!(log.contains("kernels.cu(3): error"), "{log}");
    let msg = e.to_string();
    assert!(
        msg.contains("could not compile") && msg.contains("expected a \";\""),
        "{msg}"
    );
    // Many errors: the log is cut to 40 lines and says so.
    let many: String = (0..60)
        .map(|i| format!("int f{i}() {{ return x{i}; }}\n"))
        .collect();
    let NvrtcError::Compile { log, .. } = nv.compile(&many, 80).unwrap_err() else {
        panic!("not a compile error");
    };
    assert_eq!(log.lines().count(), 41, "{log}");
    assert!(log.ends_with("more lines)"), "{log}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let Some(nv) = nvrtc_or_skip("bad_inputs_are_errors_not_panics") else {
        return;
    };
    let e = nv.compile(KERNEL, 11).unwrap_err();
    assert!(
        matches!(e, NvrtcError::UnsupportedArch { sm: 11, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("cannot compile for sm_11"), "{e}");
    let e = nv.compile("int a;\0int b;", 80).unwrap_err();
    assert!(matches!(e, NvrtcError::NulInSource { offset: 6 }), "{e}");
}

#[test]
fn loading_a_missing_library_says_how_to_get_one() {
    // Needs no NVRTC.
    let e = nvrtc::load_from(Path::new("/nonexistent/libnvrtc.so.12")).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, NvrtcError::Load { .. }), "{msg}");
    assert!(
        msg.contains("bash scripts/fetch-nvrtc.sh") && msg.contains("E2ENC_NVRTC"),
        "{msg}"
    );
}

#[test]
fn the_cache_returns_identical_bytes_and_survives_corruption() {
    let Some(nv) = nvrtc_or_skip("the_cache_returns_identical_bytes_and_survives_corruption")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let first = nv.compile_cached(KERNEL, 90, Some(dir.path())).unwrap();
    assert!(!first.from_cache);
    let second = nv.compile_cached(KERNEL, 90, Some(dir.path())).unwrap();
    assert!(second.from_cache);
    assert!(second.cubin == first.cubin && second.ptx == first.ptx && second.log == first.log);
    assert_eq!(second.resources, first.resources);
    let entry = dir
        .path()
        .join(format!("{}.cubin", nv.cache_key(KERNEL, 90)));
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries,
        vec![entry.clone()],
        "one entry, no temporary files left"
    );
    // Another SM is another entry.
    assert!(
        !nv.compile_cached(KERNEL, 80, Some(dir.path()))
            .unwrap()
            .from_cache
    );
    // A flipped byte and a truncated entry are recompiled, and the entry is rewritten.
    let good = std::fs::read(&entry).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x40;
    for damaged in [flipped, good[..good.len() / 3].to_vec(), Vec::new()] {
        std::fs::write(&entry, damaged).unwrap();
        let again = nv.compile_cached(KERNEL, 90, Some(dir.path())).unwrap();
        assert!(!again.from_cache);
        assert!(again.cubin == first.cubin && again.ptx == first.ptx);
        // Rewritten: served from the cache again (the log differs: it holds ptxas's compile time).
        let cached = nv.compile_cached(KERNEL, 90, Some(dir.path())).unwrap();
        assert!(cached.from_cache);
        assert!(cached.cubin == first.cubin && cached.log == again.log);
    }
    // Compile errors are not cached.
    assert!(nv.compile_cached("oops", 90, Some(dir.path())).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// Whether builtins compile with no header at all (NVRTC 12.9, PyPI wheel): what the CUDA
/// renderer may write. `false` rows are what it must spell out itself.
const BUILTINS: &[(&str, &str, bool)] = &[
    ("expf", "y[i] = expf(x);", true),
    ("exp (float overload)", "y[i] = exp(x);", true),
    ("sqrt (double)", "d[i] = sqrt(d[i]);", true),
    ("sqrt (float overload)", "y[i] = sqrt(x);", true),
    ("sqrtf", "y[i] = sqrtf(x);", true),
    ("rsqrtf", "y[i] = rsqrtf(x);", true),
    ("fmaxf", "y[i] = fmaxf(x, 0.0f);", true),
    ("fminf", "y[i] = fminf(x, 0.0f);", true),
    ("fmaf", "y[i] = fmaf(x, x, 1.0f);", true),
    ("__fmaf_rn", "y[i] = __fmaf_rn(x, x, x);", true),
    ("fabsf", "y[i] = fabsf(x);", true),
    ("floorf", "y[i] = floorf(x);", true),
    ("logf", "y[i] = logf(x);", true),
    ("log1pf", "y[i] = log1pf(x);", true),
    ("tanhf", "y[i] = tanhf(x);", true),
    ("erff", "y[i] = erff(x);", true),
    ("powf", "y[i] = powf(x, 2.5f);", true),
    ("copysignf", "y[i] = copysignf(x, -1.0f);", true),
    ("isnan", "k[i] = isnan(x);", true),
    ("isfinite", "k[i] = isfinite(x);", true),
    ("min/max (int)", "k[i] = max(min(k[i], 3), 1);", true),
    (
        "__float_as_int/__int_as_float",
        "y[i] = __int_as_float(__float_as_int(x) + 1);",
        true,
    ),
    ("__float2int_rn", "k[i] = __float2int_rn(x);", true),
    ("__ldg", "y[i] = __ldg(y + 1);", true),
    ("__syncthreads", "__syncthreads(); y[i] = x;", true),
    ("__syncwarp", "__syncwarp(); y[i] = x;", true),
    (
        "__shfl_down_sync",
        "y[i] = __shfl_down_sync(0xffffffffu, x, 1);",
        true,
    ),
    (
        "__shfl_xor_sync",
        "y[i] = __shfl_xor_sync(0xffffffffu, x, 1);",
        true,
    ),
    (
        "__ballot_sync",
        "k[i] = __ballot_sync(0xffffffffu, x > 0.0f);",
        true,
    ),
    ("atomicAdd (float)", "atomicAdd(y, x);", true),
    ("atomicAdd (int)", "atomicAdd(k, 1);", true),
    ("atomicAdd (double)", "atomicAdd(d, 1.0);", true),
    ("atomicMax (int)", "atomicMax(k, 3);", true),
    ("atomicCAS", "atomicCAS(k, 0, 1);", true),
    ("size_t", "size_t a = i; k[i] = (int)a;", true),
    ("printf", "printf(\"%f\\n\", x);", true),
    (
        "inline PTX",
        "asm volatile(\"membar.gl;\" ::: \"memory\");",
        true,
    ),
    // Not available without headers: spell these out.
    ("INFINITY", "y[i] = INFINITY;", false),
    ("NAN", "y[i] = NAN;", false),
    ("FLT_MAX", "y[i] = FLT_MAX;", false),
    ("int64_t", "int64_t a = i; k[i] = (int)a;", false),
    ("uint32_t", "uint32_t a = i; k[i] = (int)a;", false),
    ("std::max", "k[i] = std::max(k[i], 1);", false),
    ("__half", "__half h; (void)h;", false),
    (
        "__builtin_memcpy",
        "float z; __builtin_memcpy(&z, &x, 4); y[i] = z;",
        false,
    ),
];

#[test]
fn which_builtins_compile_without_headers() {
    let Some(nv) = nvrtc_or_skip("which_builtins_compile_without_headers") else {
        return;
    };
    let mut surprises = Vec::new();
    for &(name, body, expected) in BUILTINS {
        let src = format!(
            "extern \"C\" __global__ void t(float* y, double* d, int* k) {{\n\
             int i = threadIdx.x; float x = y[i];\n{body}\n}}\n"
        );
        let got = match nv.compile(&src, 80) {
            Ok(_) => true,
            Err(NvrtcError::Compile { .. }) => false,
            Err(e) => panic!("{name}: {e}"),
        };
        eprintln!(
            "{:<32} {}",
            name,
            if got {
                "compiles"
            } else {
                "NOT without headers"
            }
        );
        if got != expected {
            surprises.push(format!("{name}: compiles = {got}, expected {expected}"));
        }
    }
    assert!(surprises.is_empty(), "{}", surprises.join("\n"));
}

#[test]
fn a_second_nvrtc_in_the_process_is_refused() {
    // cudarc binds NVRTC once per process; a different file loaded later must be an error, not
    // a silent use of the first one.
    let Some(nv) = nvrtc_or_skip("a_second_nvrtc_in_the_process_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libnvrtc.so.12");
    std::fs::copy(nv.path(), &copy).unwrap();
    let e = nvrtc::load_from(&copy).unwrap_err();
    assert!(
        e.to_string().contains("cudarc bound to another libnvrtc"),
        "{e}"
    );
    // The first one still works.
    assert!(nvrtc::load_from(nv.path()).is_ok());
}

/// Every CUDA training kernel (`e2enc_codegen::cuda::train`) of a small random E2ENet and of
/// the AMOS-CT recipe's network (width 48, 128^3 patches, batch 2, 16 classes), with the loss
/// kernels of every head and the optimizer's, compiles for sm_80 and sm_90, and ptxas's report
/// passes the resource check against the kernels' launches: no spills, registers and shared
/// memory within the SM's limits; in f32 and with the tensor-core convs in TF32 and bf16
/// (`--tensor-cores`).
#[test]
fn training_kernels_compile_for_sm80_and_sm90_without_spills() {
    use e2enc_codegen::target::Target;
    use e2enc_ir::autodiff::training_graph;
    use e2enc_ir::e2enet::{build, output_name, BuildOptions, ModelConfig};

    let Some(nv) = nvrtc_or_skip("training_kernels_compile_for_sm80_and_sm90_without_spills")
    else {
        return;
    };
    let mut small = ModelConfig::small(3, 4, 3, false);
    small.patch_size = [5, 12, 8];
    let cache = tempfile::tempdir().unwrap();
    for (cfg, batch) in [(small, 2), (ModelConfig::amos_ct(), 2)] {
        let net = build(&cfg, &BuildOptions { batch, patch: None }).unwrap();
        let outs: Vec<String> = (0..=cfg.deep_supervision_heads).map(output_name).collect();
        let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
        let tg = training_graph(&net.graph, &refs).unwrap();
        let tg = e2enc_codegen::train::prepare(&tg).unwrap();
        use e2enc_codegen::cuda::Mma;
        let formats = [None, Some(Mma::Tf32), Some(Mma::Bf16)];
        let cases = Target::CUDA
            .into_iter()
            .flat_map(|t| formats.map(|f| (t, f)));
        // AMOS-CT's tensor-core kernels in one format per SM (TF32 sm_80, bf16 sm_90): each
        // compile of its 500 kernels takes about 25 s here.
        let amos = cfg.name.contains("amos");
        for (target, tc) in cases.filter(|&(t, f)| {
            !amos || f.is_none() || (f == Some(Mma::Tf32)) == (t == Target::CudaSm80)
        }) {
            let sm = target.sm().unwrap();
            let gen = e2enc_codegen::cuda::train::generate(&tg, target, None, tc).unwrap();
            let mma = gen.c_source.matches("(acc[j], a, b)").count();
            assert_eq!(
                mma > 0,
                tc.is_some(),
                "{}: {mma} tensor-core kernels",
                cfg.name
            );
            let launches: Vec<(String, Launch)> = gen
                .kernels
                .iter()
                .map(|k| (k.name.clone(), k.launch.clone().unwrap()))
                .collect();
            assert!(
                launches.len() > 20,
                "{}: {} kernels",
                cfg.name,
                launches.len()
            );
            // With the loss kernels of every head and the optimizer's, as a device loads them.
            let mut source = gen.c_source.clone();
            let mut launches = launches;
            for (k, out) in outs.iter().enumerate() {
                let id = tg.graph.output(out).unwrap();
                let shape: [usize; 5] = tg.graph.node(id).ty.shape.as_slice().try_into().unwrap();
                let lk = e2enc_codegen::cuda::train::loss::loss_kernels(&format!("e2l_{k}"), shape)
                    .unwrap();
                source.push_str(&lk.source);
                launches.extend(lk.kernels);
            }
            let (osrc, ok) =
                e2enc_codegen::cuda::train::optim::optimizer_kernels(tg.weight_grads.len());
            source.push_str(&osrc);
            launches.extend(ok);
            let (ssrc, sk) = e2enc_codegen::cuda::train::stash::stash_kernels();
            source.push_str(&ssrc);
            launches.extend(sk);
            let (gsrc, gk) = e2enc_codegen::cuda::train::gather::gather_kernels();
            source.push_str(&gsrc);
            launches.extend(gk);
            let c = nv
                .compile_cached(&source, sm, Some(cache.path()))
                .unwrap_or_else(|e| panic!("{} for sm_{sm}: {e}", cfg.name));
            check_resources(&c.resources, &launches, sm)
                .unwrap_or_else(|e| panic!("{} for sm_{sm}: {e}", cfg.name));
            let most = c.resources.iter().map(|r| r.registers).max().unwrap_or(0);
            // Weight gradients split over the positions (the grid's z), and their scratch.
            let split: Vec<(u32, usize)> = gen
                .kernels
                .iter()
                .filter(|k| k.scratch > 0)
                .map(|k| (k.launch.as_ref().unwrap().grid[2], k.scratch))
                .collect();
            assert!(split.iter().all(|&(z, _)| z > 1));
            eprintln!(
                "{} sm_{sm}{}: {} training kernels ({mma} on tensor cores, {} split \
                 {}-{} ways, scratch {} KiB), at most {most} registers",
                cfg.name,
                tc.map_or(String::new(), |f| format!(" {f:?}")),
                launches.len(),
                split.len(),
                split.iter().map(|s| s.0).min().unwrap_or(0),
                split.iter().map(|s| s.0).max().unwrap_or(0),
                split.iter().map(|s| s.1).max().unwrap_or(0) / 1024,
            );
        }
    }
}
