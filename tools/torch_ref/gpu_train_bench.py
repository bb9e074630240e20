#!/usr/bin/env python3
"""PyTorch + cuDNN training-step timings of an E2ENet model.json on a GPU, for the same-script
comparison of scripts/gpu-check.sh with e2enc's GPU training step (train_step_dump bench
--device cuda).

    gpu_train_bench.py MODEL_JSON [--batch B] [--patch D,H,W] [--steps N] [--warmup W]

The released recipe's step (as bench.py's `train`, on the GPU): forward with all heads,
deep-supervision Dice + CE, backward, clipping at 12, SGD Nesterov, DSFF masks re-applied to the
weights and the momentum (dense convolutions, as the released code runs them), on random input
and blocky random labels. Two precisions, each after its own warm-up: fp32 (TF32 off) and bf16
autocast (f32 master weights). Each step is timed with CUDA events; prints one JSON line per
precision: {"precision", "median_ms", "min_ms", "steps", "batch", "patch", "peak_mem_gib",
"torch", "cudnn", "device"}. Needs only PyTorch with CUDA.
"""

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_train_step import ds_loss, head_factors, make_labels  # noqa: E402
from e2enet_torch import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to PyTorch")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    for precision in ("fp32", "bf16"):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        net, masks = load_model(a.model)
        net = net.to(dev).train()
        cfg = net.cfg
        patch = [int(v) for v in a.patch.split(",")] if a.patch else list(cfg.patch_size)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(a.batch, cfg.in_channels, *patch, generator=g).to(dev)
        labels = make_labels(a.batch, patch, cfg.num_classes, g).to(dev)
        factors = head_factors({"pool_kernels": [list(p) for p in cfg.pool_kernels],
                                "deep_supervision_heads": cfg.heads})
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, weight_decay=3e-5, nesterov=True)
        params = dict(net.named_parameters())
        kmasks = {n: m.to(dev)[:, :, None, None, None] for n, m in masks.items()}
        torch.cuda.reset_peak_memory_stats()
        times = []
        for i in range(a.warmup + a.steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                outs = net(x)
            loss, _ = ds_loss([o.float() for o in outs], labels, factors)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
            opt.step()
            with torch.no_grad():
                for n, k in kmasks.items():
                    params[n].mul_(k)
                    buf = opt.state[params[n]].get("momentum_buffer")
                    if buf is not None:
                        buf.mul_(k)
            end.record()
            torch.cuda.synchronize()
            if i >= a.warmup:
                times.append(start.elapsed_time(end))
        print(json.dumps({
            "precision": precision,
            "median_ms": statistics.median(times),
            "min_ms": min(times),
            "steps": a.steps,
            "batch": a.batch,
            "patch": patch,
            "loss": loss.item(),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
            "device": torch.cuda.get_device_name(0),
        }), flush=True)
        del net, opt, params, kmasks, x, labels
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
