#!/usr/bin/env python3
"""Independent numpy reference of the E2ENet forward pass (second oracle for e2enc).

Written only from the network description (shared/e2enet.md sections 1, 2, 4, 9) and the
model.json schema of tests/data/golden; it does not look at e2enc's Rust code.

Commands:
  check-golden DIR
      Run DIR/weights.safetensors on DIR/io.safetensors:input with the config DIR/model.json and
      print the relative errors of ds0..ds3 against the stored outputs.
  check DIR
      Same as check-golden (any directory with model.json + weights + io.safetensors).
  mutants DIR
      Run deliberately wrong variants (shift direction, wrap-around, channel split, concat order,
      unbiased variance, no shift) against DIR's outputs, to show the comparison discriminates.
  make-fixture OUTDIR --in-channels C --seed S [--shift-groups G] [--patch D,H,W] [--density P]
      Write an independent, well-conditioned test case (model.json, weights.safetensors,
      io.safetensors, README.md).

Only Python 3 + numpy. Computation is float64 (optionally float32 for an error estimate).
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np

# --------------------------------------------------------------------------------------------
# safetensors (by hand)
# --------------------------------------------------------------------------------------------

_DT = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info["dtype"]
        shape = info["shape"]
        a, b = info["data_offsets"]
        if dt == "BF16":
            u16 = np.frombuffer(raw[base + a: base + b], dtype="<u2")
            arr = (u16.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw[base + a: base + b], dtype=_DT[dt])
        out[name] = arr.reshape(shape).copy()
    return out


def write_safetensors(path, tensors):
    """tensors: dict name -> np.ndarray (f32 written as F32). Names sorted, compact JSON header
    padded with spaces to a multiple of 8 bytes."""
    rev = {v: k for k, v in _DT.items()}
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        le = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        key = rev[le]
        data = np.ascontiguousarray(arr, dtype=le).tobytes()
        header[name] = {"dtype": key, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# --------------------------------------------------------------------------------------------
# configuration and expected parameter list
# --------------------------------------------------------------------------------------------

class Config:
    def __init__(self, d):
        self.in_channels = int(d["in_channels"])
        self.num_classes = int(d["num_classes"])
        self.base_width = int(d["base_width"])
        self.max_width = int(d["max_width"])
        self.pool_kernels = [tuple(int(v) for v in p) for p in d["pool_kernels"]]
        self.conv_kernel = tuple(int(v) for v in d.get("conv_kernel", [1, 3, 3]))
        self.shift_groups = int(d.get("shift_groups", 5))
        self.convs_per_stage = int(d.get("convs_per_stage", 2))
        self.deep_supervision_heads = int(d.get("deep_supervision_heads", 3))
        self.patch_size = [int(v) for v in d["patch_size"]] if "patch_size" in d else None
        self.norm_eps = float(d.get("norm_eps", 1e-5))
        self.negative_slope = float(d.get("negative_slope", 0.01))
        self.L = len(self.pool_kernels) + 1  # number of levels
        if "levels" in d and int(d["levels"]) != self.L:
            raise ValueError("levels != len(pool_kernels) + 1")

    def width(self, i):
        return min(self.base_width * 2 ** i, self.max_width)

    # --- names ---------------------------------------------------------------------------
    def backbone_units(self, i):
        """list of (name prefix, stride, c_in, c_out) for backbone level i."""
        L, n = self.L, self.convs_per_stage
        cin0 = self.in_channels if i == 0 else self.width(i - 1)
        stride0 = (1, 1, 1) if i == 0 else self.pool_kernels[i - 1]
        c = self.width(i)
        if i < L - 1:
            prefixes = ["conv_blocks_context.%d.blocks.%d" % (i, u) for u in range(n)]
        else:
            prefixes = ["conv_blocks_context.%d.0.blocks.%d" % (i, u) for u in range(max(n - 1, 1))]
            prefixes.append("conv_blocks_context.%d.1.blocks.0" % i)
        units = []
        for u, p in enumerate(prefixes):
            units.append((p, stride0 if u == 0 else (1, 1, 1), cin0 if u == 0 else c, c))
        return units

    def node_zk(self, i, j):
        z = self.L - 1 - (i + j)
        k = self.L - 2 - i - z
        return z, k

    def fusion_units(self, i, j):
        z, k = self.node_zk(i, j)
        c = self.width(i)
        cin = c + c + (self.width(i - 1) if i >= 1 else 0)
        nu = self.convs_per_stage if z == 0 else 1
        return [("loc%d.%d.%d.blocks.0" % (z, k, u), (1, 1, 1), cin if u == 0 else c, c) for u in range(nu)]

    def up_name(self, i, j):
        z, k = self.node_zk(i, j)
        return "up%d.%d.weight" % (z, k)

    def nodes(self):
        return [(i, j) for j in range(1, self.L) for i in range(0, self.L - j)]

    def num_heads(self):
        return self.deep_supervision_heads + 1

    def expected_params(self):
        """ordered dict name -> (shape, kind) with kind in conv_w, conv_b, norm_w, norm_b, up_w, head_w
        and a flag whether it is a DSFF (maskable) weight."""
        ps = {}
        kc = list(self.conv_kernel)

        def unit(p, cin, cout, dsff):
            ps[p + ".conv.weight"] = ([cout, cin] + kc, "conv_w", dsff)
            ps[p + ".conv.bias"] = ([cout], "conv_b", False)
            ps[p + ".instnorm.weight"] = ([cout], "norm_w", False)
            ps[p + ".instnorm.bias"] = ([cout], "norm_b", False)

        for i in range(self.L):
            for p, _, cin, cout in self.backbone_units(i):
                unit(p, cin, cout, False)
        for (i, j) in self.nodes():
            for p, _, cin, cout in self.fusion_units(i, j):
                unit(p, cin, cout, True)
            ps[self.up_name(i, j)] = ([self.width(i + 1), self.width(i)] + list(self.pool_kernels[i]), "up_w", True)
        for s in range(self.num_heads()):
            ps["seg_outputs.%d.weight" % s] = ([self.num_classes, self.width(s), 1, 1, 1], "head_w", False)
        return ps


def check_params(cfg, W):
    exp = cfg.expected_params()
    problems = []
    for name, (shape, _, _) in exp.items():
        if name not in W:
            problems.append("missing %s %s" % (name, shape))
        elif list(W[name].shape) != shape:
            problems.append("shape %s: file %s expected %s" % (name, list(W[name].shape), shape))
    for name in W:
        if name not in exp:
            problems.append("unexpected %s %s" % (name, list(W[name].shape)))
    return problems


# --------------------------------------------------------------------------------------------
# operators on a single sample: tensors are [C, D, H, W]
# --------------------------------------------------------------------------------------------

def torch_shift(x, G):
    """The released torch_shift: zero-pad depth by G//2 both sides, torch.chunk along channels
    into G pieces (pieces of ceil(C/G) channels, possibly fewer pieces), roll piece g by
    g - G//2 along depth, concat, crop the original depth range."""
    C, D = x.shape[0], x.shape[1]
    pad = G // 2
    xp = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
    size = -(-C // G)  # torch.chunk piece size
    pieces = [xp[c0:c0 + size] for c0 in range(0, C, size)]
    shifts = list(range(-pad, pad + 1))
    out = [np.roll(p, s, axis=1) for p, s in zip(pieces, shifts)]  # zip: extra shifts unused
    y = np.concatenate(out, axis=0)
    return y[:, pad:pad + D]


def conv3d(x, w, b, stride):
    """Conv3d, weight [O, I, kd, kh, kw], padding k//2 per axis, given stride."""
    O, I, kd, kh, kw = w.shape
    assert x.shape[0] == I, (x.shape, w.shape)
    pads = (kd // 2, kh // 2, kw // 2)
    xp = np.pad(x, ((0, 0),) + tuple((p, p) for p in pads))
    sd, sh, sw = stride
    Do = (x.shape[1] + 2 * pads[0] - kd) // sd + 1
    Ho = (x.shape[2] + 2 * pads[1] - kh) // sh + 1
    Wo = (x.shape[3] + 2 * pads[2] - kw) // sw + 1
    y = np.zeros((O, Do, Ho, Wo), dtype=x.dtype)
    for a in range(kd):
        for bb in range(kh):
            for c in range(kw):
                sl = xp[:, a:a + sd * (Do - 1) + 1:sd, bb:bb + sh * (Ho - 1) + 1:sh, c:c + sw * (Wo - 1) + 1:sw]
                y += np.tensordot(w[:, :, a, bb, c], sl, axes=(1, 0))
    if b is not None:
        y += b[:, None, None, None]
    return y


def conv_transpose3d(x, w):
    """ConvTranspose3d with kernel == stride, no padding, no bias; weight [I, O, ka, kb, kc]."""
    I, O, ka, kb, kc = w.shape
    assert x.shape[0] == I, (x.shape, w.shape)
    _, D, H, Wd = x.shape
    t = np.tensordot(w, x, axes=(0, 0))  # [O, ka, kb, kc, D, H, W]
    t = t.transpose(0, 4, 1, 5, 2, 6, 3)  # [O, D, ka, H, kb, W, kc]
    return t.reshape(O, D * ka, H * kb, Wd * kc)


def maxpool3d(x, k):
    C, D, H, W = x.shape
    kd, kh, kw = k
    Do, Ho, Wo = D // kd, H // kh, W // kw
    x = x[:, :Do * kd, :Ho * kh, :Wo * kw]
    return x.reshape(C, Do, kd, Ho, kh, Wo, kw).max(axis=(2, 4, 6))


def instance_norm(x, g, b, eps=1e-5, stats=None):
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    v = ((x - m) ** 2).mean(axis=(1, 2, 3), keepdims=True)  # biased variance
    if stats is not None:
        stats.append(v.reshape(-1))
    return (x - m) / np.sqrt(v + eps) * g[:, None, None, None] + b[:, None, None, None]


def leaky_relu(x, slope=0.01):
    return np.where(x >= 0, x, x * slope)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------

class Net:
    def __init__(self, cfg, weights, dtype=np.float64):
        self.cfg = cfg
        self.dtype = dtype
        self.W = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
        self.norm_stats = None  # list of per-channel pre-norm variances, if collected

    def unit(self, x, prefix, stride):
        w = self.W[prefix + ".conv.weight"]
        if tuple(w.shape[2:]) == (1, 3, 3):  # released code: shift only for (1,3,3) kernels
            x = torch_shift(x, self.cfg.shift_groups)
        x = conv3d(x, w, self.W[prefix + ".conv.bias"], stride)
        x = instance_norm(x, self.W[prefix + ".instnorm.weight"], self.W[prefix + ".instnorm.bias"],
                          eps=self.cfg.norm_eps, stats=self.norm_stats)
        return leaky_relu(x, self.cfg.negative_slope)

    def forward_one(self, x):
        cfg = self.cfg
        L = cfg.L
        X = {}
        h = x
        for i in range(L):
            for p, stride, _, _ in cfg.backbone_units(i):
                h = self.unit(h, p, stride)
            X[(i, 0)] = h
        for j in range(1, L):
            for i in range(0, L - j):
                parts = [X[(i, j - 1)], conv_transpose3d(X[(i + 1, j - 1)], self.W[cfg.up_name(i, j)])]
                if i >= 1:
                    parts.append(maxpool3d(X[(i - 1, j - 1)], cfg.pool_kernels[i - 1]))
                shapes = {p.shape[1:] for p in parts}
                if len(shapes) != 1:
                    raise ValueError("node (%d,%d): spatial shapes differ %s" % (i, j, [p.shape for p in parts]))
                h = np.concatenate(parts, axis=0)
                for p, stride, _, _ in cfg.fusion_units(i, j):
                    h = self.unit(h, p, stride)
                X[(i, j)] = h
        outs = {}
        for s in range(cfg.num_heads()):
            w = self.W["seg_outputs.%d.weight" % s]
            outs["ds%d" % s] = conv3d(X[(s, L - 1 - s)], w, None, (1, 1, 1))
        return outs

    def forward(self, x):
        x = np.asarray(x, dtype=self.dtype)
        per = [self.forward_one(x[n]) for n in range(x.shape[0])]
        return {k: np.stack([p[k] for p in per]) for k in per[0]}


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------

def rel_errors(out, ref):
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    d = out - ref
    mx = np.abs(d).max() / max(np.abs(ref).max(), 1e-300)
    l2 = np.linalg.norm(d) / max(np.linalg.norm(ref), 1e-300)
    return mx, l2


def load_case(d):
    with open(os.path.join(d, "model.json")) as f:
        mj = json.load(f)
    cfg = Config(mj)
    W = read_safetensors(os.path.join(d, mj.get("weights", "weights.safetensors")))
    io = read_safetensors(os.path.join(d, "io.safetensors"))
    return mj, cfg, W, io


def cmd_check(args):
    mj, cfg, W, io = load_case(args.dir)
    probs = check_params(cfg, W)
    print("config: L=%d widths=%s in=%d classes=%d shift_groups=%d convs_per_stage=%d heads=%d input=%s"
          % (cfg.L, [cfg.width(i) for i in range(cfg.L)], cfg.in_channels, cfg.num_classes,
             cfg.shift_groups, cfg.convs_per_stage, cfg.num_heads(), list(io["input"].shape)))
    if probs:
        print("parameter problems:")
        for p in probs:
            print("  " + p)
        return 1
    print("parameters: %d tensors, names and shapes as expected" % len(W))
    worst = 0.0
    floor = {}
    ref64 = None
    for dt, label in ((np.float64, "float64"), (np.float32, "float32")):
        outs = Net(cfg, W, dt).forward(io["input"])
        if dt is np.float64:
            ref64 = outs
        else:
            floor = {k: rel_errors(outs[k], ref64[k])[0] for k in outs}
        for k in sorted(outs):
            if k not in io:
                print("  %s: not in io file" % k)
                continue
            if outs[k].shape != io[k].shape:
                print("  %s: shape %s vs ref %s" % (k, outs[k].shape, io[k].shape))
                worst = float("inf")
                continue
            mx, l2 = rel_errors(outs[k], io[k])
            if dt is np.float64:
                worst = max(worst, mx)
            print("  [%s] %s %-16s max|diff|/max|ref| = %.3e   L2 rel = %.3e   (max|ref| = %.4g)"
                  % (label, k, str(list(outs[k].shape)), mx, l2, np.abs(io[k]).max()))
    print("  f32 noise floor of this case (this reference run in float32 vs float64), max-rel: %s"
          % " ".join("%s %.2e" % (k, floor[k]) for k in sorted(floor)))
    ok = worst < args.tol
    print("%s: float64 reference vs stored outputs, worst max-rel error %.3e (tolerance %.1e)"
          % ("PASS" if ok else "FAIL", worst, args.tol))
    return 0 if ok else 1


MUTANTS = {
    "shift-direction-flipped": "roll block g by -(g - G//2) instead of +(g - G//2)",
    "shift-wraparound": "np.roll without zero padding (circular shift)",
    "shift-even-split": "np.array_split into G near-equal blocks instead of torch.chunk",
    "no-shift": "no depth shift at all",
    "concat-order-fwd-down-up": "fusion concat order [forward, down, up]",
    "concat-order-up-fwd-down": "fusion concat order [up, forward, down]",
    "norm-unbiased-var": "instance norm with unbiased (N-1) variance",
    "first-conv-no-shift": "no depth shift before the very first conv only (the input path)",
}


def run_mutant(cfg, W, x, mutant):
    """Forward pass with one deliberate deviation, to show that the golden comparison discriminates."""
    g = globals()
    saved = {k: g[k] for k in ("torch_shift", "instance_norm")}
    saved_fwd = Net.forward_one
    saved_unit = Net.unit
    try:
        if mutant == "shift-direction-flipped":
            def ts(x, G, _o=saved["torch_shift"]):
                return _o(x[:, ::-1], G)[:, ::-1]  # mirror depth = negate shifts
            g["torch_shift"] = ts
        elif mutant == "shift-wraparound":
            def ts(x, G):
                size = -(-x.shape[0] // G)
                ps = [x[c:c + size] for c in range(0, x.shape[0], size)]
                return np.concatenate([np.roll(p, s, axis=1) for p, s in zip(ps, range(-(G // 2), G // 2 + 1))], 0)
            g["torch_shift"] = ts
        elif mutant == "shift-even-split":
            def ts(x, G):
                pad = G // 2
                xp = np.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0)))
                ps = [p for p in np.array_split(xp, G, axis=0) if p.shape[0]]
                y = np.concatenate([np.roll(p, s, axis=1) for p, s in zip(ps, range(-pad, pad + 1))], 0)
                return y[:, pad:pad + x.shape[1]]
            g["torch_shift"] = ts
        elif mutant == "no-shift":
            g["torch_shift"] = lambda x, G: x
        elif mutant == "norm-unbiased-var":
            def inorm(x, gg, b, eps=1e-5, stats=None):
                n = x[0].size
                m = x.mean(axis=(1, 2, 3), keepdims=True)
                v = ((x - m) ** 2).sum(axis=(1, 2, 3), keepdims=True) / max(n - 1, 1)
                return (x - m) / np.sqrt(v + eps) * gg[:, None, None, None] + b[:, None, None, None]
            g["instance_norm"] = inorm
        elif mutant == "first-conv-no-shift":
            def unit(self, x, prefix, stride):
                if prefix == "conv_blocks_context.0.blocks.0":
                    w = self.W[prefix + ".conv.weight"]
                    x = conv3d(x, w, self.W[prefix + ".conv.bias"], stride)
                    x = instance_norm(x, self.W[prefix + ".instnorm.weight"], self.W[prefix + ".instnorm.bias"])
                    return leaky_relu(x)
                return saved_unit(self, x, prefix, stride)
            Net.unit = unit
        elif mutant.startswith("concat-order"):
            order = {"concat-order-fwd-down-up": (0, 2, 1), "concat-order-up-fwd-down": (1, 0, 2)}[mutant]
            _cat = np.concatenate

            def cat(parts, axis=0):
                if isinstance(parts, list) and len(parts) in (2, 3) and axis == 0:
                    parts = [parts[i] for i in order if i < len(parts)]
                return _cat(parts, axis=axis)

            def fwd(self, x):
                np.concatenate = cat
                try:
                    return saved_fwd(self, x)
                finally:
                    np.concatenate = _cat
            Net.forward_one = fwd
        else:
            return None
        return Net(cfg, W, np.float64).forward(x)
    finally:
        g.update(saved)
        Net.forward_one = saved_fwd
        Net.unit = saved_unit


def cmd_mutants(args):
    mj, cfg, W, io = load_case(args.dir)
    print("each deliberately wrong variant vs the stored outputs (must be far above the f32 noise floor):")
    for m, desc in MUTANTS.items():
        outs = run_mutant(cfg, W, io["input"], m)
        if outs is None:
            continue
        try:
            errs = [rel_errors(outs[k], io[k])[0] for k in sorted(outs)]
        except ValueError:
            print("  %-26s shape mismatch" % m)
            continue
        print("  %-26s max-rel ds0..ds3 = %s   (%s)" % (m, " ".join("%.2e" % e for e in errs), desc))
    return 0


def fixture_config(in_channels, shift_groups, patch):
    return {
        "format": "e2enc-model",
        "version": 1,
        "name": "numpy-ref-ch%d-shift%d" % (in_channels, shift_groups),
        "in_channels": in_channels,
        "num_classes": 3,
        "base_width": 4,
        "max_width": 32,
        "pool_kernels": [[2, 2, 2]] * 5,
        "conv_kernel": [1, 3, 3],
        "shift_groups": shift_groups,
        "convs_per_stage": 2,
        "deep_supervision_heads": 3,
        "patch_size": list(patch),
        "weights": "weights.safetensors",
    }


def make_mask(rng, d0, d1, density, cover_dim0):
    """Kernel-level mask [d0, d1] keeping round(d0*d1*density) kernels chosen at random.
    If cover_dim0, the kept kernels are first spread over distinct indices of dim 0 (conv output
    channels): every output channel keeps at least one kernel when the count allows it, otherwise
    as many output channels as possible keep one (fewer constant channels feeding an instance norm)."""
    n = d0 * d1
    keep = int(round(n * density))
    m = np.zeros(n, dtype=bool)
    if cover_dim0:
        outs = rng.permutation(d0)[:min(keep, d0)]
        m[outs * d1 + rng.integers(d1, size=outs.size)] = True
        rest = np.flatnonzero(~m)
        m[rng.choice(rest, size=keep - outs.size, replace=False)] = True
    else:
        m[rng.choice(n, size=keep, replace=False)] = True
    return m.reshape(d0, d1)


def dump_model_json(mj):
    """json with short lists on one line (like tests/data/golden/model.json)."""
    lines = []
    for k, v in mj.items():
        lines.append("  %s: %s" % (json.dumps(k), json.dumps(v, separators=(", ", ": "))))
    return "{\n" + ",\n".join(lines) + "\n}\n"


def cmd_make_fixture(args):
    patch = [int(v) for v in args.patch.split(",")]
    mj = fixture_config(args.in_channels, args.shift_groups, patch)
    cfg = Config(mj)
    rng = np.random.default_rng(args.seed)
    gain = math.sqrt(2.0 / (1.0 + 0.01 ** 2))
    W = {}
    notes = []
    exp = cfg.expected_params()
    for name in sorted(exp):
        shape, kind, dsff = exp[name]
        if kind in ("conv_w", "up_w", "head_w"):
            fan_in = shape[1] * int(np.prod(shape[2:]))
            w = rng.standard_normal(shape) * (gain / math.sqrt(fan_in))
            if dsff:
                # conv: mask over [out, in]; transposed conv: over [in, out] (= shape[0], shape[1])
                m = make_mask(rng, shape[0], shape[1], args.density, cover_dim0=(kind == "conv_w"))
                w = w * m[:, :, None, None, None]
                dead = int((~m.any(axis=1)).sum()) if kind == "conv_w" else 0
                if dead:
                    notes.append("%s: %d of %d output channels have no kernel (only %d kernels kept)"
                                 % (name, dead, shape[0], int(m.sum())))
        elif kind == "conv_b":
            w = rng.normal(0.0, 0.1, shape)
        elif kind == "norm_w":
            w = rng.uniform(0.5, 1.5, shape)
        elif kind == "norm_b":
            w = rng.normal(0.0, 0.1, shape)
        else:
            raise AssertionError(kind)
        W[name] = w.astype(np.float32)
    x = rng.standard_normal([1, args.in_channels] + patch).astype(np.float32)

    net = Net(cfg, W, np.float64)
    net.norm_stats = []
    outs = net.forward(x)
    var = np.concatenate(net.norm_stats)
    # also run in float32 to estimate how far an f32 implementation is expected to land
    outs32 = Net(cfg, W, np.float32).forward(x)

    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "model.json"), "w") as f:
        f.write(dump_model_json(mj))
    write_safetensors(os.path.join(args.outdir, "weights.safetensors"), W)
    io = {"input": x}
    for k, v in outs.items():
        io[k] = v.astype(np.float32)
    write_safetensors(os.path.join(args.outdir, "io.safetensors"), io)

    lines = []
    for k in sorted(outs):
        mx, l2 = rel_errors(outs32[k], outs[k])
        lines.append("| %s | %s | %.4g | %.4g | %.2e | %.2e |" % (
            k, list(outs[k].shape), np.abs(outs[k]).max(), outs[k].std(), mx, l2))
    cmdline = ("python3 tools/numpy_ref/e2enet_ref.py make-fixture %s --in-channels %d --seed %d"
               % (args.outdir.rstrip("/"), args.in_channels, args.seed))
    if args.shift_groups != 5:
        cmdline += " --shift-groups %d" % args.shift_groups
    if patch != [32, 32, 32]:
        cmdline += " --patch %s" % ",".join(map(str, patch))
    if args.density != 0.2:
        cmdline += " --density %g" % args.density
    widths = [cfg.width(i) for i in range(cfg.L)]
    res = [[p // 2 ** i for p in patch] for i in range(cfg.L)]
    readme = """# numpy reference fixture `{name}`

Made by the independent numpy reference `tools/numpy_ref/e2enet_ref.py` (written from
shared/e2enet.md only, not from e2enc's code; it reproduces the authors' golden outputs, see
`python3 tools/numpy_ref/e2enet_ref.py check-golden tests/data/golden`):

    {cmd}

- Config: {cin} input channel(s), 3 classes, base width 4, max width 32 (widths {widths}),
  five (2,2,2) pools, 1x3x3 kernels, {g} shift groups, 2 convs per stage, 4 heads (ds0..ds3),
  patch {patch} (level resolutions {res}).
- Weights (`weights.safetensors`, official names, f32), drawn with `numpy.random.default_rng({seed})`
  in sorted name order: conv / transposed-conv / head weights He normal
  (std = sqrt(2/(1+0.01^2))/sqrt(shape[1]*kernel volume)); conv biases N(0, 0.1); instance-norm
  weight U(0.5, 1.5), bias N(0, 0.1).
- Kernel-level DSFF masks at density {dens} on the fusion conv weights (`loc*`, mask over [out, in])
  and transposed-conv weights (`up*`, mask over [in, out]) only: round(d0*d1*{dens}) kernels kept per
  tensor, the rest zeroed in the stored weights (no separate mask file). For `loc*` convs every output
  channel keeps at least one kernel when the kept count allows it (otherwise the kept kernels go to
  distinct output channels). Backbone and heads are dense,
  so the input path (depth shift of the {cin} input channel(s) + first conv) is exercised.
- `io.safetensors`: `input` [1, {cin}, {pd}, {ph}, {pw}] ~ N(0, 1) (drawn after the weights), and the
  outputs ds0 (full resolution) .. ds3 (1/8), computed in float64 and stored as f32.

Conditioning: smallest per-channel pre-norm variance over all instance norms = {vmin:.3g}
(eps = 1e-5); exactly-constant channels (variance 0): {nzero}.
{notes}
Running the same reference in float32 gives, vs the stored float64 result:

| output | shape | max abs | std | f32 max-rel err | f32 L2 rel err |
|---|---|---|---|---|---|
{table}
""".format(name=mj["name"], cmd=cmdline, cin=args.in_channels, widths=widths, g=args.shift_groups,
           patch=patch, res=res, seed=args.seed, dens=args.density, pd=patch[0], ph=patch[1], pw=patch[2],
           vmin=float(var[var > 0].min()), nzero=int((var == 0).sum()),
           notes=("\nNotes:\n" + "\n".join("- " + n for n in notes) + "\n") if notes else "",
           table="\n".join(lines))
    if res[-1] == [1, 1, 1]:
        readme += """
Caveat: with a 32^3 patch and five (2,2,2) pools the bottleneck (level 5) is 1x1x1, so each of its
instance norms normalises a single voxel: variance 0, output = norm bias, whatever the input. The
level-5 conv weights therefore do not influence the outputs (PyTorch's InstanceNorm3d would even
refuse such an input: "Expected more than 1 spatial element"). A larger patch (e.g. `--patch 32,32,64`)
avoids this.
"""
    with open(os.path.join(args.outdir, "README.md"), "w") as f:
        f.write(readme)

    print("wrote %s" % args.outdir)
    for fn in ("model.json", "weights.safetensors", "io.safetensors", "README.md"):
        print("  %-20s %8d bytes" % (fn, os.path.getsize(os.path.join(args.outdir, fn))))
    print("min pre-norm variance %.3g, zero-variance channels %d" % (var[var > 0].min(), (var == 0).sum()))
    for n in notes:
        print("note: " + n)
    for l in lines:
        print(l)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("check-golden", "check"):
        p = sub.add_parser(c)
        p.add_argument("dir")
        p.add_argument("--tol", type=float, default=1e-3, help="max-rel tolerance for PASS")
        p.set_defaults(func=cmd_check)
    p = sub.add_parser("mutants")
    p.add_argument("dir")
    p.set_defaults(func=cmd_mutants)
    p = sub.add_parser("make-fixture")
    p.add_argument("outdir")
    p.add_argument("--in-channels", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--shift-groups", type=int, default=5)
    p.add_argument("--patch", default="32,32,32")
    p.add_argument("--density", type=float, default=0.2)
    p.set_defaults(func=cmd_make_fixture)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
