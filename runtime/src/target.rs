//! The targets a bundle's kernels are generated for, as one table: name, architecture, CPU
//! features, C compiler flags and vector width of each.
//!
//! - [`Target::X86Avx2`] (`x86-avx2`): AVX2 + FMA, 8-lane `__m256`;
//! - [`Target::X86Avx512`] (`x86-avx512`): adds AVX-512F: the stride-1 fast-path convolutions use
//!   16-lane vectors, the other kernels stay 8-lane (which AVX-512 hosts run too);
//! - [`Target::Aarch64Neon`] (`aarch64-neon`): Arm64 Advanced SIMD (every aarch64 CPU has it),
//!   8-lane vectors as pairs of `float32x4_t`;
//! - [`Target::Portable`] (`portable`): C with no intrinsics: 8-lane generic vectors (GCC/Clang
//!   `vector_size`) lowered to whatever SIMD the host has, or arrays of 8 floats for any other
//!   C99 compiler;
//! - [`Target::CudaSm80`] / [`Target::CudaSm90`] (`cuda-sm80`, `cuda-sm90`): CUDA C compiled by
//!   NVRTC to a CUBIN for that streaming-multiprocessor version (Ampere A100, Hopper H100/H200;
//!   newer GPUs load the PTX fallback). No host architecture or CPU features: a CUDA bundle runs
//!   on a GPU through the runtime's CUDA device, or on any host through the emulation
//!   (`run --emulate`).
//!
//! The target decides the C compiler flags and the CPU features the manifest lists, so a bundle
//! built for AVX-512 is refused on a host without it. [`Target::native`] picks the widest target
//! the compiling host supports. How the kernel text differs per target lives in codegen's C
//! renderer (`e2enc_codegen::c`), not here: this file, in the runtime and re-exported by codegen as
//! `e2enc_codegen::target`, is only the facts a loader also needs.

use std::fmt;
use std::str::FromStr;

/// Target of the generated kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    X86Avx2,
    X86Avx512,
    Aarch64Neon,
    Portable,
    CudaSm80,
    CudaSm90,
}

/// Flags every bundle's C compilation uses, whatever the target. A call of an undeclared
/// function (a helper the generated text names but its prelude lacks) fails the compile: C11
/// compilers before gcc 14 only warn, and the library then dies on its first call.
const BASE_FLAGS: [&str; 6] = [
    "-O2",
    "-std=c11",
    "-fPIC",
    "-shared",
    "-fno-math-errno",
    "-Werror=implicit-function-declaration",
];

impl Target {
    /// Every target, in `--help` order.
    pub const ALL: [Target; 6] = [
        Target::X86Avx2,
        Target::X86Avx512,
        Target::Aarch64Neon,
        Target::Portable,
        Target::CudaSm80,
        Target::CudaSm90,
    ];

    /// The CPU targets (kernels in C, run by the thread pool).
    pub const CPU: [Target; 4] = [
        Target::X86Avx2,
        Target::X86Avx512,
        Target::Aarch64Neon,
        Target::Portable,
    ];

    /// The GPU targets (kernels in CUDA C).
    pub const CUDA: [Target; 2] = [Target::CudaSm80, Target::CudaSm90];

    /// The target's name on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            Target::X86Avx2 => "x86-avx2",
            Target::X86Avx512 => "x86-avx512",
            Target::Aarch64Neon => "aarch64-neon",
            Target::Portable => "portable",
            Target::CudaSm80 => "cuda-sm80",
            Target::CudaSm90 => "cuda-sm90",
        }
    }

    /// Whether the kernels are CUDA (run on a GPU or its host emulation), not C.
    pub fn is_cuda(self) -> bool {
        self.sm().is_some()
    }

    /// The streaming-multiprocessor version of a CUDA target (80, 90), `None` for CPU targets.
    pub fn sm(self) -> Option<u32> {
        match self {
            Target::CudaSm80 => Some(80),
            Target::CudaSm90 => Some(90),
            _ => None,
        }
    }

    /// The machine architecture its code runs on (`std::env::consts::ARCH` names), `None` for
    /// portable C, which runs on any, and for CUDA, which runs on no CPU ([`Target::is_cuda`]).
    pub fn arch(self) -> Option<&'static str> {
        match self {
            Target::X86Avx2 | Target::X86Avx512 => Some("x86_64"),
            Target::Aarch64Neon => Some("aarch64"),
            Target::Portable | Target::CudaSm80 | Target::CudaSm90 => None,
        }
    }

    /// The CPU features (`std::arch` names) its kernels need beyond the architecture.
    pub fn cpu_features(self) -> &'static [&'static str] {
        match self {
            Target::X86Avx2 => &["avx2", "fma"],
            Target::X86Avx512 => &["avx2", "fma", "avx512f"],
            Target::Aarch64Neon => &["neon"],
            Target::Portable | Target::CudaSm80 | Target::CudaSm90 => &[],
        }
    }

    /// The `-m` flags enabling those features in the C compiler (aarch64 has NEON by default;
    /// portable C gets none, so it runs on the baseline of the host's architecture).
    pub fn machine_flags(self) -> &'static [&'static str] {
        match self {
            Target::X86Avx2 => &["-mavx2", "-mfma"],
            Target::X86Avx512 => &["-mavx2", "-mfma", "-mavx512f"],
            Target::Aarch64Neon | Target::Portable | Target::CudaSm80 | Target::CudaSm90 => &[],
        }
    }

    /// The full C compiler flags of a bundle's shared library for this target.
    pub fn cflags(self) -> Vec<&'static str> {
        let mut f = vec![BASE_FLAGS[0]];
        if self == Target::Portable {
            // Portable multiply-adds are written unfused; contraction stays off so the results
            // do not depend on whether the host compiler finds an FMA.
            f.push("-ffp-contract=off");
        }
        f.extend_from_slice(self.machine_flags());
        f.extend_from_slice(&BASE_FLAGS[1..]);
        f
    }

    /// The C cross compiler that builds this target's code on this host (Debian's package
    /// names), `None` when the host's own compiler does (same architecture, or portable C).
    pub fn cross_compiler(self) -> Option<&'static str> {
        match self.arch() {
            Some(a) if a != std::env::consts::ARCH => Some(match a {
                "aarch64" => "aarch64-linux-gnu-gcc",
                _ => "x86_64-linux-gnu-gcc",
            }),
            _ => None,
        }
    }

    /// Float lanes of the widest vectors the conv micro kernels use.
    pub fn lanes(self) -> usize {
        match self {
            Target::X86Avx512 => 16,
            _ => 8,
        }
    }

    /// Whether the running host's CPU can run this target's code (never for CUDA targets).
    pub fn host_supports(self) -> bool {
        if self.is_cuda() {
            return false;
        }
        if let Some(a) = self.arch() {
            if a != std::env::consts::ARCH {
                return false;
            }
        }
        self.cpu_features()
            .iter()
            .all(|f| host_has(f) == Some(true))
    }

    /// The widest target the running host supports (portable C where no SIMD dialect fits).
    pub fn native() -> Target {
        [Target::X86Avx512, Target::X86Avx2, Target::Aarch64Neon]
            .into_iter()
            .find(|t| t.host_supports())
            .unwrap_or(Target::Portable)
    }

    /// The target a manifest names (`target`), or for bundles from before targets existed, the
    /// x86 target its CPU feature list implies.
    pub fn from_manifest<S: AsRef<str>>(
        name: Option<&str>,
        features: &[S],
    ) -> Result<Target, String> {
        match name {
            Some(n) => n.parse(),
            None if features.iter().any(|f| f.as_ref() == "avx512f") => Ok(Target::X86Avx512),
            None => Ok(Target::X86Avx2),
        }
    }

    /// The C compiler flags of a bundle's standalone program (`compile --standalone`): those of
    /// [`Target::cflags`] without the shared-library ones.
    pub fn standalone_cflags(self) -> Vec<&'static str> {
        self.cflags()
            .into_iter()
            .filter(|f| !matches!(*f, "-fPIC" | "-shared"))
            .collect()
    }

    /// The one-line command that builds a bundle's standalone program in its `standalone/`
    /// folder: `cc` with [`Target::standalone_cflags`], or for `aarch64-neon` the Debian cross
    /// compiler `aarch64-linux-gnu-gcc` with `-static` (so `qemu-aarch64` runs it as is).
    pub fn standalone_build_line(self) -> String {
        let cc = match self {
            Target::Aarch64Neon => "aarch64-linux-gnu-gcc -static",
            _ => "cc",
        };
        format!(
            "{cc} {} model.c main.c -o model -lm",
            self.standalone_cflags().join(" ")
        )
    }

    /// The names `--target` accepts, for messages.
    pub fn choices() -> String {
        let mut v: Vec<&str> = vec!["native"];
        v.extend(Target::ALL.iter().map(|t| t.name()));
        v.join(", ")
    }
}

/// Whether this host has a CPU feature, by its `std::arch` name (`None`: unknown feature).
pub fn host_has(feature: &str) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    {
        Some(match feature {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            "avx512vbmi" => std::arch::is_x86_feature_detected!("avx512vbmi"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "neon" => false,
            _ => return None,
        })
    }
    #[cfg(target_arch = "aarch64")]
    {
        Some(match feature {
            "neon" => std::arch::is_aarch64_feature_detected!("neon"),
            "avx2" | "fma" | "avx" | "avx512f" | "avx512bw" | "avx512bf16" | "avx512vnni"
            | "avx512vbmi" | "f16c" => false,
            _ => return None,
        })
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        match feature {
            "avx2" | "fma" | "avx" | "avx512f" | "avx512bw" | "avx512bf16" | "avx512vnni"
            | "avx512vbmi" | "f16c" | "neon" => Some(false),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = String;

    /// A target name, `native` (the host's widest, see [`Target::native`]), or the older
    /// `--isa` spellings `avx2` and `avx512`.
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "native" => Ok(Target::native()),
            "avx2" => Ok(Target::X86Avx2),
            "avx512" => Ok(Target::X86Avx512),
            "neon" => Ok(Target::Aarch64Neon),
            _ => Target::ALL
                .into_iter()
                .find(|t| t.name() == s)
                .ok_or_else(|| {
                    format!(
                        "unknown target `{s}`: expected one of {}",
                        Target::choices()
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_features_follow_the_target() {
        assert_eq!(
            Target::X86Avx2.cflags(),
            [
                "-O2",
                "-mavx2",
                "-mfma",
                "-std=c11",
                "-fPIC",
                "-shared",
                "-fno-math-errno",
                "-Werror=implicit-function-declaration"
            ]
        );
        assert!(Target::X86Avx512.cflags().contains(&"-mavx512f"));
        assert!(!Target::X86Avx2.cpu_features().contains(&"avx512f"));
        assert!(!Target::Portable
            .cflags()
            .iter()
            .any(|f| f.starts_with("-m")));
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>(), Ok(t));
            assert_eq!(Target::from_manifest(Some(t.name()), &[] as &[&str]), Ok(t));
        }
        assert_eq!(
            Target::from_manifest(None, Target::X86Avx512.cpu_features()),
            Ok(Target::X86Avx512)
        );
        assert_eq!(Target::from_manifest(None, &["avx2"]), Ok(Target::X86Avx2));
        assert_eq!("avx512".parse::<Target>(), Ok(Target::X86Avx512));
        assert_eq!("avx2".parse::<Target>(), Ok(Target::X86Avx2));
        let e = "sse".parse::<Target>().unwrap_err();
        assert!(e.contains("aarch64-neon") && e.contains("portable"), "{e}");
        let n: Target = "native".parse().unwrap();
        assert!(n.host_supports());
        assert!(Target::Portable.host_supports());
        #[cfg(target_arch = "x86_64")]
        assert!(!Target::Aarch64Neon.host_supports());
    }
}
