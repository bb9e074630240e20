#!/usr/bin/env python3
"""PyTorch eager timings of E2ENet on this machine's CPU, for comparison with e2enc.

This file owns the PyTorch side of tools/torch_ref/bench.sh (which runs the e2enc side in the
same session). Two modes, each in its own process so that max RSS belongs to one measurement:

  bench.py train MODEL_JSON DATA [--steps N] [--threads T]
      The released training step on DATA's `input`/`labels` (e.g. the MNI demo network, batch 2,
      48x64x48): forward with all heads, deep-supervision Dice + CE loss, backward, gradient
      clipping at 12, SGD Nesterov (lr 0.01, momentum 0.99, weight decay 3e-5), then the DSFF
      masks re-applied to weights and momentum (dense convolutions, as the released code runs).
      Prints the median step time over N steps after one warm-up step, in patches/s.
  bench.py infer MODEL_JSON [--runs N] [--threads T] [--patch D,H,W]
      Dense eager forward of the logits (torch.no_grad, batch 1, random input), median of N runs
      after one warm-up, and the process's peak RSS (resource.getrusage).
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_train_step import ds_loss, head_factors  # noqa: E402
from e2enet_torch import load_model  # noqa: E402


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def cmd_train(a):
    net, masks = load_model(a.model)
    cfg = net.cfg
    d = load_file(a.data)
    x, labels = d["input"], d["labels"]
    factors = head_factors({"pool_kernels": [list(p) for p in cfg.pool_kernels],
                            "deep_supervision_heads": cfg.heads})
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, weight_decay=3e-5, nesterov=True)
    params = dict(net.named_parameters())
    net.train()
    times = []
    for i in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = ds_loss(net(x), labels, factors)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()
        with torch.no_grad():
            for n, m in masks.items():
                k = m[:, :, None, None, None]
                params[n].mul_(k)
                buf = opt.state[params[n]].get("momentum_buffer")
                if buf is not None:
                    buf.mul_(k)
        dt = time.perf_counter() - t0
        print("torch step %d: %.3f s, loss %.6f" % (i, dt, loss.item()), flush=True)
        if i > 0:
            times.append(dt)
    med = statistics.median(times)
    print("torch train step: batch %d, patch %s, threads %d: median %.3f s (min %.3f) over %d steps = "
          "%.3f patches/s (best %.3f), peak RSS %.2f GiB"
          % (x.shape[0], list(x.shape[2:]), torch.get_num_threads(), med, min(times), a.steps,
             x.shape[0] / med, x.shape[0] / min(times), peak_rss_gib()))


def cmd_infer(a):
    net, _ = load_model(a.model)
    net.eval()
    patch = [int(v) for v in a.patch.split(",")] if a.patch else net.cfg.patch_size
    x = torch.randn(1, net.cfg.in_channels, *patch, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for i in range(a.runs + 1):
            t0 = time.perf_counter()
            (logits,) = net(x, all_heads=False)
            dt = time.perf_counter() - t0
            print("torch forward %d: %.2f s" % (i, dt), flush=True)
            if i > 0:
                times.append(dt)
    print("torch inference: patch %s, threads %d: median %.2f s (min %.2f) over %d runs, logits %s, "
          "peak RSS %.2f GiB" % (patch, torch.get_num_threads(), statistics.median(times), min(times), a.runs,
                                 list(logits.shape), peak_rss_gib()))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("model")
    t.add_argument("data")
    t.add_argument("--steps", type=int, default=5)
    i = sub.add_parser("infer")
    i.add_argument("model")
    i.add_argument("--runs", type=int, default=3)
    i.add_argument("--patch")
    for p in (t, i):
        p.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("torch %s, %d threads" % (torch.__version__, torch.get_num_threads()))
    {"train": cmd_train, "infer": cmd_infer}[a.cmd](a)


if __name__ == "__main__":
    main()
