//! NCCL as e2enc loads it (`e2enc_train::nccl`): the library of NCCL's PyPI wheel
//! (`libnccl.so.2`, which cudarc cannot open by name) is found and loaded, its version read, and
//! a communicator id made (rank 0's part of joining, which needs no GPU); without a GPU, joining
//! fails with NCCL's own reason, not a crash; `E2ENC_NCCL` is honoured and a wrong one refused
//! with the way to install NCCL; two ranks of which one cannot load NCCL both end with an
//! error rather than one waiting for the other. Where NCCL is not installed this test says so
//! and passes, unless `E2ENC_REQUIRE_NCCL=1` (CI sets it after `scripts/fetch-nccl.sh`).

use e2enc_train::nccl::{self, Comm, Found, Nccl, UniqueId};

mod thread_ranks;

#[test]
fn nccl_from_its_wheel_loads_makes_ids_and_refuses_to_join_without_a_gpu() {
    // The one test of this binary, so setting the environment races with nothing.
    let required = std::env::var("E2ENC_REQUIRE_NCCL").is_ok_and(|v| v == "1");
    let found = match nccl::locate() {
        Ok(f) => f,
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains("pip install nvidia-nccl-cu12"), "{m}");
            assert!(!required, "E2ENC_REQUIRE_NCCL=1 and {m}");
            eprintln!("skipped: {m}");
            return;
        }
    };
    let n = Nccl::load_from(found.clone()).unwrap();
    let v = n.version();
    let parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
    assert!(parts.len() == 3 && parts[0] == 2 && parts[1] >= 9, "{v}");
    eprintln!("NCCL {v} from {found}");

    // Two ids differ, and survive the trip through bytes that carries them to the ranks.
    let (a, b) = (n.unique_id().unwrap(), n.unique_id().unwrap());
    assert_ne!(a.to_bytes(), b.to_bytes());
    let back = UniqueId::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(back.to_bytes(), a.to_bytes());

    if !std::path::Path::new("/dev/nvidia0").exists() {
        // SAFETY: no CUDA context exists here; NCCL finds no usable GPU and says so.
        let e = unsafe { Comm::init(n.clone(), &a, 1, 0) }
            .err()
            .expect("joining NCCL without a GPU")
            .to_string();
        eprintln!("joining without a GPU: {e}");
        assert!(e.contains("ncclCommInitRank failed"), "{e}");
        assert!(e.contains(&format!("NCCL {v}")), "{e}");
    }
    // SAFETY (both): as above; these fail before NCCL is called.
    assert!(unsafe { Comm::init(n.clone(), &a, 2, 2) }.is_err());

    // Two ranks (threads), one of which cannot load NCCL: both end with an error, neither
    // waits for the other forever (the ranks learn who could load it before any waits).
    let (tx, rx) = std::sync::mpsc::channel();
    for r in thread_ranks::world(2) {
        let (tx, n) = (tx.clone(), n.clone());
        std::thread::spawn(move || {
            let rank = r.rank;
            let res = e2enc_train::dist::NcclReducer::join_with(&r, move || {
                if rank == 1 {
                    Err(e2enc_train::TrainError::Distributed(
                        "NCCL not found (this rank's)".into(),
                    ))
                } else {
                    Ok(n)
                }
            });
            tx.send((rank, res.err().map(|e| e.to_string()))).unwrap();
        });
    }
    let mut errs = [None, None];
    for _ in 0..2 {
        let (rank, e) = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a rank hung joining NCCL");
        errs[rank] = e;
    }
    let e0 = errs[0].clone().expect("rank 0 joined without rank 1");
    assert!(e0.contains("1 other rank(s) could not load NCCL"), "{e0}");
    assert!(errs[1].clone().unwrap().contains("this rank's"));

    // E2ENC_NCCL: the library's folder or the file itself; nothing else when it is wrong.
    if let Found::File(path) = &found {
        std::env::set_var(nccl::ENV_NCCL, path.parent().unwrap());
        assert_eq!(nccl::locate().unwrap(), Found::File(path.clone()));
        std::env::set_var(nccl::ENV_NCCL, path);
        assert_eq!(nccl::locate().unwrap(), Found::File(path.clone()));
    }
    let t = tempfile::tempdir().unwrap();
    std::env::set_var(nccl::ENV_NCCL, t.path());
    let m = nccl::locate().err().unwrap().to_string();
    assert!(
        m.contains("no libnccl.so.2 in that folder") && m.contains("pip install nvidia-nccl-cu12"),
        "{m}"
    );
    std::env::set_var(nccl::ENV_NCCL, t.path().join("missing.so"));
    let m = nccl::locate().err().unwrap().to_string();
    assert!(m.contains("no such file or folder"), "{m}");
    // A file that is not NCCL.
    let fake = t.path().join("libnccl.so.2");
    std::fs::write(&fake, b"\x7fELF but not really").unwrap();
    std::env::set_var(nccl::ENV_NCCL, &fake);
    let m = Nccl::load().err().unwrap().to_string();
    assert!(m.contains("cannot load it"), "{m}");
    std::env::remove_var(nccl::ENV_NCCL);
}
