"""Files you can trust (issue 18): caches that never run code or serve the wrong model,
checked data files, clear failures. One section per item of the issue."""
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rmtlib import _io, data, rerun, train
from rmtlib import porter_thomas as pt
from rmtlib.train import Config, trained

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(data="fashion-mnist", n_train=128, epochs=1, seed=3, n_val=9000)  # 1,000 test images
RAW = data.data_dir() / "FashionMNIST" / "raw"


def _weights(model):
    return [v.clone() for v in model.state_dict().values()]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# --------------------------------------------------------------------------- 1. no code in files
class _Evil:
    """Unpickling this creates the marker file: proof that loading ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _old_style_pickle(obj) -> bytes:
    """A torch pickle in the previous cache container, with a correct SHA-256 header."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    body = buf.getvalue()
    return b"RMTLIB1\n" + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def test_planted_pickle_in_the_model_cache_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = Config(**TINY).path()
    path.parent.mkdir(parents=True)
    path.write_bytes(_old_style_pickle({"config": {}, "payload": _Evil(marker)}))
    with pytest.warns(UserWarning, match="unusable"):
        model, hist = trained(TINY, progress=False)
    assert not marker.exists(), "loading the cache file executed code"
    assert len(hist) == 2  # retrained instead
    # the file now holds tensors and JSON only: safetensors can read it without rmtlib
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == set(model.state_dict())


def test_planted_pickle_in_the_ks_null_cache_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = pt._null_path(20, 200, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(_old_style_pickle({"key": (20, 200, 0), "null": _Evil(marker)}))
    pt._NULLS.clear()
    with pytest.warns(UserWarning, match="rebuilding"):
        null = pt.ks_null(20, samples=200, seed=0)
    assert not marker.exists(), "loading the KS null executed code"
    assert null.shape == (200,)


def test_a_cache_hit_unpickles_nothing(monkeypatch):
    model, _ = trained(TINY, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("a cache file was unpickled")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(train, "train", forbidden)
    again, _ = trained(TINY, progress=False)
    assert _same(_weights(model), _weights(again))


# --------------------------------------------------------------------------- 2. data fingerprint
def test_data_of_another_size_or_set_is_refused():
    cfg = Config(**TINY)
    with pytest.raises(ValueError, match=r"does not match the config.*n_train 256"):
        trained(cfg, data=data.load("fashion-mnist", n_train=256, seed=3, n_val=9000), progress=False)
    with pytest.raises(ValueError, match=r"does not match the config.*name 'anova-d2'"):
        trained(cfg, data=data.load("anova-d2", dim=20, n_per_class=10, n_test_per_class=1000,
                                    seed=3, n_val=9000), progress=False)
    with pytest.raises(ValueError, match="n_test"):  # a cut test set changes the History
        trained(cfg, data=data.load("fashion-mnist", n_train=128, seed=3, n_val=9000, n_test=50),
                progress=False)
    assert not cfg.path().exists()  # nothing was cached under the config's key


def test_the_seed_counts_where_it_shapes_the_data():
    # without label noise the images and labels are the same for every seed: shareable
    clean = data.load("fashion-mnist", n_train=128, seed=0, n_val=9000)
    Config(**dict(TINY, seed=5)).check_data(clean)
    # with label noise the seed draws the shuffled labels: refused
    noisy = data.load("fashion-mnist", noise=0.4, n_train=128, seed=0, n_val=9000)
    with pytest.raises(ValueError, match=r"seed 0 \(the config needs 5\)"):
        Config(**dict(TINY, seed=5, noise=0.4)).check_data(noisy)


def test_data_with_changed_labels_is_refused():
    cfg = Config(**TINY)
    ds = cfg.load_data()
    ds.train.y[0] = (ds.train.y[0] + 1) % 10
    with pytest.raises(ValueError, match="labels of data= were changed"):
        trained(cfg, data=ds, progress=False)
    hand_made = data.Dataset("fashion-mnist", ds.train, ds.val, ds.test, ds.classes, ds.noisy_mask,
                             ds.clean_labels, dict(noise=0.0, seed=3))
    with pytest.raises(ValueError, match="no record of how it was made"):
        trained(cfg, data=hand_made, progress=False)


def test_matching_data_is_used_and_its_fingerprint_stored():
    cfg = Config(**TINY)
    ds = cfg.load_data()
    model, _ = trained(cfg, data=ds, progress=False)
    _, meta = _io.load_checked(cfg.path())
    assert meta["data"] == ds.fingerprint()
    assert meta["data"]["n_train"] == 128 and meta["data"]["name"] == "fashion-mnist"
    again, _ = trained(cfg, progress=False)  # served without data=
    assert _same(_weights(model), _weights(again))


def test_a_cached_file_with_another_fingerprint_is_not_served():
    cfg = Config(**TINY)
    trained(cfg, progress=False)
    tensors, meta = _io.load_checked(cfg.path())
    meta["data"]["n_train"] = 2000  # as if trained on 2,000 images, checksum valid
    _io.save_checked(cfg.path(), tensors, meta)
    with pytest.warns(UserWarning, match="other data"):
        assert train.load_cached(cfg) is None
    # the labels' hash is compared when the caller has the data at hand
    meta["data"]["n_train"] = 128
    meta["data"]["labels_sha256"] = "0" * 64
    _io.save_checked(cfg.path(), tensors, meta)
    assert train.load_cached(cfg) is not None
    with pytest.warns(UserWarning, match="labels_sha256"):
        assert train.load_cached(cfg, data=cfg.load_data()) is None


# --------------------------------------------------------------------------- 3. KS null
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(chunk=-5), ValueError, "chunk"),
    (dict(chunk=0), ValueError, "chunk"),
    (dict(chunk=1.5), TypeError, "chunk"),
    (dict(length=20.5), TypeError, "length"),
    (dict(samples="300"), TypeError, "samples"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=0.5), TypeError, "seed"),
    (dict(cache="yes"), TypeError, "cache"),
])
def test_ks_null_refuses_bad_arguments_before_any_work(kwargs, error, match, monkeypatch):
    args = {**dict(length=20, samples=300, seed=0), **kwargs}

    def boom(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(pt, "_ks_distance", boom)
    with pytest.raises(error, match=match):
        pt.ks_null(**args)
    assert not pt._null_path(20, 300, 0).parent.exists() or not any(pt._null_path(20, 300, 0).parent.iterdir())


@pytest.mark.parametrize("damage", ["nan", "unsorted", "above_one", "negative", "short", "float32", "key"])
def test_an_implausible_null_file_is_rebuilt(damage):
    pt._NULLS.clear()
    good = pt.ks_null(20, samples=300, seed=1).copy()
    null, key = torch.from_numpy(good.copy()), [20, 300, 1]
    if damage == "nan":
        null[-1] = float("nan")
    elif damage == "unsorted":
        null = null.flip(0)
    elif damage == "above_one":
        null[-1] = 1.5
    elif damage == "negative":
        null[0] = -0.1
    elif damage == "short":
        null = null[:-1]
    elif damage == "float32":
        null = null.float()
    else:
        key = [20, 300, 2]
    _io.save_checked(pt._null_path(20, 300, 1), {"null": null}, {"kind": "ks_null", "key": key})
    pt._NULLS.clear()
    with pytest.warns(UserWarning, match="rebuilding"):
        again = pt.ks_null(20, samples=300, seed=1)
    assert np.array_equal(again, good)


def test_the_cached_null_is_read_only():
    pt._NULLS.clear()
    null = pt.ks_null(20, samples=300, seed=0)
    assert not null.flags.writeable
    with pytest.raises(ValueError):
        null[0] = 0.5
    pt._NULLS.clear()
    from_disk = pt.ks_null(20, samples=300, seed=0)
    assert not from_disk.flags.writeable
    assert pt.ks_null(20, samples=300, seed=0, cache=False).flags.writeable  # a private copy


def test_numpy_integer_arguments_share_the_cached_null():
    pt._NULLS.clear()
    a = pt.ks_null(np.int64(20), samples=np.int32(300), seed=torch.tensor(0))
    assert pt.ks_null(20, samples=300, seed=0) is a


# --------------------------------------------------------------------------- 4. data files
def _fashion_copy(tmp_path, replace=None):
    """A FashionMNIST/raw folder in tmp_path: links to the real files, `replace` {name: bytes}."""
    if not all((RAW / f).is_file() for f in data.FASHION_MNIST_FILES):
        pytest.skip("Fashion-MNIST is not in the data folder")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.FASHION_MNIST_FILES:
        if replace and name in replace:
            (raw / name).write_bytes(replace[name])
        else:
            (raw / name).symlink_to(RAW / name)
    return raw


def test_a_flipped_label_byte_is_caught_and_the_file_named(tmp_path):
    labels = bytearray((RAW / "train-labels-idx1-ubyte").read_bytes())
    labels[8 + 5] = 200  # label of image 5 becomes 200
    _fashion_copy(tmp_path, {"train-labels-idx1-ubyte": bytes(labels)})
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*MD5.*fetch fashion-mnist") as err:
        data.load("fashion-mnist", root=tmp_path, n_train=100)
    assert isinstance(err.value, data.DataCorruptError)


def test_a_truncated_image_file_is_caught_and_the_file_named(tmp_path):
    images = (RAW / "t10k-images-idx3-ubyte").read_bytes()
    _fashion_copy(tmp_path, {"t10k-images-idx3-ubyte": images[: len(images) // 2]})
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*(damaged|MD5).*fetch") as err:
        data.load("fashion-mnist", root=tmp_path, n_train=100)
    assert isinstance(err.value, data.DataCorruptError)


def test_labels_are_range_checked_even_without_a_checksum(tmp_path, monkeypatch):
    labels = bytearray((RAW / "train-labels-idx1-ubyte").read_bytes())
    labels[8 + 5] = 200
    _fashion_copy(tmp_path, {"train-labels-idx1-ubyte": bytes(labels)})
    fake = dict(data.FASHION_MNIST_MD5, **{"train-labels-idx1-ubyte": hashlib.md5(bytes(labels)).hexdigest()})
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", fake)
    with pytest.raises(data.DataCorruptError, match=r"1 labels outside 0..9 \(e.g. 200 at position 5\)"):
        data.load("fashion-mnist", root=tmp_path, n_train=100)


def test_a_damaged_debian_archive_is_named(tmp_path, monkeypatch):
    if not data.DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in data.FASHION_MNIST_FILES:
        (debian / f"{name}.gz").symlink_to(data.DEBIAN_FASHION_MNIST / f"{name}.gz")
    labels = bytearray(gzip.decompress((data.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[100] ^= 0x01
    (debian / "t10k-labels-idx1-ubyte.gz").unlink()
    (debian / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    with pytest.raises(data.DataCorruptError, match=r"t10k-labels-idx1-ubyte.gz.*reinstall"):
        data.fetch("fashion-mnist", root=tmp_path / "target")


def _cifar_standin(folder: Path):
    """Small CIFAR-10 batch files in the python pickle format torchvision reads."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in data.CIFAR10_MD5:
        if name == "batches.meta":
            obj = {"label_names": list(data.CIFAR10_CLASSES)}
        else:
            n = 30 if name == "test_batch" else 8
            obj = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                   "labels": rng.integers(0, 10, size=n).tolist()}
        (folder / name).write_bytes(pickle.dumps(obj))
    return {n: data._md5(folder / n) for n in data.CIFAR10_MD5}


def test_a_damaged_cifar_batch_is_named(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    folder = tmp_path / "cifar-10-batches-py"
    monkeypatch.setattr(data, "CIFAR10_MD5", _cifar_standin(folder))
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    assert len(data.load("cifar10", root=tmp_path, n_val=10).train) == 40
    raw = bytearray((folder / "data_batch_3").read_bytes())
    raw[-10] ^= 0xFF
    (folder / "data_batch_3").write_bytes(bytes(raw))
    with pytest.raises(data.DataCorruptError, match=r"data_batch_3.*fetch cifar10"):
        data.load("cifar10", root=tmp_path, n_val=10)


# --------------------------------------------------------------------------- 5. unwritable cache
def _no_tmp_left(folder: Path):
    return not list(folder.rglob(".*.tmp")) if folder.exists() else True


def test_a_read_only_cache_returns_the_model_with_a_warning(monkeypatch):
    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(_io.os, "replace", denied)
    with pytest.warns(UserWarning, match="could not be cached"):
        model, hist = trained(TINY, progress=False)
    assert len(hist) == 2 and isinstance(model, torch.nn.Module)
    assert not Config(**TINY).path().exists()
    assert _no_tmp_left(_io.cache_dir())


def test_a_full_disk_returns_the_model_with_a_warning(monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_io.os, "fsync", full)
    with pytest.warns(UserWarning, match="could not be cached.*No space left"):
        model, hist = trained(TINY, progress=False)
    assert len(hist) == 2
    assert _no_tmp_left(_io.cache_dir())
    pt._NULLS.clear()
    with pytest.warns(UserWarning, match="could not be cached"):
        assert pt.ks_null(20, samples=300).shape == (300,)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_chmod_read_only_cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    (folder / "models").mkdir(parents=True)
    folder.joinpath("models").chmod(0o555)
    monkeypatch.setenv("RMTLIB_CACHE", str(folder))
    try:
        with pytest.warns(UserWarning, match="could not be cached"):
            _, hist = trained(TINY, progress=False)
        assert len(hist) == 2
    finally:
        folder.joinpath("models").chmod(0o755)


def test_stale_temporary_files_are_removed_and_fresh_ones_kept():
    folder = _io.cache_dir("models")
    folder.mkdir(parents=True)
    stale = folder / ".dead-writer.safetensors.1234.tmp"
    fresh = folder / ".live-writer.safetensors.5678.tmp"
    stale.write_bytes(b"half a model")
    fresh.write_bytes(b"being written")
    old = time.time() - 2 * 3600  # a writer killed two hours ago
    os.utime(stale, (old, old))
    trained(TINY, progress=False)
    assert not stale.exists() and fresh.exists()
    assert 60 <= _io.STALE_TMP_AGE <= 3600  # no running writer takes an hour to write a file


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(umask, mode):
    previous = os.umask(umask)
    try:
        target = _io.cache_dir("x") / "f.bin"
        _io.atomic_write_bytes(target, b"123")
        pt._NULLS.clear()
        pt.ks_null(20, samples=300, seed=5)
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == mode
    assert pt._null_path(20, 300, 5).stat().st_mode & 0o777 == mode


# --------------------------------------------------------------------------- 6. two processes
_CHILD = r"""
import hashlib, sys, time
from pathlib import Path
import rmtlib.train as T

out, tag = Path(sys.argv[1]), sys.argv[2]
real = T.train

def slow_train(*args, **kwargs):
    (out / f"trained-{tag}").write_text("1")
    time.sleep(2.0)  # long enough for the other process to ask for the same model
    return real(*args, **kwargs)

T.train = slow_train
(out / f"ready-{tag}").write_text("1")
deadline = time.time() + 120
while not all((out / f"ready-{t}").exists() for t in ("a", "b")):
    if time.time() > deadline:
        sys.exit("the other process never started")
    time.sleep(0.01)
model, hist = T.trained(dict(data="fashion-mnist", n_train=128, epochs=1, seed=5, n_val=9000),
                        progress=False)
digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.state_dict().values()))
(out / f"weights-{tag}").write_text(digest.hexdigest() + " " + str(hist.test_acc))
"""


def test_two_processes_train_a_config_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, RMTLIB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT),
               RMTLIB_DATA=str(data.data_dir()), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(out), tag], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
    assert len(list(out.glob("trained-*"))) == 1, "both processes trained the same config"
    a, b = ((out / f"weights-{t}").read_text() for t in ("a", "b"))
    assert a == b  # the waiting process loaded the first one's model
    assert "waiting for another process" in results[0][1] + results[1][1]


# --------------------------------------------------------------------------- 7. provenance
def test_provenance_is_recorded_and_served_with_the_model():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, hist = trained(TINY, device="cpu", progress=False)
    finally:
        torch.set_num_threads(previous)
    import rmtlib

    prov = hist.provenance
    assert prov["torch"] == torch.__version__ and prov["rmtlib"] == rmtlib.__version__
    assert prov["threads"] == 1 and prov["device"] == "cpu"
    _, again = trained(TINY, progress=False)  # a hit, in a process now using more threads
    assert again.provenance == prov
    _, meta = _io.load_checked(Config(**TINY).path())
    assert meta["provenance"]["threads"] == 1


def test_the_training_time_is_recorded_once_per_run():
    # trained(): one network, one run, its wall time measured around the training
    _, hist = trained(TINY, device="cpu", progress=False)
    one = hist.provenance
    assert one["train_wall_s"] > 0 and one["trained_together"] == 1 and len(one["training_run"]) == 12
    # trained_many(): the two misses are trained as one ensemble and share its run and time;
    # the cached TINY network keeps its own
    from rmtlib.ensemble import trained_many

    out = trained_many([TINY, dict(TINY, seed=4), dict(TINY, seed=5)], device="cpu", progress=False)
    (_, h0), (_, h1), (_, h2) = out
    assert h0.provenance == one
    assert h1.provenance["training_run"] == h2.provenance["training_run"] != one["training_run"]
    assert h1.provenance["trained_together"] == h2.provenance["trained_together"] == 2
    assert h1.provenance["train_wall_s"] == h2.provenance["train_wall_s"] > 0


def test_save_cached_fills_in_missing_provenance():
    cfg = Config(**dict(TINY, epochs=0))
    ds = cfg.load_data()
    model = cfg.build_model(ds.input_shape, ds.num_classes)
    hist = train.History()
    train.save_cached(cfg, model, hist, ds)
    _, loaded = train.load_cached(cfg)
    assert loaded.provenance["torch"] == torch.__version__


# --------------------------------------------------------------------------- 8. arguments
@pytest.mark.parametrize("field, value, error, match", [
    ("seed", 1.5, TypeError, "seed must be an integer"),
    ("seed", "0", TypeError, "seed must be an integer"),
    ("seed", -1, ValueError, "seed"),
    ("seed", True, TypeError, "seed"),
    ("n_train", 100.0, TypeError, "n_train must be an integer"),
    ("n_train", 0, ValueError, "n_train"),
    ("epochs", 2.0, TypeError, "epochs must be an integer"),
    ("n_val", -1, ValueError, "n_val"),
    ("batch_size", 0, ValueError, "batch_size"),
    ("noise", float("nan"), ValueError, "noise must be finite"),
    ("noise", 1.2, ValueError, r"noise must lie in \[0, 1\]"),
    ("noise", "0.4", TypeError, "noise must be a real number"),
    ("data", "mnist", ValueError, "fashion-mnist, cifar10"),
    ("schedule", "adam", ValueError, "regular, overfitting, plain"),
    ("model_options", {"widht": 3}, ValueError, r"not an option of mlp1024; valid: \['init'\]"),
    ("model_options", {"init": object()}, TypeError, r"model_options\['init'\]"),
])
def test_config_fields_are_checked_up_front(field, value, error, match):
    with pytest.raises(error, match=match):
        Config(**{**TINY, field: value})


def test_numpy_and_torch_scalars_are_normalised():
    plain = Config(**dict(TINY, seed=3, noise=0.25))
    for seed, noise in [(np.int64(3), np.float32(0.25)), (torch.tensor(3), torch.tensor(0.25)),
                        (np.int8(3), np.float64(0.25))]:
        cfg = Config(**dict(TINY, seed=seed, noise=noise))
        assert type(cfg.seed) is int and type(cfg.noise) is float
        assert cfg == plain and cfg.key() == plain.key() and cfg.path() == plain.path()
    assert "-s3-" in plain.path().name


def test_data_load_arguments_are_checked_up_front():
    with pytest.raises(TypeError, match="n_train must be an integer"):
        data.load("fashion-mnist", n_train=100.0)
    with pytest.raises(TypeError, match="seed must be an integer"):
        data.load("fashion-mnist", seed=1.5)
    with pytest.raises(ValueError, match="sigma must be finite"):
        data.load("anova-d2", sigma=float("nan"))
    with pytest.raises(ValueError, match=r"sigma must lie in \(0"):
        data.load("anova-d2", sigma=0.0)
    with pytest.raises(TypeError, match=r"unexpected options \['sgima'\].*valid"):
        data.load("anova-d2", sgima=2.0)
    with pytest.raises(ValueError, match="even dimension"):
        data.load("anova-d1", dim=7)
    with pytest.raises(TypeError, match="root must be a folder path"):
        data.load("fashion-mnist", root=3)
    ds = data.load("anova-d2", noise=np.float32(0.5), seed=np.int64(2), dim=10, classes=3,
                   n_per_class=20, n_test_per_class=40, n_val=np.int32(10), sigma=np.float32(2.0))
    assert ds.info["noise"] == 0.5 and type(ds.info["seed"]) is int and ds.info["sigma"] == 2.0
    assert ds.noisy_mask.sum() == 30  # round(0.5 * 60)


# --------------------------------------------------------------------------- 9. rerun
def _fake_book(root: Path, failing_line="y = 1 / (x - 5)"):
    (root / "notebooks").mkdir(parents=True)
    (root / "params").mkdir()
    # the division fails only if the profile's value replaced the default x = 1
    (root / "params" / "smoke.yaml").write_text("07_fails:\n  x: 5\n")

    def code(src, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": src,
                "outputs": [], "execution_count": None}

    nb = {"cells": [code("x = 1", ["parameters"]),
                    {"cell_type": "markdown", "metadata": {}, "source": "# A chapter"},
                    code("z = x + 1"),
                    code(f"# the failing cell\n{failing_line}\nprint(y)")],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
    (root / "notebooks" / "07_fails.ipynb").write_text(json.dumps(nb))


def test_a_malformed_set_value_is_a_one_line_usage_error(capsys):
    code = rerun.main(["--profile", "smoke", "--notebooks", "00", "--set", "seeds=[0, 1"])
    err = capsys.readouterr().err
    assert code == rerun.EXIT_USAGE == 2
    assert err.count("\n") == 1 and err.startswith("error: --set 'seeds=[0, 1'") and "Traceback" not in err
    assert rerun.main(["--set", "=3"]) == 2


@pytest.mark.parametrize("engine", ["plain", "papermill"])
def test_a_failing_chapter_names_the_cell_and_the_exception(engine, tmp_path, monkeypatch, capsys):
    book = tmp_path / "book"
    _fake_book(book)
    monkeypatch.setattr(rerun, "project_root", lambda: book)
    code = rerun.main(["--profile", "smoke", "--engine", engine, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == rerun.EXIT_NOTEBOOK_FAILED == 3
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "chapter 07_fails failed in cell 3 (`y = 1 / (x - 5)`)" in err
    assert "ZeroDivisionError" in err and "division by zero" in err


def _plotting_book(root: Path):
    """A one-chapter book whose only output is a figure shown with plt.show()."""
    (root / "notebooks").mkdir(parents=True)
    (root / "params").mkdir()
    (root / "params" / "smoke.yaml").write_text("07_plots:\n  n: 3\n")
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "n = 2"},
             {"cell_type": "code", "metadata": {},
              "source": "import matplotlib.pyplot as plt\nplt.plot(range(n))\nplt.show()"}]
    for i, cell in enumerate(cells):
        cell.update(id=f"cell-{i}", outputs=[], execution_count=None)
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                       "language_info": {"name": "python"}}}
    (root / "notebooks" / "07_plots.ipynb").write_text(json.dumps(nb))


@pytest.mark.parametrize("engine", ["plain", "papermill"])
def test_a_rerun_under_mplbackend_agg_keeps_its_figures(engine, tmp_path, monkeypatch):
    # MPLBACKEND=Agg is what the Makefile, the tests and headless shells set; leaked into a
    # kernel it makes plt.show() draw nothing, and the executed book had no figures at all
    book = tmp_path / "book"
    _plotting_book(book)
    monkeypatch.setattr(rerun, "project_root", lambda: book)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    [out] = rerun.run("smoke", engine=engine, out=tmp_path / "out", progress=False)
    if engine == "papermill":
        nb = json.loads(out.read_text())
        images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(images) == 1, "the plot cell shows no image: the kernel drew with a non-inline backend"
    else:
        assert (out.parent / "07_plots_fig1.png").stat().st_size > 0
    assert os.environ["MPLBACKEND"] == "Agg"  # the caller's setting is given back


# --------------------------------------------------------------------------- 10. offline fetch
@pytest.fixture
def no_network(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


def test_fetch_cifar10_offline_says_how_to_get_it_by_hand(tmp_path, no_network, capsys):
    code = data._main(["fetch", "cifar10", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "Downloading CIFAR-10 failed" in err and "no network in this test" in err
    assert f"copy it into {tmp_path}/" in err and "cifar-10-python.tar.gz" in err
    assert data.CIFAR10_ARCHIVE_MD5 in err


def test_fetch_fashion_mnist_offline_says_how_to_get_it_by_hand(tmp_path, monkeypatch, no_network, capsys):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    code = data._main(["fetch", "fashion-mnist", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "Downloading Fashion-MNIST failed" in err and "apt-get install dataset-fashion-mnist" in err
    assert str(tmp_path / "FashionMNIST" / "raw") in err and "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in err


def test_a_hand_placed_cifar_archive_is_checked_and_unpacked_offline(tmp_path, monkeypatch, no_network):
    import torchvision.datasets.cifar as tv_cifar

    md5 = _cifar_standin(tmp_path / "build" / "cifar-10-batches-py")
    archive = tmp_path / "data" / data.CIFAR10_ARCHIVE
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(data, "CIFAR10_MD5", md5)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    bad = bytearray(archive.read_bytes())
    good = bytes(bad)
    bad[len(bad) // 2] ^= 0xFF
    archive.write_bytes(bytes(bad))
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", hashlib.md5(good).hexdigest())
    with pytest.raises(data.DataCorruptError, match="cifar-10-python.tar.gz"):
        data.fetch("cifar10", root=archive.parent)
    archive.write_bytes(good)
    assert data.fetch("cifar10", root=archive.parent) == archive.parent
    assert len(data.load("cifar10", root=archive.parent, n_val=10).train) == 40


def test_json_value_tables_refuse_damage_and_foreign_keys(tmp_path):
    from rmtlib._io import load_values, save_values

    path = tmp_path / "null.json"
    save_values(path, (64, 128, 3, 0), "s_n", [0.1, 0.2, 0.3])
    assert load_values(path, (64, 128, 3, 0), "s_n", 3).tolist() == [0.1, 0.2, 0.3]
    assert load_values(path, (64, 128, 3, 1), "s_n", 3) is None  # another seed's table
    assert load_values(path, (64, 128, 3, 0), "s_n", 4) is None  # wrong length
    assert load_values(path, (64, 128, 3, 0), "distances", 3) is None  # other field
    path.write_text(path.read_text()[:-5])  # truncated
    assert load_values(path, (64, 128, 3, 0), "s_n", 3) is None
    path.write_text('{"key": [64, 128, 3, 0], "s_n": [0.1, NaN, 0.3]}')
    assert load_values(path, (64, 128, 3, 0), "s_n", 3) is None
    assert load_values(tmp_path / "missing.json", (1,), "s_n", 1) is None
