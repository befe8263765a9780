"""Removal sweeps and the layer-wise filter (issues: chapters 3 and 4).

- A sweep over 50 fractions of each of the three hidden layers of MLP1024 on 10,000
  images: rmtlib's fast route (one SVD per layer, prefix and projections reused, fractions
  batched) against the naive route (SVD, rebuild W_k, full forward pass per fraction).
- `denoise` on MLP1024 with a 2,000-image validation split against a naive implementation
  (full SVD and full forward pass per candidate), with the same choices.
- Ensembles (issue 11, Deliver 4): `denoise` and `removal_sweep` given K = 1, 4, 10 MLP1024
  members in one call (one batched forward per candidate) against the K members one at a
  time, same process; `python bench_filtering.py --ensemble` runs only this part.
"""
import sys
import time

import numpy as np
import torch

from _common import machine
from rmtlib import data, filtering, models


def ensembles(Ks=(1, 4, 10), n_fractions=11, tasks=("denoise", "sweep"), batched_first=False):
    """Seconds per member: K members in one call (batched) against K single-model calls."""
    ds = data.load("fashion-mnist", n_train=1000, noise=0.4)
    nets = []
    for s in range(max(Ks)):
        torch.manual_seed(s)  # members at their Glorot initialisation: the cost does not depend on training
        nets.append(models.mlp1024().eval())
    fr = np.linspace(0, 1, n_fractions)
    print(f"## Ensembles in one batch (MLP1024, {ds.val.x.shape[0]:,} validation images, {n_fractions} fractions)"
          f"\n\nmachine: {machine()}\n")
    print("| task | K | one at a time (s per member) | batched (s per member) | speed-up | max accuracy difference |")
    print("|---|---|---|---|---|---|")
    print(f"order: {'batched first' if batched_first else 'one at a time first'}\n")
    for task in tasks:
        for K in Ks:
            members = nets[:K]
            if task == "denoise":
                run_one = lambda m: filtering.denoise(m, ds.val, shift=True, fractions=fr, progress_bar=False)
                acc = lambda out: [rep.attrs["val_after"] for _, rep in out]
            else:
                run_one = lambda m: filtering.removal_sweep(m, ["fc1", "fc2", "fc3"], fr, ds, splits=("val",))
                acc = lambda out: [v for df in out for v in df.val_acc.values]

            def sequential():
                t = time.perf_counter()
                return [run_one(m) for m in members], time.perf_counter() - t

            def batched():
                t = time.perf_counter()
                return run_one(members), time.perf_counter() - t

            if batched_first:  # on a shared machine the load drifts: run both orders and compare
                together, t_bat = batched()
                alone, t_seq = sequential()
            else:
                alone, t_seq = sequential()
                together, t_bat = batched()
            diff = max(abs(a - b) for a, b in zip(acc(alone), acc(together)))
            label = "`denoise` (shift + remove)" if task == "denoise" else "`removal_sweep`, 3 layers"
            print(f"| {label} | {K} | {t_seq / K:.2f} | {t_bat / K:.2f} | **{t_seq / t_bat:.2f}x** | {diff:.1e} |",
                  flush=True)
    print()


def main():
    if "--ensemble" in sys.argv:
        ensembles(tasks=("denoise",) if "--denoise-only" in sys.argv else ("denoise", "sweep"),
                  batched_first="--batched-first" in sys.argv)
        return
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
    ensembles()


if __name__ == "__main__":
    main()
