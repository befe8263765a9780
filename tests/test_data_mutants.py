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


# =========================================================================== whole-module survivors, group A
# (issue 17) load's input door, the ANOVA designs, the fingerprints, Dataset/Split methods.
# The expectations: the bounds and defaults written in load's docstring, whole messages,
# hand-computed means and distances, indices recovered by matching rows, SHA-256 computed
# here with numpy, and the pinned random streams of the ANOVA data (see the test).
import math
import struct

# load's docstring: dim (100), classes (10), n_per_class (7500), n_test_per_class (1500),
# delta (1.0), t (1.0), sigma (1.0), m (-0.2)
DOC_DEFAULTS = dict(dim=100, classes=10, n_per_class=7500, n_test_per_class=1500,
                    delta=1.0, t=1.0, sigma=1.0, m=-0.2)
SMALL_OPTIONS = {**DOC_DEFAULTS, "dim": 4, "classes": 2, "n_per_class": 20, "n_test_per_class": 10}


@pytest.mark.parametrize("kwargs, err, message", [
    (dict(noise=1.5), ValueError, "noise must lie in [0, 1]; got 1.5 (the fraction of shuffled labels)"),
    (dict(seed=-1), ValueError, "seed must lie in [0, inf); got -1"),
    (dict(n_train=0), ValueError, "n_train must lie in [1, inf); got 0 (pass None for all training samples)"),
    (dict(n_val=-1), ValueError, "n_val must lie in [0, inf); got -1"),
    (dict(n_test=0), ValueError, "n_test must lie in [1, inf); got 0 (pass None for all remaining test samples)"),
    (dict(root=5), TypeError, "root must be a folder path (str or pathlib.Path) or None; got int"),
    # ANOVA_SMALL: 2 x 20 training samples, 2 x 10 test samples, 5 of them for validation
    (dict(n_train=41), ValueError, "n_train=41 is larger than the 40 training samples of 'anova-d2'"),
    (dict(n_val=20), ValueError, "n_val=20 leaves no test data (20 test samples in 'anova-d2')"),
    (dict(n_test=16), ValueError, "n_test=16 is larger than the 15 test samples left after the validation split"),
    (dict(foo=1), TypeError, "unexpected options ['foo'] for 'anova-d2'; valid: "
                             "['classes', 'delta', 'dim', 'm', 'n_per_class', 'n_test_per_class', 'sigma', 't']"),
    (dict(dim=1), ValueError, "dim must lie in [2, inf); got 1"),
    (dict(classes=1), ValueError, "classes must lie in [2, inf); got 1"),
    (dict(n_per_class=0), ValueError, "n_per_class must lie in [1, inf); got 0"),
    (dict(n_test_per_class=0), ValueError, "n_test_per_class must lie in [1, inf); got 0"),
    (dict(m=float("nan")), ValueError, "m must be finite; got nan"),
    (dict(dim=3, classes=4), ValueError, "anova-d2 needs classes <= dim (simplex ETF); got classes=4, dim=3"),
])
def test_load_refuses_each_argument_with_its_whole_message(kwargs, err, message):
    with pytest.raises(err) as info:
        data.load("anova-d2", **{**ANOVA_SMALL, **kwargs})
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, sizes", [
    # every limit itself is accepted: seed 0, noise 0 and 1, n_train 1 and all 40, n_val 0,
    # n_test 1 and all that is left
    (dict(seed=0, noise=1.0, n_train=1, n_test=1), (1, 5, 1)),
    (dict(noise=0.0, n_train=40, n_val=0, n_test=20), (40, 0, 20)),
    # the design's limits: dim 2, classes == dim for D2, one sample per class
    (dict(dim=2, n_per_class=1, n_test_per_class=1, n_val=1), (2, 1, 1)),
    (dict(dim=2, classes=2, n_val=5), (40, 5, 15)),
])
def test_load_accepts_every_limit(kwargs, sizes):
    ds = data.load("anova-d2", **{**ANOVA_SMALL, **kwargs})
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes


def test_d1_takes_more_classes_than_dimensions_and_d2_an_odd_dimension():
    # each design's own rule only: D1 needs an even dim (any number of classes), D2 classes <= dim
    assert data.load("anova-d1", **{**ANOVA_SMALL, "dim": 2, "classes": 3}).num_classes == 3
    assert data.load("anova-d2", **{**ANOVA_SMALL, "dim": 3}).input_shape == (3,)


def test_anova_options_check_the_design_and_fill_in_the_documented_defaults():
    assert data._anova_options("anova-d2", {"dim": 4, "classes": 4}) == {**DOC_DEFAULTS, "dim": 4, "classes": 4}
    assert data._anova_options("anova-d1", {}) == DOC_DEFAULTS
    with pytest.raises(ValueError) as info:
        data._anova_options("anova-d1", {"dim": 5})
    assert str(info.value) == "anova-d1 needs an even dimension (subsets of size dim/2); got dim=5"
    with pytest.raises(ValueError) as info:
        data._anova_options("anova-d2", {"dim": 4, "classes": 5})
    assert str(info.value) == "anova-d2 needs classes <= dim (simplex ETF); got classes=5, dim=4"


def test_load_records_its_options_and_default_seed():
    ds = data.load("anova-d2", noise=0.5, **ANOVA_SMALL)
    assert ds.info["seed"] == 0 and ds.info["options"] == SMALL_OPTIONS
    # an ANOVA data set without label noise still depends on its seed (the samples are drawn)
    assert data.load("anova-d1", seed=3, **ANOVA_SMALL).fingerprint()["seed"] == 3


def test_the_fingerprint_of_a_load_written_out():
    ds = data.load("anova-d2", noise=0.5, seed=7, **ANOVA_SMALL)
    labels = _sha256_by_hand(ds.train.y, ds.clean_labels, ds.noisy_mask, ds.val.y, ds.test.y)
    assert data.fingerprint(ds) == dict(
        name="anova-d2", noise=0.5, seed=7, n_train=40, n_val=5, n_test=15, options=SMALL_OPTIONS,
        input_shape=[4], num_classes=2, labels_sha256=labels, indices_sha256=ds.info["indices_sha256"])


def test_the_recorded_split_indices_are_the_rows_taken():
    # The ANOVA samples depend on the seed and the design only, so with n_val=0 the test split
    # is every test sample in order; each row of a split is found there by value (Gaussian rows
    # are distinct), which gives the indices independently of load's own bookkeeping.
    opts = dict(seed=2, dim=4, classes=2, n_per_class=20, n_test_per_class=10)
    full = data.load("anova-d2", n_val=0, **opts)
    ds = data.load("anova-d2", n_val=5, n_train=30, n_test=12, **opts)

    def rows(part, whole):
        hits = [np.flatnonzero((whole.numpy() == r.numpy()).all(1)) for r in part]
        assert all(len(h) == 1 for h in hits)
        return np.array([h[0] for h in hits])

    keep, val, test = rows(ds.train.x, full.train.x), rows(ds.val.x, full.test.x), rows(ds.test.x, full.test.x)
    assert (len(keep), len(val), len(test)) == (30, 5, 12) and not set(val) & set(test)
    assert ds.info["indices_sha256"] == _sha256_by_hand(keep, val, test)
    assert full.info["indices_sha256"] == _sha256_by_hand(np.arange(40), np.arange(0), np.arange(20))


def test_expected_fingerprint_of_the_defaults_written_out():
    # ANOVA defaults: 10 classes x 7,500 training samples; 10 x 1,500 test samples of which 2,000
    # go to validation
    assert data.expected_fingerprint("anova-d2") == dict(
        name="anova-d2", noise=0.0, seed=0, n_train=75000, n_val=2000, n_test=13000, options=DOC_DEFAULTS)
    assert data.expected_fingerprint("anova-d1", noise=0.25, seed=3, n_train=500, n_val=100) == dict(
        name="anova-d1", noise=0.25, seed=3, n_train=500, n_val=100, n_test=14900, options=DOC_DEFAULTS)
    assert data.expected_fingerprint("anova-d1", seed=3)["seed"] == 3  # no noise, still seeded
    # image data: the published sizes; the seed does not shape them without noise
    assert data.expected_fingerprint("fashion-mnist", seed=4) == dict(
        name="fashion-mnist", noise=0.0, seed=None, n_train=60000, n_val=2000, n_test=8000, options={})
    fp = data.expected_fingerprint("cifar10", noise=1, seed=4, n_train=np.int64(7), n_val=np.int64(10))
    assert fp == dict(name="cifar10", noise=1.0, seed=4, n_train=7, n_val=10, n_test=9990, options={})
    assert (type(fp["noise"]), type(fp["n_train"]), type(fp["n_val"]), type(fp["n_test"])) == (float, int, int, int)


def test_a_dataset_built_by_hand_has_plain_defaults():
    ds = data.load("anova-d2", noise=0.5, seed=1, **ANOVA_SMALL)
    assert repr(ds) == "Dataset('anova-d2', train=40, val=5, test=15, input_shape=(4,), classes=2, noise=0.5)"
    bare = data.Dataset("mine", ds.train, ds.val, ds.test, (0, 1, 2), ds.noisy_mask, ds.clean_labels)
    assert repr(bare) == "Dataset('mine', train=40, val=5, test=15, input_shape=(4,), classes=3, noise=0.0)"
    assert data.fingerprint(bare) == dict(
        name="mine", noise=None, seed=None, n_train=40, n_val=5, n_test=15, options={}, input_shape=[4],
        num_classes=3, labels_sha256=_sha256_by_hand(ds.train.y, ds.clean_labels, ds.noisy_mask, ds.val.y, ds.test.y),
        indices_sha256=None)
    x, y = ds.train  # a Split unpacks to (inputs, labels)
    assert x is ds.train.x and y is ds.train.y


def _meta_device(monkeypatch):
    """A stand-in for a GPU: resolve_device lets the meta device through (tensors move there)."""
    real = data.resolve_device
    monkeypatch.setattr(data, "resolve_device", lambda d=None: torch.device("meta") if str(d) == "meta" else real(d))


def _devices(ds):
    parts = (ds.train.x, ds.train.y, ds.val.x, ds.val.y, ds.test.x, ds.test.y, ds.noisy_mask, ds.clean_labels)
    return [t.device.type for t in parts]


def test_load_and_to_move_every_part_to_the_device_given(monkeypatch):
    _meta_device(monkeypatch)
    ref = data.load("anova-d2", noise=0.5, **ANOVA_SMALL)
    ds = data.load("anova-d2", noise=0.5, device="meta", **ANOVA_SMALL)
    assert _devices(ds) == ["meta"] * 8 and ds.info == ref.info  # hashed on the CPU before the move
    moved = ref.to("meta")
    assert _devices(moved) == ["meta"] * 8 and _devices(ref) == ["cpu"] * 8
    assert [t.device.type for t in ref.val.to("meta")] == ["meta", "meta"]


def test_load_refuses_a_device_this_machine_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as info:
        data.load("anova-d2", device="cuda", **ANOVA_SMALL)
    assert str(info.value) == "device 'cuda' is not available: this machine has no CUDA GPU; use 'cpu' or 'auto'"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_fingerprint_of_data_on_a_gpu_is_that_of_the_data():
    ds = data.load("anova-d2", noise=0.5, **ANOVA_SMALL)
    assert ds.to("cuda").fingerprint() == ds.fingerprint()


def test_anova_means_defaults_by_hand_and_messages():
    # D1 defaults delta 1, m -0.2: half of each row is m = -0.2, the other half m + delta = 0.8,
    # in float64 (float32 would give 0.800000011920929)
    d1 = data.anova_means("anova-d1", dim=6, classes=3)
    assert d1.dtype == torch.float64 and all(sorted(r) == [-0.2] * 3 + [0.8] * 3 for r in d1.tolist())
    # D2 default t 1: e_k - 1/K, also with as many classes as dimensions
    d2 = data.anova_means("anova-d2", dim=3, classes=3)
    assert torch.allclose(d2, torch.eye(3, dtype=torch.float64) - 1 / 3, rtol=0, atol=1e-15)
    for kind, kw, message in (
            ("anova-d1", dict(dim=5, classes=2), "anova-d1 needs an even dimension (subsets of size dim/2); got dim=5"),
            ("anova-d2", dict(dim=3, classes=4), "anova-d2 needs classes <= dim (simplex ETF); got classes=4, dim=3"),
            ("anova-d3", dict(dim=4, classes=2), "unknown ANOVA design 'anova-d3'; expected 'anova-d1' or 'anova-d2'")):
        with pytest.raises(ValueError) as info:
            data.anova_means(kind, **kw)
        assert str(info.value) == message


def test_the_anova_data_of_a_seed_are_pinned():
    # The fingerprint that keys the model cache records the labels and split indices but not the
    # ANOVA inputs (only name, seed and design), so the inputs a seed gives must never change: a
    # cached model would otherwise be served for other data. Pinned here: the D1 halves of the
    # default seed 0 (dim 6, 3 classes) and the unit Gaussian draws z = (x - mu_y) / sigma of the
    # training then the test samples (D2, dim 2, 2 classes, 4 + 2 samples each; pinned to 5 decimals,
    # x is float32: 1e-5).
    assert data.anova_means("anova-d1", dim=6, classes=3).tolist() == [
        [0.8, -0.2, 0.8, -0.2, 0.8, -0.2], [-0.2, -0.2, 0.8, 0.8, -0.2, 0.8], [-0.2, 0.8, 0.8, 0.8, -0.2, -0.2]]
    mu = torch.tensor([[0.5, -0.5], [-0.5, 0.5]], dtype=torch.float64)
    pinned = {0: ([[0.77187, -0.21831], [0.54644, -1.74497], [0.52389, -0.31097], [0.2353, 0.91363],
                   [-0.55743, -1.7758], [-1.03496, 0.58934], [-0.4667, -0.87868], [-0.74925, 0.07637]],
                  [[-0.85388, 2.25251], [-0.26949, -1.74157], [1.12544, 0.29382], [-0.58206, -0.3289]]),
              3: ([[-1.06246, 0.06066], [-0.46392, -1.36094], [1.32515, -1.04931], [1.18268, -1.10595],
                   [-0.10144, 0.01492], [-0.39269, -0.86498], [2.00228, 0.68052], [0.44405, 1.94066]],
                  [[1.04702, -1.01365], [-1.28227, 1.31219], [1.30354, 0.31396], [-1.15977, -0.40118]])}
    for seed, (z_train, z_test) in pinned.items():
        # 16 training draws: torch draws 16 or more normals in float32 by another algorithm than
        # in float64 (fewer are float64 draws rounded), so the draws' dtype is pinned too
        ds = data.load("anova-d2", seed=seed, dim=2, classes=2, n_per_class=4, n_test_per_class=2,
                       n_val=0, sigma=0.5)
        for split, z in ((ds.train, z_train), (ds.test, z_test)):
            assert split.y.tolist() == [k for k in (0, 1) for _ in range(len(z) // 2)]  # class by class
            got = (split.x.double() - mu[split.y]) / 0.5
            assert torch.allclose(got, torch.tensor(z, dtype=torch.float64), rtol=0, atol=1e-5)


def test_anova_snr_of_integer_and_float32_means():
    # pairwise distances of (0, 0), (3, 4), (0, 4): 5, 4, 3 -> mean 4; the means may be integers
    assert data.anova_snr(torch.tensor([[0, 0], [3, 4], [0, 4]])) == 4.0
    assert data.anova_snr([[0, 0], [3, 4]], sigma=2.0) == 2.5
    # float32 means are measured in float64: sqrt 2 to the last bit
    assert data.anova_snr(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float32)) == math.sqrt(2)


def test_candidate_roots_are_the_root_or_the_data_folder(tmp_path, monkeypatch):
    assert data._candidate_roots(str(tmp_path / "r")) == [tmp_path / "r"]
    monkeypatch.setenv("RMTLIB_DATA", str(tmp_path / "env"))
    assert data._candidate_roots(None) == [tmp_path / "env"]
    monkeypatch.delenv("RMTLIB_DATA")
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path / "project")
    assert data._candidate_roots(None) == [tmp_path / "project"]


def _idx(magic, shape, values):
    """An IDX file: big-endian magic and sizes, then the bytes."""
    return struct.pack(">" + "I" * (1 + len(shape)), magic, *shape) + bytes(values)


def test_fashion_mnist_from_idx_files_and_a_damaged_label_file_named(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SIZES, "fashion-mnist", (3, 2))  # a stand-in of 3 + 2 images
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)

    def put(test_labels):
        files = {"train-images-idx3-ubyte": _idx(2051, (3, 28, 28), [7] * (3 * 784)),
                 "train-labels-idx1-ubyte": _idx(2049, (3,), [0, 9, 4]),
                 "t10k-images-idx3-ubyte": _idx(2051, (2, 28, 28), list(range(256)) * 6 + [0] * 32),
                 "t10k-labels-idx1-ubyte": _idx(2049, (2,), test_labels)}
        for name, raw_bytes in files.items():
            (raw / name).write_bytes(raw_bytes)
        monkeypatch.setattr(data, "FASHION_MNIST_MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})

    put([3, 10])
    with pytest.raises(data.DataCorruptError) as info:
        data.load("fashion-mnist", root=tmp_path, n_val=1)
    assert str(info.value) == (f"{raw / 't10k-labels-idx1-ubyte'} holds 1 labels outside 0..9 "
                               "(e.g. 10 at position 1); the file is damaged")
    put([3, 5])
    ds = data.load("fashion-mnist", root=tmp_path, n_val=1)
    assert (len(ds.train), len(ds.val), len(ds.test), ds.input_shape) == (3, 1, 1, (1, 28, 28))
    assert ds.train.y.tolist() == [0, 9, 4] and sorted(ds.val.y.tolist() + ds.test.y.tolist()) == [3, 5]
    assert ds.classes == data.FASHION_MNIST_CLASSES
