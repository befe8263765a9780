"""Removal sweeps and the layer-wise filter (issues: chapters 3 and 4).

- A sweep over 50 fractions of each of the three hidden layers of MLP1024 on 10,000
  images: rmtlib's fast route (one SVD per layer, prefix and projections reused, fractions
  batched) against the naive route (SVD, rebuild W_k, full forward pass per fraction).
- `denoise` on MLP1024 with a 2,000-image validation split against a naive implementation
  (full SVD and full forward pass per candidate), with the same choices.
"""
import time

import numpy as np
import torch

from _common import machine
from rmtlib import data, filtering, models


def main():
    torch.manual_seed(0)
    net = models.mlp1024()
    ds = data.load("fashion-mnist", n_train=10_000, noise=0.4)
    # brief training so that the weights are not the initialisation
    from rmtlib import train
    train.train(net, ds, epochs=2, progress=False, device="cpu")
    fr = np.linspace(0, 1, 50)
    split = {"train": ds.train}
    t = time.perf_counter()
    fast = [filtering.removal_sweep(net, [l], fr, split, splits=("train",)) for l in ("fc1", "fc2", "fc3")]
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    naive = [filtering.removal_sweep(net, [l], fr, split, splits=("train",), method="naive", progress_bar=False)
             for l in ("fc1", "fc2", "fc3")]
    t_naive = time.perf_counter() - t
    same = sum(int((a.train_acc.values == b.train_acc.values).sum()) for a, b in zip(fast, naive))
    maxdiff = max(float(np.abs(a.train_acc.values - b.train_acc.values).max()) for a, b in zip(fast, naive))
    print(f"## Removal sweep (MLP1024, 3 hidden layers x 50 fractions, 10,000 images)\n\nmachine: {machine()}\n")
    print(f"| route | seconds |\n|---|---|\n| rmtlib fast | {t_fast:.1f} |\n| naive (SVD + W_k + full forward per fraction) | {t_naive:.1f} |")
    print(f"\nratio: **{t_naive / t_fast:.1f}x**; identical accuracies in {same}/150 cells, "
          f"largest difference {maxdiff:.1e} (one image = 1e-4)\n")

    if hasattr(filtering, "denoise"):
        t = time.perf_counter()
        _, rep = filtering.denoise(net, ds.val, shift=True, test=ds.test)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        _, rep_naive = filtering.denoise(net, ds.val, shift=True, test=ds.test, method="naive")
        t_naive = time.perf_counter() - t
        same = rep[["layer", "removed", "variant"]].equals(rep_naive[["layer", "removed", "variant"]])
        print(f"## denoise (MLP1024, 2,000 validation images)\n\n| route | seconds |\n|---|---|\n"
              f"| rmtlib | {t_ours:.1f} |\n| naive (full SVD + full forward per candidate) | {t_naive:.1f} |")
        print(f"\nratio: **{t_naive / t_ours:.1f}x**; same choices: {same}\n")


if __name__ == "__main__":
    main()
