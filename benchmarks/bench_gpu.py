"""Paper-scale speed on a GPU: epochs of MLP1024 and full-size miniAlexNet on 50,000 images.

CIFAR-10 itself needs a download; the timing uses a stand-in of the same shape
(50,000 x 3 x 32 x 32, 10,000 test images), which costs exactly what CIFAR-10 costs.
Prints seconds per epoch and the implied time of the paper profile's training.
"""
import time

import torch

from _common import machine
from rmtlib import models, train
from rmtlib.data import Dataset, Split


def standin(n=50_000, n_test=10_000):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_test, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    tr, te = Split(x[:n], y[:n]), Split(x[n:], y[n:])
    return Dataset("cifar10-standin", tr, te, te, tuple(range(10)), torch.zeros(n, dtype=torch.bool), y[:n], {})


def main():
    if not torch.cuda.is_available():
        print("no CUDA GPU: skipped")
        return
    ds = standin().to("cuda")
    print(f"## Paper scale on a GPU\n\nmachine: {machine()}\n")
    print("| model | seconds/epoch (50,000 images, batch 32, incl. train+test evaluation) |\n|---|---|")
    per_epoch = {}
    for name in ("mlp1024", "mini_alexnet"):
        torch.manual_seed(0)
        net = models.build(name, (3, 32, 32), 10)
        train.train(net, ds, epochs=1, device="cuda", progress=False)  # warm-up
        torch.cuda.synchronize()
        t = time.perf_counter()
        train.train(net, ds, epochs=2, device="cuda", progress=False)
        torch.cuda.synchronize()
        per_epoch[name] = (time.perf_counter() - t) / 2
        print(f"| {name} | {per_epoch[name]:.2f} |")
    runs = 10 * 10  # noise levels x seeds
    total = sum(runs * (100 + 500) * s for s in per_epoch.values())
    print(f"\nPaper profile training (2 models x 10 noise levels x 10 seeds x (100 + 500) epochs): "
          f"about {total / 3600:.0f} GPU hours on this device.\n")


if __name__ == "__main__":
    main()
