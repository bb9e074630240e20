#!/usr/bin/env python3
"""PyTorch + cuDNN inference timings of an E2ENet model.json on a GPU, for the same-script
comparison of scripts/gpu-check.sh with `e2enc bench --device cuda`.

    gpu_bench.py MODEL_JSON [--runs N] [--warmup W] [--patch D,H,W]

Runs the dense eager forward of the logits (batch 1, torch.no_grad, cudnn.benchmark on) in three
precisions, each after its own warm-up: fp32 (TF32 off for convolutions and matmuls), tf32 (TF32
allowed) and bf16 (autocast). Each run is timed with CUDA events; prints one JSON line per
precision: {"precision", "median_ms", "min_ms", "runs", "patch", "torch", "cudnn", "device"}.
Needs only PyTorch with CUDA (the safetensors package is optional, see e2enet_torch.load_file).
"""

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2enet_torch import load_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--patch")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible to PyTorch")
    dev = torch.device("cuda")
    net, _ = load_model(a.model)
    net = net.to(dev).eval()
    patch = [int(v) for v in a.patch.split(",")] if a.patch else net.cfg.patch_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, net.cfg.in_channels, *patch, generator=g).to(dev)
    torch.backends.cudnn.benchmark = True
    for precision in ("fp32", "tf32", "bf16"):
        tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        times = []
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for i in range(a.warmup + a.runs):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                (logits,) = net(x, all_heads=False)
                end.record()
                torch.cuda.synchronize()
                if i >= a.warmup:
                    times.append(start.elapsed_time(end))
        print(json.dumps({
            "precision": precision,
            "median_ms": statistics.median(times),
            "min_ms": min(times),
            "runs": a.runs,
            "patch": patch,
            "logits": list(logits.shape),
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version(),
            "device": torch.cuda.get_device_name(0),
        }), flush=True)


if __name__ == "__main__":
    main()
