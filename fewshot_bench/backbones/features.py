"""Batched, compiled feature extraction with a cache keyed by image id.

A frozen backbone pays one forward pass per unique image: features are cached
by image id (ids are globally unique, see :mod:`fewshot_bench.tasks`), so an
image that appears in many episodes, or in the support set of one learner and
the query of another, is computed once. The cache lives in memory by default;
with ``cache_dir`` it is the persistent on-disk cache of
:mod:`fewshot_bench.backbones.feature_cache`, shared by tasks, learners, runs
and processes.

Extraction runs one ``tf.function`` (value-range mapping, the network and the
pooling of every chosen layer in one graph), batch by batch, so only one
batch of pixels is ever copied; :meth:`FeatureExtractor.extract_stream` walks a
stream of batches without holding the whole dataset. On a GPU the network runs
in mixed precision (float16 compute, float32 variables and outputs) unless
``mixed_precision=False``.

Determinism: the same calls give bitwise the same features, run after run (on
a GPU this also needs ``tf.config.experimental.enable_op_determinism()``).
Kernels may block a batch differently depending on its size and an image's
place in it, so the same image computed in another batch can differ in the
last bits (about 1e-7 relative); a cache entry holds the value first computed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import gin
import numpy as np

from fewshot_bench.backbones.base import Backbone
from fewshot_bench.backbones.feature_cache import CacheStats, FeatureCache, namespace_parts
from fewshot_bench.errors import ConfigError
from fewshot_bench.registry import Registry
from fewshot_bench.tasks import Examples

log = logging.getLogger(__name__)

POOLINGS: Registry[Callable[..., Callable[[Any], Any]]] = Registry("pooling")
"""Poolings of an activation ``[n, ..., c]`` to ``[n, d]``, as TensorFlow ops.

A factory returns the pooling function; its spec string (e.g. ``"avg"``) is
part of the cache key, so register a new name (or arguments) for new behaviour.
"""


@POOLINGS.register("avg")
def _avg_pooling() -> Callable[[Any], Any]:
    """Global average over every spatial axis (the identity on ``[n, d]``)."""
    import tensorflow as tf

    def pool(x):
        return x if x.shape.rank == 2 else tf.reduce_mean(x, axis=list(range(1, x.shape.rank - 1)))
    return pool


@POOLINGS.register("max")
def _max_pooling() -> Callable[[Any], Any]:
    """Global maximum over every spatial axis (the identity on ``[n, d]``)."""
    import tensorflow as tf

    def pool(x):
        return x if x.shape.rank == 2 else tf.reduce_max(x, axis=list(range(1, x.shape.rank - 1)))
    return pool


def global_pool(activation: np.ndarray) -> np.ndarray:
    """Average every spatial axis of ``[n, ..., c]`` away, giving ``[n, c]``."""
    activation = np.asarray(activation)
    if activation.ndim <= 2:
        return activation
    return activation.mean(axis=tuple(range(1, activation.ndim - 1)))


_DEFAULT = "default"
_default_cache_dir: Optional[Path] = None


def set_default_cache_dir(cache_dir: Optional[str | Path]) -> None:
    """Make ``cache_dir`` the cache of every FeatureExtractor built without one (None: in memory).

    The command line calls this once (with
    :func:`fewshot_bench.backbones.feature_cache.default_cache_dir`); learners
    keep building ``FeatureExtractor(backbone)``.
    """
    global _default_cache_dir
    _default_cache_dir = None if cache_dir is None else Path(cache_dir)


def default_cache_dir() -> Optional[Path]:
    """The cache directory of extractors built without ``cache_dir`` (None: in memory)."""
    return _default_cache_dir


def gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def mixed_precision_copy(model: Any) -> Optional[Any]:
    """A copy of a Keras functional model computing in ``mixed_float16``, or None if it cannot be cloned."""
    import keras

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "mixed_float16"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
        copy.set_weights(model.get_weights())
        for layer in copy.layers:  # e.g. Normalization turns its variables into constants here
            finalize = getattr(layer, "finalize_state", None)
            if finalize is not None:
                finalize()
    except Exception as error:  # noqa: BLE001 -- not every model can be rebuilt; float32 then
        log.info("mixed precision unavailable for %s (%s); extracting in float32",
                 getattr(model, "name", model), error)
        return None
    return copy


def _output_names(backbone: Backbone) -> tuple[str, ...]:
    """Names the backbone model returns: its dict output's keys when known, else embedding + features."""
    try:
        output = backbone.model.output
    except (AttributeError, ValueError):
        output = None
    if isinstance(output, dict):
        return tuple(output)
    return ("embedding", *backbone.feature_names)


class _MemoryStore:
    """The in-memory cache: image id -> feature row."""

    def __init__(self):
        self.rows: dict[str, np.ndarray] = {}
        self.stats = CacheStats()

    def lookup(self, ids: Sequence[str]) -> tuple[Optional[np.ndarray], np.ndarray]:
        found = np.array([i in self.rows for i in ids], dtype=bool)
        if not found.any():
            self.stats.misses += len(ids)
            return None, found
        dim = len(next(iter(self.rows.values())))
        out = np.zeros((len(ids), dim), np.float32)
        for position, image_id in enumerate(ids):
            if found[position]:
                out[position] = self.rows[image_id]
        self.stats.hits += int(found.sum())
        self.stats.misses += int(len(ids) - found.sum())
        return out, found

    def put(self, ids: Sequence[str], rows: np.ndarray) -> None:
        for image_id, row in zip(ids, rows):
            self.rows[image_id] = row
        self.stats.written += len(ids)

    def flush(self) -> None:
        pass


@gin.configurable
class FeatureExtractor:
    """Extracts pooled features of chosen layers for :class:`Examples`.

    Args:
      backbone: the frozen network (its weights must not change while this
        extractor, or its on-disk cache, is in use).
      layers: output names of the backbone model to return ("embedding" by default).
      batch_size: images per forward pass.
      cache_dir: directory of the persistent cache; None keeps features in
        memory only; by default the process-wide :func:`default_cache_dir`
        (None unless the command line set it).
      pooling: a :data:`POOLINGS` spec applied to every layer.
      mixed_precision: compute in float16 (None: when a GPU is present).

    Every argument but ``backbone`` can be bound with gin (``FeatureExtractor.batch_size = 256``).
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str] = ("embedding",), batch_size: int = 64,
                 cache_dir: Optional[str | Path] = _DEFAULT, pooling: str = "avg",  # type: ignore[assignment]
                 mixed_precision: Optional[bool] = None):
        import tensorflow as tf

        if batch_size < 1:
            raise ConfigError(f"FeatureExtractor: batch_size={batch_size} must be >= 1")
        self.backbone = backbone
        self.layers = tuple(layers)
        outputs = _output_names(backbone)
        unknown = [name for name in self.layers if name not in outputs]
        if unknown or not self.layers:
            raise ConfigError(f"FeatureExtractor: backbone {backbone.name!r} has no output "
                              f"{unknown[0] if unknown else '(none chosen)'!r}; choose among {', '.join(outputs)}")
        self.batch_size = batch_size
        self.pooling = pooling
        pool = POOLINGS.create(pooling)
        self.cache_dir = default_cache_dir() if cache_dir == _DEFAULT else (
            None if cache_dir is None else Path(cache_dir))
        self._disk = FeatureCache(self.cache_dir) if self.cache_dir is not None else None
        self._stores: dict[tuple[int, ...], Any] = {}
        self.forward_images = 0  # images sent through the backbone (for benchmarks)

        model = backbone.model
        if mixed_precision is None:
            mixed_precision = gpu_present()
        self.precision = "float32"
        if mixed_precision:
            copy = mixed_precision_copy(model)
            if copy is not None:
                model, self.precision = copy, "mixed_float16"
        low, high = (float(v) for v in backbone.value_range)
        names = self.layers

        @tf.function(reduce_retracing=True)
        def forward(images01):
            outputs = model(images01 * (high - low) + low, training=False)
            return tf.concat([pool(tf.cast(outputs[name], tf.float32)) for name in names], axis=1)

        self._forward = forward

    # ---- cache stores ----

    def _store(self, image_shape: tuple[int, ...]):
        if image_shape not in self._stores:
            if self._disk is None:
                self._stores[image_shape] = _MemoryStore()
            else:
                parts = namespace_parts(self.backbone.id, image_shape, self.backbone.value_range, self.layers,
                                        self.pooling, self.precision)
                self._stores[image_shape] = self._disk.namespace(parts)
        return self._stores[image_shape]

    @property
    def stats(self) -> CacheStats:
        """Hits, misses, corrupt entries dropped and rows written, summed over image shapes."""
        total = CacheStats()
        for store in self._stores.values():
            for field in ("hits", "misses", "corrupt", "written"):
                setattr(total, field, getattr(total, field) + getattr(store.stats, field))
        return total

    # ---- extraction ----

    def _compute(self, examples: Examples, indices: np.ndarray) -> np.ndarray:
        """Features of the examples at ``indices``, ``batch_size`` images per forward pass.

        Only those images are read (``images_at``: a lazy batch decodes just
        them), a batch at a time. Batches are dispatched before any result is
        read back, so an accelerator is not kept waiting on the host.
        """
        parts = []
        for start in range(0, len(indices), self.batch_size):
            batch = np.asarray(examples.images_at(indices[start:start + self.batch_size]), np.float32)
            parts.append(self._forward(batch))
            self.forward_images += len(batch)
        return np.concatenate([p.numpy() for p in parts]).astype(np.float32, copy=False)

    def extract(self, examples: Examples) -> np.ndarray:
        """Features ``[n, d]`` of the examples: the chosen layers, pooled and concatenated.

        Only the images missing from the cache are read, so a fully cached
        batch of lazy examples decodes nothing.
        """
        store = self._store(examples.image_shape)
        first: dict[str, int] = {}
        for position, image_id in enumerate(examples.ids):
            first.setdefault(image_id, position)
        unique = list(first)
        rows, found = store.lookup(unique)
        if not found.all():
            todo = np.flatnonzero(~found)
            computed = self._compute(examples, np.array([first[unique[k]] for k in todo], np.int64))
            store.put([unique[k] for k in todo], computed)
            if rows is None:
                rows = np.zeros((len(unique), computed.shape[1]), np.float32)
            rows[todo] = computed
        if rows is None:  # no examples
            return np.zeros((0, 0), np.float32)
        slot = {image_id: k for k, image_id in enumerate(unique)}
        return rows[[slot[image_id] for image_id in examples.ids]]

    def extract_stream(self, batches: Iterable[Examples]) -> Iterator[np.ndarray]:
        """Features of each batch of a stream, one at a time (a dataset never sits in memory whole)."""
        for batch in batches:
            yield self.extract(batch)

    def flush(self) -> None:
        """Write buffered features to the persistent cache now (also done at exit)."""
        for store in self._stores.values():
            store.flush()

    def clear(self) -> None:
        """Forget the in-memory features (the persistent cache is left as it is)."""
        self.flush()
        self._stores.clear()
