"""Data sets as whole tensors: Fashion-MNIST, CIFAR-10 and the Gaussian ANOVA models.

METHODS §7 (label noise, per-image standardization), §5 (validation split carved
from the test set) and §6 (Gaussian ANOVA data D1 and D2).
Every split is held as one tensor, so training loops index it directly instead of
calling a per-sample transform.
"""
from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_write_bytes, data_dir
from .devices import resolve_device

NAMES = ("fashion-mnist", "cifar10", "anova-d1", "anova-d2")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# The validation split is the same for every seed, so test sets stay comparable.
_SPLIT_SEED = 12345


class DataNotFoundError(FileNotFoundError):
    """A data set is not on this machine; the message says how to get it."""


@dataclass
class Split:
    """One split: inputs `x` (N, ...) float32 and integer labels `y` (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __iter__(self):  # allows `x, y = data.train`
        return iter((self.x, self.y))

    def to(self, device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Dataset:
    """A data set bundle: `.train`, `.val`, `.test` splits and what was done to them.

    `noisy_mask[i]` is True for every training label that took part in the label
    shuffle of METHODS §7 (about 1/classes of those keep their true label by
    chance); `clean_labels` are the labels before the shuffle.
    """

    name: str
    train: Split
    val: Split
    test: Split
    classes: tuple
    noisy_mask: torch.Tensor
    clean_labels: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> "Dataset":
        dev = resolve_device(device)
        return Dataset(
            self.name, self.train.to(dev), self.val.to(dev), self.test.to(dev),
            self.classes, self.noisy_mask.to(dev), self.clean_labels.to(dev), dict(self.info),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, input_shape={self.input_shape}, "
            f"classes={self.num_classes}, noise={self.info.get('noise', 0.0)})"
        )


# --------------------------------------------------------------------------- helpers
def standardize_images(x: torch.Tensor) -> torch.Tensor:
    """Standardize each image by its own mean and std (METHODS §7).

    As TensorFlow's `per_image_standardization`: the std is floored at
    1/sqrt(pixels) so that a constant image does not divide by zero.
    """
    x = x.float()
    flat = x.reshape(len(x), -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True)
    std = torch.clamp(std, min=1.0 / np.sqrt(flat.shape[1]))
    return ((flat - mean) / std).reshape(x.shape)


def shuffle_labels(labels: torch.Tensor, noise: float, seed: int):
    """Shuffle a fraction `noise` of the labels among themselves (METHODS §7).

    Exactly `round(noise * N)` positions are drawn (seeded) and their labels are
    permuted. The class balance is kept; about 1/classes of the drawn labels end up
    correct by chance. Returns (new labels, boolean mask of the drawn positions).
    """
    n = len(labels)
    count = int(round(noise * n))
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=gen)[:count]
    perm = idx[torch.randperm(count, generator=gen)]
    out = labels.clone()
    out[idx] = labels[perm]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return out, mask


def anova_snr(means: torch.Tensor, sigma: float = 1.0) -> float:
    """SNR of Gaussian ANOVA class means: mean over pairs k != k' of ||mu_k - mu_k'|| / sigma."""
    means = torch.as_tensor(means, dtype=torch.float64)
    dists = [torch.linalg.norm(means[a] - means[b]).item() for a, b in combinations(range(len(means)), 2)]
    return float(np.mean(dists) / sigma)


def anova_means(kind: str, *, dim: int, classes: int, delta: float = 1.0, t: float = 1.0,
                m: float = -0.2, seed: int = 0) -> torch.Tensor:
    """Class means of Meng & Yao's ANOVA designs D1(delta) and D2(t) (METHODS §6)."""
    if kind == "anova-d1":
        if dim % 2:
            raise ValueError(f"anova-d1 needs an even dimension (subsets of size dim/2); got dim={dim}")
        gen = torch.Generator().manual_seed(int(seed) + 7919)
        means = torch.full((classes, dim), m + delta, dtype=torch.float64)
        for k in range(classes):
            subset = torch.randperm(dim, generator=gen)[: dim // 2]
            means[k, subset] = m
        return means
    if kind == "anova-d2":
        if classes > dim:
            raise ValueError(f"anova-d2 needs classes <= dim (simplex ETF); got classes={classes}, dim={dim}")
        v = -torch.full((classes, dim), 1.0 / classes, dtype=torch.float64)
        v[torch.arange(classes), torch.arange(classes)] += 1.0
        return t * v
    raise ValueError(f"unknown ANOVA design {kind!r}; expected 'anova-d1' or 'anova-d2'")


# --------------------------------------------------------------------------- sources
def _candidate_roots(root) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get("RMTLIB_DATA"):
        roots.append(Path(os.environ["RMTLIB_DATA"]))
    roots.append(data_dir())
    return list(dict.fromkeys(roots))


def _unpack_debian_fashion_mnist(target_root: Path) -> bool:
    """Unpack Debian's gzip IDX files into torchvision's raw folder (atomically)."""
    if not all((DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES):
        return False
    raw = target_root / "FashionMNIST" / "raw"
    for name in FASHION_MNIST_FILES:
        if not (raw / name).is_file():
            with gzip.open(DEBIAN_FASHION_MNIST / f"{name}.gz", "rb") as fh:
                atomic_write_bytes(raw / name, fh.read())
    return True


def _fashion_mnist_raw(root) -> Path:
    """Find (or prepare) a root folder holding FashionMNIST/raw/* unpacked."""
    roots = _candidate_roots(root)
    for r in roots:
        if all((r / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_MNIST_FILES):
            return r
    target = roots[0]
    try:
        if _unpack_debian_fashion_mnist(target):
            return target
    except OSError:
        pass
    raise DataNotFoundError(
        "Fashion-MNIST was not found in " + ", ".join(str(r) for r in roots)
        + f" nor in {DEBIAN_FASHION_MNIST}. Get it with `make data` (Debian: "
        "`apt-get install dataset-fashion-mnist`; with internet: "
        "`python -m rmtlib.data fetch fashion-mnist`), or pass root= a folder that "
        "holds FashionMNIST/raw/."
    )


def _load_fashion_mnist(root):
    from torchvision.datasets import FashionMNIST

    r = _fashion_mnist_raw(root)
    tr = FashionMNIST(str(r), train=True, download=False)
    te = FashionMNIST(str(r), train=False, download=False)
    # .data is already one uint8 tensor (N, 28, 28): no per-sample Python.
    return (tr.data.unsqueeze(1), tr.targets.long(), te.data.unsqueeze(1), te.targets.long(),
            FASHION_MNIST_CLASSES)


def _load_cifar10(root):
    from torchvision.datasets import CIFAR10

    roots = _candidate_roots(root)
    for r in roots:
        if (r / "cifar-10-batches-py").is_dir():
            break
    else:
        raise DataNotFoundError(
            "CIFAR-10 was not found in " + ", ".join(str(r) for r in roots)
            + ". It needs a download: `python -m rmtlib.data fetch cifar10` on a machine "
            "with internet (Colab, a GPU box), or pass root= a folder that holds "
            "cifar-10-batches-py/."
        )
    tr = CIFAR10(str(r), train=True, download=False)
    te = CIFAR10(str(r), train=False, download=False)

    def conv(ds):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        return x, torch.as_tensor(ds.targets, dtype=torch.long)

    return (*conv(tr), *conv(te), CIFAR10_CLASSES)


def fetch(name: str, root=None) -> Path:
    """Download a data set with torchvision (needs internet) into `root` or the data folder."""
    from torchvision import datasets

    target = Path(root) if root is not None else data_dir()
    if name == "fashion-mnist":
        if _unpack_debian_fashion_mnist(target):
            return target
        datasets.FashionMNIST(str(target), train=True, download=True)
        datasets.FashionMNIST(str(target), train=False, download=True)
    elif name == "cifar10":
        datasets.CIFAR10(str(target), train=True, download=True)
        datasets.CIFAR10(str(target), train=False, download=True)
    else:
        raise ValueError(f"nothing to fetch for {name!r}; downloadable: 'fashion-mnist', 'cifar10'")
    return target


# --------------------------------------------------------------------------- load
def load(name: str, *, noise: float = 0.0, seed: int = 0, n_train: int | None = None,
         root=None, device=None, n_val: int = 2000, n_test: int | None = None,
         **anova) -> Dataset:
    """Load a data set as whole tensors, with label noise and a validation split.

    Parameters
    ----------
    name : "fashion-mnist" | "cifar10" | "anova-d1" | "anova-d2"
    noise : fraction in [0, 1] of training labels shuffled (METHODS §7), seeded by `seed`.
    seed : seeds the label noise (and the ANOVA samples).
    n_train : use a fixed random subset of this many training samples (same for every seed).
    root : folder to look in first (else $RMTLIB_DATA, the project's data/ folder,
        Debian's /usr/share/datasets/fashion-mnist).
    device : where the tensors go ("cpu", "cuda", "auto"); default CPU.
    n_val : validation images carved from the test set (METHODS §5; paper: 2,000 of 10,000).
    n_test : keep at most this many of the remaining test images (fixed subset).
    **anova : for "anova-d1"/"anova-d2": dim (100), classes (10), n_per_class (7500),
        n_test_per_class (1500), delta (d1, 1.0), t (d2, 1.0), sigma (1.0).
    """
    if name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    if not (isinstance(noise, (int, float)) and 0.0 <= float(noise) <= 1.0):
        raise ValueError(f"noise must be a fraction in [0, 1]; got {noise!r}")
    for label, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{label} must be a positive integer or None; got {value!r}")
    if int(n_val) != n_val or n_val < 0:
        raise ValueError(f"n_val must be a non-negative integer; got {n_val!r}")
    if anova and not name.startswith("anova"):
        raise TypeError(f"unexpected options {sorted(anova)} for {name!r} (they apply to anova-* only)")
    dev = resolve_device(device) if device is not None else torch.device("cpu")

    if name.startswith("anova"):
        xtr, ytr, xte, yte, classes, extra = _make_anova(name, seed=seed, **anova)
    else:
        loader = _load_fashion_mnist if name == "fashion-mnist" else _load_cifar10
        xtr, ytr, xte, yte, classes = loader(root)
        extra = {}

    gen = torch.Generator().manual_seed(_SPLIT_SEED)
    if n_train is not None:
        if n_train > len(ytr):
            raise ValueError(f"n_train={n_train} is larger than the {len(ytr)} training samples of {name!r}")
        keep = torch.randperm(len(ytr), generator=gen)[:n_train].sort().values
        xtr, ytr = xtr[keep], ytr[keep]
    if n_val >= len(yte):
        raise ValueError(f"n_val={n_val} leaves no test data ({len(yte)} test samples in {name!r})")
    order = torch.randperm(len(yte), generator=gen)
    val_idx, test_idx = order[:n_val].sort().values, order[n_val:]
    if n_test is not None:
        if n_test > len(test_idx):
            raise ValueError(f"n_test={n_test} is larger than the {len(test_idx)} test samples left after the validation split")
        test_idx = test_idx[:n_test]
    test_idx = test_idx.sort().values

    if not name.startswith("anova"):
        xtr, xte = standardize_images(xtr), standardize_images(xte)
    noisy_labels, mask = shuffle_labels(ytr, float(noise), seed)
    info = dict(name=name, noise=float(noise), seed=int(seed), n_train=len(ytr), n_val=int(n_val),
                n_test=len(test_idx), **extra)
    ds = Dataset(
        name=name,
        train=Split(xtr.contiguous(), noisy_labels),
        val=Split(xte[val_idx].contiguous(), yte[val_idx]),
        test=Split(xte[test_idx].contiguous(), yte[test_idx]),
        classes=tuple(classes),
        noisy_mask=mask,
        clean_labels=ytr,
        info=info,
    )
    return ds.to(dev) if dev.type != "cpu" else ds


def _make_anova(name, *, seed, dim=100, classes=10, n_per_class=7500, n_test_per_class=1500,
                delta=1.0, t=1.0, sigma=1.0, m=-0.2):
    if dim < 2 or classes < 2:
        raise ValueError(f"ANOVA data needs dim >= 2 and classes >= 2; got dim={dim}, classes={classes}")
    if n_per_class < 1 or n_test_per_class < 1 or sigma <= 0:
        raise ValueError("n_per_class, n_test_per_class and sigma must be positive")
    means = anova_means(name, dim=dim, classes=classes, delta=delta, t=t, m=m, seed=seed)
    gen = torch.Generator().manual_seed(int(seed) + 104729)

    def draw(per_class):
        y = torch.arange(classes).repeat_interleave(per_class)
        x = means[y] + sigma * torch.randn(len(y), dim, generator=gen, dtype=torch.float64)
        return x.float(), y

    xtr, ytr = draw(n_per_class)
    xte, yte = draw(n_test_per_class)
    extra = dict(dim=dim, delta=delta if name == "anova-d1" else None,
                 t=t if name == "anova-d2" else None, sigma=sigma, snr=anova_snr(means, sigma))
    return xtr, ytr, xte, yte, tuple(range(classes)), extra


def image_folder(root, *, n: int | None = 1000, size: int = 224, seed: int = 0) -> Split:
    """Images of an ImageNet-style folder (one subfolder per class) as one tensor Split.

    The usual ImageNet evaluation transform: resize 256, centre crop `size`, ImageNet mean
    and std. `n` images are drawn at random (seeded); None takes all. The classes are the
    sorted subfolder names, so the labels match torchvision's pretrained networks when the
    folder holds the 1,000 ImageNet synset folders.
    """
    from torchvision import datasets, transforms

    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} does not exist; pass the ImageNet validation "
                                "folder with one subfolder per class (e.g. n01440764/)")
    tf = transforms.Compose([
        transforms.Resize(int(size * 256 / 224)), transforms.CenterCrop(size), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    ds = datasets.ImageFolder(str(root), transform=tf)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    idx = idx if n is None else idx[:n]
    xs, ys = zip(*(ds[int(i)] for i in idx))  # decoding files is per-image by nature
    return Split(torch.stack(xs), torch.as_tensor(ys, dtype=torch.long))


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rmtlib.data", description="Get the book's data sets.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="prepare or download a data set")
    f.add_argument("name", choices=("fashion-mnist", "cifar10"))
    f.add_argument("--root", default=None)
    c = sub.add_parser("check", help="exit 0 if the data set loads")
    c.add_argument("name", choices=("fashion-mnist", "cifar10"))
    args = parser.parse_args(argv)
    if args.cmd == "fetch":
        print(f"{args.name} ready in {fetch(args.name, args.root)}")
    else:
        ds = load(args.name, n_val=2000)
        print(ds)


if __name__ == "__main__":
    _main()
