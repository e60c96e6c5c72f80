"""CIFAR-10 loading: every supported layout gives the same arrays, and bad copies are refused with a fix."""

import gzip
import io
import os
import pickle
import signal
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from keras_cifar.data.sources import CLASS_NAMES, DOWNLOAD_URL, load_cifar10, resolve_data_dir
from keras_cifar.errors import ConfigError, DataError

BIN = "cifar-10-batches-bin"
PY = "cifar-10-batches-py"
RECORD = 3073


@pytest.fixture(scope="session")
def bin_dir(cifar_dir) -> Path:
    return Path(cifar_dir) / BIN


def assert_same_data(a, b):
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.fingerprint == b.fingerprint


def linked_copy(source: Path, dest: Path, changed: dict) -> Path:
    """A copy of a CIFAR folder that links unchanged files (no 180 MB copy); `changed` maps name -> bytes or None."""
    dest.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        if path.name not in changed:
            (dest / path.name).symlink_to(path)
        elif changed[path.name] is not None:
            (dest / path.name).write_bytes(changed[path.name])
    return dest


def make_archive(path: Path, folder: Path, arcname: str, extra: dict[str, bytes] | None = None) -> Path:
    """A .tar.gz shaped like the official ones (one top folder); `extra` adds members by name and content."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=arcname)
        for name, content in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


# The shared copy, through every way a user can point at it.


def test_folder_holding_the_binary_layout(cifar, cifar_dir):
    assert cifar.source == f"binary:{os.path.abspath(Path(cifar_dir) / BIN)}"
    assert cifar.x_train.shape == (50_000, 32, 32, 3) and cifar.x_test.shape == (10_000, 32, 32, 3)
    assert cifar.x_train.dtype == cifar.x_test.dtype == np.uint8
    assert cifar.y_train.dtype == cifar.y_test.dtype == np.int32
    assert cifar.x_train.flags.c_contiguous and cifar.x_test.flags.c_contiguous


def test_labels_are_balanced(cifar):
    assert np.bincount(cifar.y_train, minlength=10).tolist() == [5_000] * 10
    assert np.bincount(cifar.y_test, minlength=10).tolist() == [1_000] * 10


def test_class_names_match_the_copy(cifar, bin_dir):
    listed = tuple(line for line in (bin_dir / "batches.meta.txt").read_text().splitlines() if line.strip())
    assert cifar.class_names == CLASS_NAMES == listed


def test_real_images_are_hwc_rgb(real_cifar_dir):
    """Channel means of the real images differ enough (blue is lowest) that a wrong transpose or channel order
    shows."""
    means = load_cifar10(real_cifar_dir).x_train.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(means, [125.3, 122.9, 113.9], atol=1.5)


def test_first_record_decodes_as_stored(cifar, bin_dir):
    record = np.fromfile(bin_dir / "data_batch_1.bin", np.uint8, count=RECORD)
    assert cifar.y_train[0] == record[0]
    np.testing.assert_array_equal(cifar.x_train[0, :, :, 0].ravel(), record[1:1025])  # red plane, row-major
    np.testing.assert_array_equal(cifar.x_train[0, 31, 31], record[[1024, 2048, 3072]])  # last pixel's R, G, B


def test_extracted_folder_itself(cifar, bin_dir):
    assert_same_data(load_cifar10(bin_dir), cifar)


def test_env_var_names_the_data_dir(cifar, cifar_dir, monkeypatch):
    monkeypatch.setenv("KERAS_CIFAR_DATA", str(cifar_dir))
    loaded = load_cifar10()
    assert loaded.source == cifar.source
    assert_same_data(loaded, cifar)


def test_resolve_data_dir_prefers_the_argument(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_CIFAR_DATA", raising=False)
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("KERAS_CIFAR_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(None) == str(tmp_path / "env")
    assert resolve_data_dir(tmp_path / "arg") == str(tmp_path / "arg")


def test_fingerprint_tells_one_changed_pixel_apart(cifar, bin_dir, tmp_path):
    test_batch = bytearray((bin_dir / "test_batch.bin").read_bytes())
    test_batch[1] ^= 1  # first pixel byte of the first test image
    changed = load_cifar10(linked_copy(bin_dir, tmp_path / BIN, {"test_batch.bin": bytes(test_batch)}))
    assert changed.fingerprint != cifar.fingerprint
    assert np.count_nonzero(changed.x_test != cifar.x_test) == 1


# The official archives and the Python layout, built from the shared copy.


def test_binary_archive(cifar, bin_dir, tmp_path):
    extra = {f"{BIN}/readme.html": b"<html>CIFAR-10</html>"}  # the official archive has one; it is skipped
    archive = make_archive(tmp_path / "cifar-10-binary.tar.gz", bin_dir, BIN, extra)
    loaded = load_cifar10(tmp_path)
    assert loaded.source == f"binary:{archive}"
    assert_same_data(loaded, cifar)


class Py2Pickler(pickle._Pickler):
    """Writes strings as Python 2 `str` opcodes, as in the official pickles (Python 3's protocol 2 wraps
    bytes in `_codecs.encode` calls instead)."""

    def save_bytes(self, obj):
        short = len(obj) < 256
        header = pickle.SHORT_BINSTRING + bytes([len(obj)]) if short else pickle.BINSTRING + struct.pack("<i", len(obj))
        self.write(header + obj)
        self.memoize(obj)

    def save_str(self, obj):
        self.save_bytes(obj.encode("latin1"))

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes, str: save_str}


def py2_pickle(obj) -> bytes:
    """As the official files were written: Python 2 strings and numpy's old module path."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def batch_pickle(images: np.ndarray, labels: np.ndarray, label: str, dump) -> bytes:
    planar = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    filenames = [f"image_{i:05d}.png".encode() for i in range(len(images))]
    return dump({b"batch_label": label.encode(), b"labels": labels.tolist(), b"data": planar, b"filenames": filenames})


@pytest.fixture(scope="session")
def python_dir(cifar, tmp_path_factory) -> Path:
    """The shared data in the official Python layout. Training batches are Python 2 pickles like the official
    ones; the test batch is Python 3 protocol 2, as a user re-saving the data would write it."""
    folder = tmp_path_factory.mktemp("python-layout") / PY
    folder.mkdir()
    for i, (x, y) in enumerate(zip(np.split(cifar.x_train, 5), np.split(cifar.y_train, 5), strict=True), start=1):
        (folder / f"data_batch_{i}").write_bytes(batch_pickle(x, y, f"training batch {i} of 5", py2_pickle))
    test = batch_pickle(cifar.x_test, cifar.y_test, "testing batch 1 of 1", lambda obj: pickle.dumps(obj, protocol=2))
    (folder / "test_batch").write_bytes(test)
    meta = {b"label_names": [name.encode() for name in CLASS_NAMES], b"num_cases_per_batch": 10_000, b"num_vis": 3_072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder


def test_python_folder(cifar, python_dir):
    loaded = load_cifar10(python_dir.parent)
    assert loaded.source == f"python:{python_dir}"
    assert_same_data(loaded, cifar)


def test_python_archive(cifar, python_dir, tmp_path):
    archive = make_archive(tmp_path / "cifar-10-python.tar.gz", python_dir, PY)
    loaded = load_cifar10(tmp_path)
    assert loaded.source == f"python:{archive}"
    assert_same_data(loaded, cifar)


class RunsShell:
    """What a planted pickle would do: run a command as soon as it is loaded."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_pickle_is_refused_without_running(python_dir, tmp_path):
    marker = tmp_path / "pwned"
    planted = pickle.dumps({b"data": RunsShell(f"touch {marker}"), b"labels": []}, protocol=2)
    folder = linked_copy(python_dir, tmp_path / PY, {"data_batch_1": planted})
    with pytest.raises(DataError, match="refusing to unpickle .*system") as caught:
        load_cifar10(tmp_path)
    assert str(folder / "data_batch_1") in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not a pickle", "cannot unpickle"),
        (pickle.dumps({b"data": np.zeros((10, 3072), np.uint8), b"labels": [0] * 10}, protocol=2), "shape"),
        (pickle.dumps([1, 2, 3], protocol=2), "not a CIFAR-10 batch"),
    ],
    ids=["garbage", "wrong-shape", "not-a-dict"],
)
def test_bad_pickle_names_the_file(python_dir, tmp_path, content, expected):
    folder = linked_copy(python_dir, tmp_path / PY, {"data_batch_2": content})
    with pytest.raises(DataError, match=expected) as caught:
        load_cifar10(tmp_path)
    assert str(folder / "data_batch_2") in str(caught.value)


# Partial and corrupt copies.


def test_missing_file_is_named(bin_dir, tmp_path):
    folder = linked_copy(bin_dir, tmp_path / BIN, {"data_batch_3.bin": None})
    with pytest.raises(DataError, match=r"missing data_batch_3\.bin") as caught:
        load_cifar10(tmp_path)
    assert str(folder) in str(caught.value) and "cifar-10-binary.tar.gz" in str(caught.value)


def test_truncated_file_gives_sizes(bin_dir, tmp_path):
    with open(bin_dir / "data_batch_2.bin", "rb") as f:
        head = f.read(1_000_000)
    folder = linked_copy(bin_dir, tmp_path / BIN, {"data_batch_2.bin": head})
    with pytest.raises(DataError, match="truncated or corrupt") as caught:
        load_cifar10(folder)
    message = str(caught.value)
    assert f"{folder / 'data_batch_2.bin'} is 1,000,000 bytes, expected 30,730,000" in message


def test_bad_label_names_file_and_record(bin_dir, tmp_path):
    batch = bytearray((bin_dir / "data_batch_4.bin").read_bytes())
    batch[7 * RECORD] = 12
    folder = linked_copy(bin_dir, tmp_path / BIN, {"data_batch_4.bin": bytes(batch)})
    with pytest.raises(DataError, match="record 7 has label 12") as caught:
        load_cifar10(folder)
    assert str(folder / "data_batch_4.bin") in str(caught.value)


def test_other_class_list_is_refused(bin_dir, tmp_path):
    folder = linked_copy(bin_dir, tmp_path / BIN, {"batches.meta.txt": b"apple\naquarium_fish\n"})
    with pytest.raises(DataError, match="expected CIFAR-10's"):
        load_cifar10(folder)


def test_nonexistent_dir_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as caught:
        load_cifar10(missing)
    assert str(missing) in str(caught.value)


def test_empty_dir_lists_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match="no CIFAR-10 copy found") as caught:
        load_cifar10(tmp_path)
    for looked_for in (BIN, PY, "cifar-10-binary.tar.gz", "cifar-10-python.tar.gz", DOWNLOAD_URL):
        assert looked_for in str(caught.value)


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", f"{BIN}/../../evil.txt", f"{BIN}/sub/data_batch_1.bin", "elsewhere/data_batch_1.bin", "symlink"],
)
def test_archive_with_unexpected_member_is_refused(tmp_path, member):
    info = tarfile.TarInfo(f"{BIN}/data_batch_1.bin" if member == "symlink" else member)
    if member == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.addfile(info, io.BytesIO())
    with pytest.raises(DataError, match="unexpected member"):
        load_cifar10(tmp_path)


def test_truncated_archive_is_refused(tmp_path):
    folder = tmp_path / "src" / BIN
    folder.mkdir(parents=True)
    (folder / "readme.html").write_bytes(np.random.default_rng(0).bytes(60_000))  # incompressible
    archive = make_archive(tmp_path / "cifar-10-binary.tar.gz", folder, BIN)
    archive.write_bytes(archive.read_bytes()[:30_000])
    with pytest.raises(DataError, match="cannot read archive") as caught:
        load_cifar10(tmp_path)
    assert str(archive) in str(caught.value)


def raw_member(name: str, size_field: bytes) -> bytes:
    """A tar header whose size field says what a hostile archive wants it to (checksum recomputed)."""
    header = bytearray(tarfile.TarInfo(name).tobuf(format=tarfile.USTAR_FORMAT))
    header[124:136] = size_field
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def hostile_archive(folder: Path, *headers: bytes) -> Path:
    archive = folder / "cifar-10-binary.tar.gz"
    with gzip.open(archive, "wb") as out:
        out.write(b"".join(headers) + b"\0" * 2048)
    return archive


def test_a_member_declaring_gigabytes_is_refused_before_reading(tmp_path):
    archive = hostile_archive(tmp_path, raw_member(f"{BIN}/data_batch_1.bin", b"%011o\0" % (6 * 2**30)))
    assert archive.stat().st_size < 4096
    with pytest.raises(DataError, match="6,442,450,944 bytes, more than any file of CIFAR-10"):
        load_cifar10(tmp_path)


def test_a_member_with_a_negative_size_is_refused_not_looped_on(tmp_path):
    negative = b"\xff" + (256**11 - 512).to_bytes(11, "big")  # base-256: -512, which walks tarfile backwards
    hostile_archive(tmp_path, raw_member(f"{BIN}/batches.meta.txt", negative))
    signal.alarm(20)  # a regression hangs; this turns it into a failure
    try:
        with pytest.raises(DataError, match="negative size"):
            load_cifar10(tmp_path)
    finally:
        signal.alarm(0)


def test_a_member_seen_twice_is_refused(tmp_path):
    meta = raw_member(f"{BIN}/batches.meta.txt", b"%011o\0" % 0)
    hostile_archive(tmp_path, meta, meta)
    with pytest.raises(DataError, match="twice"):
        load_cifar10(tmp_path)


def test_an_oversized_file_in_a_folder_is_refused_before_reading(tmp_path):
    folder = tmp_path / BIN
    folder.mkdir()
    with (folder / "data_batch_1.bin").open("wb") as sparse:
        sparse.truncate(6 * 2**30)  # no disk used; reading it would take 6 GiB of memory
    with pytest.raises(DataError, match="more than any file of CIFAR-10"):
        load_cifar10(tmp_path)


def test_unknown_source_lists_the_choices():
    with pytest.raises(ConfigError, match="auto, local, tfds"):
        load_cifar10(source="kaggle")


def test_local_source_needs_a_dir(monkeypatch):
    monkeypatch.delenv("KERAS_CIFAR_DATA", raising=False)
    with pytest.raises(ConfigError, match="--data-dir"):
        load_cifar10(source="local")


# tensorflow-datasets, with its network access replaced.


@pytest.fixture
def tfds(monkeypatch):
    monkeypatch.delenv("KERAS_CIFAR_DATA", raising=False)
    return pytest.importorskip("tensorflow_datasets")


@pytest.mark.parametrize("source", ["tfds", "auto"])
def test_tfds_failure_points_to_a_local_copy(tfds, monkeypatch, source):
    def offline(*args, **kwargs):
        raise ConnectionError("Failed to reach storage.googleapis.com\n" + "retry details " * 500)

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(DataError, match="could not be downloaded") as caught:
        load_cifar10(source=source)
    message = str(caught.value)
    for hint in ("--data-dir", "KERAS_CIFAR_DATA", DOWNLOAD_URL, "ConnectionError: Failed to reach"):
        assert hint in message
    assert len(message) < 800


def test_tfds_gives_the_same_data_and_fingerprint(tfds, cifar, monkeypatch):
    import tensorflow as tf

    calls = []

    def cached(name, **kwargs):
        calls.append((name, kwargs))
        return [
            (tf.constant(cifar.x_train), tf.constant(cifar.y_train, tf.int64)),
            (tf.constant(cifar.x_test), tf.constant(cifar.y_test, tf.int64)),
        ]

    monkeypatch.setattr(tfds, "load", cached)
    loaded = load_cifar10(source="tfds")
    assert calls == [("cifar10", {"split": ["train", "test"], "as_supervised": True, "batch_size": -1})]
    assert loaded.source == "tfds:cifar10"
    assert loaded.y_train.dtype == np.int32
    assert_same_data(loaded, cifar)
