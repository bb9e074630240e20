#!/usr/bin/env python3
"""ONNX Runtime baseline for `e2enc bench --against onnxruntime`.

    python3 tools/ort_bench.py MODEL_JSON [--patch D,H,W] [--runs N] [--warmup K]
                               [--threads T] [--check] [--check-patch D,H,W] [--onnx-out FILE]

Reads an e2enc model.json (docs/model-json.md) and the safetensors weights (and masks) it names,
builds the DENSE E2ENet inference graph (only the `logits` head) as an ONNX model (opset 17) with
the onnx helper API, and times onnxruntime's CPUExecutionProvider on a deterministic random input
[1, in_channels, D, H, W]. Pruned DSFF kernels are just zeros in dense initializers: ORT gets no
sparsity benefit, which is the point of the comparison.

Graph (shared/e2enet.md sections 1, 2, 4; tensor names as in tools/numpy_ref/e2enet_ref.py):
  conv unit   = depth shift (only for 1x3x3 kernels) -> Conv (pads k//2, bias) ->
                InstanceNormalization(eps) -> LeakyRelu(alpha)
  depth shift = Split of the channels into blocks of ceil(C/G) (torch.chunk), block g shifted along
                depth by s = g - G//2 (out[d] = in[d-s], zero fill) with Pad + Slice, Concat back
  backbone    = first unit of levels 1..L-1 strided by the pool kernel; no max-pool
  fusion node = Concat[forward, ConvTranspose(up, kernel=stride=pool, no bias), MaxPool(down)] ->
                conv unit(s)
  head        = 1x1x1 Conv without bias on x(0, L-1) -> output `logits`

Prints ONE JSON line on stdout:
  {"engine": "onnxruntime", "version": ..., "median_s": ..., "runs": [...], "threads": ...,
   "dense_macs": ..., "peak_rss_mb": ..., ...}
With --check also "check_rel_err" (max|ort - ref| / max|ref| on the logits), "check_ok" and details
(see --help). Progress messages go to stderr. Exit status 1 if the check fails.
"""

import argparse
import json
import math
import os
import platform
import resource
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "numpy_ref"))
import e2enet_ref as ref  # noqa: E402  (our independent numpy implementation: config, names, oracle)

OPSET = 17


def log(msg):
    print("[ort_bench] " + msg, file=sys.stderr, flush=True)


def parse_dhw(s):
    v = [int(t) for t in s.replace("x", ",").split(",")]
    if len(v) != 3 or min(v) <= 0:
        raise argparse.ArgumentTypeError("expected D,H,W")
    return v


# --------------------------------------------------------------------------------------------
# model loading
# --------------------------------------------------------------------------------------------

def load_model(model_json):
    with open(model_json) as f:
        mj = json.load(f)
    if mj.get("format") != "e2enc-model":
        raise SystemExit("%s: not an e2enc model.json (format=%r)" % (model_json, mj.get("format")))
    cfg = ref.Config({"base_width": 48, "max_width": 320, **mj})
    base = os.path.dirname(os.path.abspath(model_json))
    if not mj.get("weights"):
        raise SystemExit("%s: names no weights file" % model_json)
    W = ref.read_safetensors(os.path.join(base, mj["weights"]))
    probs = ref.check_params(cfg, W)
    if probs:
        raise SystemExit("weights do not match the config:\n  " + "\n  ".join(probs[:20]))
    W = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in W.items()}
    if mj.get("masks"):
        M = ref.read_safetensors(os.path.join(base, mj["masks"]))
        for name, m in M.items():
            if name not in W:
                raise SystemExit("mask %s: no such weight" % name)
            w = W[name]
            if list(m.shape) != list(w.shape[:2]):
                raise SystemExit("mask %s: shape %s, weight %s" % (name, list(m.shape), list(w.shape)))
            keep = (np.asarray(m) != 0).astype(np.float32)
            W[name] = w * keep.reshape(keep.shape + (1,) * (w.ndim - 2))
    return mj, cfg, W


def check_patch_ok(cfg, patch):
    for ax in range(3):
        f = 1
        for p in cfg.pool_kernels:
            f *= p[ax]
        if patch[ax] % f:
            raise SystemExit("patch %s: axis %d must be a multiple of %d" % (patch, ax, f))


# --------------------------------------------------------------------------------------------
# ONNX graph
# --------------------------------------------------------------------------------------------

class GraphBuilder:
    def __init__(self, cfg, W, patch, norm="fused"):
        from onnx import helper, numpy_helper, TensorProto  # noqa
        self.h = helper
        self.nh = numpy_helper
        self.TP = TensorProto
        self.cfg = cfg
        self.W = W
        self.patch = list(patch)
        self.norm = norm
        self.nodes = []
        self.inits = {}
        self.n = 0
        self.macs = 0
        self.dead_channels = 0  # conv output channels with all-zero kernels (see unit())

    def name(self, base):
        self.n += 1
        return "%s_%d" % (base, self.n)

    def init(self, name, arr):
        if name not in self.inits:
            self.inits[name] = self.nh.from_array(np.ascontiguousarray(arr), name)
        return name

    def i64(self, vals):
        vals = [int(v) for v in vals]
        return self.init("const_i64_" + "_".join(str(v).replace("-", "m") for v in vals),
                         np.array(vals, dtype=np.int64))

    def op(self, op_type, inputs, base=None, **attrs):
        out = self.name(base or op_type.lower())
        self.nodes.append(self.h.make_node(op_type, inputs, [out], name=out + "_op", **attrs))
        return out

    # --- restricted depth shift (torch_shift of the released code) ---------------------------
    def shift(self, x, C):
        G = self.cfg.shift_groups
        if G <= 1:
            return x
        pad = G // 2
        size = -(-C // G)  # torch.chunk piece size
        sizes = [min(size, C - c0) for c0 in range(0, C, size)]
        shifts = list(range(-pad, pad + 1))[:len(sizes)]  # zip: extra shifts unused
        if len(sizes) == 1:
            pieces = [x]
        else:
            outs = [self.name("shift_split") for _ in sizes]
            self.nodes.append(self.h.make_node("Split", [x, self.i64(sizes)], outs, axis=1,
                                               name=outs[0] + "_op"))
            pieces = outs
        res = []
        for p, s in zip(pieces, shifts):
            if s == 0:
                res.append(p)
                continue
            # out[d] = in[d - s] with zero fill: pad |s| zeros on one depth end, slice D back out.
            # pads layout: [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over N, C, D, H, W
            if s > 0:
                pads = [0, 0, s, 0, 0, 0, 0, 0, 0, 0]
                start, end = 0, -s  # xp[0 : D]
            else:
                pads = [0, 0, 0, 0, 0, 0, 0, -s, 0, 0]
                start, end = -s, 2 ** 62  # xp[|s| : D + |s|]
            padded = self.op("Pad", [p, self.i64(pads)], "shift_pad", mode="constant")
            res.append(self.op("Slice", [padded, self.i64([start]), self.i64([end]), self.i64([2])],
                               "shift_slice"))
        if len(res) == 1:
            return res[0]
        return self.op("Concat", res, "shift_cat", axis=1)

    def shifted_norm(self, y, prefix, gamma, beta):
        """Instance norm from elementary ops with the shifted-data mean: m = y[first voxel] +
        mean(y - y[first voxel]). Same function as InstanceNormalization, but the mean of a
        (nearly) constant channel is exact (ORT's fused op and ReduceMean accumulate the raw values
        in f32, off by ~1e-4 relative, which 1/sqrt(var + eps) amplifies when var << eps).
        Check-only variant (--norm shifted); not what is timed by default."""
        C = gamma.shape[0]
        a = [2, 3, 4]
        first = self.op("Slice", [y, self.i64([0, 0, 0]), self.i64([1, 1, 1]), self.i64(a)], "norm_first")
        d = self.op("Sub", [y, first], "norm_d")
        c = self.op("Sub", [d, self.op("ReduceMean", [d], "norm_md", axes=a, keepdims=1)], "norm_c")
        v = self.op("ReduceMean", [self.op("Mul", [c, c], "norm_c2")], "norm_var", axes=a, keepdims=1)
        eps = self.init("const_eps", np.array(self.cfg.norm_eps, dtype=np.float32))
        sd = self.op("Sqrt", [self.op("Add", [v, eps], "norm_ve")], "norm_sd")
        g = self.init(prefix + ".instnorm.weight", gamma.reshape(1, C, 1, 1, 1))
        b = self.init(prefix + ".instnorm.bias", beta.reshape(1, C, 1, 1, 1))
        return self.op("Add", [self.op("Mul", [self.op("Div", [c, sd], "norm_z"), g], "norm_g"), b], "norm_out")

    # --- conv unit ------------------------------------------------------------------------------
    def unit(self, x, prefix, stride, cin, cout, dims):
        cfg = self.cfg
        w = self.W[prefix + ".conv.weight"]
        k = list(w.shape[2:])
        if tuple(k) == (1, 3, 3):  # released code: shift only before (1,3,3) convs
            x = self.shift(x, cin)
        pads = [kk // 2 for kk in k]
        y = self.op("Conv", [x, self.init(prefix + ".conv.weight", w), self.init(prefix + ".conv.bias",
                                                                                   self.W[prefix + ".conv.bias"])],
                    "conv", kernel_shape=k, pads=pads + pads, strides=list(stride))
        out_dims = [(dims[a] + 2 * pads[a] - k[a]) // stride[a] + 1 for a in range(3)]
        self.macs += cout * cin * int(np.prod(k)) * int(np.prod(out_dims))
        gamma = self.W[prefix + ".instnorm.weight"]
        dead = ~np.any(w.reshape(w.shape[0], -1) != 0, axis=1)
        if dead.any():
            # An output channel whose conv kernels are all zero (DSFF-pruned) is the constant
            # `bias`, so instance norm maps it to exactly `beta` whatever gamma is. ORT's
            # InstanceNormalization computes the mean with plain f32 accumulation, so for such a
            # channel (x - mean) is rounding noise that 1/sqrt(var + eps) amplifies ~300x. Setting
            # gamma = 0 there gives exactly beta, like the exact computation: same network, same
            # cost, no ill-conditioned op.
            gamma = np.where(dead, np.float32(0), gamma).astype(np.float32)
            self.dead_channels += int(dead.sum())
        beta = self.W[prefix + ".instnorm.bias"]
        if self.norm == "fused":
            y = self.op("InstanceNormalization", [y, self.init(prefix + ".instnorm.weight", gamma),
                                                  self.init(prefix + ".instnorm.bias", beta)],
                        "inorm", epsilon=float(cfg.norm_eps))
        else:
            y = self.shifted_norm(y, prefix, gamma, beta)
        y = self.op("LeakyRelu", [y], "lrelu", alpha=float(cfg.negative_slope))
        return y, out_dims

    def build(self):
        cfg = self.cfg
        L = cfg.L
        X, dims = {}, {}
        h = "input"
        d = list(self.patch)
        for i in range(L):
            for p, stride, cin, cout in cfg.backbone_units(i):
                h, d = self.unit(h, p, stride, cin, cout, d)
            X[(i, 0)], dims[(i, 0)] = h, d
        for j in range(1, L):
            for i in range(0, L - j):
                pk = list(cfg.pool_kernels[i])
                upn = cfg.up_name(i, j)
                up = self.op("ConvTranspose", [X[(i + 1, j - 1)], self.init(upn, self.W[upn])], "up",
                             kernel_shape=pk, strides=pk)
                self.macs += cfg.width(i + 1) * cfg.width(i) * int(np.prod(pk)) * int(np.prod(dims[(i + 1, j - 1)]))
                parts = [X[(i, j - 1)], up]
                cin = 2 * cfg.width(i)
                if i >= 1:
                    pk0 = list(cfg.pool_kernels[i - 1])
                    parts.append(self.op("MaxPool", [X[(i - 1, j - 1)]], "down", kernel_shape=pk0, strides=pk0))
                    cin += cfg.width(i - 1)
                h = self.op("Concat", parts, "fuse_cat", axis=1)
                d = dims[(i, j - 1)]
                for p, stride, ucin, cout in cfg.fusion_units(i, j):
                    h, d = self.unit(h, p, stride, ucin, cout, d)
                X[(i, j)], dims[(i, j)] = h, d
        hw = self.W["seg_outputs.0.weight"]
        d = dims[(0, L - 1)]
        self.nodes.append(self.h.make_node("Conv", [X[(0, L - 1)], self.init("seg_outputs.0.weight", hw)], ["logits"],
                                           kernel_shape=[1, 1, 1], name="head_op"))
        self.macs += cfg.num_classes * cfg.width(0) * int(np.prod(d))
        TP = self.TP
        graph = self.h.make_graph(
            self.nodes, "e2enet",
            [self.h.make_tensor_value_info("input", TP.FLOAT, [1, cfg.in_channels] + self.patch)],
            [self.h.make_tensor_value_info("logits", TP.FLOAT, [1, cfg.num_classes] + list(d))],
            initializer=list(self.inits.values()))
        model = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", OPSET)],
                                  producer_name="e2enc-tools-ort_bench")
        model.ir_version = 8  # opset 17 era; accepted by every ORT that runs opset 17
        return model


def build_onnx(cfg, W, patch, norm="fused"):
    b = GraphBuilder(cfg, W, patch, norm)
    model = b.build()
    return model, b.macs, b.dead_channels


def make_session(model, threads):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(model.SerializeToString(), sess_options=so,
                                providers=["CPUExecutionProvider"])


def make_input(cfg, patch, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal([1, cfg.in_channels] + list(patch)).astype(np.float32)


# --------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------

def run_check(mj, cfg, W, model_json, args):
    """Returns a dict of check results. Reference 1: the io.safetensors next to model.json (input +
    stored ds0), if present. Reference 2: tools/numpy_ref in float64 on the same input."""
    import onnx
    base = os.path.dirname(os.path.abspath(model_json))
    io_path = os.path.join(base, "io.safetensors")
    res = {}
    stored = None
    if os.path.exists(io_path) and not args.check_patch:
        io = ref.read_safetensors(io_path)
        if "input" in io and "ds0" in io:
            x = np.asarray(io["input"], np.float32)
            if x.shape[0] != 1:
                x = x[:1]
                stored = np.asarray(io["ds0"][:1], np.float64)
            else:
                stored = np.asarray(io["ds0"], np.float64)
            res["check_input"] = "io.safetensors"
    if stored is None:
        if args.check_patch:
            cpatch = args.check_patch
        else:
            # smallest valid patch, last axis doubled so the bottleneck is not 1 voxel
            cpatch = [int(np.prod([p[a] for p in cfg.pool_kernels])) for a in range(3)]
            cpatch[2] *= 2
        check_patch_ok(cfg, cpatch)
        x = make_input(cfg, cpatch, seed=1)
        res["check_input"] = "random"
    cpatch = list(x.shape[2:])
    res["check_patch"] = cpatch
    model, _, _ = build_onnx(cfg, W, cpatch, args.norm)
    onnx.checker.check_model(model)
    sess = make_session(model, args.threads)
    got = sess.run(["logits"], {"input": x})[0].astype(np.float64)
    errs = []
    if stored is not None:
        if got.shape != stored.shape:
            raise SystemExit("check: ORT logits %s vs stored ds0 %s" % (got.shape, stored.shape))
        e, _ = ref.rel_errors(got, stored)
        res["check_rel_err_stored"] = float(e)
        errs.append(e)
    if not args.no_numpy_ref:
        log("check: numpy reference (float64) at %s ..." % cpatch)
        t0 = time.perf_counter()
        rout = ref.Net(cfg, W, np.float64).forward(x)["ds0"]
        log("check: numpy reference took %.1f s" % (time.perf_counter() - t0))
        if got.shape != rout.shape:
            raise SystemExit("check: ORT logits %s vs numpy ref %s" % (got.shape, rout.shape))
        e, _ = ref.rel_errors(got, rout)
        res["check_rel_err_numpy_ref"] = float(e)
        errs.append(e)
    if not errs:
        raise SystemExit("check: no reference (no io.safetensors and --no-numpy-ref)")
    res["check_rel_err"] = float(max(errs))
    res["check_tol"] = args.tol
    res["check_ok"] = bool(res["check_rel_err"] < args.tol)
    return res


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_json")
    ap.add_argument("--patch", type=parse_dhw, help="D,H,W of the timed input (default: model.json patch_size)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs (default 5)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed warm-up runs (default 2: at 128^3 the first 2-3 runs are 2x slower while "
                         "ORT's memory arena grows)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) or 1,
                    help="ORT intra_op_num_threads (default: all cores = %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="compare ORT's logits with io.safetensors next to model.json (input, ds0) if present, "
                         "and with tools/numpy_ref (float64) on the same input; relative error "
                         "max|diff|/max|ref| must be < --tol")
    ap.add_argument("--check-patch", type=parse_dhw,
                    help="check on a random input of this patch instead of io.safetensors "
                         "(default without io.safetensors: smallest valid patch, last axis doubled)")
    ap.add_argument("--no-numpy-ref", action="store_true", help="--check only against io.safetensors")
    ap.add_argument("--tol", type=float, default=1e-3, help="--check tolerance (default 1e-3)")
    ap.add_argument("--onnx-out", help="also save the timed ONNX model to this file")
    ap.add_argument("--norm", choices=["fused", "shifted"], default="fused",
                    help="instance norm as ONNX InstanceNormalization (fused, default: what is timed) or as "
                         "elementary ops with an exact mean for near-constant channels (shifted: for checking "
                         "ill-conditioned cases such as tests/data/golden)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the timed input (default 0)")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--runs >= 1, --warmup >= 0, --threads >= 1")

    import onnx
    import onnxruntime as ort

    mj, cfg, W = load_model(args.model_json)
    patch = args.patch or cfg.patch_size
    if not patch:
        ap.error("model.json has no patch_size: give --patch")
    check_patch_ok(cfg, patch)

    t0 = time.perf_counter()
    model, macs, dead = build_onnx(cfg, W, patch, args.norm)
    onnx.checker.check_model(model)
    if args.onnx_out:
        onnx.save(model, args.onnx_out)
    sess = make_session(model, args.threads)
    del model
    log("graph built + session created in %.1f s (patch %s, %.1f GMAC dense, %d threads)"
        % (time.perf_counter() - t0, patch, macs / 1e9, args.threads))

    x = make_input(cfg, patch, args.seed)
    for k in range(args.warmup):
        t = time.perf_counter()
        sess.run(["logits"], {"input": x})
        log("warm-up %d: %.3f s" % (k + 1, time.perf_counter() - t))
    runs = []
    for k in range(args.runs):
        t = time.perf_counter()
        sess.run(["logits"], {"input": x})
        runs.append(time.perf_counter() - t)
        log("run %d: %.3f s" % (k + 1, runs[-1]))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    del sess

    out = {
        "engine": "onnxruntime",
        "version": ort.__version__,
        "median_s": float(np.median(runs)),
        "runs": [round(r, 6) for r in runs],
        "threads": args.threads,
        "dense_macs": int(macs),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "warmup": args.warmup,
        "patch": list(patch),
        "provider": "CPUExecutionProvider",
        "dead_channels": dead,
        "norm": args.norm,
        "opset": OPSET,
        "model": mj.get("name", ""),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
    }
    ok = True
    if args.check:
        res = run_check(mj, cfg, W, args.model_json, args)
        out.update(res)
        ok = res["check_ok"]
    print(json.dumps(out), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
