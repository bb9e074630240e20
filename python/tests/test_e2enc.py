"""The Python package against the e2enc command line: Bundle.run equals `e2enc run`,
e2enc.segment equals `e2enc segment` (identical labels, probabilities to rounding) on a NIfTI
file and on nibabel arrays, errors carry the CLI's messages, the GIL is released while Rust
works, and the outputs own e2enc's buffers."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest

import e2enc
from conftest import ball, read_safetensors, write_safetensors


def cli_error(r) -> str:
    """The message the CLI printed after `error: `."""
    assert r.returncode != 0
    lines = r.stderr.splitlines()
    first = max(i for i, l in enumerate(lines) if l.startswith("error: "))
    return "\n".join(lines[first:])[len("error: ") :]


def test_bundle_describes_itself(bundle, bundle_dir):
    assert bundle.inputs == [("input", (2, 1, 32, 32, 32))]
    assert bundle.outputs[0][0] == "logits" and bundle.outputs[0][1] == (2, 2, 32, 32, 32)
    assert (bundle.batch, bundle.channels, bundle.classes, bundle.patch) == (2, 1, 2, (32, 32, 32))
    assert str(bundle.path) == str(bundle_dir) and bundle.threads >= 1
    assert "Bundle(" in repr(bundle) and bundle.device.startswith("cpu")


def test_run_equals_the_cli(bundle, bundle_dir, cli, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32, 32)).astype(np.float32)
    y = bundle.run(x)
    assert list(y) == ["logits"]
    got = y["logits"]
    assert got.dtype == np.float32 and got.shape == (2, 2, 32, 32, 32)
    write_safetensors(tmp_path / "x.safetensors", {"input": x})
    cli("run", bundle_dir, "--input", tmp_path / "x.safetensors", "--output", tmp_path / "y.safetensors")
    want = read_safetensors(tmp_path / "y.safetensors")["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # Outputs are new arrays that own e2enc's buffer (not views of the input or of each other).
    assert got.base is not None and not np.shares_memory(got, x)
    # Running again gives the same values (the arena is reused, not stale).
    np.testing.assert_array_equal(bundle.run(x)["logits"], got)


def test_run_matches_the_reference_interpreter(bundle, model_dir, cli, tmp_path):
    x = np.random.default_rng(2).standard_normal((2, 1, 32, 32, 32)).astype(np.float32)
    write_safetensors(tmp_path / "y.safetensors", {"logits": bundle.run(x)["logits"]})
    write_safetensors(tmp_path / "x.safetensors", {"input": x})
    r = cli("run", model_dir / "model.json", "--input", tmp_path / "x.safetensors",
            "--reference", tmp_path / "y.safetensors", "--tolerance", "1e-4")
    assert "ok" in r.stderr, r.stderr


def test_run_reads_any_layout_and_refuses_wrong_dtypes_and_shapes(bundle):
    x = np.random.default_rng(3).standard_normal((2, 1, 32, 32, 32)).astype(np.float32)
    want = bundle.run(x)["logits"]
    # A Fortran-ordered and a strided view are copied into C order first: same result.
    np.testing.assert_array_equal(bundle.run(np.asfortranarray(x))["logits"], want)
    big = np.zeros((2, 1, 32, 32, 64), np.float32)
    big[..., ::2] = x
    np.testing.assert_array_equal(bundle.run(big[..., ::2])["logits"], want)
    with pytest.raises(TypeError, match="float32"):
        bundle.run(x.astype(np.float64))
    with pytest.raises(TypeError, match="float32"):
        bundle.run(x.astype(">f4"))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        bundle.run(x.tolist())
    with pytest.raises(ValueError, match=r"\[2, 1, 32, 32, 32\]"):
        bundle.run(x[:1])


def test_segment_equals_the_cli_on_a_nifti_file_and_on_nibabel_arrays(bundle, bundle_dir, cli, nifti_case, tmp_path):
    nib = pytest.importorskip("nibabel")
    path, img = nifti_case
    for tta in (False, True):
        extra = ["--tta"] if tta else []
        cli("segment", bundle_dir, path, "-o", tmp_path / "l.nii.gz", "--probabilities",
            tmp_path / "p.nii.gz", "--overwrite", *extra)
        want_l = np.asanyarray(nib.load(tmp_path / "l.nii.gz").dataobj)
        want_p = np.asanyarray(nib.load(tmp_path / "p.nii.gz").dataobj)
        from_file = e2enc.segment(bundle, path, tta=tta, probabilities=True)
        arr = np.asanyarray(img.dataobj).astype(np.float32)  # (x, y, z), F-ordered
        from_array = e2enc.segment(bundle, arr, affine=img.affine, tta=tta, probabilities=True)
        from_c_order = e2enc.segment(bundle, np.ascontiguousarray(arr),
                                     spacing=img.header.get_zooms()[:3], tta=tta)
        for labels, probs in (from_file, from_array):
            assert labels.shape == want_l.shape == img.shape and labels.dtype == want_l.dtype
            np.testing.assert_array_equal(labels, want_l)
            assert probs.shape == want_p.shape == img.shape + (2,)
            np.testing.assert_allclose(probs, want_p, atol=1e-6)
            # The maps are F-ordered views of e2enc's buffers, not copies.
            assert labels.flags.f_contiguous and probs.flags.f_contiguous
        np.testing.assert_array_equal(from_c_order, want_l)
        assert 0 < (want_l == 1).sum() < want_l.size  # a real segmentation, not all one class


def test_accumulator_memory_changes_nothing_but_memory(bundle, tmp_path):
    # 96x84x56 at 1.2 mm: a 77x67x45 grid, 3x3x2 tiles of 32^3, so blocks do go to the file.
    arr = ball((96, 84, 56))
    seg = lambda **kw: e2enc.segment(bundle, arr, spacing=(1.2, 1.2, 1.2), tta=True,
                                     probabilities=True, **kw)
    want = seg()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for memory in (0, 1 << 16):
        got = seg(accumulator_memory=memory, scratch_dir=scratch)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert list(scratch.iterdir()) == []  # the scratch file has no name
    for bad in (-1, 1.5, True, "1GiB"):
        with pytest.raises(ValueError, match="accumulator_memory"):
            seg(accumulator_memory=bad)
    with pytest.raises(e2enc.Error, match="scratch file"):
        seg(accumulator_memory=0, scratch_dir=tmp_path / "missing")


def test_segment_takes_a_bundle_path_and_channel_lists(bundle_dir, nifti_case):
    path, img = nifti_case
    a = e2enc.segment(bundle_dir, [path])
    b = e2enc.segment(str(bundle_dir), [img.get_fdata()], spacing=(1.2, 1.2, 1.2))
    np.testing.assert_array_equal(a, b)


def test_errors_carry_the_cli_messages(bundle, bundle_dir, cli, nifti_case, tmp_path):
    path, _ = nifti_case
    # A missing bundle.
    with pytest.raises(FileNotFoundError) as e:
        e2enc.Bundle(tmp_path / "nope")
    r = cli("segment", tmp_path / "nope", path, "-o", tmp_path / "o.nii.gz", check=False)
    assert str(e.value) == cli_error(r) and "nope" in str(e.value)
    # A tampered bundle: its weights changed after signing.
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    w = bad / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(e2enc.Error) as e:
        e2enc.Bundle(bad)
    r = cli("segment", bad, path, "-o", tmp_path / "t.nii.gz", check=False)
    assert str(e.value) == cli_error(r)
    assert "weights.safetensors" in str(e.value)
    # A missing image.
    with pytest.raises(FileNotFoundError) as e:
        e2enc.segment(bundle, tmp_path / "missing.nii.gz")
    r = cli("segment", bundle_dir, tmp_path / "missing.nii.gz", "-o", tmp_path / "m.nii.gz", check=False)
    assert str(e.value) == cli_error(r)
    # A file that is not NIfTI.
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"not a nifti file" * 40)
    with pytest.raises(e2enc.Error) as e:
        e2enc.segment(bundle, junk)
    r = cli("segment", bundle_dir, junk, "-o", tmp_path / "j.nii.gz", check=False)
    assert str(e.value) == cli_error(r)
    # An image too small for nothing but NaN: the pipeline's refusal.
    with pytest.raises(e2enc.Error) as e:
        e2enc.segment(bundle, np.full((8, 8, 8), np.nan, np.float32), spacing=(1, 1, 1))
    assert "NaN" in str(e.value)
    # Argument errors.
    with pytest.raises(ValueError, match="spacing"):
        e2enc.segment(bundle, ball())
    with pytest.raises(ValueError, match="3-D"):
        e2enc.segment(bundle, ball()[None], spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="step"):
        e2enc.segment(bundle, path, step=0)
    with pytest.raises(ValueError, match="not a device"):
        e2enc.Bundle(bundle_dir, device="tpu")


def test_a_bundle_without_preprocessing_needs_one_as_the_cli_says(model_dir, cli, nifti_case, tmp_path):
    import json

    path, _ = nifti_case
    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    cfg = json.loads((m / "model.json").read_text())
    prep = cfg.pop("preprocessing")
    (m / "model.json").write_text(json.dumps(cfg))
    b = tmp_path / "b"
    e2enc.compile(m, b)
    with pytest.raises(e2enc.Error) as e:
        e2enc.segment(b, path)
    r = cli("segment", b, path, "-o", tmp_path / "x.nii.gz", check=False)
    assert str(e.value) == cli_error(r) and "carries no preprocessing config" in str(e.value)
    pf = tmp_path / "prep.json"
    pf.write_text(json.dumps(prep))
    labels = e2enc.segment(b, path, preprocessing=pf)
    cli("segment", b, path, "-o", tmp_path / "x.nii.gz", "--preprocessing", pf)
    nib = pytest.importorskip("nibabel")
    np.testing.assert_array_equal(labels, np.asanyarray(nib.load(tmp_path / "x.nii.gz").dataobj))
    assert e2enc.segment(b, path, spacing_as_is=True).shape == labels.shape


def test_compile_errors(model_dir, tmp_path):
    with pytest.raises(ValueError):
        e2enc.compile(model_dir, tmp_path / "b", target="sparc")
    with pytest.raises(ValueError):
        e2enc.compile(model_dir, tmp_path / "b", precision="fp7")
    with pytest.raises(ValueError, match="calibrate=DIR"):
        e2enc.compile(model_dir, tmp_path / "b", target="x86-avx512", precision="int8")
    with pytest.raises(ValueError, match="x86-avx512"):
        e2enc.compile(model_dir, tmp_path / "b", target="x86-avx2", precision="int8", calibrate=tmp_path)
    with pytest.raises(ValueError, match="int8"):
        e2enc.compile(model_dir, tmp_path / "b", calibrate=tmp_path)
    with pytest.raises(e2enc.Error, match="CASE_0000"):
        e2enc.compile(model_dir, tmp_path / "b", target="x86-avx512", precision="int8", calibrate=tmp_path)
    with pytest.raises(FileNotFoundError):
        e2enc.compile(tmp_path / "none" / "model.json", tmp_path / "b")
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "f").write_text("x")
    with pytest.raises(e2enc.Error, match="force"):
        e2enc.compile(model_dir, tmp_path / "exists")


def _longest_pause(call) -> tuple[float, float]:
    """Runs `call` while a Python thread ticks; returns (the longest time the ticker did not
    tick during the call, the call's duration). A call holding the GIL stops the ticker for all
    of its time; one that releases it, for no longer than a thread switch."""
    stamps: list[float] = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            stamps.append(time.perf_counter())

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    edges = [t0] + [s for s in stamps if t0 < s < t1] + [t1]
    return max(b - a for a, b in zip(edges, edges[1:])), t1 - t0


def test_the_gil_is_released_while_rust_works(model_dir, tmp_path):
    pause, took = _longest_pause(lambda: e2enc.compile(model_dir, tmp_path / "b8", batch=8))
    assert pause < took / 2, (pause, took)
    # One thread for the kernels, so that the ticker has a core of its own.
    b = e2enc.Bundle(tmp_path / "b8", threads=1)
    x = np.zeros((8, 1, 32, 32, 32), np.float32)
    b.run(x)
    pause, took = _longest_pause(lambda: b.run(x))
    assert took > 0.02 and pause < took / 2, (pause, took)
    vol = ball((60, 60, 60))
    pause, took = _longest_pause(lambda: e2enc.segment(b, vol, spacing=(1.5, 1.5, 1.5)))
    assert took > 0.05 and pause < took / 2, (pause, took)


def test_concurrent_runs_on_one_bundle_agree(bundle):
    xs = [np.random.default_rng(k).standard_normal((2, 1, 32, 32, 32)).astype(np.float32) for k in range(4)]
    want = [bundle.run(x)["logits"] for x in xs]
    got = [None] * 4

    def go(k):
        got[k] = bundle.run(xs[k])["logits"]

    ts = [threading.Thread(target=go, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_help_and_stubs_are_there():
    import importlib.resources

    for obj in (e2enc, e2enc.Bundle, e2enc.Bundle.run, e2enc.segment, e2enc.compile, e2enc.Error):
        assert obj.__doc__ and len(obj.__doc__) > 40, obj
    files = importlib.resources.files("e2enc")
    assert (files / "py.typed").is_file() and (files / "_e2enc.pyi").is_file()


def test_int8_calibrates_on_a_folder_as_the_cli_does(model_dir, cli, nifti_case, tmp_path):
    import json

    path, _ = nifti_case
    cases = tmp_path / "cases"
    cases.mkdir()
    shutil.copy(path, cases / "ball_0000.nii.gz")
    if "avx512f" not in open("/proc/cpuinfo").read():
        pytest.skip("this host lacks avx512f: int8 calibration runs an x86-avx512 bundle")
    r = e2enc.compile(model_dir, tmp_path / "p", target="x86-avx512", precision="int8",
                      calibrate=cases, calibration_tiles=2)
    assert r["precision"] == "int8"
    cli("compile", model_dir, "-o", tmp_path / "c", "--target", "x86-avx512", "--precision", "int8",
        "--calibrate", cases, "--calibration-tiles", "2")
    # The same ranges, so the same kernels and constants.
    for f in ["kernels.c", "weights.safetensors"]:
        assert (tmp_path / "p" / f).read_bytes() == (tmp_path / "c" / f).read_bytes(), f
    steps = json.loads((tmp_path / "p" / "manifest.json").read_text())["steps"]
    assert any(s["what"].endswith(" int8") for s in steps)
