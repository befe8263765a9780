import gzip
import pickle
from itertools import combinations

import numpy as np
import pytest
import torch

from rmtlib import data


@pytest.mark.parametrize("noise", [0.0, 0.1, 0.37, 0.8, 1.0])
def test_noise_fraction_is_exact_and_balanced(noise):
    labels = torch.arange(10).repeat(123)
    new, mask = data.shuffle_labels(labels, noise, seed=3)
    assert mask.sum().item() == round(noise * len(labels))
    assert torch.equal(new[~mask], labels[~mask])  # untouched outside the mask
    assert torch.equal(torch.bincount(new, minlength=10), torch.bincount(labels, minlength=10))


def test_noise_is_seeded():
    labels = torch.arange(10).repeat(100)
    a, ma = data.shuffle_labels(labels, 0.5, seed=1)
    b, mb = data.shuffle_labels(labels, 0.5, seed=1)
    c, mc = data.shuffle_labels(labels, 0.5, seed=2)
    assert torch.equal(a, b) and torch.equal(ma, mb)
    assert not torch.equal(ma, mc)


def test_shuffled_labels_are_wrong_at_the_rate_of_chance():
    # A shuffled label is still right with probability 1/K (balanced classes);
    # over 10,000 shuffled labels the binomial std is 0.003, the tolerance 5 std.
    labels = torch.arange(10).repeat(1000)
    new, mask = data.shuffle_labels(labels, 1.0, seed=0)
    wrong = (new != labels).float().mean().item()
    assert abs(wrong - 0.9) < 0.015


def test_fashion_mnist_splits_and_clean_test_labels():
    clean = data.load("fashion-mnist", noise=0.0, n_train=1000)
    noisy = data.load("fashion-mnist", noise=0.6, n_train=1000, seed=5)
    assert (len(clean.train), len(clean.val), len(clean.test)) == (1000, 2000, 8000)
    assert clean.input_shape == (1, 28, 28) and clean.num_classes == 10
    # the test and validation labels never see the noise, and are disjoint samples
    assert torch.equal(clean.test.y, noisy.test.y) and torch.equal(clean.val.y, noisy.val.y)
    assert torch.equal(clean.test.x, noisy.test.x)
    # the noise acts on the same training images, the clean labels are kept
    assert torch.equal(noisy.clean_labels, clean.train.y)
    assert noisy.noisy_mask.sum().item() == 600
    assert torch.equal(noisy.train.y[~noisy.noisy_mask], clean.train.y[~noisy.noisy_mask])


def test_images_are_standardized_each():
    ds = data.load("fashion-mnist", n_train=200, n_test=100)
    flat = ds.train.x.reshape(len(ds.train), -1)
    assert flat.mean(1).abs().max() < 1e-4
    assert (flat.std(1, unbiased=False) - 1).abs().max() < 1e-4
    const = data.standardize_images(torch.full((2, 1, 4, 4), 7.0))
    assert torch.all(const == 0)


def test_bad_input_is_refused_with_the_valid_choices():
    with pytest.raises(ValueError, match="fashion-mnist, cifar10"):
        data.load("mnist")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.load("fashion-mnist", noise=1.5)
    with pytest.raises(ValueError, match="larger than the 60000"):
        data.load("fashion-mnist", n_train=60001)
    with pytest.raises(ValueError, match="n_val"):
        data.load("fashion-mnist", n_val=10000)
    with pytest.raises(TypeError, match="anova"):
        data.load("fashion-mnist", delta=1.0)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(data.DataNotFoundError, match="make data"):
        data.load("fashion-mnist", root=tmp_path / "empty")
    with pytest.raises(data.DataNotFoundError, match="fetch cifar10"):
        data.load("cifar10", root=tmp_path / "empty")


def test_debian_files_are_unpacked_exactly(tmp_path):
    if not data.DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    ds = data.load("fashion-mnist", root=tmp_path, n_train=10, n_test=10)
    name = "t10k-labels-idx1-ubyte"
    unpacked = (tmp_path / "FashionMNIST" / "raw" / name).read_bytes()
    assert unpacked == gzip.open(data.DEBIAN_FASHION_MNIST / f"{name}.gz").read()
    assert len(ds.train) == 10


def _write_cifar_standin(root, n_train=50, n_test=30):
    """A small CIFAR-10 folder in the python pickle format torchvision reads."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train // 5
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).tolist()
        arrays[name] = (x, y)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x, "labels": y}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES)}, fh)
    return arrays


def test_cifar10_loader_on_a_standin(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    arrays = _write_cifar_standin(tmp_path)
    # the stand-in cannot match the real files' MD5 sums: give rmtlib and torchvision its own
    folder = tmp_path / "cifar-10-batches-py"
    monkeypatch.setattr(data, "CIFAR10_MD5", {n: data._md5(folder / n) for n in data.CIFAR10_MD5})
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    ds = data.load("cifar10", root=tmp_path, n_val=10, noise=0.2)
    assert ds.input_shape == (3, 32, 32) and len(ds.train) == 50
    assert (len(ds.val), len(ds.test)) == (10, 20)
    # pixel layout: channel-major rows of 3072 bytes -> (C, H, W), then standardized
    x0, y0 = arrays["data_batch_1"]
    img = torch.tensor(x0[0], dtype=torch.float32).reshape(3, 32, 32)
    expected = (img - img.mean()) / img.std(unbiased=False)
    assert torch.allclose(ds.train.x[0], expected, atol=1e-5)
    assert ds.clean_labels[0].item() == y0[0]
    assert ds.noisy_mask.sum().item() == 10


def test_anova_snr_formula():
    # D2: ||mu_k - mu_k'|| = t * sqrt(2) for every pair, so SNR = sqrt(2) t / sigma.
    means = data.anova_means("anova-d2", dim=20, classes=5, t=3.0)
    assert data.anova_snr(means, sigma=1.0) == pytest.approx(3.0 * np.sqrt(2))
    assert data.anova_snr(means, sigma=2.0) == pytest.approx(1.5 * np.sqrt(2))
    # D1: two classes differ by delta on the symmetric difference of their subsets.
    m1 = data.anova_means("anova-d1", dim=40, classes=4, delta=0.5, seed=1).numpy()
    expected = np.mean([np.linalg.norm(m1[a] - m1[b]) for a, b in combinations(range(4), 2)])
    assert data.anova_snr(m1) == pytest.approx(expected)
    subsets = [set(np.flatnonzero(np.isclose(row, -0.2))) for row in m1]
    assert all(len(s) == 20 for s in subsets)
    a, b = subsets[0], subsets[1]
    assert np.linalg.norm(m1[0] - m1[1]) == pytest.approx(0.5 * np.sqrt(len(a ^ b)))


def test_anova_samples_follow_the_model():
    ds = data.load("anova-d2", t=2.0, dim=30, classes=3, n_per_class=4000, n_test_per_class=1000,
                   n_val=300, seed=4)
    assert ds.input_shape == (30,) and len(ds.train) == 12000
    means = data.anova_means("anova-d2", dim=30, classes=3, t=2.0)
    for k in range(3):
        sample = ds.train.x[ds.train.y == k].double()
        # each coordinate's sample mean has std 1/sqrt(4000) = 0.016; 6 std allowed
        assert (sample.mean(0) - means[k]).abs().max() < 0.1
        assert abs(sample.var(0).mean().item() - 1.0) < 0.03
    assert ds.info["snr"] == pytest.approx(2.0 * np.sqrt(2))
    with pytest.raises(ValueError, match="classes <= dim"):
        data.load("anova-d2", dim=3, classes=5)
