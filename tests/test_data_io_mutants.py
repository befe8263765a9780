"""rmtlib.data's file side: downloads, fetch, checksums, the CIFAR-10 / Fashion-MNIST readers,
`image_folder` and the command line (issue 17, mutation testing of data, group B).

Written against the survivors of data's whole-module mutation run (DATA_B.md). Every
expectation comes from outside the code under test: bytes and archives built here and read
back, MD5s computed here with hashlib, error messages written out whole from the documented
wording (each naming the file or folder and how to get the data again), pixel values of a
256 x 256 image centre-cropped and normalised by hand, label orders from `torch.randperm` with
the documented seed, argparse's documented exit status 2 for a bad command line. Nothing here
needs the network or touches the real data folders: downloads are replaced by stand-ins (at
torchvision's URL-retrieval level, or `data._download` itself), Debian's folder and
$RMTLIB_DATA are pointed into tmp_path.
"""
import gzip
import hashlib
import io
import os
import pickle
import re
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from rmtlib import data

GZ_NAMES = [f"{n}.gz" for n in data.FASHION_MNIST_FILES]


def _md5(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Debian's folder, $RMTLIB_DATA and the project's data folder, all empty folders in tmp_path."""
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("RMTLIB_DATA", str(tmp_path / "env"))
    monkeypatch.setattr(data, "data_dir", lambda: tmp_path / "project")
    monkeypatch.chdir(tmp_path)  # a mutant writing to a relative path writes here
    return tmp_path


# --------------------------------------------------------------------------- _download
def test_download_hands_torchvision_the_url_folder_name_and_checksum(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    payload = b"the published bytes"
    url = "https://example.invalid/files/published.tar.gz"
    served = []

    def urlretrieve(u, fpath, chunk_size=None):  # the network, for this one URL only
        served.append(u)
        if u != url:
            raise urllib.error.URLError(f"unknown {u}")
        Path(fpath).write_bytes(payload)

    monkeypatch.setattr(tvu, "_urlretrieve", urlretrieve)
    monkeypatch.setattr(tvu, "_get_redirect_url", lambda u, max_hops=3: u)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "a" / "b"
    data._download(url, folder, "saved.bin", _md5(payload))
    # saved under the name given (not the URL's), in the folder given, nowhere else
    assert [p.name for p in folder.iterdir()] == ["saved.bin"]
    assert (folder / "saved.bin").read_bytes() == payload
    assert sorted(os.listdir(tmp_path)) == ["a"] and served == [url]
    # the checksum is passed on: a download with another MD5 is refused by torchvision
    with pytest.raises(RuntimeError, match="File not found or corrupted"):
        data._download(url, tmp_path / "c", "saved.bin", "0" * 32)


# --------------------------------------------------------------------------- checksums
def test_verify_file_hashes_a_file_once_and_refuses_a_damaged_one(tmp_path, monkeypatch):
    good = tmp_path / "good.bin"
    good.write_bytes(b"published contents")
    want = _md5(b"published contents")
    calls = []
    real = data._md5
    monkeypatch.setattr(data, "_md5", lambda p: calls.append(Path(p).name) or real(p))
    assert data.verify_file(good, want, "how") == good
    assert data.verify_file(str(good), want, "how") == good  # "hashed once per process"
    assert calls == ["good.bin"]
    # another file expected to have the same MD5 is hashed, not taken from the first one's check
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"damaged  contents!")  # same size as the good one
    with pytest.raises(data.DataCorruptError) as err:
        data.verify_file(bad, want, "Get it again.")
    assert str(err.value) == (f"data file {bad} is damaged or not the published file: its MD5 is "
                              f"{_md5(b'damaged  contents!')}, expected {want} (18 bytes). Get it again.")
    # the check is tied to the path: the verified file moved elsewhere and damaged in place,
    # with its size, inode and modification time kept, is hashed again and refused
    st = good.stat()
    moved = tmp_path / "moved.bin"
    good.rename(moved)
    with open(moved, "r+b") as fh:
        fh.write(b"PUBLISHED")
    os.utime(moved, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (moved.stat().st_ino, moved.stat().st_size, moved.stat().st_mtime_ns) == \
        (st.st_ino, st.st_size, st.st_mtime_ns)
    with pytest.raises(data.DataCorruptError, match="moved.bin is damaged"):
        data.verify_file(moved, want, "how")


def test_checksums_are_not_a_security_use(tmp_path, monkeypatch):
    # On a FIPS-mode OpenSSL, MD5 is refused unless declared "not for security": the data
    # checks must say so (simulated here: md5 raises unless usedforsecurity is false).
    payload = b"payload"
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(payload))
    (tmp_path / "f").write_bytes(payload)
    real = hashlib.md5

    def fips_md5(*args, usedforsecurity=True):
        if usedforsecurity:
            raise ValueError("[digital envelope routines] unsupported (FIPS)")
        return real(*args, usedforsecurity=False)

    want = _md5(payload)
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", {"train-labels-idx1-ubyte": want})
    monkeypatch.setattr(hashlib, "md5", fips_md5)
    assert data._md5(tmp_path / "f") == want
    data._unpack_fashion_gz(gz, tmp_path / "out" / "train-labels-idx1-ubyte", "how")
    assert (tmp_path / "out" / "train-labels-idx1-ubyte").read_bytes() == payload


# --------------------------------------------------------------------------- Fashion-MNIST files
def test_fashion_how_says_where_to_fetch_again():
    path = Path("/d/FashionMNIST/raw/train-images-idx3-ubyte")
    assert data._fashion_how(path) == (
        "Delete it and run `python -m rmtlib.data fetch fashion-mnist --root /d` to get it again "
        "(from Debian's package dataset-fashion-mnist when installed, else by download).")


def _idx(magic, shape, body):
    head = b"".join(int(v).to_bytes(4, "big") for v in (magic, *shape))
    return head + bytes(body)


def test_read_idx_checks_the_header_and_the_length(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    path = raw / "t10k-labels-idx1-ubyte"
    how = ("Delete it and run `python -m rmtlib.data fetch fashion-mnist --root " + str(tmp_path)
           + "` to get it again (from Debian's package dataset-fashion-mnist when installed, else by download).")
    path.write_bytes(_idx(2049, (3,), [7, 0, 9]))
    assert data._read_idx(path, 2049, (3,)).tolist() == [7, 0, 9]
    # a header of 2 x 4 big-endian bytes (magic, count): 258 is 0x00000102, not 0x02010000
    path.write_bytes(_idx(2049, (258,), [i % 256 for i in range(2, 260)]))
    assert data._read_idx(path, 2049, (258,))[-1].item() == 3  # 259 mod 256
    # the right length with the images' magic number: refused, naming both sizes
    path.write_bytes(_idx(2051, (3,), [7, 0, 9]))
    with pytest.raises(data.DataCorruptError) as err:
        data._read_idx(path, 2049, (3,))
    assert str(err.value) == f"data file {path} is not an IDX file of shape (3,) (11 bytes, expected 11). {how}"
    # the right header, one byte missing
    path.write_bytes(_idx(2049, (3,), [7, 0]))
    with pytest.raises(data.DataCorruptError) as err:
        data._read_idx(path, 2049, (3,))
    assert str(err.value) == f"data file {path} is not an IDX file of shape (3,) (10 bytes, expected 11). {how}"


def _fashion_contents():
    return {name: bytes([i + 1]) * (50 + i) for i, name in enumerate(data.FASHION_MNIST_FILES)}


def _fashion_md5s(monkeypatch, contents):
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", {n: _md5(c) for n, c in contents.items()})


def test_fashion_mnist_raw_finds_an_unpacked_root_among_the_candidates(places, monkeypatch):
    contents = _fashion_contents()
    for root in (places / "given", places / "project"):
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name, c in contents.items():
            (raw / name).write_bytes(c)
    assert data._fashion_mnist_raw(places / "given") == places / "given"
    # no root given: $RMTLIB_DATA (empty here) first, then the project's data folder
    assert data._fashion_mnist_raw(None) == places / "project"
    assert not (places / "env").exists()


def test_missing_fashion_mnist_names_every_place_looked_in(places):
    want = (f"Fashion-MNIST was not found in {places / 'env'}, {places / 'project'} nor in "
            f"{places / 'nowhere'}. Get it with `make data` (Debian: `apt-get install "
            "dataset-fashion-mnist`; with internet: `python -m rmtlib.data fetch fashion-mnist`), "
            "or pass root= a folder that holds FashionMNIST/raw/.")
    with pytest.raises(data.DataNotFoundError) as err:
        data._fashion_mnist_raw(None)
    assert str(err.value) == want


def test_debian_files_are_checked_when_unpacked(places, monkeypatch):
    contents = _fashion_contents()
    deb = places / "deb"
    deb.mkdir()
    for name, c in contents.items():
        (deb / f"{name}.gz").write_bytes(gzip.compress(c))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", deb)
    md5 = {n: _md5(c) for n, c in contents.items()}
    md5["train-labels-idx1-ubyte"] = "0" * 32
    monkeypatch.setattr(data, "FASHION_MNIST_MD5", md5)
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("fashion-mnist", root=places / "t")
    assert str(err.value) == (
        f"data file {deb / 'train-labels-idx1-ubyte.gz'} unpacks to contents with MD5 "
        f"{_md5(contents['train-labels-idx1-ubyte'])}, expected {'0' * 32}. "
        "Reinstall it: `apt-get install --reinstall dataset-fashion-mnist`.")
    _fashion_md5s(monkeypatch, contents)
    assert data.fetch("fashion-mnist", root=places / "t") == places / "t"
    for name, c in contents.items():
        assert (places / "t" / "FashionMNIST" / "raw" / name).read_bytes() == c


def test_fetch_fashion_mnist_refuses_an_unreadable_gz_saying_how(places, monkeypatch):
    contents = _fashion_contents()
    _fashion_md5s(monkeypatch, contents)
    raw = places / "r" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    gz = raw / "train-images-idx3-ubyte.gz"
    gz.write_bytes(b"this is not gzip")
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("fashion-mnist", root=places / "r")
    assert re.fullmatch(rf"data file {re.escape(str(gz))} is not a readable gzip file \(.+\)\. "
                        rf"Delete {re.escape(str(gz))} and run this command again\.", str(err.value))
    # the same "how" when the contents are not the published ones
    gz.write_bytes(gzip.compress(b"other"))
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("fashion-mnist", root=places / "r")
    assert str(err.value).endswith(f"expected {_md5(contents['train-images-idx3-ubyte'])}. "
                                   f"Delete {gz} and run this command again.")


def test_fetch_fashion_mnist_unpacks_every_file_still_missing(places, monkeypatch):
    contents = _fashion_contents()
    _fashion_md5s(monkeypatch, contents)
    raw = places / "r" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    first = data.FASHION_MNIST_FILES[0]
    (raw / first).write_bytes(contents[first])  # unpacked already: skipped, the others still done
    for name in data.FASHION_MNIST_FILES[1:]:
        (raw / f"{name}.gz").write_bytes(gzip.compress(contents[name]))
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("nothing needs a download"))
    assert data.fetch("fashion-mnist", root=places / "r") == places / "r"
    for name, c in contents.items():
        assert (raw / name).read_bytes() == c


def test_fetch_fashion_mnist_downloads_each_gz_from_the_mirror(places, monkeypatch):
    from torchvision.datasets import FashionMNIST

    contents = _fashion_contents()
    _fashion_md5s(monkeypatch, contents)
    published = {f"{n}.gz": gzip.compress(c) for n, c in contents.items()}
    monkeypatch.setattr(data, "FASHION_MNIST_GZ_MD5", {n: _md5(b) for n, b in published.items()})
    monkeypatch.setattr(FashionMNIST, "mirrors", ["https://m1.invalid/fm/", "https://m2.invalid/fm/"])
    calls = []

    def download(url, folder, filename, md5):  # what download_url does when m1 answers
        calls.append((url, folder, filename, md5))
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / filename).write_bytes(published[filename])

    monkeypatch.setattr(data, "_download", download)
    target = places / "t"
    raw = target / "FashionMNIST" / "raw"
    assert data.fetch("fashion-mnist", root=target) == target
    assert calls == [(f"https://m1.invalid/fm/{g}", raw, g, _md5(published[g])) for g in GZ_NAMES]
    for name, c in contents.items():
        assert (raw / name).read_bytes() == c


def test_fetch_fashion_mnist_offline_says_how_to_install_by_hand(places, monkeypatch):
    from torchvision.datasets import FashionMNIST

    monkeypatch.setattr(FashionMNIST, "mirrors", ["https://m1.invalid/fm/", "https://m2.invalid/fm/"])

    def offline(url, folder, filename, md5):
        raise OSError(f"no network for {url}")

    monkeypatch.setattr(data, "_download", offline)
    target = places / "t"
    raw = target / "FashionMNIST" / "raw"
    with pytest.raises(data.DownloadError) as err:
        data.fetch("fashion-mnist", root=target)
    # the published .gz MD5s, as torchvision.datasets.FashionMNIST.resources lists them
    published = ("train-images-idx3-ubyte.gz 8d4fb7e6c68d591d4c3dfef9ec88bf0d, "
                 "train-labels-idx1-ubyte.gz 25c81989df183df01b3e8a0aad5dffbe, "
                 "t10k-images-idx3-ubyte.gz bef4ecab320f06d8554ea6380940ec79, "
                 "t10k-labels-idx1-ubyte.gz bb300cfdad3c16e7a12a480ee83cd310")
    assert str(err.value) == (
        "Downloading Fashion-MNIST failed (OSError: no network for "
        "https://m1.invalid/fm/train-images-idx3-ubyte.gz; OSError: no network for "
        "https://m2.invalid/fm/train-images-idx3-ubyte.gz); this machine may have no internet. "
        "To install it by hand: on Debian/Ubuntu `apt-get install dataset-fashion-mnist` "
        f"(found at {places / 'nowhere'}), or copy the four files train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (from the "
        f"Fashion-MNIST repository, e.g. https://m1.invalid/fm/) into {raw}/ and run "
        f"`python -m rmtlib.data fetch fashion-mnist --root {target}` again. They are checked "
        f"against their published MD5 checksums ({published}) when unpacked, and the unpacked "
        "files at every load.")


# --------------------------------------------------------------------------- CIFAR-10 files
def _cifar_files(n_train=2, n_test=2, bad_label=None):
    """The seven files of cifar-10-batches-py as python pickles; {name: bytes}.

    `bad_label="training"` / `"test"` puts label 10 at position 1 of data_batch_1 / test_batch.
    """
    rng = np.random.default_rng(3)
    files = {}
    for name in data.CIFAR10_MD5:
        if name == "batches.meta":
            obj = {"label_names": list(data.CIFAR10_CLASSES)}
        else:
            n = n_test if name == "test_batch" else n_train
            labels = [int(v) for v in rng.integers(0, 10, size=n)]
            if (bad_label, name) in (("training", "data_batch_1"), ("test", "test_batch")):
                labels[1] = 10
            obj = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), "labels": labels}
        files[name] = pickle.dumps(obj)
    return files


def _cifar_md5s(monkeypatch, files):
    """The stand-in's MD5s for rmtlib and for torchvision (which checks its own list)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(data, "CIFAR10_MD5", {n: _md5(b) for n, b in files.items()})
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


def _write_folder(root, files, skip=()):
    folder = root / data.CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        if name not in skip:
            (folder / name).write_bytes(raw)
    return folder


def _archive(path, members):
    """A .tar.gz of (member name, bytes); returns its MD5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in members:
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return _md5(path.read_bytes())


def _cifar_how(root):
    return (f"Delete {root / 'cifar-10-batches-py'} and run `python -m rmtlib.data fetch cifar10 "
            f"--root {root}` to unpack it again from cifar-10-python.tar.gz (or download it).")


def _members(files, folder=data.CIFAR10_FOLDER):
    return [(f"{folder}/{n}", b) for n, b in files.items()]


def test_fetch_cifar10_completes_a_partly_unpacked_folder_from_the_archive(places, monkeypatch):
    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", _archive(root / data.CIFAR10_ARCHIVE, _members(files)))
    folder = _write_folder(root, {"data_batch_1": files["data_batch_1"]})  # one of seven there
    assert data.fetch("cifar10", root=root) == root
    for name, raw in files.items():
        assert (folder / name).read_bytes() == raw


def test_fetch_cifar10_into_a_folder_whose_parents_do_not_exist(places, monkeypatch):
    from torchvision.datasets import CIFAR10

    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    published = places / "published.tar.gz"
    md5 = _archive(published, _members(files))
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", md5)
    calls = []

    def download(url, folder, filename, md5):  # the archive arrives in the folder given
        calls.append((url, folder, filename, md5))
        (Path(folder) / filename).write_bytes(published.read_bytes())

    monkeypatch.setattr(data, "_download", download)
    root = places / "a" / "b" / "c"
    assert data.fetch("cifar10", root=root) == root
    assert calls == [(CIFAR10.url, root, "cifar-10-python.tar.gz", md5)]
    for name, raw in files.items():
        assert (root / data.CIFAR10_FOLDER / name).read_bytes() == raw


def test_fetch_cifar10_offline_says_how_to_install_by_hand(places, monkeypatch):
    from torchvision.datasets import CIFAR10

    def offline(url, folder, filename, md5):
        raise OSError("no network")

    monkeypatch.setattr(data, "_download", offline)
    root = places / "r"
    with pytest.raises(data.DownloadError) as err:
        data.fetch("cifar10", root=root)
    assert str(err.value) == (
        "Downloading CIFAR-10 failed (OSError: no network); this machine may have no internet. To "
        f"install it by hand: on a machine with internet download {CIFAR10.url} (the python version, "
        f"cifar-10-python.tar.gz, about 163 MiB), copy it into {root}/ and run `python -m rmtlib.data "
        f"fetch cifar10 --root {root}` again. The archive is checked against its published MD5 "
        f"c58f30108f718f92721af3b95e74349a and unpacked to {root / 'cifar-10-batches-py'}/, whose files "
        "are checked against their MD5s at every load. (An unpacked cifar-10-batches-py/ folder copied "
        "there works too.)")


def test_fetch_cifar10_refuses_an_archive_that_is_not_the_published_one(places, monkeypatch):
    from torchvision.datasets import CIFAR10

    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    archive = root / data.CIFAR10_ARCHIVE
    got = _archive(archive, _members(files))  # real MD5 kept: c58f30108f718f92721af3b95e74349a
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("cifar10", root=root)
    assert str(err.value) == (
        f"data file {archive} is damaged or not the published file: its MD5 is {got}, expected "
        f"c58f30108f718f92721af3b95e74349a ({archive.stat().st_size} bytes). Delete {archive} and "
        f"download it again ({CIFAR10.url}).")
    assert not (root / data.CIFAR10_FOLDER).exists()


def test_fetch_cifar10_takes_only_the_files_of_the_batches_folder(places, monkeypatch):
    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    archive = root / data.CIFAR10_ARCHIVE
    # test_batch only outside the folder: the archive lacks it
    members = [m for m in _members(files) if not m[0].endswith("/test_batch")]
    members.append(("elsewhere/test_batch", files["test_batch"]))
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", _archive(archive, members))
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("cifar10", root=root)
    assert str(err.value) == f"{archive} lacks cifar-10-batches-py/test_batch; delete it and download it again"
    # a file of the same name outside the folder, after the right one, is not the one unpacked
    archive.unlink()
    members = _members(files) + [("elsewhere/test_batch", b"not a batch")]
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", _archive(archive, members))
    assert data.fetch("cifar10", root=root) == root
    assert (root / data.CIFAR10_FOLDER / "test_batch").read_bytes() == files["test_batch"]


def test_fetch_cifar10_checks_every_unpacked_file(places, monkeypatch):
    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    damaged = dict(files, data_batch_1=files["data_batch_1"][:-1] + b"?")
    monkeypatch.setattr(data, "CIFAR10_ARCHIVE_MD5", _archive(root / data.CIFAR10_ARCHIVE, _members(damaged)))
    path = root / data.CIFAR10_FOLDER / "data_batch_1"
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("cifar10", root=root)
    assert str(err.value) == (
        f"data file {path} is damaged or not the published file: its MD5 is {_md5(damaged['data_batch_1'])}, "
        f"expected {_md5(files['data_batch_1'])} ({len(files['data_batch_1'])} bytes). {_cifar_how(root)}")


def test_fetch_cifar10_checks_an_unpacked_folder(places, monkeypatch):
    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    damaged = dict(files, data_batch_3=b"x" + files["data_batch_3"][1:])
    folder = _write_folder(root, damaged)
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("nothing needs a download"))
    with pytest.raises(data.DataCorruptError) as err:
        data.fetch("cifar10", root=root)
    assert str(err.value) == (
        f"data file {folder / 'data_batch_3'} is damaged or not the published file: its MD5 is "
        f"{_md5(damaged['data_batch_3'])}, expected {_md5(files['data_batch_3'])} "
        f"({len(files['data_batch_3'])} bytes). {_cifar_how(root)}")


def test_fetch_names_its_argument_and_defaults_to_the_data_folder(places, monkeypatch):
    with pytest.raises(ValueError) as err:
        data.fetch("mnist")
    assert str(err.value) == "name must be one of ['fashion-mnist', 'cifar10']; got 'mnist'"
    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    monkeypatch.setattr(data, "data_dir", lambda: places / "env")  # as data_dir() reads $RMTLIB_DATA
    _write_folder(places / "env", files)
    assert data.fetch("cifar10") == places / "env"


def test_missing_cifar10_names_every_place_looked_in(places, monkeypatch):
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("cifar10")
    assert str(err.value) == (
        f"CIFAR-10 was not found in {places / 'env'}, {places / 'project'}. It needs a download: "
        "`python -m rmtlib.data fetch cifar10` on a machine with internet (Colab, a GPU box), or put "
        "cifar-10-python.tar.gz into the data folder and run that command there, or pass root= a "
        "folder that holds cifar-10-batches-py/.")
    files = _cifar_files()
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    folder = _write_folder(root, files, skip=("test_batch",))
    with pytest.raises(data.DataNotFoundError) as err:
        data.load("cifar10", root=root)
    assert str(err.value) == f"CIFAR-10 file {folder / 'test_batch'} is missing. {_cifar_how(root)}"


@pytest.mark.parametrize("which", ["training", "test"])
def test_cifar10_labels_outside_the_classes_are_refused_naming_the_batches(places, monkeypatch, which):
    from torchvision.datasets import CIFAR10

    files = _cifar_files(bad_label=which)
    _cifar_md5s(monkeypatch, files)
    # load() never asks torchvision to download (the data come from `fetch` only)
    monkeypatch.setattr(CIFAR10, "download", lambda self: pytest.fail("load() must not download"))
    root = places / "r"
    _write_folder(root, files)
    with pytest.raises(data.DataCorruptError) as err:
        data.load("cifar10", root=root, n_val=1)
    assert str(err.value) == (f"CIFAR-10 {which} batches in {root} holds 1 labels outside 0..9 "
                              "(e.g. 10 at position 1); the file is damaged")
    good = _cifar_files()
    _cifar_md5s(monkeypatch, good)
    _write_folder(root, good)
    ds = data.load("cifar10", root=root, n_val=1)
    want = [pickle.loads(good[f"data_batch_{i}"])["labels"] for i in range(1, 6)]
    assert ds.train.y.tolist() == sum(want, [])


# --------------------------------------------------------------------------- command line
def _words(text):
    return " ".join(text.split())  # argparse wraps at the terminal width


def test_cli_help_names_the_program_the_commands_and_their_arguments(capsys):
    with pytest.raises(SystemExit) as ex:
        data._main(["--help"])
    assert ex.value.code == 0
    out = _words(capsys.readouterr().out)
    assert out.startswith("usage: python -m rmtlib.data [-h] {fetch,check} ... Get the book's data sets. ")
    with pytest.raises(SystemExit):
        data._main(["fetch", "--help"])
    out = _words(capsys.readouterr().out)
    assert out.startswith("usage: python -m rmtlib.data fetch [-h] [--root ROOT] {fashion-mnist,cifar10} ")
    assert " --root ROOT data folder (default: $RMTLIB_DATA or the project's data/)" in out
    with pytest.raises(SystemExit):
        data._main(["check", "--help"])
    out = _words(capsys.readouterr().out)
    assert out.startswith("usage: python -m rmtlib.data check [-h] [--root ROOT] {fashion-mnist,cifar10} ")


@pytest.mark.parametrize("argv, says", [
    ([], "the following arguments are required: cmd"),
    (["fetch", "mnist"], "argument name: invalid choice: 'mnist'"),
    (["check", "mnist"], "argument name: invalid choice: 'mnist'"),
])
def test_cli_refuses_a_bad_command_line_with_exit_status_2(argv, says, places, capsys):
    with pytest.raises(SystemExit) as ex:
        data._main(argv)
    assert ex.value.code == 2  # argparse's status for a usage error
    assert says in capsys.readouterr().err


def test_cli_check_prints_the_data_set_or_the_error(places, monkeypatch, capsys):
    # cifar10: 2 images in each training batch, 2,010 test images -> val 2000 (the paper's), test 10
    files = _cifar_files(n_test=2010)
    _cifar_md5s(monkeypatch, files)
    root = places / "r"
    _write_folder(root, files)
    assert data._main(["check", "cifar10", "--root", str(root)]) == 0
    assert capsys.readouterr().out == ("Dataset('cifar10', train=10, val=2000, test=10, "
                                       "input_shape=(3, 32, 32), classes=10, noise=0.0)\n")
    # without --root: $RMTLIB_DATA and the project folder, both empty here
    assert data._main(["check", "cifar10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: CIFAR-10 was not found in {places / 'env'}, {places / 'project'}. ")
    assert data._main(["check", "fashion-mnist", "--root", str(places / "empty")]) == 1
    assert capsys.readouterr().err == (
        f"error: Fashion-MNIST was not found in {places / 'empty'} nor in {places / 'nowhere'}. Get it "
        "with `make data` (Debian: `apt-get install dataset-fashion-mnist`; with internet: "
        "`python -m rmtlib.data fetch fashion-mnist`), or pass root= a folder that holds "
        "FashionMNIST/raw/.\n")


# --------------------------------------------------------------------------- image_folder
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def test_image_folder_defaults_crop_224_of_256_in_the_seed_0_order(tmp_path):
    from PIL import Image

    # 256 x 256 images are already at the resize size (256 = 224 * 256 / 224): the default
    # transform is then exactly the centre crop [16:240, 16:240], / 255, ImageNet's mean and std
    rng = np.random.default_rng(0)
    arrays = []
    for cls in ("a", "b", "c"):
        arr = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
        (tmp_path / cls).mkdir()
        Image.fromarray(arr).save(tmp_path / cls / "img.png")
        arrays.append(arr)
    split = data.image_folder(tmp_path)
    order = torch.randperm(3, generator=torch.Generator().manual_seed(0)).tolist()  # [2, 0, 1]
    assert split.y.tolist() == order and split.y.dtype == torch.int64
    assert split.x.shape == (3, 3, 224, 224)
    for x, k in zip(split.x, order):
        want = (arrays[k][16:240, 16:240] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        # float32 arithmetic on values of order 2: rounding below 1e-6
        np.testing.assert_allclose(x.numpy(), want.transpose(2, 0, 1), atol=1e-5, rtol=0)


def _coloured_classes(root, k):
    from PIL import Image

    for i in range(k):
        (root / f"c{i}").mkdir()
        Image.new("RGB", (3, 3), (40 * i, 0, 0)).save(root / f"c{i}" / "img.png")


def test_image_folder_draws_n_images_with_its_seed(tmp_path):
    _coloured_classes(tmp_path, 6)

    def perm(seed):
        return torch.randperm(6, generator=torch.Generator().manual_seed(seed)).tolist()

    with torch.random.fork_rng():
        torch.manual_seed(99)  # the global generator is not the one used
        assert data.image_folder(tmp_path, n=None, size=4).y.tolist() == perm(0)
        assert data.image_folder(tmp_path, n=None, size=4, seed=3).y.tolist() == perm(3)
        assert data.image_folder(tmp_path, n=2, size=4, seed=3).y.tolist() == perm(3)[:2]


def test_image_folder_takes_1000_images_by_default(tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    img = Image.new("RGB", (1, 1), (9, 9, 9))
    for i in range(1001):
        img.save(tmp_path / "a" / f"{i:04d}.bmp")
    assert len(data.image_folder(tmp_path, size=1)) == 1000


def test_image_folder_says_what_to_pass_when_missing(tmp_path):
    with pytest.raises(data.DataNotFoundError) as err:
        data.image_folder(tmp_path / "val")
    assert str(err.value) == (f"image folder {tmp_path / 'val'} does not exist; pass the ImageNet "
                              "validation folder with one subfolder per class (e.g. n01440764/)")
