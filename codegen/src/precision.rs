//! The arithmetic of a bundle's kernels (`--precision`): which number formats the convolutions
//! multiply in. Accumulation is f32 in every precision; instance-norm statistics stay in f64.
//!
//! - `f32`: IEEE single precision everywhere (every target; the CPU targets' only one today);
//! - `tf32`: CUDA tensor cores (`mma.sync` m16n8k8) multiply TF32 (10-bit mantissa, f32
//!   range) inputs: activations rounded by `cvt.rna`, weights rounded when compiled; the
//!   default for CUDA targets, about 1e-3 relative error per conv against f32;
//! - `bf16`: CUDA tensor cores (`mma.sync` m16n8k16) multiply bfloat16 (8-bit mantissa)
//!   inputs (8 significant bits), rounded to nearest even: twice TF32's tensor-core rate, 8x its
//!   rounding (1-2e-2 relative error on the numpy fixture's outputs);
//!   on CUDA activations stay f32 in the arena between layers. On `x86-avx512` (CPUs with
//!   `avx512_bf16`) the 3x3 stride-1 convs (the 1x3x3 convs of E2ENet, depth-shifted or not,
//!   dense or DSFF-sparse) and the dense 3x3 stride-2 ones multiply bf16 pairs with
//!   `vdpbf16ps`: inputs and weights rounded to nearest even, f32 sums; the other convs of a
//!   CPU bundle (1x1x1 heads, transposed, sparse stride 2) multiply in f32; and activations are **stored as bf16** in the arena wherever
//!   every kernel touching them reads and writes bf16 views (`layout::Elem::Bf16`: the
//!   fast-path and upsampling convs, their norms, max pooling; inputs and outputs stay f32),
//!   which halves their memory and bytes moved (`c::dialect::X86_NARROW`).
//!
//! - `int8`: on `x86-avx512` (CPUs with `avx512_vnni`) the same 3x3 stride-1
//!   convs multiply unsigned 8-bit activations by signed 8-bit weights with `vpdpbusd` (four
//!   products added to one i32 lane) and turn the i32 sums back into f32 before the bias and the
//!   epilogue. Activations are quantized per input channel with a scale and zero point from
//!   calibration ([`crate::quant`]); weights per output channel, symmetric, with the activation
//!   scales folded in. Needs a calibration (`e2enc compile --calibrate DIR`). Activations are
//!   stored as bf16 as in bf16 bundles (the int8 kernels quantize bf16 rows while packing), and
//!   the convs without int8 kernels that have bf16 ones (the dense stride-2 convs) multiply in
//!   bf16, so these bundles also need `avx512_bf16`, and `avx512_vbmi` for the int8 kernels'
//!   byte packing (Zen 4, Sapphire Rapids; not Cooper Lake); with
//!   `--activations f32` activations stay f32, the other convs multiply in f32, and
//!   `avx512_vnni` alone suffices (Ice Lake, Cascade Lake).

use std::fmt;
use std::str::FromStr;

use crate::target::Target;

/// The number format of the convolutions' multiplications.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F32,
    Tf32,
    Bf16,
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// CPU features (`std::arch` names) kernels in this precision need beyond the target's own:
    /// `avx512bw` and `avx512bf16` for bf16 on x86 (`vcvtne2ps2bf16`, `vpermw`, `vdpbf16ps`);
    /// `avx512bw` and `avx512vnni` for int8 (`vpdpbusd`).
    pub fn cpu_features(self, target: Target) -> &'static [&'static str] {
        match (self, target) {
            (Precision::Bf16, Target::X86Avx512) => &["avx512bw", "avx512bf16"],
            (Precision::Int8, Target::X86Avx512) => &["avx512bw", "avx512vnni"],
            _ => &[],
        }
    }

    /// Whether bundles of `target` in this precision store activations as bf16 unless told
    /// otherwise (`--activations f32`): bf16 and int8 on x86-avx512.
    pub fn stores_bf16(self, target: Target) -> bool {
        target == Target::X86Avx512 && matches!(self, Precision::Bf16 | Precision::Int8)
    }

    /// Whether a bundle of `target` in `precision` (`None`: the target's default) keeps its
    /// activations f32 (`CompileOptions::f32_activations`) when asked for `activations`
    /// (`"bf16"`, `"f32"`, or nothing: bf16 where its kernels can), or why the request is
    /// refused. The CLI's `--activations` and Python's `activations=` both ask here.
    pub fn f32_activations(
        precision: Option<Precision>,
        target: Target,
        activations: Option<&str>,
    ) -> Result<bool, String> {
        let stores = precision
            .unwrap_or_else(|| Precision::default_for(target))
            .stores_bf16(target);
        match activations {
            None => Ok(false),
            Some("f32") => Ok(true),
            Some("bf16") if stores => Ok(false),
            Some("bf16") => Err("bf16 activations need precision bf16 or int8 with target \
                 x86-avx512 (the kernels that read and write bf16 activations); this bundle \
                 stores f32"
                .into()),
            Some(other) => Err(format!(
                "activations are stored as \"bf16\" or \"f32\", not {other:?}"
            )),
        }
    }

    /// CPU features a bundle needs beyond [`Precision::cpu_features`] when it stores
    /// activations as bf16 (`narrow`): `avx512bf16` for an int8 bundle's conversions and bf16
    /// kernels, `avx512vbmi` for its int8 kernels' tap words made from packed bytes (`vpermb`).
    pub fn narrow_features(self, target: Target, narrow: bool) -> &'static [&'static str] {
        match (self, target, narrow) {
            (Precision::Int8, Target::X86Avx512, true) => &["avx512bf16", "avx512vbmi"],
            _ => &[],
        }
    }

    /// The default of `target`: TF32 tensor cores on CUDA (sm_80 and newer have them), f32 on
    /// CPUs.
    pub fn default_for(target: Target) -> Precision {
        if target.is_cuda() {
            Precision::Tf32
        } else {
            Precision::F32
        }
    }

    /// Whether kernels of `target` can compute in this precision; the error names what can.
    pub fn check(self, target: Target) -> Result<(), String> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Tf32 | Precision::Bf16 if target.is_cuda() => Ok(()),
            Precision::Bf16 | Precision::Int8 if target == Target::X86Avx512 => Ok(()),
            Precision::Int8 => Err(format!(
                "--precision int8 needs --target x86-avx512 (kernels for CPUs with avx512_vnni); \
                 {target} computes in f32 (use --precision f32)"
            )),
            Precision::Bf16 => Err(format!(
                "--precision bf16 needs --target x86-avx512 (kernels for CPUs with avx512_bf16) \
                 or a CUDA target; {target} computes in f32 (use --precision f32)"
            )),
            p => Err(format!(
                "--precision {p} is tensor-core arithmetic of CUDA targets here; {target} \
                 computes in f32 (use --precision f32, or --target cuda-sm80|cuda-sm90)"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Precision, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!(
                "unknown precision `{s}`: expected f32, tf32, bf16 or int8"
            )),
        }
    }
}

/// `x` as bfloat16 bits: rounded to nearest, ties to even (`cvt.rn`, `vcvtneps2bf16`); a NaN
/// stays a NaN (quieted), the infinities stay, a finite value past the largest bfloat16 becomes
/// an infinity. Every bf16 rounding of the project's host code is this one.
pub fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_activations_are_granted_where_kernels_store_them() {
        let f = Precision::f32_activations;
        assert_eq!(f(Some(Precision::Bf16), Target::X86Avx512, None), Ok(false));
        assert_eq!(
            f(Some(Precision::Int8), Target::X86Avx512, Some("bf16")),
            Ok(false)
        );
        assert_eq!(
            f(Some(Precision::Int8), Target::X86Avx512, Some("f32")),
            Ok(true)
        );
        assert_eq!(f(None, Target::X86Avx512, None), Ok(false));
        for (p, t) in [
            (None, Target::X86Avx512),
            (Some(Precision::Bf16), Target::X86Avx2),
            (Some(Precision::Bf16), Target::CudaSm80),
        ] {
            let e = f(p, t, Some("bf16")).unwrap_err();
            assert!(e.contains("need precision bf16 or int8"), "{e}");
        }
        assert!(f(None, Target::X86Avx512, Some("fp16")).is_err());
    }

    #[test]
    fn defaults_and_checks() {
        assert_eq!(Precision::default_for(Target::CudaSm90), Precision::Tf32);
        assert_eq!(Precision::default_for(Target::X86Avx2), Precision::F32);
        assert!(Precision::Tf32.check(Target::Portable).is_err());
        assert!(Precision::Tf32.check(Target::CudaSm80).is_ok());
        assert_eq!("tf32".parse::<Precision>(), Ok(Precision::Tf32));
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!(Precision::Bf16.check(Target::X86Avx2).is_err());
        assert!(Precision::Bf16.check(Target::X86Avx512).is_ok());
        assert!(Precision::Tf32.check(Target::X86Avx512).is_err());
        assert_eq!(
            Precision::Bf16.cpu_features(Target::X86Avx512),
            &["avx512bw", "avx512bf16"]
        );
        assert!(Precision::F32.cpu_features(Target::X86Avx512).is_empty());
        assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
        assert!(Precision::Int8.check(Target::X86Avx512).is_ok());
        assert!(Precision::Int8.check(Target::X86Avx2).is_err());
        assert!(Precision::Int8.check(Target::CudaSm90).is_err());
        assert!("int4".parse::<Precision>().unwrap_err().contains("int8"));
    }
}
