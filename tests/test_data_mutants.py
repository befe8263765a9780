"""rmtlib.data: the input door, the fetch paths, the recorded fingerprint (issue 17, mutation testing).

Written against the survivors of the mutation sample of rmtlib.data (TESTING.md). Every
expectation comes from outside the code under test: the documented bounds of each argument,
bytes written here and read back, a SHA-256 computed here with numpy from the documented
content, ImageNet's published mean and std applied by hand to a constant image. Nothing here
needs the network: downloads are replaced by a stand-in that puts the published file in place
(as `torchvision.datasets.utils.download_url` does), or by one that fails (no internet).
"""
import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from rmtlib import data

ANOVA_SMALL = dict(dim=4, classes=2, n_per_class=20, n_test_per_class=10, n_val=5)


# --------------------------------------------------------------------------- input door
def test_anova_options_are_refused_naming_the_option():
    # sigma is a noise standard deviation: sigma = 0 is refused (open lower bound), and the
    # smallest positive value is accepted
    with pytest.raises(ValueError, match=r"sigma must lie in \(0\.0, inf\); got 0\.0 \(the noise standard"):
        data.load("anova-d2", sigma=0.0, **ANOVA_SMALL)
    assert data.load("anova-d2", sigma=1e-6, **ANOVA_SMALL).info["sigma"] == 1e-6
    with pytest.raises(ValueError, match="delta must be finite"):
        data.load("anova-d1", delta=float("nan"), **ANOVA_SMALL)
    with pytest.raises(ValueError, match="t must be finite"):
        data.load("anova-d2", t=float("inf"), **ANOVA_SMALL)


def test_labels_outside_the_classes_are_refused_at_the_boundary():
    # CIFAR-10 has classes 0..9: 9 is a label, 10 is not (a damaged file)
    assert torch.equal(data._check_labels(torch.tensor([0, 9]), 10, "f"), torch.tensor([0, 9]))
    with pytest.raises(data.DataCorruptError, match=r"f holds 1 labels outside 0\.\.9 \(e\.g\. 10 at position 1\)"):
        data._check_labels(torch.tensor([9, 10]), 10, "f")
    with pytest.raises(data.DataCorruptError, match=r"outside 0\.\.9 \(e\.g\. -1 at position 0\)"):
        data._check_labels(torch.tensor([-1, 3]), 10, "f")


def test_missing_fashion_mnist_says_which_folder_to_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(data.DataNotFoundError, match=r"pass root= a folder that holds FashionMNIST/raw/\."):
        data.load("fashion-mnist", root=tmp_path / "empty")


# --------------------------------------------------------------------------- fetch (no network)
def _cifar_standin(folder, label=3):
    """The seven files of cifar-10-batches-py (tiny, python pickles); returns {name: bytes}."""
    rng = np.random.default_rng(1)
    files = {}
    for name in data.CIFAR10_MD5:
        if name == "batches.meta":
            obj = {"label_names": list(data.CIFAR10_CLASSES)}
        else:
            obj = {"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), "labels": [label, 9]}
        files[name] = pickle.dumps(obj)
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return files


def _cifar_archive(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{data.CIFAR10_FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_fetch_cifar10_downloads_checks_and_unpacks_the_archive(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    files = _cifar_standin(tmp_path / "src")
    archive_md5 = _cifar_archive(tmp_path / "published.tar.gz", files)
    monkeypatch.setattr(data, "CIFAR10_MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", archive_md5)
    calls = []

    def download(url, folder, filename, md5):  # what download_url does: put the checked file there
        calls.append((url, folder, filename, md5))
        (folder / filename).write_bytes((tmp_path / "published.tar.gz").read_bytes())

    monkeypatch.setattr(data, "_download", download)
    root = tmp_path / "root"
    assert data._main(["fetch", "cifar10", "--root", str(root)]) == 0
    assert calls == [(CIFAR10.url, root, "cifar-10-python.tar.gz", archive_md5)]
    for name, raw in files.items():  # every file unpacked byte for byte
        assert (root / data.CIFAR10_FOLDER / name).read_bytes() == raw
    # a second fetch finds the unpacked files (checked) and downloads nothing
    assert data.fetch("cifar10", root=root) == root and len(calls) == 1


def test_cli_fetch_reports_where_the_data_are(tmp_path, monkeypatch, capsys):
    files = _cifar_standin(tmp_path / "src")
    monkeypatch.setattr(data, "CIFAR10_MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", _cifar_archive(tmp_path / "cifar-10-python.tar.gz", files))
    # the archive lies in the root (copied there by hand): fetch unpacks it, nothing is loaded
    assert data._main(["fetch", "cifar10", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"cifar10 ready in {tmp_path}\n"
    with pytest.raises(SystemExit):
        data._main(["--help"])
    words = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal width
    assert "fetch prepare or download a data set (files checked against their MD5s) check exit 0 if the " \
           "data set loads (files checked against their MD5s) options:" in words


def _fashion_standin(raw):
    """Four small .gz files in <root>/FashionMNIST/raw/; returns their unpacked contents."""
    raw.mkdir(parents=True)
    contents = {}
    for i, name in enumerate(data.FASHION_MNIST_FILES):
        contents[name] = bytes([i]) * (100 + i)
        (raw / f"{name}.gz").write_bytes(gzip.compress(contents[name]))
    return contents


def test_fetch_fashion_mnist_unpacks_gz_files_placed_by_hand_without_downloading(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    raw = tmp_path / "FashionMNIST" / "raw"
    contents = _fashion_standin(raw)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", {n: hashlib.md5(c).hexdigest() for n, c in contents.items()})
    calls = []

    def offline(url, folder, filename, md5):
        calls.append(filename)
        raise OSError("no network")

    monkeypatch.setattr(data, "_download", offline)
    assert data.fetch("fashion-mnist", root=tmp_path) == tmp_path
    assert calls == []
    for name, payload in contents.items():
        assert (raw / name).read_bytes() == payload
    # without the .gz files and without network: a DownloadError saying how to do it by hand
    with pytest.raises(data.DownloadError, match="copy the four"):
        data.fetch("fashion-mnist", root=tmp_path / "other")
    assert calls == ["train-images-idx3-ubyte.gz"] * len(FashionMNIST.mirrors)  # every mirror tried


def test_fetch_fashion_mnist_refuses_a_gz_with_other_contents(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    contents = _fashion_standin(raw)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    md5 = {n: hashlib.md5(c).hexdigest() for n, c in contents.items()}
    md5["t10k-images-idx3-ubyte"] = "0" * 32
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", md5)
    with pytest.raises(data.DataCorruptError, match=r"t10k-images-idx3-ubyte\.gz unpacks to contents with MD5 "
                       + hashlib.md5(contents["t10k-images-idx3-ubyte"]).hexdigest() + ", expected 0{32}"):
        data.fetch("fashion-mnist", root=tmp_path)
    assert not (raw / "t10k-images-idx3-ubyte").exists()  # nothing unchecked is left behind


# --------------------------------------------------------------------------- what load records
def _sha256_by_hand(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a).astype(np.int64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def test_fingerprint_records_the_labels_seed_and_split():
    ds = data.load("anova-d2", noise=0.5, seed=7, **ANOVA_SMALL)
    # SHA-256 of every label as int64 (noisy, clean, mask, validation, test), each preceded by
    # its shape: the documented content, hashed here with numpy
    want = _sha256_by_hand(ds.train.y, ds.clean_labels, ds.noisy_mask, ds.val.y, ds.test.y)
    assert ds.info["labels_sha256"] == want
    fp = ds.fingerprint()
    assert fp["labels_sha256"] == want
    assert (fp["name"], fp["noise"], fp["seed"], fp["n_train"], fp["n_val"], fp["n_test"]) == \
        ("anova-d2", 0.5, 7, 40, 5, 15)
    info = ds.info
    assert (info["name"], info["noise"], info["seed"], info["n_train"], info["n_val"], info["n_test"]) == \
        ("anova-d2", 0.5, 7, 40, 5, 15)


def test_anova_d1_data_follow_the_design_of_their_seed():
    # D1(delta): class k has mean m + delta except on its own random half of the coordinates
    # (m there); the halves are drawn from the seed, so seeds 0 and 5 give other designs.
    opts = dict(dim=8, classes=2, n_per_class=4000, n_test_per_class=10, n_val=5, delta=2.0, m=0.0, sigma=0.5)
    means = {}
    for seed in (0, 5):
        ds = data.load("anova-d1", seed=seed, **opts)
        assert ds.info["delta"] == 2.0 and ds.info["t"] is None and ds.info["dim"] == 8
        x, y = ds.train.x.double(), ds.train.y
        # sample means: standard error 0.5 / sqrt(4000) = 0.008; 0.1 is 12 standard errors
        sample = torch.stack([x[y == k].mean(0) for k in range(2)])
        assert ((sample - 0.0).abs() < 0.1).sum(1).tolist() == [4, 4]
        assert ((sample - 2.0).abs() < 0.1).sum(1).tolist() == [4, 4]
        means[seed] = (sample > 1.0)
        assert torch.equal(means[seed], data.anova_means("anova-d1", dim=8, classes=2, delta=2.0, m=0.0,
                                                          seed=seed) > 1.0)
    assert not torch.equal(means[0], means[5])
    d2 = data.load("anova-d2", t=1.5, **ANOVA_SMALL)
    assert d2.info["t"] == 1.5 and d2.info["delta"] is None


def test_load_keeps_the_data_on_the_cpu_by_default_even_with_a_gpu(monkeypatch):
    # "device: default CPU": with a GPU present (simulated), load() must not move anything
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ds = data.load("anova-d2", **ANOVA_SMALL)
    assert ds.train.x.device.type == "cpu"


def test_dataset_to_moves_every_part():
    ds = data.load("anova-d2", noise=0.5, seed=1, **ANOVA_SMALL)
    moved = ds.to("cpu")
    for a, b in ((moved.train, ds.train), (moved.val, ds.val), (moved.test, ds.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert torch.equal(moved.noisy_mask, ds.noisy_mask) and torch.equal(moved.clean_labels, ds.clean_labels)
    assert moved.info == ds.info and moved.classes == ds.classes and moved.name == ds.name


# --------------------------------------------------------------------------- ImageNet-style folders
def test_image_folder_applies_imagenet_normalisation(tmp_path):
    from PIL import Image

    # a constant image of colour (255, 0, 51): ToTensor gives (1, 0, 0.2); normalised by ImageNet's
    # mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) -> ((1 - .485) / .229, ...)
    for cls, colour in (("a", (255, 0, 51)), ("b", (0, 0, 0))):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (12, 10), colour).save(tmp_path / cls / "img.png")
    split = data.image_folder(tmp_path, n=None, size=8)
    assert split.x.shape == (2, 3, 8, 8)
    want = {0: [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225],
            1: [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]}
    for x, y in zip(split.x, split.y):
        got = x.mean((1, 2))
        assert torch.allclose(got, torch.tensor(want[int(y)]), atol=1e-5)
        assert float(x.std((1, 2)).max()) < 1e-5  # constant stays constant through resize and crop
