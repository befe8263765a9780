"""Data sets as whole tensors: Fashion-MNIST, CIFAR-10 and the Gaussian ANOVA models.

METHODS §7 (label noise, per-image standardization), §5 (validation split carved
from the test set) and §6 (Gaussian ANOVA data D1 and D2).
Every split is held as one tensor, so training loops index it directly instead of
calling a per-sample transform.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from . import validation as _v
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
# MD5 of the unpacked IDX files: the contents of the gzip files whose MD5s Fashion-MNIST
# and torchvision publish (Debian recompresses them, so its .gz MD5s differ; the contents
# are the same bytes). Older torchvision releases listed these as FashionMNIST.raw_data.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# MD5 of the published gzip files (torchvision.datasets.FashionMNIST.resources).
FASHION_MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# CIFAR-10, python version (torchvision.datasets.CIFAR10.tgz_md5, train_list, test_list, meta).
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# (training, test) samples of each data set; the ANOVA sizes are those of the defaults.
SIZES = {"fashion-mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
ANOVA_DEFAULTS = dict(dim=100, classes=10, n_per_class=7500, n_test_per_class=1500,
                      delta=1.0, t=1.0, sigma=1.0, m=-0.2)
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


class DownloadError(DataNotFoundError):
    """A download failed (no network?); the message says how to put the files there by hand."""


class DataCorruptError(ValueError):
    """A data file failed its checksum or holds impossible values; the message names the
    file and says how to get it again."""


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

    def fingerprint(self) -> dict:
        """What identifies this data (see `rmtlib.data.fingerprint`)."""
        return fingerprint(self)

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


# --------------------------------------------------------------------------- checks
_VERIFIED: dict = {}  # (path, size, mtime, inode) -> md5 already checked in this process


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path, md5: str, how: str) -> Path:
    """Check a data file against its published MD5; DataCorruptError naming it if it differs.

    `how` says how to get the file again. A file is hashed once per process (as long as
    its size and modification time stay the same).
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if _VERIFIED.get(key) == md5:
        return path
    got = _md5(path)
    if got != md5:
        raise DataCorruptError(
            f"data file {path} is damaged or not the published file: its MD5 is {got}, "
            f"expected {md5} ({st.st_size} bytes). {how}")
    _VERIFIED[key] = md5
    return path


def _check_labels(labels: torch.Tensor, classes: int, source) -> torch.Tensor:
    bad = (labels < 0) | (labels >= classes)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise DataCorruptError(f"{source} holds {int(bad.sum())} labels outside 0..{classes - 1} "
                               f"(e.g. {int(labels[i])} at position {i}); the file is damaged")
    return labels


def _fashion_how(path: Path) -> str:
    return (f"Delete it and run `python -m rmtlib.data fetch fashion-mnist --root {path.parent.parent.parent}` "
            "to get it again (from Debian's package dataset-fashion-mnist when installed, "
            "else by download).")


def _read_idx(path: Path, magic: int, shape: tuple) -> torch.Tensor:
    """An IDX file (the MNIST format) as a uint8 tensor of the given shape (header checked)."""
    raw = path.read_bytes()
    want = 4 + 4 * len(shape) + int(np.prod(shape))
    head = [int.from_bytes(raw[i : i + 4], "big") for i in range(0, 4 + 4 * len(shape), 4)]
    if len(raw) != want or head != [magic, *shape]:
        raise DataCorruptError(f"data file {path} is not an IDX file of shape {shape} "
                               f"({len(raw)} bytes, expected {want}). {_fashion_how(path)}")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(shape)).copy()
                            ).reshape(shape)


# --------------------------------------------------------------------------- sources
def _candidate_roots(root) -> list[Path]:
    if root is not None:
        return [Path(root)]
    roots = []
    if os.environ.get("RMTLIB_DATA"):
        roots.append(Path(os.environ["RMTLIB_DATA"]))
    roots.append(data_dir())
    return list(dict.fromkeys(roots))


def _unpack_fashion_gz(gz: Path, dest: Path, how: str) -> None:
    """Decompress one Fashion-MNIST .gz to `dest` after checking the contents' MD5."""
    try:
        with gzip.open(gz, "rb") as fh:
            payload = fh.read()
    except (OSError, EOFError) as err:
        raise DataCorruptError(f"data file {gz} is not a readable gzip file ({err}). {how}") from None
    got = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    if got != FASHION_MNIST_MD5[dest.name]:
        raise DataCorruptError(f"data file {gz} unpacks to contents with MD5 {got}, expected "
                               f"{FASHION_MNIST_MD5[dest.name]}. {how}")
    atomic_write_bytes(dest, payload)


def _unpack_debian_fashion_mnist(target_root: Path) -> bool:
    """Unpack Debian's gzip IDX files into torchvision's raw folder (checked, atomically)."""
    if not all((DEBIAN_FASHION_MNIST / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES):
        return False
    raw = target_root / "FashionMNIST" / "raw"
    how = "Reinstall it: `apt-get install --reinstall dataset-fashion-mnist`."
    for name in FASHION_MNIST_FILES:
        if not (raw / name).is_file():
            _unpack_fashion_gz(DEBIAN_FASHION_MNIST / f"{name}.gz", raw / name, how)
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
    raw = _fashion_mnist_raw(root) / "FashionMNIST" / "raw"
    for name in FASHION_MNIST_FILES:
        verify_file(raw / name, FASHION_MNIST_MD5[name], _fashion_how(raw / name))
    (n_tr, n_te), out = SIZES["fashion-mnist"], []
    for prefix, n in (("train", n_tr), ("t10k", n_te)):
        x = _read_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, (n, 28, 28))
        y = _read_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, (n,)).long()
        out += [x.unsqueeze(1), _check_labels(y, 10, raw / f"{prefix}-labels-idx1-ubyte")]
    return (*out, FASHION_MNIST_CLASSES)


def _cifar_how(root: Path) -> str:
    return (f"Delete {root / CIFAR10_FOLDER} and run `python -m rmtlib.data fetch cifar10 "
            f"--root {root}` to unpack it again from {CIFAR10_ARCHIVE} (or download it).")


def _load_cifar10(root):
    from torchvision.datasets import CIFAR10

    roots = _candidate_roots(root)
    for r in roots:
        if (r / CIFAR10_FOLDER).is_dir():
            break
    else:
        raise DataNotFoundError(
            "CIFAR-10 was not found in " + ", ".join(str(r) for r in roots)
            + ". It needs a download: `python -m rmtlib.data fetch cifar10` on a machine "
            f"with internet (Colab, a GPU box), or put {CIFAR10_ARCHIVE} into the data folder and "
            f"run that command there, or pass root= a folder that holds {CIFAR10_FOLDER}/."
        )
    for name, md5 in CIFAR10_MD5.items():
        path = r / CIFAR10_FOLDER / name
        if not path.is_file():
            raise DataNotFoundError(f"CIFAR-10 file {path} is missing. {_cifar_how(r)}")
        verify_file(path, md5, _cifar_how(r))
    # the batches are pickles: only files whose MD5 matched the published one get here
    tr = CIFAR10(str(r), train=True, download=False)
    te = CIFAR10(str(r), train=False, download=False)

    def conv(ds, which):
        x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        y = _check_labels(torch.as_tensor(ds.targets, dtype=torch.long), 10, f"CIFAR-10 {which} batches in {r}")
        return x, y

    return (*conv(tr, "training"), *conv(te, "test"), CIFAR10_CLASSES)


def _download(url: str, folder: Path, filename: str, md5: str) -> None:
    from torchvision.datasets.utils import download_url

    download_url(url, str(folder), filename=filename, md5=md5)


def _fetch_fashion_mnist(target: Path) -> Path:
    from torchvision.datasets import FashionMNIST

    raw = target / "FashionMNIST" / "raw"
    if _unpack_debian_fashion_mnist(target):
        return target
    for name in FASHION_MNIST_FILES:
        dest, gz = raw / name, raw / f"{name}.gz"
        how = f"Delete {gz} and run this command again."
        if dest.is_file():
            continue
        if not gz.is_file():
            errors = []
            for mirror in FashionMNIST.mirrors:
                try:
                    _download(f"{mirror}{gz.name}", raw, gz.name, FASHION_MNIST_GZ_MD5[gz.name])
                    break
                except Exception as err:  # URLError, HTTPError, timeouts, bad MD5
                    errors.append(f"{type(err).__name__}: {err}")
            else:
                raise DownloadError(
                    f"Downloading Fashion-MNIST failed ({'; '.join(errors)}); this machine may have no "
                    "internet. To install it by hand: on Debian/Ubuntu `apt-get install "
                    f"dataset-fashion-mnist` (found at {DEBIAN_FASHION_MNIST}), or copy the four "
                    f"files {', '.join(FASHION_MNIST_GZ_MD5)} (from the Fashion-MNIST repository, "
                    f"e.g. {FashionMNIST.mirrors[0]}) into {raw}/ and run "
                    f"`python -m rmtlib.data fetch fashion-mnist --root {target}` again. They are "
                    "checked against their published MD5 checksums "
                    f"({', '.join(f'{k} {v}' for k, v in FASHION_MNIST_GZ_MD5.items())}) when unpacked, "
                    "and the unpacked files at every load.") from None
        _unpack_fashion_gz(gz, dest, how)
    return target


def _fetch_cifar10(target: Path) -> Path:
    import tarfile

    from torchvision.datasets import CIFAR10

    folder = target / CIFAR10_FOLDER
    if folder.is_dir() and all((folder / n).is_file() for n in CIFAR10_MD5):
        for name, md5 in CIFAR10_MD5.items():
            verify_file(folder / name, md5, _cifar_how(target))
        return target
    archive = target / CIFAR10_ARCHIVE
    if not archive.is_file():
        try:
            target.mkdir(parents=True, exist_ok=True)
            _download(CIFAR10.url, target, CIFAR10_ARCHIVE, CIFAR10_ARCHIVE_MD5)
        except Exception as err:  # URLError, HTTPError, timeouts, bad MD5
            raise DownloadError(
                f"Downloading CIFAR-10 failed ({type(err).__name__}: {err}); this machine may have "
                f"no internet. To install it by hand: on a machine with internet download "
                f"{CIFAR10.url} (the python version, {CIFAR10_ARCHIVE}, about 163 MiB), copy it "
                f"into {target}/ and run `python -m rmtlib.data fetch cifar10 --root {target}` "
                f"again. The archive is checked against its published MD5 {CIFAR10_ARCHIVE_MD5} "
                f"and unpacked to {folder}/, whose files are checked against their MD5s "
                "at every load. (An unpacked cifar-10-batches-py/ folder copied there works too.)"
            ) from None
    verify_file(archive, CIFAR10_ARCHIVE_MD5, f"Delete {archive} and download it again "
                f"({CIFAR10.url}).")
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(f"{CIFAR10_FOLDER}/") and m.isfile()]
        names = {Path(m.name).name: m for m in members}
        for name, md5 in CIFAR10_MD5.items():
            if name not in names:
                raise DataCorruptError(f"{archive} lacks {CIFAR10_FOLDER}/{name}; delete it and download it again")
            atomic_write_bytes(folder / name, tar.extractfile(names[name]).read())
            verify_file(folder / name, md5, _cifar_how(target))
    return target


def fetch(name: str, root=None) -> Path:
    """Prepare a data set in `root` or the data folder; download it if needed (needs internet).

    Fashion-MNIST comes from Debian's dataset-fashion-mnist when installed, else from
    .gz files placed in `<root>/FashionMNIST/raw/`, else by download; CIFAR-10 from an
    archive cifar-10-python.tar.gz placed in `<root>`, else by download. Every file is
    checked against its published MD5. Raises DownloadError (saying how to get the
    files by hand) when a needed download fails.
    """
    _v.check_choice(name, "name", ("fashion-mnist", "cifar10"))
    target = Path(root) if root is not None else data_dir()
    return _fetch_fashion_mnist(target) if name == "fashion-mnist" else _fetch_cifar10(target)


# --------------------------------------------------------------------------- load
def _check_name(name) -> str:
    if not isinstance(name, str) or name not in NAMES:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(NAMES)}")
    return name


def _hash_tensors(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        arr = t.detach().to("cpu", torch.int64).contiguous().numpy()
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _labels_hash(ds: "Dataset") -> str:
    return _hash_tensors(ds.train.y, ds.clean_labels, ds.noisy_mask, ds.val.y, ds.test.y)


def expected_fingerprint(name: str, *, noise: float = 0.0, seed: int = 0,
                         n_train: int | None = None, n_val: int = 2000) -> dict:
    """The part of a data fingerprint (see `fingerprint`) that `load`'s arguments fix.

    For `load(name, noise=..., seed=..., n_train=..., n_val=...)` with the other
    arguments at their defaults (all remaining test samples, default ANOVA design).
    """
    _check_name(name)
    if name.startswith("anova"):
        o = ANOVA_DEFAULTS
        sizes, options = (o["classes"] * o["n_per_class"], o["classes"] * o["n_test_per_class"]), dict(o)
    else:
        sizes, options = SIZES[name], {}
    return dict(name=name, noise=float(noise), seed=_data_seed(name, noise, seed),
                n_train=sizes[0] if n_train is None else int(n_train), n_val=int(n_val),
                n_test=sizes[1] - int(n_val), options=options)


def _data_seed(name: str, noise: float, seed):
    """The seed as far as it shapes the data: image data without label noise ignore it."""
    return None if (noise == 0 and not name.startswith("anova")) or seed is None else int(seed)


def fingerprint(ds: "Dataset") -> dict:
    """What identifies the data a model was trained and evaluated on (plain JSON values).

    Name, noise, seed (None where it does not shape the data: image data without label
    noise are the same for every seed), split sizes, the ANOVA design, a SHA-256 of every label (noisy
    and clean training labels, the noise mask, validation and test labels) recomputed
    from the tensors, and a SHA-256 of the split indices recorded by `load`.
    """
    info = ds.info
    return dict(name=ds.name, noise=info.get("noise"),
                seed=_data_seed(ds.name, info.get("noise"), info.get("seed")),
                n_train=len(ds.train), n_val=len(ds.val), n_test=len(ds.test),
                options=info.get("options", {}), input_shape=list(ds.input_shape),
                num_classes=ds.num_classes, labels_sha256=_labels_hash(ds),
                indices_sha256=info.get("indices_sha256"))


def load(name: str, *, noise: float = 0.0, seed: int = 0, n_train: int | None = None,
         root=None, device=None, n_val: int = 2000, n_test: int | None = None,
         **anova) -> Dataset:
    """Load a data set as whole tensors, with label noise and a validation split.

    Parameters
    ----------
    name : "fashion-mnist" | "cifar10" | "anova-d1" | "anova-d2"
    noise : fraction in [0, 1] of training labels shuffled (METHODS §7), seeded by `seed`.
    seed : non-negative integer; seeds the label noise (and the ANOVA samples).
    n_train : use a fixed random subset of this many training samples (same for every
        seed); an integer (100.0 is refused: pass 100).
    root : folder to look in first (else $RMTLIB_DATA, the project's data/ folder,
        Debian's /usr/share/datasets/fashion-mnist).
    device : where the tensors go ("cpu", "cuda", "auto"); default CPU.
    n_val : validation images carved from the test set (METHODS §5; paper: 2,000 of 10,000).
    n_test : keep at most this many of the remaining test images (fixed subset).
    **anova : for "anova-d1"/"anova-d2": dim (100), classes (10), n_per_class (7500),
        n_test_per_class (1500), delta (d1, 1.0), t (d2, 1.0), sigma (1.0), m (d1, -0.2).

    Image files are checked against their published MD5 checksums before use
    (DataCorruptError names a bad file and how to get it again). `info["indices_sha256"]`
    and `info["labels_sha256"]` record the split and the labels (see `fingerprint`).
    """
    _check_name(name)
    noise = _v.check_float(noise, "noise", min=0, max=1, why="the fraction of shuffled labels")
    seed = _v.check_int(seed, "seed", min=0)
    if n_train is not None:
        n_train = _v.check_int(n_train, "n_train", min=1, why="pass None for all training samples")
    n_val = _v.check_int(n_val, "n_val", min=0)
    if n_test is not None:
        n_test = _v.check_int(n_test, "n_test", min=1, why="pass None for all remaining test samples")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a folder path (str or pathlib.Path) or None; got {type(root).__name__}")
    if anova and not name.startswith("anova"):
        raise TypeError(f"unexpected options {sorted(anova)} for {name!r} (they apply to anova-* only)")
    options = _anova_options(name, anova) if name.startswith("anova") else {}
    dev = resolve_device(device) if device is not None else torch.device("cpu")

    if name.startswith("anova"):
        xtr, ytr, xte, yte, classes, extra = _make_anova(name, seed=seed, **options)
    else:
        loader = _load_fashion_mnist if name == "fashion-mnist" else _load_cifar10
        xtr, ytr, xte, yte, classes = loader(root)
        extra = {}

    gen = torch.Generator().manual_seed(_SPLIT_SEED)
    keep = torch.arange(len(ytr))
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
    noisy_labels, mask = shuffle_labels(ytr, noise, seed)
    info = dict(name=name, noise=noise, seed=seed, n_train=len(ytr), n_val=n_val,
                n_test=len(test_idx), **extra, options=options,
                indices_sha256=_hash_tensors(keep, val_idx, test_idx))
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
    ds.info["labels_sha256"] = _labels_hash(ds)
    return ds.to(dev) if dev.type != "cpu" else ds


def _anova_options(name: str, given: dict) -> dict:
    """The ANOVA design's parameters, validated, with the defaults filled in."""
    unknown = set(given) - set(ANOVA_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)} for {name!r}; valid: {sorted(ANOVA_DEFAULTS)}")
    o = {**ANOVA_DEFAULTS, **given}
    out = dict(dim=_v.check_int(o["dim"], "dim", min=2), classes=_v.check_int(o["classes"], "classes", min=2),
               n_per_class=_v.check_int(o["n_per_class"], "n_per_class", min=1),
               n_test_per_class=_v.check_int(o["n_test_per_class"], "n_test_per_class", min=1),
               delta=_v.check_float(o["delta"], "delta"), t=_v.check_float(o["t"], "t"),
               sigma=_v.check_float(o["sigma"], "sigma", min=0.0, min_open=True,
                                    why="the noise standard deviation"),
               m=_v.check_float(o["m"], "m"))
    if name == "anova-d1" and out["dim"] % 2:
        raise ValueError(f"anova-d1 needs an even dimension (subsets of size dim/2); got dim={out['dim']}")
    if name == "anova-d2" and out["classes"] > out["dim"]:
        raise ValueError(f"anova-d2 needs classes <= dim (simplex ETF); got classes={out['classes']}, dim={out['dim']}")
    return out


def _make_anova(name, *, seed, dim, classes, n_per_class, n_test_per_class, delta, t, sigma, m):
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


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rmtlib.data", description="Get the book's data sets.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="prepare or download a data set (files checked against their MD5s)")
    f.add_argument("name", choices=("fashion-mnist", "cifar10"))
    f.add_argument("--root", default=None, help="data folder (default: $RMTLIB_DATA or the project's data/)")
    c = sub.add_parser("check", help="exit 0 if the data set loads (files checked against their MD5s)")
    c.add_argument("name", choices=("fashion-mnist", "cifar10"))
    c.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(f"{args.name} ready in {fetch(args.name, args.root)}")
        else:
            print(load(args.name, n_val=2000, root=args.root))
    except (DataNotFoundError, DataCorruptError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
