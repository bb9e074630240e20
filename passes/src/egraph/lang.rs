//! The egg language mirroring the IR, and the compact attribute encoding its leaves carry.
//!
//! Every op node has a fixed arity so rules can be written as plain egg patterns; absent optional
//! operands are the `none` node. Attributes travel as interned symbols (`Sym`) in the first child
//! (floats as their bit patterns, so encoding is exact and hashing is sound) and are decoded with
//! the `dec_*` functions below. Weights are referenced by name (`(weight Sym)`), never inlined;
//! `select`, `pack` and `kidx` over constants are weight transforms that `convert` materializes
//! into new weights after extraction.

use e2enc_ir::{ConvAttrs, FusedConvAttrs, PoolAttrs};
use egg::{define_language, Id, Symbol};

define_language! {
    /// E2ENet graphs as egg terms.
    pub enum Lang {
        "none" = None,
        // `(input name)`
        "input" = Input([Id; 1]),
        // `(weight name)`
        "weight" = Weight([Id; 1]),
        // `(conv geom x w b|none)`
        "conv" = Conv([Id; 4]),
        // `(convT geom x w b|none)`
        "convT" = ConvT([Id; 4]),
        // `(shift groups x)`
        "shift" = Shift([Id; 2]),
        // `(inorm eps x gamma beta)`
        "inorm" = INorm([Id; 4]),
        // `(lrelu slope x)`
        "lrelu" = LRelu([Id; 2]),
        // `(maxpool pool x)`
        "maxpool" = MaxPool([Id; 2]),
        "concat" = Concat(Box<[Id]>),
        "add" = Add([Id; 2]),
        "softmax" = Softmax([Id; 1]),
        "argmax" = Argmax([Id; 1]),
        // `(select spec x)`
        "select" = Select([Id; 2]),
        // `(fconv attrs x w kidx|none b|none gamma|none beta|none)`
        "fconv" = FConv([Id; 7]),
        // `(pack t w)`: the live kernels of a constant dense weight, `[n, kd, kh, kw]`, in
        // `(out, in)` order; `t` is `1` when `w` is a transposed conv's `[in, out, ..]` weight.
        "pack" = Pack([Id; 2]),
        // `(kidx t w)`: their `(out, in)` index pairs, `i32 [n, 2]`.
        "kidx" = KIdx([Id; 2]),
        // The root: every graph output, in order.
        "outputs" = Outputs(Box<[Id]>),
        Num(i64),
        Sym(Symbol),
    }
}

fn ints(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

fn parse3(s: &str) -> Option<[usize; 3]> {
    let v: Vec<usize> = s
        .split('.')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// `k1.3.3:s1.1.1:p0.1.1`
pub fn enc_geom(a: &ConvAttrs) -> String {
    format!(
        "k{}:s{}:p{}",
        ints(&a.kernel),
        ints(&a.stride),
        ints(&a.padding)
    )
}

pub fn dec_geom(s: &str) -> Option<ConvAttrs> {
    let mut it = s.split(':');
    let kernel = parse3(it.next()?.strip_prefix('k')?)?;
    let stride = parse3(it.next()?.strip_prefix('s')?)?;
    let padding = parse3(it.next()?.strip_prefix('p')?)?;
    it.next().is_none().then_some(ConvAttrs {
        kernel,
        stride,
        padding,
    })
}

/// `pk2.2.2:s2.2.2`
pub fn enc_pool(a: &PoolAttrs) -> String {
    format!("pk{}:s{}", ints(&a.kernel), ints(&a.stride))
}

pub fn dec_pool(s: &str) -> Option<PoolAttrs> {
    let (k, st) = s.split_once(':')?;
    Some(PoolAttrs {
        kernel: parse3(k.strip_prefix("pk")?)?,
        stride: parse3(st.strip_prefix('s')?)?,
    })
}

/// An f32 by its bits: `f3c23d70a`.
pub fn enc_f32(v: f32) -> String {
    format!("f{:08x}", v.to_bits())
}

pub fn dec_f32(s: &str) -> Option<f32> {
    u32::from_str_radix(s.strip_prefix('f')?, 16)
        .ok()
        .map(f32::from_bits)
}

/// `a1:0-96,144-240`
pub fn enc_select(axis: usize, ranges: &[(usize, usize)]) -> String {
    let r: Vec<String> = ranges.iter().map(|(a, b)| format!("{a}-{b}")).collect();
    format!("a{axis}:{}", r.join(","))
}

pub fn dec_select(s: &str) -> Option<(usize, Vec<(usize, usize)>)> {
    let (a, r) = s.split_once(':')?;
    let axis = a.strip_prefix('a')?.parse().ok()?;
    let ranges = r
        .split(',')
        .map(|p| {
            let (x, y) = p.split_once('-')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((axis, ranges))
}

/// `F|k1.3.3:s1.1.1:p0.1.1|t0|sh-2x10,-1x10|sp320|b1|n<f32>|r<f32>` (`-` for absent parts).
pub fn enc_fused(a: &FusedConvAttrs) -> String {
    let shifts: Vec<String> = a.shifts.iter().map(|(s, n)| format!("{s}x{n}")).collect();
    format!(
        "F|{}|t{}|sh{}|sp{}|b{}|n{}|r{}",
        enc_geom(&a.conv),
        u8::from(a.transposed),
        shifts.join(","),
        a.sparse_out.map_or("-".into(), |o| o.to_string()),
        u8::from(a.bias),
        a.norm_eps.map_or("-".into(), enc_f32),
        a.slope.map_or("-".into(), enc_f32),
    )
}

pub fn dec_fused(s: &str) -> Option<FusedConvAttrs> {
    let p: Vec<&str> = s.split('|').collect();
    if p.len() != 8 || p[0] != "F" {
        return None;
    }
    let opt_f32 = |x: &str| -> Option<Option<f32>> {
        if x == "-" {
            Some(None)
        } else {
            dec_f32(x).map(Some)
        }
    };
    let sh = p[3].strip_prefix("sh")?;
    let shifts = if sh.is_empty() {
        Vec::new()
    } else {
        sh.split(',')
            .map(|r| {
                let (s, n) = r.split_once('x')?;
                Some((s.parse().ok()?, n.parse().ok()?))
            })
            .collect::<Option<Vec<_>>>()?
    };
    let sp = p[4].strip_prefix("sp")?;
    Some(FusedConvAttrs {
        conv: dec_geom(p[1])?,
        transposed: p[2] == "t1",
        shifts,
        sparse_out: if sp == "-" {
            None
        } else {
            Some(sp.parse().ok()?)
        },
        bias: p[5] == "b1",
        norm_eps: opt_f32(p[6].strip_prefix('n')?)?,
        slope: opt_f32(p[7].strip_prefix('r')?)?,
    })
}

/// The symbol of a `Sym` leaf.
pub fn sym(s: impl AsRef<str>) -> Lang {
    Lang::Sym(Symbol::from(s.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let g = ConvAttrs {
            kernel: [1, 3, 3],
            stride: [2, 2, 1],
            padding: [0, 1, 1],
        };
        assert_eq!(dec_geom(&enc_geom(&g)), Some(g.clone()));
        let p = PoolAttrs {
            kernel: [2, 2, 2],
            stride: [1, 2, 2],
        };
        assert_eq!(dec_pool(&enc_pool(&p)), Some(p));
        for v in [1e-5f32, 0.01, -0.0, f32::MIN_POSITIVE] {
            assert_eq!(dec_f32(&enc_f32(v)).map(f32::to_bits), Some(v.to_bits()));
        }
        assert_eq!(
            dec_select(&enc_select(1, &[(0, 96), (144, 240)])),
            Some((1, vec![(0, 96), (144, 240)]))
        );
        let mut f = FusedConvAttrs::plain(g, false, true);
        assert_eq!(dec_fused(&enc_fused(&f)), Some(f.clone()));
        f.shifts = vec![(-2, 10), (0, 3), (1, 1)];
        f.sparse_out = Some(48);
        f.norm_eps = Some(1e-5);
        f.slope = Some(0.01);
        assert_eq!(dec_fused(&enc_fused(&f)), Some(f.clone()));
        f.transposed = true;
        f.shifts.clear();
        assert_eq!(dec_fused(&enc_fused(&f)), Some(f));
        assert_eq!(dec_geom("k1.3:s1.1.1:p0.1.1"), None);
    }
}
