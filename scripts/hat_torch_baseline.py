#!/usr/bin/env python3
"""Fits the HAT Titan Xp decoder latency with a PyTorch MLP ensemble of AlphaNAS's default shape.

This is an outside check of the surrogate's accuracy on the same split (train on rows 0..1800,
test on rows 1800..2000). Each of five members is an MLP 10-64-64-1 with SiLU, trained with AdamW
(lr 1e-3, weight decay 1e-4), batch 64, up to 500 epochs, early stopping after 50 epochs without
improvement on 15% of its bootstrap resample. Target transforms:

  log       the log of the latency (the surrogate's --log-target)
  raw       the latency itself
  resid     the latency minus an ordinary least-squares fit on the same features
  logresid  the log of the ratio of the latency to the least-squares fit

Usage: scripts/hat_torch_baseline.py DATA_DIR [MODES] [SETS]
  DATA_DIR  ../shared/data/hat
  MODES     comma-separated, default log,resid,raw
  SETS      comma-separated, default iwslt14deen,wmt14ende,wmt14enfr,wmt19ende
Prints the share of test rows within ±10% and the MAPE for each set and mode.
"""
import csv
import sys

import numpy as np
import torch

FEATURES = 10  # the first ten columns are the architecture
TRAIN = 1800


def load(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    header, data = rows[0], np.array(rows[1:], dtype=float)
    return data[:, :FEATURES], data[:, header.index("latency_mean_decoder")]


def member(z, t, seed):
    rng = np.random.default_rng(seed)
    sample = rng.permutation(rng.choice(TRAIN, TRAIN))
    n_val = int(0.15 * len(sample))
    val, train = sample[:n_val], sample[n_val:]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(), torch.nn.Linear(64, 1)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    zt = torch.tensor(z, dtype=torch.float32)
    tt = torch.tensor(t, dtype=torch.float32)[:, None]
    train_t = torch.tensor(train)
    best, best_state, waited = float("inf"), None, 0
    for _ in range(500):
        order = train_t[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), 64):
            b = order[i : i + 64]
            loss = ((net(zt[b]) - tt[b]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val_loss = ((net(zt[val]) - tt[val]) ** 2).mean().item()
        if val_loss < best:
            best, best_state, waited = val_loss, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            waited += 1
            if waited > 50:
                break
    net.load_state_dict(best_state)
    with torch.no_grad():
        return net(zt[TRAIN:]).numpy()[:, 0]


def run(x, y, mode, members=5):
    z = (x - x[:TRAIN].mean(0)) / (x[:TRAIN].std(0) + 1e-9)
    design = np.c_[np.ones(len(z)), z]
    linear = design @ np.linalg.lstsq(design[:TRAIN], y[:TRAIN], rcond=None)[0]
    floor = np.maximum(linear, 1e-3)
    target = {"log": np.log(y), "raw": y, "resid": y - linear, "logresid": np.log(y) - np.log(floor)}[mode]
    mean, scale = target[:TRAIN].mean(), target[:TRAIN].std()
    out = np.mean([member(z, (target - mean) / scale, k) for k in range(members)], axis=0) * scale + mean
    predicted = {"log": np.exp(out), "raw": out, "resid": linear[TRAIN:] + out, "logresid": np.exp(out) * floor[TRAIN:]}[mode]
    error = np.abs(predicted - y[TRAIN:]) / y[TRAIN:]
    return np.mean(error <= 0.1), np.mean(error)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    modes = (sys.argv[2] if len(sys.argv) > 2 else "log,resid,raw").split(",")
    sets = (sys.argv[3] if len(sys.argv) > 3 else "iwslt14deen,wmt14ende,wmt14enfr,wmt19ende").split(",")
    torch.set_num_threads(1)
    for name in sets:
        x, y = load(f"{sys.argv[1]}/{name}_gpu_titanxp_all.csv")
        for mode in modes:
            share, mape = run(x, y, mode)
            print(f"{name} {mode}: {share:.3f} within ±10%, MAPE {100 * mape:.2f}%", flush=True)


if __name__ == "__main__":
    main()
