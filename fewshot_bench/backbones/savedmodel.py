"""Any TensorFlow SavedModel as a backbone (e.g. exported with ``model.export`` or from TF-Hub).

The model is loaded by path with ``tf.saved_model.load`` and called through a
signature (default ``serving_default``) or, with ``signature=None``, through
its restored ``__call__`` (TF-Hub feature-vector models). It must take one
image tensor ``[n, h, w, 3]``. Its outputs are mapped by name: the one chosen
by ``embedding`` becomes ``"embedding"``, every other output is a named
feature. With ``embedding="auto"`` the embedding is the only output, or else
the only rank-2 output.

The input contract is not stored in a SavedModel, so it is an argument:
``value_range`` (TF-Hub image models take [0, 1]) and ``image_size`` (read
from the signature when it fixes one).
"""

from __future__ import annotations

from typing import Any, Optional

import gin

from fewshot_bench.backbones.base import BACKBONES, Backbone
from fewshot_bench.backbones.weights import check_image_size, optional_path, path_digest, weights_id
from fewshot_bench.errors import ConfigError, DataError


class SavedModelNet:
    """Calls a restored SavedModel like a backbone model: images -> dict of named outputs."""

    def __init__(self, function: Any, input_name: Optional[str], embedding: str, output_shapes: dict[str, tuple]):
        self._function, self._input_name, self._embedding = function, input_name, embedding
        self.output = {("embedding" if k == embedding else k): shape for k, shape in output_shapes.items()}
        self.name = "saved_model"

    def __call__(self, images, training: bool = False) -> dict[str, Any]:
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        raw = self._function(**{self._input_name: images}) if self._input_name else self._function(images)
        if not isinstance(raw, dict):
            raw = {"output_0": raw}
        return {("embedding" if k == self._embedding else k): v for k, v in raw.items()}


def _choose_embedding(outputs: dict[str, tuple], embedding: str, source: str) -> str:
    listing = ", ".join(f"{k} {list(v)}" for k, v in outputs.items())
    if embedding != "auto":
        if embedding not in outputs:
            raise ConfigError(f"saved_model {source}: no output {embedding!r}; its outputs: {listing}")
        return embedding
    if len(outputs) == 1:
        return next(iter(outputs))
    flat = [k for k, shape in outputs.items() if len(shape) == 2]
    if len(flat) == 1:
        return flat[0]
    raise ConfigError(f"saved_model {source}: cannot tell which output is the embedding; pass "
                      f"embedding=NAME (outputs: {listing})")


@gin.configurable("saved_model")
def build_saved_model(path: Optional[str] = None, image_size: Optional[int] = None,
                      value_range: tuple[float, float] = (0.0, 1.0), signature: Optional[str] = "serving_default",
                      embedding: str = "auto", name: Optional[str] = None) -> Backbone:
    """A SavedModel backbone.

    Args:
      path: the SavedModel directory (holding ``saved_model.pb``).
      image_size: input side; default: the signature's, else 224.
      value_range: the pixel range the model expects.
      signature: a signature name, or None to call the model's ``__call__``.
      embedding: the output used as embedding, or ``"auto"``.
      name: backbone name (default ``saved_model_<directory name>``).
    """
    import tensorflow as tf

    if path is None:
        raise ConfigError("saved_model: give the SavedModel directory, e.g. --backbone \"saved_model(path='/m')\"")
    directory = optional_path(path)
    if not (directory / "saved_model.pb").is_file():
        raise DataError(f"SavedModel {directory} not found (no saved_model.pb there); export one with "
                        f"keras_model.export('{directory}') or tf.saved_model.save(model, '{directory}'), or "
                        f"download a TF-Hub model (https://www.kaggle.com/models) and unpack its archive there")
    source = str(directory)
    try:
        loaded = tf.saved_model.load(source)
    except Exception as error:  # noqa: BLE001 -- TF raises many kinds for a damaged model
        raise DataError(f"SavedModel {directory} cannot be loaded ({type(error).__name__}: {error}); "
                        f"export it again") from error
    if signature is not None:
        if signature not in loaded.signatures:
            raise ConfigError(f"saved_model {source}: no signature {signature!r}; it has "
                              f"{sorted(loaded.signatures) or 'none (use signature=None)'}")
        function = loaded.signatures[signature]
        inputs = function.structured_input_signature[1]
        if len(inputs) != 1:
            raise ConfigError(f"saved_model {source}: signature {signature!r} takes {sorted(inputs)}; "
                              f"a backbone takes one image tensor")
        input_name, spec = next(iter(inputs.items()))
        fixed = spec.shape[1] if spec.shape.rank == 4 else None
        if image_size is None:
            image_size = fixed or 224
        elif fixed is not None and fixed != image_size:
            raise ConfigError(f"saved_model {source}: the signature takes {fixed}x{fixed} images, "
                              f"not image_size={image_size}")
        structured = function.structured_outputs
        outputs = {k: tuple(v.shape) for k, v in structured.items()} if isinstance(structured, dict) else \
            {"output_0": tuple(structured.shape)}
    else:
        if not callable(loaded):
            raise ConfigError(f"saved_model {source}: the model has no __call__; name a signature "
                              f"({sorted(loaded.signatures)})")
        function, input_name = loaded, None
        image_size = image_size or 224
        trial = loaded(tf.zeros((1, image_size, image_size, 3)))
        outputs = {k: tuple(v.shape) for k, v in trial.items()} if isinstance(trial, dict) else \
            {"output_0": tuple(trial.shape)}
    check_image_size(f"saved_model {source}", image_size, 1, "pass the size the model was exported for")
    chosen = _choose_embedding(outputs, embedding, source)
    net = SavedModelNet(function, input_name, chosen, outputs)
    net._loaded = loaded  # keep the restored object (and its variables) alive
    feature_names = tuple(sorted(k for k in outputs if k != chosen))
    return Backbone(name=name or f"saved_model_{directory.name}", model=net, image_size=image_size,
                    value_range=tuple(float(v) for v in value_range), feature_names=feature_names,
                    weights_id=weights_id(path_digest(directory), signature=signature, embedding=chosen))


@BACKBONES.register("saved_model")
def saved_model(**kwargs: Any) -> Backbone:
    """A SavedModel by path: ``saved_model(path='/dir', value_range=(0, 1), embedding='auto')``."""
    return build_saved_model(**kwargs)
