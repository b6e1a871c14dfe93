"""Feature extraction speed: FeatureExtractor against a plain ``model.predict`` loop, same model and data.

Streams ``--images`` synthetic images (seeded, ``--chunk`` at a time, so the
dataset never sits in memory whole) through a backbone three ways, after one
warm-up chunk each:

- predict: ``model.predict(preprocessed chunk, batch_size)`` on the backbone's
  model, keeping ``"embedding"`` (Keras computes and returns every output);
- predict (embedding model): the same on a model with only the embedding output;
- ours: ``FeatureExtractor.extract_stream`` (one compiled graph: value-range
  mapping, network, pooling; mixed precision when a GPU is present);

then, for a Head2Toe-style selection of every named feature (global average
pooled), ``model.predict`` + numpy pooling against ours. Prints images/s and
ratios; checks that both compute the same features. Figures only, no asserts.

    python benchmarks/feature_extraction.py [--backbone efficientnet_lite0] [--image_size 128] [--images 1024]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def chunks(total: int, chunk: int, size: int, seed: int = 0):
    """Synthetic [0, 1] images, ``chunk`` at a time, with unique ids."""
    from fewshot_bench.tasks import Examples

    rng = np.random.default_rng(seed)
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        images = rng.random((n, size, size, 3), dtype=np.float32)
        yield Examples(images, None, tuple(f"bench/{seed}/{start + i}" for i in range(n)))


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from fewshot_bench.backbones import BACKBONES
    from fewshot_bench.backbones.features import FeatureExtractor, global_pool

    backbone = BACKBONES.create(f"{args.backbone}(image_size={args.image_size})")
    model = backbone.model
    gpus = tf.config.list_physical_devices("GPU")
    print(f"backbone {backbone.id} at {args.image_size}px, {args.images} images in chunks of {args.chunk}, "
          f"batch {args.batch_size}; device: {'GPU ' + gpus[0].name if gpus else f'CPU ({os.cpu_count()} cores)'}")

    def predict_loop(predict_model, keep):
        out = []
        for examples in chunks(args.images, args.chunk, args.image_size):
            result = predict_model.predict(backbone.preprocess(examples.images), batch_size=args.batch_size,
                                           verbose=0)
            out.append(keep(result))
        return np.concatenate(out)

    def ours_loop(extractor):
        return np.concatenate(list(extractor.extract_stream(chunks(args.images, args.chunk, args.image_size))))

    embedding_model = keras.Model(model.inputs, model.output["embedding"])
    warm = next(chunks(args.chunk, args.chunk, args.image_size, seed=99))
    model.predict(backbone.preprocess(warm.images), batch_size=args.batch_size, verbose=0)
    embedding_model.predict(backbone.preprocess(warm.images), batch_size=args.batch_size, verbose=0)
    ours = FeatureExtractor(backbone, batch_size=args.batch_size, cache_dir=None)
    ours.extract(warm)

    t_predict, a = timed(lambda: predict_loop(model, lambda r: r["embedding"]))
    t_embed, b = timed(lambda: predict_loop(embedding_model, lambda r: r))
    t_ours, c = timed(lambda: ours_loop(ours))
    n = args.images
    print(f"\nembedding ({a.shape[1]} dims), precision {ours.precision}")
    print(f"  model.predict loop (all outputs)      {n / t_predict:8.1f} images/s")
    print(f"  model.predict loop (embedding model)  {n / t_embed:8.1f} images/s")
    print(f"  FeatureExtractor                      {n / t_ours:8.1f} images/s   "
          f"x{t_predict / t_ours:.2f} vs predict, x{t_embed / t_ours:.2f} vs embedding-only predict")
    print(f"  max |difference| vs predict: {np.abs(a - c).max():.2e} (embedding-only predict: {np.abs(b - c).max():.2e})")

    names = tuple(backbone.feature_names)
    every = FeatureExtractor(backbone, layers=names, batch_size=args.batch_size, cache_dir=None)
    every.extract(warm)
    t_predict_all, d = timed(lambda: predict_loop(model, lambda r: np.concatenate(
        [global_pool(r[name]) for name in names], axis=1)))
    t_every, e = timed(lambda: ours_loop(every))
    print(f"\nall {len(names)} named features, average pooled ({d.shape[1]} dims)")
    print(f"  model.predict loop + numpy pooling    {n / t_predict_all:8.1f} images/s")
    print(f"  FeatureExtractor                      {n / t_every:8.1f} images/s   x{t_predict_all / t_every:.2f}")
    print(f"  max |difference|: {np.abs(d - e).max():.2e}")


if __name__ == "__main__":
    main()
