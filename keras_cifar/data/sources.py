"""CIFAR-10 as numpy arrays, from a local copy in either official layout or from tensorflow-datasets.

A local copy is read in place (archives included) and checked file by file, so a partial download or a
corrupt file stops the run with a message naming the file, instead of surfacing later as a shape error or
a quietly wrong accuracy. The fingerprint tells apart runs made on different copies of the data (for
example the JPEG-smoothed shared copy and the original files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import posixpath
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_cifar.config import SOURCES
from keras_cifar.errors import ConfigError, DataError

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DATA_ENV_VAR = "KERAS_CIFAR_DATA"
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

_SIDE = 32
_IMAGE_BYTES = 3 * _SIDE * _SIDE
_RECORD_BYTES = 1 + _IMAGE_BYTES
_PER_FILE = 10_000
_TRAIN_COUNT = 50_000
_TEST_COUNT = 10_000
# Size caps: a batch file is 30.7 MB (binary) or 31.0 MB (official pickle; up to ~62 MB when re-saved with
# pickle protocol 2, which stores bytes as text); the class list is under 200 bytes.
_MAX_BATCH_BYTES = 64 * 2**20
_MAX_META_BYTES = 64 * 2**10


@dataclasses.dataclass(frozen=True)
class Cifar10:
    """The whole dataset in memory, with where it came from, so results can be traced back to their data."""

    x_train: np.ndarray  # uint8, (50000, 32, 32, 3), HWC RGB
    y_train: np.ndarray  # int32, (50000,)
    x_test: np.ndarray  # uint8, (10000, 32, 32, 3)
    y_test: np.ndarray  # int32, (10000,)
    class_names: tuple[str, ...]
    source: str  # "binary:<folder or archive>", "python:<folder or archive>" or "tfds:cifar10"
    fingerprint: str  # sha256 prefix over the arrays: equal data, equal fingerprint, whatever the layout


class _Blob(NamedTuple):
    """A file's bytes and the name to blame in error messages."""

    where: str
    data: bytes


class _Part(NamedTuple):
    """Images and labels of one file (or one tfds split), already checked."""

    x: np.ndarray
    y: np.ndarray


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str | None:
    """The argument wins over the environment, so one command can override a shell-wide setting."""
    chosen = data_dir or os.environ.get(DATA_ENV_VAR) or None
    return None if chosen is None else os.path.abspath(os.path.expanduser(chosen))


def load_cifar10(data_dir: str | os.PathLike | None = None, source: str = "auto") -> Cifar10:
    """Load CIFAR-10; "auto" prefers a local copy when one is named, because tfds needs the network."""
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    resolved = resolve_data_dir(data_dir)
    if source == "tfds" or (source == "auto" and resolved is None):
        return _load_tfds()
    if resolved is None:
        raise ConfigError(f"data source 'local' needs a data dir: pass --data-dir DIR or set {DATA_ENV_VAR}=DIR")
    return _load_local(Path(resolved))


def _load_tfds() -> Cifar10:
    """tensorflow-datasets is imported here only: it is slow to import and unused when a local copy is given."""
    try:
        import tensorflow_datasets as tfds

        splits = tfds.load("cifar10", split=["train", "test"], as_supervised=True, batch_size=-1)
        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(splits)
    except Exception as err:  # no network, no cache, tfds missing...: to the user all mean "use a local copy"
        raise DataError(
            f"CIFAR-10 could not be downloaded through tensorflow-datasets ({_brief(err)}). "
            f"Pass --data-dir DIR (or set {DATA_ENV_VAR}=DIR) pointing at a local copy in the binary or python "
            f"layout (cifar-10-binary.tar.gz or cifar-10-python.tar.gz from {DOWNLOAD_URL}, extracted or not)"
        ) from err
    return _dataset(
        [_part(x_train, y_train, "tfds cifar10 train split")],
        [_part(x_test, y_test, "tfds cifar10 test split")],
        "tfds:cifar10",
    )


def _brief(err: BaseException) -> str:
    """Keep a library's error readable inside ours: its type and first line, capped."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _load_local(data_dir: Path) -> Cifar10:
    """Read every file before parsing any, so an incomplete copy is reported as a whole."""
    layout, location = _find_copy(data_dir)
    blobs = _read_archive(location, layout) if location.is_file() else _read_folder(location, layout)
    layout.check_meta(blobs[layout.meta])
    return _dataset(
        [layout.read_batch(blobs[name]) for name in layout.train],
        [layout.read_batch(blobs[layout.test])],
        f"{layout.kind}:{location}",
    )


def _dataset(train: list[_Part], test: list[_Part], source: str) -> Cifar10:
    """Join checked parts into the final arrays and fingerprint them."""
    x_train, y_train = _join(train, _TRAIN_COUNT, "training", source)
    x_test, y_test = _join(test, _TEST_COUNT, "test", source)
    fingerprint = _fingerprint(x_train, y_train, x_test, y_test)
    return Cifar10(x_train, y_train, x_test, y_test, CLASS_NAMES, source, fingerprint)


def _join(parts: list[_Part], expected: int, split: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate into a preallocated array: the inputs are transposed views, and this is their only copy."""
    count = sum(len(part.y) for part in parts)
    if count != expected:
        raise DataError(f"{source} has {count:,} {split} images, expected {expected:,}")
    images = np.empty((count, _SIDE, _SIDE, 3), np.uint8)
    np.concatenate([part.x for part in parts], out=images)
    return images, np.concatenate([part.y for part in parts])


def _fingerprint(*arrays: np.ndarray) -> str:
    """Hash the arrays, not the files, so the same data in another layout or from tfds matches."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array)
    return digest.hexdigest()[:16]


def _part(images: np.ndarray, labels, where: str) -> _Part:
    """The one gate every source passes, so all are held to the same checks."""
    labels = np.asarray(labels)
    shape_ok = labels.ndim == 1 and images.shape == (len(labels), _SIDE, _SIDE, 3)
    if not (shape_ok and images.dtype == np.uint8 and np.issubdtype(labels.dtype, np.integer)):
        raise DataError(
            f"{where}: expected uint8 images of shape (N, {_SIDE}, {_SIDE}, 3) and N integer labels, "
            f"got {images.dtype} {images.shape} and {labels.dtype} {labels.shape}"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= len(CLASS_NAMES)))
    if bad.size:
        raise DataError(
            f"{where}: record {bad[0]} has label {labels[bad[0]]}, outside 0-9; the file is corrupt, re-download it"
        )
    return _Part(images, labels.astype(np.int32))


def _planar_to_hwc(pixels: np.ndarray) -> np.ndarray:
    """Both official layouts store each image as its R, G and B planes; Keras wants height, width, channel."""
    return pixels.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1)


def _check_names(names: tuple, where: str) -> None:
    """A wrong class list means another dataset (CIFAR-100, say) sits where CIFAR-10 was expected."""
    if names != CLASS_NAMES:
        raise DataError(f"{where} lists classes {names}, expected CIFAR-10's {CLASS_NAMES}")


# Binary layout: fixed-size records, parsed with no loop over images.


def _read_binary_batch(blob: _Blob) -> _Part:
    """Size is checked first: a short download is the likeliest fault and the clearest to report."""
    expected = _PER_FILE * _RECORD_BYTES
    if len(blob.data) != expected:
        raise DataError(
            f"truncated or corrupt: {blob.where} is {len(blob.data):,} bytes, expected {expected:,}; re-download it"
        )
    records = np.frombuffer(blob.data, np.uint8).reshape(_PER_FILE, _RECORD_BYTES)
    return _part(_planar_to_hwc(records[:, 1:]), records[:, 0], blob.where)


def _check_text_meta(blob: _Blob) -> None:
    """The official file ends with blank lines; they are not classes."""
    lines = blob.data.decode("utf-8", "replace").splitlines()
    _check_names(tuple(line.strip() for line in lines if line.strip()), blob.where)


# Python layout: pickles, which can run code when loaded, so only CIFAR-10's own contents are let through.


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Python 3 writes bytes into protocol-2 pickles as `_codecs.encode(text, "latin1")`; nothing else passes."""
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"unexpected _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


_reconstruct = np.empty(0).__reduce__()[0]  # numpy's array-unpickling helper, wherever this numpy keeps it
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only the few globals CIFAR-10's pickles use, so a planted file cannot run code."""

    def __init__(self, blob: _Blob):
        super().__init__(io.BytesIO(blob.data), encoding="bytes")  # the official files are Python 2 pickles
        self._where = blob.where

    def find_class(self, module: str, name: str):
        allowed = _PICKLE_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(f"refusing to unpickle {module}.{name} from {self._where}: not a CIFAR-10 file")
        return allowed


def _unpickle(blob: _Blob):
    """Turn any failure of a corrupt pickle into an error naming the file."""
    try:
        return _CifarUnpickler(blob).load()
    except DataError:
        raise
    except Exception as err:  # corrupt pickles fail in many ways; each means "this file is bad"
        raise DataError(f"cannot unpickle {blob.where} ({_brief(err)}); re-download it") from err


def _read_pickled_batch(blob: _Blob) -> _Part:
    """Check the pickle's structure before trusting its arrays."""
    batch = _unpickle(blob)
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (_PER_FILE, _IMAGE_BYTES)):
        raise DataError(
            f"{blob.where}: expected a dict whose b'data' is a uint8 array of shape ({_PER_FILE}, {_IMAGE_BYTES}); "
            "not a CIFAR-10 batch"
        )
    return _part(_planar_to_hwc(data), batch.get(b"labels", ()), blob.where)


def _check_pickled_meta(blob: _Blob) -> None:
    """Python 2 strings arrive as bytes."""
    meta = _unpickle(blob)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    names = names if isinstance(names, list) else []
    _check_names(tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names), blob.where)


# Finding and reading a local copy.


@dataclasses.dataclass(frozen=True)
class _Layout:
    """One official way CIFAR-10 is shipped: file names, and how to read them."""

    kind: str
    folder: str
    archive: str
    train: tuple[str, ...]
    test: str
    meta: str
    read_batch: Callable[[_Blob], _Part]
    check_meta: Callable[[_Blob], None]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


_BINARY = _Layout(
    kind="binary",
    folder="cifar-10-batches-bin",
    archive="cifar-10-binary.tar.gz",
    train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    test="test_batch.bin",
    meta="batches.meta.txt",
    read_batch=_read_binary_batch,
    check_meta=_check_text_meta,
)
_PYTHON = _Layout(
    kind="python",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test="test_batch",
    meta="batches.meta",
    read_batch=_read_pickled_batch,
    check_meta=_check_pickled_meta,
)
_LAYOUTS = (_BINARY, _PYTHON)  # in order of preference: the binary layout needs no unpickling


def _find_copy(data_dir: Path) -> tuple[_Layout, Path]:
    """Look one level deep, extracted folders before archives, so users may point at either."""
    if not data_dir.is_dir():
        raise DataError(
            f"CIFAR-10 data dir {data_dir} does not exist or is not a folder; check --data-dir / {DATA_ENV_VAR}. "
            f"To get the data, put cifar-10-binary.tar.gz from {DOWNLOAD_URL} in a folder and pass that folder, "
            "or leave --data-dir out to download it through tensorflow-datasets"
        )
    for layout in _LAYOUTS:
        if data_dir.name == layout.folder or any((data_dir / name).is_file() for name in layout.files):
            return layout, data_dir
        if (data_dir / layout.folder).is_dir():
            return layout, data_dir / layout.folder
    for layout in _LAYOUTS:
        if (data_dir / layout.archive).is_file():
            return layout, data_dir / layout.archive
    looked_for = [f"{layout.folder}/" for layout in _LAYOUTS] + [layout.archive for layout in _LAYOUTS]
    raise DataError(
        f"no CIFAR-10 copy found in {data_dir}: looked for the data files in it and for {', '.join(looked_for)} "
        f"inside it. Download cifar-10-binary.tar.gz (or cifar-10-python.tar.gz) from {DOWNLOAD_URL} "
        "into that folder; extracting it is optional"
    )


def _max_bytes(layout: _Layout, name: str) -> int:
    """The most bytes a file of the official copy can hold; checked before reading, so a wrong file costs nothing."""
    return _MAX_META_BYTES if name == layout.meta else _MAX_BATCH_BYTES


def _too_large(where: str, size: int, limit: int) -> DataError:
    return DataError(
        f"{where} is {size:,} bytes, more than any file of CIFAR-10 holds ({limit:,}); it is not part of an "
        f"official copy. Re-download it from {DOWNLOAD_URL}"
    )


def _read_folder(folder: Path, layout: _Layout) -> dict[str, _Blob]:
    """Read whole files: parsing needs all their bytes anyway, and the page cache makes this fast."""
    blobs = {}
    for name in layout.files:
        path = folder / name
        if path.is_file():
            size, limit = path.stat().st_size, _max_bytes(layout, name)
            if size > limit:
                raise _too_large(str(path), size, limit)
            blobs[name] = _Blob(str(path), path.read_bytes())
    fix = f"Re-extract the official {layout.archive} (from {DOWNLOAD_URL}) so that it holds: {', '.join(layout.files)}"
    _check_complete(blobs, layout, str(folder), fix)
    return blobs


def _read_archive(archive: Path, layout: _Layout) -> dict[str, _Blob]:
    """One streaming pass: a .tar.gz cannot seek back cheaply, and nothing is extracted to disk. Each member's
    declared size is checked before its data is read (and before the next header: tarfile walks backwards, for
    ever, past a member whose size is negative); a name seen twice is refused, so the pass reads a bounded total."""
    blobs = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                where = f"{archive}:{member.name}"
                if member.size < 0:
                    raise DataError(f"{where} declares a negative size: the archive is corrupt; re-download it")
                name = _member_file(member, layout.folder, archive)
                limit = _max_bytes(layout, name) if name in layout.files else _MAX_META_BYTES  # readme.html
                if member.size > limit:
                    raise _too_large(where, member.size, limit)
                if name not in layout.files:
                    continue
                if name in blobs:
                    raise DataError(f"{archive} holds {member.name!r} twice: not an official CIFAR-10 archive")
                blobs[name] = _Blob(where, tar.extractfile(member).read())
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataError(f"cannot read archive {archive} ({_brief(err)}); re-download it from {DOWNLOAD_URL}") from err
    _check_complete(blobs, layout, str(archive), f"Re-download the official {layout.archive} from {DOWNLOAD_URL}")
    return blobs


def _member_file(member: tarfile.TarInfo, folder: str, archive: Path) -> str:
    """The official archives hold one folder of plain files; anything else (links, ../, other folders) is refused.

    Returns the file name inside that folder, or "" for the folder entry itself.
    """
    if member.isdir() and member.name.rstrip("/") == folder:
        return ""
    parent, name = posixpath.split(member.name)
    if member.isfile() and parent == folder and name not in ("", ".", ".."):
        return name
    raise DataError(f"unexpected member {member.name!r} in {archive}: not an official CIFAR-10 archive")


def _check_complete(blobs: dict[str, _Blob], layout: _Layout, where: str, fix: str) -> None:
    """Name every missing file at once, so one fix covers them all."""
    missing = [name for name in layout.files if name not in blobs]
    if missing:
        raise DataError(f"CIFAR-10 copy {where} is incomplete: missing {', '.join(missing)}. {fix}")
