"""Helpers shared by the backbone families: weights locations, weights ids, argument checks."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fewshot_bench.errors import ConfigError, DataError
from fewshot_bench.paths import home


def weights_home() -> Path:
    """``$FEWSHOT_BENCH_HOME/weights``: where backbones look for weights files by default."""
    return home() / "weights"


def path_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (relative names and bytes, sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file is not path:
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def model_digest(model: Any) -> str:
    """SHA-256 of a Keras model's variables (paths, shapes, values): the id of weights without a file."""
    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(variable.numpy(), dtype=np.float32)
        digest.update(f"{variable.path}:{value.shape}\0".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def retrained(backbone: Any) -> Any:
    """The backbone with a weights id recomputed from its current variables (call after training it).

    Feature caches key on the weights id, so a backbone whose weights changed
    in this process must get a new id before frozen-feature extraction.
    """
    import dataclasses

    return dataclasses.replace(backbone, weights_id="trained-" + weights_id(model_digest(backbone.model)))


def weights_id(source_digest: str, **options: Any) -> str:
    """16 hex digits naming weights plus the build options that change the features."""
    if not options:
        return source_digest[:16]
    text = source_digest + json.dumps(options, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def require_file(path: Path, what: str, how: str) -> Path:
    """``path`` if it is an existing file; otherwise a DataError naming it and how to obtain it."""
    if not path.is_file():
        raise DataError(f"{what} {path} not found; {how}")
    return path


def check_image_size(backbone: str, image_size: Any, minimum: int, usual: str) -> int:
    """``image_size`` if it is an int >= ``minimum``; otherwise a ConfigError naming the backbone."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < minimum:
        raise ConfigError(f"{backbone}: image_size={image_size!r} must be an int >= {minimum}; {usual}")
    return image_size


def optional_path(value: Optional[str | Path]) -> Optional[Path]:
    return None if value is None else Path(os.path.expanduser(str(value)))


def _snake(class_name: str) -> str:
    """A layer class name as Keras names its group in a ``.weights.h5`` file (``BatchNormalization`` -> ``batch_normalization``)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", class_name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def keras_file_mismatch(model: Any, path: str) -> Optional[str]:
    """The first layer of ``model`` whose weights in a Keras 3 ``.weights.h5`` file differ in number or shape.

    Keras names a layer's group by its class (``conv2d``, ``conv2d_1``, ...)
    in the order of ``model.layers``. Used only to explain a failed load.
    """
    import h5py

    if not path.endswith(".weights.h5"):
        return None
    used: dict[str, int] = {}
    with h5py.File(path, "r") as f:
        stored_layers = f.get("layers")
        if stored_layers is None:
            return None
        for layer in model.layers:
            key = _snake(type(layer).__name__)
            used[key] = used.get(key, -1) + 1
            key = key if used[key] == 0 else f"{key}_{used[key]}"
            expected = [tuple(v.shape) for v in layer.weights]
            group = stored_layers.get(f"{key}/vars")
            stored = [tuple(group[str(i)].shape) for i in range(len(group))] if group is not None else []
            if expected and stored != expected:
                return (f"layer {layer.name!r}: the file has weight shapes {stored or 'none'}, "
                        f"the model expects {expected}")
    return None


def load_keras_weights(model: Any, path: str, what: str, fix: str) -> None:
    """``model.load_weights(path)``; a failure becomes a DataError naming the first layer at fault and both shapes."""
    import warnings

    try:
        with warnings.catch_warnings():  # Keras warns once per layer before raising
            warnings.simplefilter("ignore")
            model.load_weights(path)
    except (ValueError, OSError, KeyError) as error:
        text = str(error)
        detail = keras_file_mismatch(model, path)
        shapes = re.search(r"variable\.shape=(\(.*?\)), Received: value\.shape=(\(.*?\))\..*?path=([^,\s]+)",
                           text, re.S)
        if detail is None and shapes:
            expected, got, variable = shapes.groups()
            detail = (f"layer {variable.split('/')[0]!r} ({variable}): the file has shape {got}, "
                      f"the model expects {expected}")
        if detail is None:
            detail = text.split("List of objects")[0].strip().replace("\n\n", " ").replace("\n", " ")
        raise DataError(f"{path}: the weights do not fit {what}: {detail}; {fix}") from error
