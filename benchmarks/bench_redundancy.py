"""Pruning curves (issue: chapter 7): batched masks against a pruned copy per count.

A pruning curve of the first dense layer over *all* unit counts, one criterion
(frame potential), on Fashion-MNIST test images:
- rmtlib's fast route: the network up to the next layer runs once per batch of images,
  and the nested keep-masks of all counts go through the rest of the network as one batch;
- the naive route: for every count, a pruned copy (weights sliced) and a full forward pass.
Networks at their initialisation (the timing does not depend on the weights' values).
"""
import time

import numpy as np
import torch

from _common import machine
from rmtlib import data, models, redundancy


def one(net, layer, split, label):
    t = time.perf_counter()
    fast = redundancy.pruning_curve(net, layer, "frame_potential", split, counts=None)
    t_fast = time.perf_counter() - t
    m = len(fast) - 1
    t = time.perf_counter()
    naive = redundancy.pruning_curve(net, layer, "frame_potential", split, counts=range(m), method="naive")
    t_naive = time.perf_counter() - t
    same = int((fast.accuracy.values[:m] == naive.accuracy.values).sum())
    diff = float(np.abs(fast.accuracy.values[:m] - naive.accuracy.values).max())
    print(f"| {label} | {m} | {len(split):,} | {t_fast:.1f} | {t_naive:.1f} | **{t_naive / t_fast:.1f}x** | "
          f"{same}/{m} (max diff {diff:.1e}) |")


def main():
    torch.manual_seed(0)
    ds = data.load("fashion-mnist", n_train=1000)
    print(f"## Pruning curves (chapter 7)\n\nmachine: {machine()}\n")
    print("| network, layer | counts | images | fast (s) | naive (s) | ratio | identical accuracies |")
    print("|---|---|---|---|---|---|---|")
    lenet = models.build("lenet_300_100", ds.input_shape, 10).eval()
    one(lenet, "fc1", data.Split(ds.test.x[:2000], ds.test.y[:2000]), "LeNet-300-100, fc1")
    conv2 = models.build("conv2", ds.input_shape, 10, width=0.25).eval()
    one(conv2, "fc1", data.Split(ds.test.x[:500], ds.test.y[:500]), "Conv-2 (width 0.25), fc1")


if __name__ == "__main__":
    main()
