"""The PyTorch checkpoint reader, on checkpoints written here with the stdlib.

The writer below lays a file out as ``torch.save`` does (legacy stream or zip
archive) without torch: the pickle names ``torch._utils._rebuild_tensor_v2``
and ``torch.<Type>Storage`` as globals, storages are persistent ids.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from fewshot_bench.backbones.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, load_state_dict
from fewshot_bench.errors import DataError

TYPE_NAMES = {"float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
              "int64": "LongStorage", "int32": "IntStorage", "uint8": "ByteStorage", "bool": "BoolStorage"}


@dataclasses.dataclass(frozen=True)
class Global:
    """A ``module.name`` global written into the pickle as is (torch is not installed)."""

    module: str
    name: str

    def __call__(self, *args):  # pickle requires reduce functions to be callable
        raise AssertionError("only written, never called")


@dataclasses.dataclass(frozen=True)
class FakeStorage:
    key: str
    data: np.ndarray
    view: Optional[tuple[str, int, int]] = None  # legacy (view_key, offset, numel)


@dataclasses.dataclass(frozen=True)
class FakeTensor:
    storage: FakeStorage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class TorchLikePickler(pickle._Pickler):
    """Pure-Python pickler that writes Globals, storages and tensors as torch.save does."""

    def __init__(self, file, legacy: bool):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, FakeStorage):
            return None
        storage_type = Global("torch", TYPE_NAMES[obj.data.dtype.name])
        pid = ("storage", storage_type, obj.key, "cpu", obj.data.size)
        return pid + (obj.view,) if self.legacy else pid

    def reducer_override(self, obj):
        if isinstance(obj, FakeTensor):
            return (Global("torch._utils", "_rebuild_tensor_v2"),
                    (obj.storage, obj.offset, obj.shape, obj.stride, False, collections.OrderedDict()))
        return NotImplemented

    def save_global_ref(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Global] = save_global_ref


def dump(obj, legacy: bool) -> bytes:
    buffer = io.BytesIO()
    TorchLikePickler(buffer, legacy).dump(obj)
    return buffer.getvalue()


def roots(obj) -> dict[str, np.ndarray]:
    """Storage key -> data of every tensor in ``obj`` (nested dicts included)."""
    if isinstance(obj, FakeTensor):
        return {obj.storage.key: obj.storage.data}
    if isinstance(obj, dict):
        return {k: v for value in obj.values() for k, v in roots(value).items()}
    return {}


def write_legacy(path: Path, state: dict, keys: Optional[list[str]] = None) -> None:
    storages = roots(state)
    keys = sorted(storages) if keys is None else keys
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                       {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(header, f, protocol=2)
        f.write(dump(state, legacy=True))
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            data = storages[key]
            f.write(int(data.size).to_bytes(8, "little"))
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


def write_zip(path: Path, state: dict) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", dump(state, legacy=False))
        archive.writestr("archive/byteorder", "little")
        for key, data in roots(state).items():
            archive.writestr(f"archive/data/{key}", data.tobytes())


@pytest.fixture
def sample():
    """Tensors of four dtypes: contiguous, permuted (HWIO-stored conv kernel),
    offset into a shared storage, a legacy storage view, a scalar."""
    rng = np.random.default_rng(0)
    shared = rng.normal(size=20).astype(np.float32)
    hwio = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)  # stored HWIO, read as OIHW
    halves = rng.normal(size=7).astype(np.float16)
    longs = np.arange(-3, 9, dtype=np.int64)
    bytes_ = np.arange(250, 256, dtype=np.uint8)
    tensors = collections.OrderedDict([
        ("conv.weight", FakeTensor(FakeStorage("11", hwio), 0, (4, 2, 3, 3), (1, 4, 24, 8))),
        ("fc.weight", FakeTensor(FakeStorage("12", shared), 2, (3, 4), (4, 1))),
        ("fc.bias", FakeTensor(FakeStorage("12", shared), 15, (3,), (2,))),
        ("half", FakeTensor(FakeStorage("13", halves), 1, (2, 3), (3, 1))),
        ("index", FakeTensor(FakeStorage("14", longs), 0, (3, 4), (1, 3))),
        ("bytes_view", FakeTensor(FakeStorage("15", bytes_, view=("16", 2, 4)), 1, (3,), (1,))),
        ("steps", FakeTensor(FakeStorage("17", np.array([7], np.int64)), 0, (), ())),
    ])
    expected = {
        "conv.weight": hwio.transpose(3, 2, 0, 1),
        "fc.weight": shared[2:14].reshape(3, 4),
        "fc.bias": shared[[15, 17, 19]],
        "half": halves[1:7].reshape(2, 3),
        "index": longs.reshape(4, 3).T,
        "bytes_view": bytes_[3:6],
        "steps": np.array(7, np.int64),
    }
    return tensors, expected


def assert_exact(loaded, expected):
    assert list(loaded) == list(expected)
    for name, want in expected.items():
        got = loaded[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_legacy_checkpoint_reads_back_exactly(tmp_path, sample):
    tensors, expected = sample
    write_legacy(tmp_path / "legacy.pth", tensors)
    loaded = load_state_dict(tmp_path / "legacy.pth")
    assert_exact(loaded, expected)
    assert loaded["conv.weight"].flags.c_contiguous


def test_zip_checkpoint_reads_back_exactly(tmp_path, sample):
    tensors, expected = sample
    del tensors["bytes_view"], expected["bytes_view"]  # views exist only in the legacy format
    write_zip(tmp_path / "new.pth", tensors)
    assert_exact(load_state_dict(tmp_path / "new.pth"), expected)


def test_state_dict_inside_a_training_checkpoint_is_unwrapped(tmp_path, sample):
    tensors, expected = sample
    write_legacy(tmp_path / "ckpt.pth", {"state_dict": tensors, "epoch": 3})
    assert_exact(load_state_dict(tmp_path / "ckpt.pth"), expected)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="nothing.pth: checkpoint file not found"):
        load_state_dict(tmp_path / "nothing.pth")


def test_non_checkpoint_file_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not the weights you are looking for")
    with pytest.raises(DataError, match=r"notes\.pth: not a PyTorch checkpoint"):
        load_state_dict(path)


def test_truncated_file_is_refused(tmp_path, sample):
    tensors, _ = sample
    path = tmp_path / "cut.pth"
    write_legacy(path, tensors)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"cut\.pth: .*truncated"):
        load_state_dict(path)


def test_tensor_outside_its_storage_is_refused(tmp_path):
    storage = FakeStorage("1", np.zeros(6, np.float32))
    write_legacy(tmp_path / "bad.pth", {"w": FakeTensor(storage, 4, (2, 2), (2, 1))})
    with pytest.raises(DataError, match=r"bad\.pth: .*outside storage '1'"):
        load_state_dict(tmp_path / "bad.pth")


def test_foreign_globals_are_refused_without_running_them(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(dump({"w": (Global("os", "system"), ("echo hacked",))}, legacy=True))
        pickle.dump([], f, protocol=2)
    with pytest.raises(DataError, match=r"evil\.pth: the checkpoint refers to os\.system"):
        load_state_dict(path)
