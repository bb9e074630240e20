//! The authors' released network: e2enc's builder + interpreter reproduce all four outputs
//! stored in tests/data/golden (made with the released PyTorch code).
//!
//! Tolerance: this golden case is ill-conditioned. Its first backbone conv is all zero (the
//! masks were applied to every conv), so every feature map is a near-constant field whose
//! instance-norm variance is far below eps; the norm then multiplies rounding noise by about
//! 1/sqrt(eps) = 316. Changing only how instance norm rounds in f32 (PyTorch's folded
//! `x * alpha + beta'` form) moves the outputs by 2.8e-4 (max-relative), while our f64 statistics
//! land 1.0e-4 from PyTorch. So the test asks for an L2-relative error under 1e-4 and a
//! max-relative error under 2e-4 here; the well-conditioned NumPy-reference cases
//! (tests/numpy_ref.rs) hold the strict bound.

use std::collections::BTreeMap;
use std::path::Path;

use e2enc_ir::e2enet::{output_name, BuildOptions, Model};
use e2enc_ir::tensor::{relative_error, relative_error_l2};
use e2enc_ir::{interp, Weights};

#[test]
fn released_network_outputs_are_reproduced() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/golden");
    let m = Model::load(&dir.join("model.json"), &BuildOptions::default()).unwrap();
    e2enc_ir::verify::verify_with_weights(&m.net.graph, m.weights.as_ref().unwrap()).unwrap();
    let io = Weights::load(&dir.join("io.safetensors")).unwrap();
    let feed: BTreeMap<String, _> =
        [("input".to_string(), (**io.get("input").unwrap()).clone())].into();
    let outs = interp::run(&m.net.graph, m.weights.as_ref().unwrap(), &feed, &[]).unwrap();
    assert_eq!(outs.len(), 4);
    for s in 0..4 {
        let got = &outs[&output_name(s)];
        let want = io.get(&format!("ds{s}")).unwrap();
        let l2 = relative_error_l2(got, want).unwrap();
        let max = relative_error(got, want).unwrap();
        assert!(l2 < 1e-4, "ds{s}: L2-relative error {l2:e}");
        assert!(max < 2e-4, "ds{s}: max-relative error {max:e}");
    }
}
