#!/usr/bin/env python3
"""One E2ENet training step, e2enc vs PyTorch autograd: loss and every weight gradient.

This script owns the Python half of the gradient cross-check (the Rust half is
train/examples/train_step_dump.rs). For each case it writes a model.json, lets the example
He-initialise weights and DSFF masks, writes a random input and integer labels, runs the example's
`step` (e2enc's forward, deep-supervision Dice + CE loss, backward), then recomputes the same step
with the PyTorch network of e2enet_torch.py in float64 (the reference) and float32 (its own f32
noise floor) and compares: the loss, every head's output, and every weight gradient (relative L2
error per tensor; the maximum is reported). The loss here is written from nnU-Net v1's
definition, independently of train/src/loss.rs:

  p = softmax(logits), y = one-hot(labels); sums over the batch and all voxels (batch Dice)
  tp_c = sum p y, fp_c = sum p (1 - y), fn_c = sum (1 - p) y
  dc_c = (2 tp_c + 1e-5) / (2 tp_c + fp_c + fn_c + 1e-5 + 1e-8); dice = -mean_{c >= 1} dc_c
  ce = mean cross entropy; head loss = ce + dice
  head s (cumulative pool factor f per axis) sees labels[f*i + f//2] along each axis
  total = sum_s w_s loss_s with w_s = 2^-s / sum_t 2^-t over the heads present

DSFF-masked weights: PyTorch's gradient of a dead kernel is not zero (the released code zeroes
the weight after the step); e2enc skips dead kernels and returns exactly zero there. The check
compares grad * mask, and separately requires e2enc's dead-kernel gradients to be exactly 0.
Conv biases feed an instance norm, so their exact gradient is 0; they are reported by absolute
norm and left out of the relative maximum.

Usage: check_train_step.py [--case tiny3|tiny2|mni|all] [--work DIR] [--example PATH]
                           [--lrelu-at-zero slope|one] [--perturb-norms] [--threads T]
                           [--device cpu|cuda|cuda:N|emulate]
                           [--density D] [--negative-slope S] [--interp]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
try:
    from safetensors.torch import save_file
except ImportError:  # the GPU machine: PyTorch but no package registry

    def save_file(tensors, path, metadata=None):
        """Writes a safetensors file (F32/I32/I64 tensors) without the safetensors package."""
        import struct
        names = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64"}
        header, blobs, at = {}, [], 0
        for name, t in tensors.items():
            b = bytes(t.detach().contiguous().cpu().view(torch.uint8).flatten().tolist())
            header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [at, at + len(b)]}
            blobs.append(b)
            at += len(b)
        if metadata:
            header["__metadata__"] = metadata
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def metadata(path):
    """The `__metadata__` of a safetensors file (its JSON header read directly)."""
    import struct
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__", {})


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2enet_torch  # noqa: E402
from e2enet_torch import load_file, load_model  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

BASE = {"format": "e2enc-model", "version": 1, "conv_kernel": [1, 3, 3], "convs_per_stage": 2,
        "norm_eps": 1e-5, "negative_slope": 0.01}

CASES = {
    # width 4, three pools (one anisotropic), shift 5, two DS heads, density 0.5, batch 2
    "tiny3": dict(cfg=dict(name="tiny3", in_channels=1, num_classes=3, base_width=4, max_width=320,
                           pool_kernels=[[2, 2, 2], [1, 2, 2], [2, 2, 2]], shift_groups=5,
                           deep_supervision_heads=2, patch_size=[16, 24, 32]),
                  density=0.5, batch=2, seed=3),
    # width 4, two pools, shift 3, one DS head, 2 input channels, density 0.5, batch 2
    "tiny2": dict(cfg=dict(name="tiny2", in_channels=2, num_classes=3, base_width=4, max_width=320,
                           pool_kernels=[[2, 2, 2], [2, 2, 2]], shift_groups=3,
                           deep_supervision_heads=1, patch_size=[12, 16, 20]),
                  density=0.5, batch=2, seed=5),
    # the MNI demo network, density 0.2, batch 2
    "mni": dict(cfg=dict(name="mni-demo", in_channels=1, num_classes=3, base_width=8, max_width=64,
                         pool_kernels=[[2, 2, 2]] * 4, shift_groups=5, deep_supervision_heads=3,
                         patch_size=[48, 64, 48]),
                density=0.2, batch=2, seed=11),
}


def head_factors(cfg):
    f = [[1, 1, 1]]
    for s in range(1, cfg["deep_supervision_heads"] + 1):
        k = cfg["pool_kernels"][s - 1]
        f.append([f[-1][a] * k[a] for a in range(3)])
    return f


def downsample(labels, f):
    """labels [N, D, H, W]; output index i along each axis reads input f*i + f//2."""
    for a in range(3):
        if labels.shape[a + 1] % f[a]:
            raise SystemExit("patch axis %d not divisible by %d" % (a, f[a]))
    return labels[:, f[0] // 2::f[0], f[1] // 2::f[1], f[2] // 2::f[2]]


def dc_ce(logits, labels, smooth=1e-5):
    c = logits.shape[1]
    p = torch.softmax(logits, dim=1)
    y = F.one_hot(labels.long(), c).permute(0, 4, 1, 2, 3).to(p.dtype)
    axes = (0, 2, 3, 4)
    tp = (p * y).sum(axes)
    fp = (p * (1 - y)).sum(axes)
    fn = ((1 - p) * y).sum(axes)
    dc = (2 * tp + smooth) / (2 * tp + fp + fn + smooth + 1e-8)
    dice = -dc[1:].mean()
    ce = F.cross_entropy(logits, labels.long())
    return ce + dice


def ds_loss(outs, labels, factors):
    raw = [0.5 ** s for s in range(len(outs))]
    tot = sum(raw)
    per = [dc_ce(o, downsample(labels, f)) for o, f in zip(outs, factors)]
    return sum(w / tot * l for w, l in zip(raw, per)), per


def make_labels(n, shape, classes, gen):
    """Blocky random labels (constant on 2x4x4 cells), so coarse heads see every class."""
    d, h, w = shape
    cells = torch.randint(0, classes, (n, (d + 1) // 2, (h + 3) // 4, (w + 3) // 4), generator=gen)
    lab = cells.repeat_interleave(2, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return lab[:, :d, :h, :w].to(torch.int32).contiguous()


def perturb_norms(model_dir, gen, scale=0.2):
    """Instance-norm weights 1 + N(0, scale), biases N(0, scale): moves every pre-activation of a
    constant channel off the leaky ReLU's kink (He init leaves the biases at exactly 0)."""
    path = os.path.join(model_dir, "weights.safetensors")
    w = load_file(path)
    for n, t in w.items():
        if n.endswith("instnorm.weight"):
            w[n] = (1 + scale * torch.randn(t.shape, generator=gen)).to(t.dtype)
        elif n.endswith("instnorm.bias"):
            w[n] = (scale * torch.randn(t.shape, generator=gen)).to(t.dtype)
    save_file(w, path)


def prepare(name, case, work, example, perturb):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    cfg = dict(BASE, **case["cfg"])
    mj = os.path.join(d, "model.json")
    with open(mj, "w") as f:
        json.dump(cfg, f, indent=1)
    subprocess.run([example, "init", mj, "--seed", str(case["seed"]), "--density", str(case["density"])],
                   check=True, stdout=subprocess.DEVNULL)
    gen = torch.Generator().manual_seed(case["seed"])
    if perturb:
        perturb_norms(d, gen)
    n = case["batch"]
    x = torch.randn(n, cfg["in_channels"], *cfg["patch_size"], generator=gen)
    lab = make_labels(n, cfg["patch_size"], cfg["num_classes"], gen)
    data = os.path.join(d, "data.safetensors")
    save_file({"input": x.contiguous(), "labels": lab}, data)
    return cfg, mj, data


def torch_step(mj, x, labels, factors, dtype):
    net, masks = load_model(mj, dtype)
    net.train()
    outs = net(x.to(dtype))
    loss, per = ds_loss(outs, labels, factors)
    net.zero_grad()
    loss.backward()
    grads = {}
    for n, p in net.named_parameters():
        g = p.grad.detach()
        if n in masks:
            g = g * masks[n].to(dtype)[:, :, None, None, None]
        grads[n] = g
    return loss.item(), [l.item() for l in per], [o.detach() for o in outs], grads, masks


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def check(name, case, work, example, threads, perturb, interp=False, device="cpu"):
    cfg, mj, data = prepare(name, case, work, example, perturb)
    dump = os.path.join(work, name, "rust_step.safetensors")
    t0 = time.time()
    subprocess.run([example, "step", mj, data, dump, "--threads", str(threads), "--device", device]
                   + (["--interp", "1"] if interp else []), check=True, stdout=subprocess.DEVNULL)
    t_rust = time.time() - t0
    r = load_file(dump)
    meta = metadata(dump)
    io = load_file(data)
    factors = head_factors(cfg)
    t0 = time.time()
    ref = torch_step(mj, io["input"], io["labels"], factors, torch.float64)
    t_torch = time.time() - t0
    f32 = torch_step(mj, io["input"], io["labels"], factors, torch.float32)
    loss64, per64, outs64, g64, masks = ref
    rust_loss = float(meta["loss"])
    print("== %s: in %d, classes %d, widths %s, pools %s, shift %d, heads %d, patch %s, batch %d, "
          "density %.2f (e2enc step %.1f s, torch f64 step %.1f s)"
          % (name, cfg["in_channels"], cfg["num_classes"],
             [min(cfg["base_width"] * 2 ** i, cfg["max_width"]) for i in range(len(cfg["pool_kernels"]) + 1)],
             cfg["pool_kernels"], cfg["shift_groups"], cfg["deep_supervision_heads"], cfg["patch_size"],
             case["batch"], case["density"], t_rust, t_torch))
    print("  loss: e2enc %.9f  torch f64 %.9f  torch f32 %.9f  rel diff e2enc %.2e, torch f32 %.2e"
          % (rust_loss, loss64, f32[0], abs(rust_loss - loss64) / abs(loss64), abs(f32[0] - loss64) / abs(loss64)))
    for s, l in enumerate(per64):
        key = "loss." + ("logits" if s == 0 else "ds%d" % s)
        print("    head %d: e2enc %.9f torch f64 %.9f" % (s, float(meta[key]), l))
    for s, o in enumerate(outs64):
        key = "out." + ("logits" if s == 0 else "ds%d" % s)
        print("  output %-6s rel L2: e2enc %.2e  torch f32 %.2e" % (key[4:], rel_l2(r[key], o), rel_l2(f32[2][s], o)))
    worst, worst32, rows, bias = (0.0, ""), (0.0, ""), [], []
    dead_nonzero = 0
    for n, g in g64.items():
        rg = r.get("grad." + n)
        if rg is None:
            print("  MISSING gradient for %s in the e2enc dump" % n)
            worst = (float("inf"), n)
            continue
        if n in masks:
            dead = masks[n] == 0
            dead_nonzero += int((rg[dead].abs().sum((-1, -2, -3)) != 0).sum())
        if n.endswith("conv.bias"):
            bias.append((n, rg.double().norm().item(), g.norm().item()))
            continue
        e, e32 = rel_l2(rg, g), rel_l2(f32[3][n], g)
        rows.append((e, n, e32))
        worst = max(worst, (e, n))
        worst32 = max(worst32, (e32, n))
    extra = [k for k in r if k.startswith("grad.") and k[5:] not in g64]
    rows.sort(reverse=True)
    print("  weight gradients (rel L2 vs torch f64), worst 5 of %d:" % len(rows))
    for e, n, e32 in rows[:5]:
        print("    %-45s e2enc %.2e   torch f32 %.2e" % (n, e, e32))
    med = sorted(e for e, _, _ in rows)[len(rows) // 2]
    print("  MAX gradient rel L2: e2enc %.2e (%s), median %.2e; torch f32 noise floor max %.2e (%s)"
          % (worst[0], worst[1], med, worst32[0], worst32[1]))
    print("  conv biases (exact gradient 0, before instance norm): max |grad| norm e2enc %.2e, torch f64 %.2e"
          % (max(b[1] for b in bias), max(b[2] for b in bias)))
    print("  dead DSFF kernels with a non-zero e2enc gradient: %d; unexpected gradient tensors: %d"
          % (dead_nonzero, len(extra)))
    if interp:
        def masked(n, t):  # the interpreter does not skip dead kernels
            return t * masks[n][:, :, None, None, None].to(t.dtype) if n in masks else t
        ie = sorted(((rel_l2(masked(n, r["igrad." + n]), g), n) for n, g in g64.items()
                     if not n.endswith("conv.bias")), reverse=True)
        print("  e2enc reference interpreter (f64 accumulation): loss %s, MAX gradient rel L2 %.2e (%s), median %.2e"
              % (meta["interp_loss"], ie[0][0], ie[0][1], ie[len(ie) // 2][0]))
    ok = worst[0] < 1e-3 and abs(rust_loss - loss64) / abs(loss64) < 1e-4 and dead_nonzero == 0 and not extra
    print("  %s" % ("PASS" if ok else "FAIL"))
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="all", choices=list(CASES) + ["all"])
    ap.add_argument("--work", default="/tmp/e2enc_torch_check")
    ap.add_argument("--example", default=os.path.join(ROOT, "target", "release", "examples", "train_step_dump"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="where e2enc's step runs: cpu, cuda, cuda:N (the GPU training path; the "
                         "example built with --features cuda) or emulate (that path on the host "
                         "emulation)")
    ap.add_argument("--density", type=float, help="override the case's DSFF density")
    ap.add_argument("--negative-slope", type=float,
                    help="override the leaky-ReLU slope (1.0 makes the network kink-free)")
    ap.add_argument("--interp", action="store_true",
                    help="also run the step on e2enc's reference interpreter and compare its gradients")
    ap.add_argument("--perturb-norms", action="store_true",
                    help="random instance-norm weights/biases instead of He init's 1/0")
    ap.add_argument("--lrelu-at-zero", default="slope", choices=["slope", "one"],
                    help="leaky-ReLU derivative at exactly 0 on the PyTorch side: slope (PyTorch's "
                         "own) or one (e2enc's convention)")
    a = ap.parse_args()
    e2enet_torch.LRELU_AT_ZERO = a.lrelu_at_zero
    print("PyTorch side: leaky-ReLU derivative at 0 = %s; norm parameters %s"
          % (a.lrelu_at_zero, "perturbed" if a.perturb_norms else "as initialised (1, 0)"))
    torch.set_num_threads(a.threads)
    names = list(CASES) if a.case == "all" else [a.case]
    cases = {}
    for n in names:
        c = dict(CASES[n], cfg=dict(CASES[n]["cfg"]))
        if a.density is not None:
            c["density"] = a.density
        if a.negative_slope is not None:
            c["cfg"]["negative_slope"] = a.negative_slope
        cases[n] = c
    ok = all([check(n, cases[n], a.work, a.example, a.threads, a.perturb_norms, a.interp, a.device)
              for n in names])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
