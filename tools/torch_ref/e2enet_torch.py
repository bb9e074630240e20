#!/usr/bin/env python3
"""PyTorch E2ENet built from an e2enc model.json: a third, autograd-capable reference.

This file owns the PyTorch transcription of the network that ir/src/e2enet/build.rs builds
(docs/model-json.md, shared/e2enet.md sections 1-4 and 9): levels from `pool_kernels`,
`convs_per_stage` units per backbone level (nnU-Net's two-stack bottleneck), the DSFF fusion grid
x(i,j) with concat order [forward, up, down], `convs_per_stage` units on the last diagonal, heads
seg_outputs.s on x(s, L-1-s), the restricted depth shift before every conv when shift_groups > 1
(blocks of ceil(C/G) channels, block g moved by g - G//2 along depth, zero fill), conv kernel and
padding (k-1)/2, instance norm eps, leaky-ReLU slope. Its state_dict() names are the official
checkpoint names, so e2enc weights load with load_state_dict(strict=True). It is written from
those descriptions, not from the authors' code, and is used only by the scripts in this folder
(PyTorch is not a dependency of the project).

Command line:
  e2enet_torch.py check MODEL_JSON INPUT_SAFETENSORS [REF_SAFETENSORS]
      Runs the model (float64 and float32) on INPUT's `input` and prints the relative errors of
      every head against REF's (default: INPUT's) `ds0` or `logits`, `ds1`, ... (e.g. the golden
      io.safetensors, or an `e2enc run --deep-supervision` output file).
"""

import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
try:
    from safetensors.torch import load_file
except ImportError:  # e.g. the GPU machine, which has PyTorch but no package registry
    def load_file(path):
        """Reads a safetensors file (F32/I32/I64/F16/BF16 tensors) without the safetensors
        package: an 8-byte little-endian header length, the JSON header, the data."""
        import struct
        dtypes = {"F32": torch.float32, "I32": torch.int32, "I64": torch.int64,
                  "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
        with open(path, "rb") as f:
            raw = f.read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        data = bytearray(raw[8 + n:])
        out = {}
        for name, t in header.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            out[name] = torch.frombuffer(data[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"]).clone()
        return out


class Config:
    """The model.json fields the network needs, with the schema's defaults."""

    def __init__(self, d):
        self.in_channels = int(d["in_channels"])
        self.num_classes = int(d["num_classes"])
        self.base_width = int(d.get("base_width", 48))
        self.max_width = int(d.get("max_width", 320))
        self.pool_kernels = [tuple(int(v) for v in p) for p in d["pool_kernels"]]
        self.conv_kernel = tuple(int(v) for v in d.get("conv_kernel", [1, 3, 3]))
        self.shift_groups = int(d.get("shift_groups", 5))
        self.convs_per_stage = int(d.get("convs_per_stage", 2))
        self.heads = int(d.get("deep_supervision_heads", 3))
        self.patch_size = [int(v) for v in d["patch_size"]]
        self.norm_eps = float(d.get("norm_eps", 1e-5))
        self.negative_slope = float(d.get("negative_slope", 0.01))
        self.L = len(self.pool_kernels) + 1

    def width(self, i):
        return min(self.base_width * 2 ** i, self.max_width)


def depth_shift(x, groups):
    """Restricted depth shift of [N, C, D, H, W]: channel blocks of ceil(C/groups) (fewer blocks
    when C is small), block g moved by s = g - groups//2 (out[d] = in[d - s]), zeros shifted in."""
    if groups <= 1:
        return x
    c, d = x.shape[1], x.shape[2]
    block = max(-(-c // groups), 1)
    pad = groups // 2
    parts = []
    for g, c0 in enumerate(range(0, c, block)):
        s = g - pad
        piece = x[:, c0:c0 + block]
        if s == 0:
            parts.append(piece)
            continue
        p = F.pad(piece, (0, 0, 0, 0, abs(s), abs(s)))
        # padded index of in[d - s] is d - s + |s|
        parts.append(p[:, :, abs(s) - s:abs(s) - s + d])
    return torch.cat(parts, dim=1)


# Derivative of the leaky ReLU at exactly 0: "slope" is PyTorch's (F.leaky_relu backward uses
# x > 0), "one" is e2enc's LeakyReluBackward (x >= 0). They differ only where a pre-activation is
# exactly 0, which happens on channels that are constant before the instance norm (a fusion conv
# row whose kernels are all pruned, or whose live inputs are all zero) while the norm bias is 0.
LRELU_AT_ZERO = "slope"


def leaky_relu(x, slope):
    if LRELU_AT_ZERO == "one":
        return torch.where(x >= 0, x, x * slope)
    return F.leaky_relu(x, slope)


class ConvUnit(nn.Module):
    """shift -> conv (bias) -> instance norm (affine) -> leaky ReLU; names conv.*, instnorm.*."""

    def __init__(self, cfg, cin, cout, stride):
        super().__init__()
        k = cfg.conv_kernel
        self.conv = nn.Conv3d(cin, cout, k, stride=stride, padding=tuple((v - 1) // 2 for v in k), bias=True)
        self.instnorm = nn.InstanceNorm3d(cout, eps=cfg.norm_eps, affine=True)
        self.groups = cfg.shift_groups
        self.slope = cfg.negative_slope

    def forward(self, x):
        x = self.conv(depth_shift(x, self.groups))
        return leaky_relu(self.instnorm(x), self.slope)


class Stack(nn.Module):
    """nnU-Net's StackedConvLayers: the units live under `blocks`."""

    def __init__(self, units):
        super().__init__()
        self.blocks = nn.ModuleList(units)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class E2ENet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        L, n = cfg.L, cfg.convs_per_stage
        levels = []
        cin = cfg.in_channels
        for i in range(L):
            c = cfg.width(i)
            stride0 = (1, 1, 1) if i == 0 else cfg.pool_kernels[i - 1]
            if i + 1 < L:
                units = [ConvUnit(cfg, cin if u == 0 else c, c, stride0 if u == 0 else 1) for u in range(n)]
                levels.append(Stack(units))
            else:
                units = max(n, 2)
                first = [ConvUnit(cfg, cin if u == 0 else c, c, stride0 if u == 0 else 1) for u in range(units - 1)]
                levels.append(nn.Sequential(Stack(first), Stack([ConvUnit(cfg, c, c, 1)])))
            cin = c
        self.conv_blocks_context = nn.ModuleList(levels)
        # loc{z}[k][u] and up{z}[k] for node (i, j): z = L-1-(i+j), k = L-2-i-z.
        for z in range(L - 1):
            locs, ups = [], []
            for k in range(L - 1 - z):
                i = L - 2 - z - k
                ci = cfg.width(i)
                cat = 2 * ci + (cfg.width(i - 1) if i > 0 else 0)
                nu = n if z == 0 else 1
                locs.append(nn.ModuleList([Stack([ConvUnit(cfg, cat if u == 0 else ci, ci, 1)]) for u in range(nu)]))
                pk = cfg.pool_kernels[i]
                ups.append(nn.ConvTranspose3d(cfg.width(i + 1), ci, pk, stride=pk, bias=False))
            setattr(self, "loc%d" % z, nn.ModuleList(locs))
            setattr(self, "up%d" % z, nn.ModuleList(ups))
        self.seg_outputs = nn.ModuleList(
            [nn.Conv3d(cfg.width(s), cfg.num_classes, 1, bias=False) for s in range(cfg.heads + 1)])

    def node(self, i, j):
        L = self.cfg.L
        z = L - 1 - (i + j)
        k = L - 2 - i - z
        return getattr(self, "loc%d" % z)[k], getattr(self, "up%d" % z)[k]

    def forward(self, x, all_heads=True):
        """Returns [logits, ds1, ds2, ...] (full resolution first), or [logits] when all_heads is
        False (the deep-supervision heads are then not computed)."""
        cfg, L = self.cfg, self.cfg.L
        X = {}
        h = x
        for i in range(L):
            h = self.conv_blocks_context[i](h)
            X[(i, 0)] = h
            for j in range(1, i + 1):  # the diagonal level i completes, as build.rs orders it
                a = i - j
                locs, up = self.node(a, j)
                parts = [X[(a, j - 1)], up(X[(a + 1, j - 1)])]
                if a > 0:
                    pk = cfg.pool_kernels[a - 1]
                    parts.append(F.max_pool3d(X[(a - 1, j - 1)], pk, pk))
                y = torch.cat(parts, dim=1)
                for unit in locs:
                    y = unit(y)
                X[(a, j)] = y
        n = cfg.heads + 1 if all_heads else 1
        return [self.seg_outputs[s](X[(s, L - 1 - s)]) for s in range(n)]


def load_model(model_json, dtype=torch.float32):
    """(net, masks): the network with model.json's weights (masked kernels zeroed) and the masks
    dict (name -> [d0, d1] tensor; empty when the model names none)."""
    with open(model_json) as f:
        d = json.load(f)
    cfg = Config(d)
    net = E2ENet(cfg).to(dtype)
    base = os.path.dirname(os.path.abspath(model_json))
    if "weights" not in d:
        raise SystemExit("%s names no weights file" % model_json)
    w = load_file(os.path.join(base, d["weights"]))
    masks = load_file(os.path.join(base, d["masks"])) if "masks" in d else {}
    for name, m in masks.items():
        w[name] = w[name] * m.to(w[name].dtype)[:, :, None, None, None]
    net.load_state_dict({k: v.to(dtype) for k, v in w.items()}, strict=True)
    return net, masks


def rel_errors(got, ref):
    got, ref = got.double(), ref.double()
    d = got - ref
    return (d.abs().max() / ref.abs().max().clamp_min(1e-300)).item(), (d.norm() / ref.norm().clamp_min(1e-300)).item()


def cmd_check(model_json, in_path, io_path):
    io = load_file(io_path)
    x = load_file(in_path)["input"]
    worst = 0.0
    for dtype in (torch.float64, torch.float32):
        net, _ = load_model(model_json, dtype)
        with torch.no_grad():
            outs = net(x.to(dtype))
        for s, o in enumerate(outs):
            key = next((k for k in (("ds%d" % s), ("logits" if s == 0 else "")) if k in io), None)
            if key is None:
                print("  head %d: no reference in %s" % (s, io_path))
                continue
            mx, l2 = rel_errors(o, io[key])
            worst = max(worst, mx)
            print("  [%s] %s %s max|diff|/max|ref| %.3e  L2 rel %.3e" % (str(dtype)[6:], key, list(o.shape), mx, l2))
    print("worst max-rel %.3e" % worst)
    return worst


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "check":
        cmd_check(sys.argv[2], sys.argv[3], sys.argv[-1])
    else:
        print(__doc__)
        sys.exit(2)
