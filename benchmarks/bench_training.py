"""One epoch of MLP1024 on 10,000 Fashion-MNIST images, batch 32 (issue: foundation).

Ours: the whole split as one tensor, a seeded permutation per epoch (rmtlib.train).
Naive: torchvision's FashionMNIST with a per-sample transform (ToTensor + per-image
standardization) through a DataLoader, the textbook loop.
"""
import sys

import torch
import torch.nn.functional as F

from _common import best_of, machine
from rmtlib import data, models, train


def naive_epoch(root, n=10_000, batch=32, seed=0):
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    def standardize(x):
        return (x - x.mean()) / x.std(unbiased=False).clamp_min(1 / 28)

    ds = datasets.FashionMNIST(str(root), train=True, download=False,
                               transform=transforms.Compose([transforms.ToTensor(), standardize]))
    sub = Subset(ds, range(n))
    torch.manual_seed(seed)
    model = models.mlp1024()
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.95)
    loader = DataLoader(sub, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(seed))

    def run():
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def main():
    ds = data.load("fashion-mnist", n_train=10_000)
    torch.manual_seed(0)
    model = models.mlp1024()
    ours, _ = best_of(lambda: train.train(model, ds, epochs=1, progress=False, track_train=False,
                                          device="cpu"), repeat=2)
    # the test evaluation inside train() is part of "ours"; the naive loop does not evaluate
    root = data._fashion_mnist_raw(None)
    naive, _ = best_of(naive_epoch(root), repeat=2)
    print(f"## Training epoch (MLP1024, 10,000 Fashion-MNIST images, batch 32)\n")
    print(f"machine: {machine()}\n")
    print(f"| loop | seconds/epoch |\n|---|---|\n| rmtlib.train (incl. test evaluation) | {ours:.2f} |"
          f"\n| DataLoader + per-sample transforms | {naive:.2f} |")
    print(f"\nratio naive / ours: **{naive / ours:.1f}x**\n")


if __name__ == "__main__":
    sys.exit(main())
