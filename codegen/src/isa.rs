//! The instruction set a bundle's kernels are generated for: [`Isa::Avx2`] (AVX2 + FMA, 8-lane
//! `__m256`, the portable default of earlier bundles) or [`Isa::Avx512`] (adds AVX-512F: the
//! stride-1 fast-path convolutions use 16-lane `__m512` micro kernels, everything else stays on
//! the AVX2 kernels, which AVX-512 hosts run too).
//!
//! The ISA decides the C compiler flags and the CPU features the manifest lists, so a bundle
//! built for AVX-512 is refused on a host without it. [`Isa::native`] picks AVX-512 when the
//! compiling host has every feature it needs.

use std::fmt;
use std::str::FromStr;

/// Target instruction set of the generated kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Avx2,
    Avx512,
}

/// Flags every bundle's C compilation uses, whatever the ISA.
const BASE_FLAGS: [&str; 5] = ["-O2", "-std=c11", "-fPIC", "-shared", "-fno-math-errno"];

impl Isa {
    /// The CPU features (`std::arch` names) kernels generated for this ISA need.
    pub fn cpu_features(self) -> &'static [&'static str] {
        match self {
            Isa::Avx2 => &["avx2", "fma"],
            Isa::Avx512 => &["avx2", "fma", "avx512f"],
        }
    }

    /// The `-m` flags enabling those features in the C compiler.
    pub fn machine_flags(self) -> &'static [&'static str] {
        match self {
            Isa::Avx2 => &["-mavx2", "-mfma"],
            Isa::Avx512 => &["-mavx2", "-mfma", "-mavx512f"],
        }
    }

    /// The full C compiler flags of a bundle for this ISA.
    pub fn cflags(self) -> Vec<&'static str> {
        let mut f = vec![BASE_FLAGS[0]];
        f.extend_from_slice(self.machine_flags());
        f.extend_from_slice(&BASE_FLAGS[1..]);
        f
    }

    /// Float lanes of the widest vectors the conv micro kernels use.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// Whether the running host has every feature of this ISA.
    pub fn host_supports(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.cpu_features().iter().all(|f| match *f {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                _ => false,
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The widest ISA the running host supports (AVX2 when it has no AVX-512, and as the
    /// fallback on hosts that have neither: compiling for them fails later anyway).
    pub fn native() -> Isa {
        if Isa::Avx512.host_supports() {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    }

    /// The ISA a manifest's CPU feature list was generated for.
    pub fn from_features<S: AsRef<str>>(features: &[S]) -> Isa {
        if features.iter().any(|f| f.as_ref() == "avx512f") {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = String;

    /// `avx2`, `avx512`, or `native` (the host's widest, see [`Isa::native`]).
    fn from_str(s: &str) -> Result<Isa, String> {
        match s {
            "avx2" => Ok(Isa::Avx2),
            "avx512" => Ok(Isa::Avx512),
            "native" => Ok(Isa::native()),
            _ => Err(format!(
                "unknown ISA `{s}`: expected avx2, avx512 or native"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_features_follow_the_isa() {
        assert_eq!(
            Isa::Avx2.cflags(),
            [
                "-O2",
                "-mavx2",
                "-mfma",
                "-std=c11",
                "-fPIC",
                "-shared",
                "-fno-math-errno"
            ]
        );
        assert!(Isa::Avx512.cflags().contains(&"-mavx512f"));
        assert!(!Isa::Avx2.cpu_features().contains(&"avx512f"));
        assert_eq!(Isa::from_features(Isa::Avx512.cpu_features()), Isa::Avx512);
        assert_eq!(Isa::from_features(Isa::Avx2.cpu_features()), Isa::Avx2);
        assert_eq!("avx512".parse::<Isa>(), Ok(Isa::Avx512));
        assert_eq!("avx2".parse::<Isa>(), Ok(Isa::Avx2));
        assert!("sse".parse::<Isa>().is_err());
        let n: Isa = "native".parse().unwrap();
        assert!(n == Isa::Avx2 || n.host_supports());
    }
}
