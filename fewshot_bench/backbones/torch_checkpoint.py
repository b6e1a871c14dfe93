"""Read PyTorch checkpoints (state dicts) with the standard library and numpy only.

Two layouts written by ``torch.save`` are understood:

* the legacy stream (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``):
  five pickles in a row -- the magic number ``0x1950a86a20f9469cfc6c``, the
  protocol version ``1001``, a ``sys_info`` dict (byte order, type sizes), the
  object itself, whose storages appear as persistent ids
  ``("storage", StorageType, key, location, numel, view_metadata)``, and the
  list of storage keys -- followed, for each key in that list, by an int64
  element count and the storage's raw bytes;
* the zip archive (PyTorch >= 1.6): ``<prefix>/data.pkl`` holds the object, with
  persistent ids ``("storage", StorageType, key, location, numel)``, and
  ``<prefix>/data/<key>`` holds each storage's raw bytes.

Tensors are rebuilt from ``(storage, offset, shape, stride)`` so views and
permuted (non-contiguous) tensors come back exactly. Only the globals a state
dict needs are resolved; anything else in the pickle is refused, so loading an
untrusted file runs no code.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping, Optional, Union

import numpy as np

from fewshot_bench.errors import DataError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype of its elements ("bfloat16" is special).
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}

PathLike = Union[str, Path]


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str  # a key of STORAGE_DTYPES

    @property
    def itemsize(self) -> int:
        return 2 if self.name == "BFloat16Storage" else np.dtype(STORAGE_DTYPES[self.name]).itemsize


@dataclasses.dataclass
class _Storage:
    key: str
    type: _StorageType
    numel: int
    data: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class _StorageView:
    """A legacy view: elements ``[offset, offset + numel)`` of ``root``."""

    root: _Storage
    offset: int
    numel: int


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Union[_Storage, _StorageView], storage_offset: int,
                    size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_tensor(_v2)``; the data is filled in later."""
    offset = int(storage_offset)
    if isinstance(storage, _StorageView):
        offset += storage.offset
        storage = storage.root
    return _TensorRef(storage, offset, tuple(int(n) for n in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data: _TensorRef, *_ignored: Any) -> _TensorRef:
    """Stands in for ``torch._utils._rebuild_parameter``: a Parameter is its tensor."""
    return data


_TORCH_UTILS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor,
    "_rebuild_parameter": _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals of a state dict; storages become :class:`_Storage`."""

    def __init__(self, file: BinaryIO, path: PathLike):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in _TORCH_UTILS:
            return _TORCH_UTILS[name]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) == ("torch", "Size"):
            return tuple
        raise DataError(f"{self.path}: the checkpoint refers to {module}.{name}, which this reader does "
                        f"not load (it reads tensors in (Ordered)dicts only); re-save the checkpoint "
                        f"as a plain state dict: torch.save(model.state_dict(), path)")

    def persistent_load(self, pid: Any) -> Union[_Storage, _StorageView]:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise DataError(f"{self.path}: unknown persistent id {pid!r} in the pickle; "
                            f"expected ('storage', <torch storage type>, key, location, numel[, view])")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        storage = self.storages.setdefault(key, _Storage(key, storage_type, numel))
        if storage.type != storage_type or storage.numel != numel:
            raise DataError(f"{self.path}: storage {key!r} is declared twice with different "
                            f"types or sizes; the file is damaged, re-save it")
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        _view_key, view_offset, view_numel = view
        if view_offset < 0 or view_offset + view_numel > numel:
            raise DataError(f"{self.path}: view of storage {key!r} at [{view_offset}, "
                            f"{view_offset + view_numel}) exceeds its {numel} elements; the file is damaged")
        return _StorageView(storage, int(view_offset), int(view_numel))


def _decode_storage(raw: bytes, storage: _Storage, byteorder: str, path: PathLike) -> np.ndarray:
    """Raw bytes -> 1-D native-endian numpy array of the storage's elements."""
    if len(raw) != storage.numel * storage.type.itemsize:
        raise DataError(f"{path}: storage {storage.key!r} has {len(raw)} bytes, expected "
                        f"{storage.numel} x {storage.type.itemsize}; the file is truncated or damaged")
    prefix = "<" if byteorder == "little" else ">"
    name = STORAGE_DTYPES[storage.type.name]
    if name == "bfloat16":  # the high half of a float32
        high = np.frombuffer(raw, prefix + "u2").astype(np.uint32)
        return (high << 16).view(np.float32)
    return np.frombuffer(raw, np.dtype(name).newbyteorder(prefix)).astype(name)


def _tensor_to_numpy(ref: _TensorRef, path: PathLike) -> np.ndarray:
    storage = ref.storage
    if storage.data is None:
        raise DataError(f"{path}: storage {storage.key!r} is used by a tensor but its data is "
                        f"missing; the file is truncated or damaged")
    dtype = storage.data.dtype
    if any(n == 0 for n in ref.shape):
        return np.zeros(ref.shape, dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= storage.numel:
        raise DataError(f"{path}: a tensor of shape {ref.shape}, stride {ref.stride} at offset "
                        f"{ref.offset} lies outside storage {storage.key!r} ({storage.numel} "
                        f"elements); the file is damaged")
    view = np.lib.stride_tricks.as_strided(
        storage.data[ref.offset:], shape=ref.shape,
        strides=tuple(s * dtype.itemsize for s in ref.stride), writeable=False)
    return np.array(view, copy=True, order="C")


def _read_legacy(f: BinaryIO, path: PathLike) -> tuple[Any, dict[str, _Storage]]:
    def load_plain() -> Any:  # one of the pickles around the object: no globals, no storages
        return _Unpickler(f, path).load()

    try:
        magic = load_plain()
    except Exception as e:  # any unpickling failure means "not this format"
        raise DataError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a legacy "
                        f"pickle stream: {e}); give the path of a file written by torch.save") from e
    if magic != LEGACY_MAGIC:
        raise DataError(f"{path}: not a PyTorch checkpoint (the first pickle is not the legacy "
                        f"magic number); give the path of a file written by torch.save")
    try:
        protocol = load_plain()
        sys_info = load_plain()
        if protocol != LEGACY_PROTOCOL:
            raise DataError(f"{path}: legacy checkpoint protocol {protocol!r} is not supported "
                            f"(expected {LEGACY_PROTOCOL}); re-save it with a recent torch.save")
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        unpickler = _Unpickler(f, path)
        obj = unpickler.load()
        keys = load_plain()
        for key in keys:
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise DataError(f"{path}: the storage key list names {key!r}, which no tensor "
                                f"uses; the file is damaged")
            count = f.read(8)
            if len(count) != 8:
                raise DataError(f"{path}: the file ends before the data of storage {key!r}; "
                                f"it is truncated, download or save it again")
            numel = int.from_bytes(count, byteorder, signed=True)
            if numel != storage.numel:
                raise DataError(f"{path}: storage {key!r} holds {numel} elements, the pickle "
                                f"says {storage.numel}; the file is damaged")
            storage.data = _decode_storage(f.read(numel * storage.type.itemsize), storage, byteorder, path)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: damaged legacy PyTorch checkpoint ({type(e).__name__}: {e}); "
                        f"download or save it again") from e
    return obj, unpickler.storages


def _read_zip(path: PathLike) -> tuple[Any, dict[str, _Storage]]:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise DataError(f"{path}: a zip file but not a PyTorch checkpoint (expected one "
                                f"<name>/data.pkl, found {len(pickles)}); give a file written by torch.save")
            prefix = pickles[0][: -len("data.pkl")]
            names = set(archive.namelist())
            byteorder = "little"
            if prefix + "byteorder" in names:
                byteorder = archive.read(prefix + "byteorder").decode().strip()
            unpickler = _Unpickler(io.BytesIO(archive.read(pickles[0])), path)
            obj = unpickler.load()
            for key, storage in unpickler.storages.items():
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise DataError(f"{path}: storage record {member!r} is missing from the archive; "
                                    f"the file is damaged, download or save it again")
                storage.data = _decode_storage(archive.read(member), storage, byteorder, path)
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: damaged PyTorch zip checkpoint ({type(e).__name__}: {e}); "
                        f"download or save it again") from e
    return obj, unpickler.storages


def _select_state_dict(obj: Any, path: PathLike) -> Mapping[str, Any]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise DataError(f"{path}: the checkpoint holds a {type(obj).__name__}, not a state dict; "
                        f"re-save it as torch.save(model.state_dict(), path)")
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise DataError(f"{path}: entry {name!r} of the state dict is a {type(value).__name__}, "
                            f"not a tensor; re-save it as torch.save(model.state_dict(), path)")
    return obj


def load_state_dict(path: PathLike) -> "collections.OrderedDict[str, np.ndarray]":
    """Read a PyTorch state dict file into ``OrderedDict(name -> np.ndarray)``.

    Accepts the legacy and the zip layouts of ``torch.save``; a dict whose
    ``"state_dict"`` entry is the state dict is unwrapped. Raises
    :class:`DataError` naming ``path`` if the file is missing, damaged or holds
    anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found; check the path")
    if zipfile.is_zipfile(path):
        obj, _ = _read_zip(path)
    elif tarfile.is_tarfile(path):
        raise DataError(f"{path}: a tar-format checkpoint (PyTorch < 0.4) is not supported; "
                        f"load it with torch and re-save it with torch.save")
    else:
        with open(path, "rb") as f:
            obj, _ = _read_legacy(f, path)
    state = _select_state_dict(obj, path)
    return collections.OrderedDict((str(k), _tensor_to_numpy(v, path)) for k, v in state.items())
