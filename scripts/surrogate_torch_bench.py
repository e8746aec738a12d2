#!/usr/bin/env python3
"""Time a PyTorch CPU version of the surrogate ensemble, for comparison with
`cargo bench --bench surrogate`.

The ensemble has the same shape as the Rust bench: K members of
features -> hidden... -> targets with SiLU, plus the same standardisation and
mean/std over members. Members are stacked and run with batched matmuls
(torch.baddbmm), the fastest plain-PyTorch form, under torch.inference_mode.

Usage: python scripts/surrogate_torch_bench.py [--threads 2] [--members 5]
       [--features 24] [--hidden 64,64] [--targets 2]
Prints one line per batch size: batch, median seconds per call, rows per second.
"""

import argparse
import statistics
import time

import torch


def build(members, features, hidden, targets):
    widths = [features] + hidden + [targets]
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        weight = torch.randn(members, n_in, n_out) * (2.0 / (n_in + n_out)) ** 0.5
        bias = torch.randn(members, 1, n_out) * 0.01
        layers.append((weight, bias))
    scaling = {
        "feature_mean": torch.randn(features),
        "feature_inv_std": torch.rand(features) + 0.5,
        "target_mean": torch.randn(targets),
        "target_std": torch.rand(targets) + 0.5,
    }
    return layers, scaling


def score(x, layers, scaling):
    members = layers[0][0].shape[0]
    h = ((x - scaling["feature_mean"]) * scaling["feature_inv_std"]).unsqueeze(0).expand(members, -1, -1)
    for i, (weight, bias) in enumerate(layers):
        h = torch.baddbmm(bias, h, weight)
        if i + 1 < len(layers):
            h = torch.nn.functional.silu(h)
    values = h * scaling["target_std"] + scaling["target_mean"]
    return values.mean(dim=0), values.std(dim=0, correction=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--features", type=int, default=24)
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timing budget per batch size")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hidden = [int(w) for w in args.hidden.split(",")]
    layers, scaling = build(args.members, args.features, hidden, args.targets)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.members} members, {args.features}->{hidden}->{args.targets}, SiLU")
    print("batch,median_s,rows_per_s")
    with torch.inference_mode():
        for batch in [1, 16, 64, 256, 1024, 4096, 16384, 65536]:
            x = torch.rand(batch, args.features) * 20.0
            for _ in range(5):
                score(x, layers, scaling)
            samples = []
            start = time.perf_counter()
            while time.perf_counter() - start < args.min_seconds or len(samples) < 10:
                t0 = time.perf_counter()
                score(x, layers, scaling)
                samples.append(time.perf_counter() - t0)
            median = statistics.median(samples)
            print(f"{batch},{median:.3e},{batch / median:.4g}")


if __name__ == "__main__":
    main()
