//! ptxas's resource report, read from an NVRTC log, and the checks `compile` makes against it:
//! what each kernel uses (registers, spills, shared memory, stack) and whether that fits the
//! target SM for the launches the renderer chose. Pure text and arithmetic, so it is tested
//! without NVRTC; [`super::nvrtc`] produces the log.

use e2enc_runtime::format::Launch;

/// What ptxas reported for one function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The symbol: plain for `extern "C"` kernels, mangled for C++ device functions.
    pub name: String,
    /// A `__global__` entry point (`false`: a device function ptxas kept out of line).
    pub entry: bool,
    pub registers: u32,
    /// Named barriers used (`__syncthreads` uses barrier 0).
    pub barriers: u32,
    pub spill_stores: u64,
    pub spill_loads: u64,
    /// Static shared memory (`__shared__` arrays); dynamic shared memory comes with the launch.
    pub shared_bytes: u64,
    /// This function's stack frame (local arrays, spills).
    pub stack_bytes: u64,
    /// The stack of the function and everything it calls.
    pub cumulative_stack_bytes: u64,
    /// Constant bank 0 (kernel parameters and constants).
    pub const_bytes: u64,
}

/// Per-block limits of one SM version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmLimits {
    pub max_threads_per_block: u64,
    pub registers_per_block: u64,
    /// Static `__shared__` memory per block.
    pub static_shared_per_block: u64,
    /// Static plus dynamic shared memory per block, with the opt-in attribute
    /// (`cudaFuncAttributeMaxDynamicSharedMemorySize`) for dynamic memory over 48 KiB.
    pub max_shared_per_block_optin: u64,
}

/// The limits of `sm` (CUDA programming guide, compute capabilities table); `None` for an SM this
/// table does not know.
pub fn sm_limits(sm: u32) -> Option<SmLimits> {
    let optin_kib = match sm {
        70 | 72 => 96,
        75 => 64,
        80 | 87 => 163,
        86 | 89 => 99,
        90 => 227,
        _ => return None,
    };
    Some(SmLimits {
        max_threads_per_block: 1024,
        registers_per_block: 65536,
        static_shared_per_block: 48 * 1024,
        max_shared_per_block_optin: optin_kib * 1024,
    })
}

/// The leading number of `s` (`"40 registers"` -> 40).
fn leading_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Parses ptxas's `--verbose` report from an NVRTC log: one entry per `Compiling entry function
/// 'NAME'` (a kernel) and per `Function properties for NAME` that is not a kernel (a device
/// function kept out of line), in order of first mention. The report reads like
///
/// ```text
/// ptxas info    : Compiling entry function 'kern' for 'sm_90'
/// ptxas info    : Function properties for kern
/// ptxas         .     256 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
/// ptxas info    : Used 40 registers, used 1 barriers, 256 bytes cumulative stack size, 1024 bytes smem
/// ```
///
/// (older ptxas also print `N bytes cmem[0]`, `N bytes lmem`); a `Used` line belongs to the
/// function named last.
pub fn parse_ptxas_report(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    let mut current: Option<usize> = None;
    fn index_of(out: &mut Vec<KernelResources>, name: &str, entry: bool) -> usize {
        if let Some(i) = out.iter().position(|r| r.name == name) {
            out[i].entry |= entry;
            return i;
        }
        out.push(KernelResources {
            name: name.to_string(),
            entry,
            ..Default::default()
        });
        out.len() - 1
    }
    for line in log.lines() {
        let Some(body) = line.strip_prefix("ptxas") else {
            continue;
        };
        if let Some(rest) = body.split_once("Compiling entry function '").map(|p| p.1) {
            if let Some((name, _)) = rest.split_once('\'') {
                current = Some(index_of(&mut out, name, true));
            }
        } else if let Some(rest) = body.split_once("Function properties for ").map(|p| p.1) {
            current = Some(index_of(&mut out, rest.trim(), false));
        } else if let Some(i) = current {
            let r = &mut out[i];
            for part in body.trim_start_matches([' ', '.', ':']).split(',') {
                let part = part.trim();
                let part = part
                    .strip_prefix("info")
                    .map_or(part, |p| p.trim_start_matches([' ', ':']));
                let lower = part.to_ascii_lowercase();
                let n = lower
                    .strip_prefix("used ")
                    .map_or_else(|| leading_number(&lower), leading_number);
                let Some(n) = n else { continue };
                if lower.ends_with("registers") {
                    r.registers = u32::try_from(n).unwrap_or(u32::MAX);
                } else if lower.ends_with("barriers") {
                    r.barriers = u32::try_from(n).unwrap_or(u32::MAX);
                } else if lower.ends_with("bytes stack frame") {
                    r.stack_bytes = n;
                } else if lower.ends_with("bytes spill stores") {
                    r.spill_stores = n;
                } else if lower.ends_with("bytes spill loads") {
                    r.spill_loads = n;
                } else if lower.ends_with("bytes cumulative stack size") {
                    r.cumulative_stack_bytes = n;
                } else if lower.ends_with("bytes smem") {
                    r.shared_bytes = n;
                } else if lower.ends_with("bytes cmem[0]") {
                    r.const_bytes = n;
                }
            }
        }
    }
    out
}

/// Checks ptxas's report against the launches (kernel name, launch) and the limits of `sm`
/// ([`sm_limits`]): no function spills; every launched kernel is in the report; threads per
/// block within 1024 and grid within the hardware's; registers per block within 65536, counted
/// as the hardware allocates them (per warp, in units of 256); static shared memory within
/// 48 KiB and static plus dynamic within the SM's opt-in maximum (dynamic memory over 48 KiB
/// needs `cudaFuncAttributeMaxDynamicSharedMemorySize` at load time). Every problem found is
/// listed, one per line.
pub fn check_resources(
    res: &[KernelResources],
    launches: &[(String, Launch)],
    sm: u32,
) -> Result<(), String> {
    let Some(lim) = sm_limits(sm) else {
        return Err(format!(
            "no resource limits known for sm_{sm}; add them to sm_limits"
        ));
    };
    let mut problems = Vec::new();
    for r in res {
        if r.spill_stores > 0 || r.spill_loads > 0 {
            problems.push(format!(
                "{}: spills ({} bytes stores, {} bytes loads, {} registers): lower the register \
                 pressure (smaller tiles, fewer values live across the loop)",
                r.name, r.spill_stores, r.spill_loads, r.registers
            ));
        }
        if r.entry && r.shared_bytes > lim.static_shared_per_block {
            problems.push(format!(
                "{}: {} bytes of static shared memory, over the {} a block may declare; use \
                 dynamic shared memory",
                r.name, r.shared_bytes, lim.static_shared_per_block
            ));
        }
    }
    for (name, l) in launches {
        let Some(r) = res.iter().find(|r| r.entry && r.name == *name) else {
            problems.push(format!(
                "{name}: launched but not in the ptxas report (not an extern \"C\" __global__ \
                 kernel of this source?)"
            ));
            continue;
        };
        let threads = l.threads();
        if threads == 0 || threads > lim.max_threads_per_block || l.block[2] > 64 {
            problems.push(format!(
                "{name}: block {:?} ({threads} threads); a block has 1 to {} threads, z at most 64",
                l.block, lim.max_threads_per_block
            ));
        }
        if l.grid.contains(&0)
            || l.grid[0] > i32::MAX as u32
            || l.grid[1] > 65535
            || l.grid[2] > 65535
        {
            problems.push(format!(
                "{name}: grid {:?}; x is 1 to 2^31-1 blocks, y and z 1 to 65535",
                l.grid
            ));
        }
        let regs_per_warp = (u64::from(r.registers) * 32).div_ceil(256) * 256;
        let block_regs = threads.div_ceil(32) * regs_per_warp;
        if block_regs > lim.registers_per_block {
            problems.push(format!(
                "{name}: {} registers x {threads} threads need {block_regs} registers per block, \
                 over {}; use smaller blocks or fewer registers",
                r.registers, lim.registers_per_block
            ));
        }
        let shared = r.shared_bytes + u64::from(l.shared_bytes);
        if shared > lim.max_shared_per_block_optin {
            problems.push(format!(
                "{name}: {} bytes static + {} bytes dynamic shared memory = {shared}, over the \
                 {} sm_{sm} allows a block",
                r.shared_bytes, l.shared_bytes, lim.max_shared_per_block_optin
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'kern' for 'sm_90'
ptxas info    : Function properties for kern
ptxas         .     256 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 256 bytes cumulative stack size, 1024 bytes smem
ptxas info    : Compile time = 23.164 ms
ptxas info    : Function properties for _Z6helperf
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'spill' for 'sm_80'
ptxas info    : Function properties for spill
ptxas         .     168 bytes stack frame, 316 bytes spill stores, 344 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 168 bytes cumulative stack size, 372 bytes cmem[0]
";

    fn launch(threads: u32, shared: u32) -> Launch {
        Launch {
            grid: [4, 1, 1],
            block: [threads, 1, 1],
            shared_bytes: shared,
            sync: true,
        }
    }

    #[test]
    fn parses_the_report() {
        let r = parse_ptxas_report(REPORT);
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(
            r[0],
            KernelResources {
                name: "kern".into(),
                entry: true,
                registers: 40,
                barriers: 1,
                stack_bytes: 256,
                cumulative_stack_bytes: 256,
                shared_bytes: 1024,
                ..Default::default()
            }
        );
        assert_eq!((r[1].name.as_str(), r[1].entry), ("_Z6helperf", false));
        assert_eq!(
            (r[2].spill_stores, r[2].spill_loads, r[2].const_bytes),
            (316, 344, 372)
        );
    }

    #[test]
    fn checks_limits() {
        let r = parse_ptxas_report(REPORT);
        let ok = &r[..2];
        assert_eq!(
            check_resources(ok, &[("kern".into(), launch(256, 0))], 90),
            Ok(())
        );
        // 40 registers x 1024 threads = 40960: fine; 72 x 1024 is not.
        let mut heavy = ok.to_vec();
        heavy[0].registers = 72;
        let e = check_resources(&heavy, &[("kern".into(), launch(1024, 0))], 90).unwrap_err();
        assert!(e.contains("registers per block"), "{e}");
        let e = check_resources(ok, &[("kern".into(), launch(128, 227 * 1024))], 90).unwrap_err();
        assert!(e.contains("shared memory"), "{e}");
        assert_eq!(
            check_resources(ok, &[("kern".into(), launch(128, 100 * 1024))], 90),
            Ok(())
        );
        let e = check_resources(ok, &[("kern".into(), launch(128, 100 * 1024))], 86).unwrap_err();
        assert!(e.contains("over the 101376"), "{e}");
        let e = check_resources(ok, &[("gone".into(), launch(32, 0))], 80).unwrap_err();
        assert!(
            e.contains("gone: launched but not in the ptxas report"),
            "{e}"
        );
        let e = check_resources(&r, &[], 80).unwrap_err();
        assert!(e.starts_with("spill: spills (316 bytes stores"), "{e}");
        assert!(check_resources(ok, &[], 61).is_err());
    }
}
