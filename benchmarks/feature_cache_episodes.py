"""Frozen-backbone features for MD-style episodes: persistent cache against extracting per episode.

Walks ``--episodes`` test episodes of every MD-style source of the offline
``mini`` suite (built on first use under ``--home``, default a temporary
FEWSHOT_BENCH_HOME) and extracts the support set and every query batch of each
episode, as a frozen-feature learner does. Each episode is built once (decoded
and resized by the MD reader) and fed to

- per episode: one FeatureExtractor whose features are cleared before each
  episode (a forward pass for every image of every episode);
- cached (cold): a FeatureExtractor on an empty persistent cache, shared by
  all episodes;

then a second pass rebuilds the episodes and reads them with a new extractor
on the now filled cache (warm: what the next learner, task or run gets).

Prints backbone forward passes per unique image, wall time of each part and
the ratios. Figures only, no asserts.

    python benchmarks/feature_cache_episodes.py [--episodes 600] [--backbone efficientnet_lite0] [--image_size 84]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class Clock:
    """Accumulates the seconds spent in named parts."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=84)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", help="FEWSHOT_BENCH_HOME holding (or receiving) the mini build")
    args = parser.parse_args()

    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="fb_cache_bench_"))
    os.environ["FEWSHOT_BENCH_HOME"] = str(home)

    from fewshot_bench.backbones import BACKBONES
    from fewshot_bench.backbones.features import FeatureExtractor
    from fewshot_bench.suites import SUITES

    start = time.perf_counter()
    suite = SUITES.create(f"mini(episodes={args.episodes})")
    sources = [s for s in suite.sources if s.benchmark == "md"]
    print(f"mini suite in {home / 'mini'} ready in {time.perf_counter() - start:.0f} s; MD-style sources "
          f"{[s.name for s in sources]}, {args.episodes} episodes each")
    backbone = BACKBONES.create(f"{args.backbone}(image_size={args.image_size})")
    cache_dir = Path(tempfile.mkdtemp(prefix="fb_feature_cache_"))
    per_episode = FeatureExtractor(backbone, batch_size=args.batch_size, cache_dir=None)
    cached = FeatureExtractor(backbone, batch_size=args.batch_size, cache_dir=cache_dir)
    print(f"backbone {backbone.id} at {args.image_size}px, precision {cached.precision}, cache {cache_dir}")

    def episodes():
        for source in sources:
            for index in range(args.episodes):
                task = suite.task(source, index, args.seed, args.image_size)
                yield task.support, list(task.query)

    clock = Clock()
    seen, unique = 0, set()
    walk = episodes()
    while True:
        t = time.perf_counter()
        episode = next(walk, None)
        clock.add("build", t)
        if episode is None:
            break
        support, query = episode
        seen += len(support) + sum(len(b) for b in query)
        unique.update(support.ids)
        unique.update(i for b in query for i in b.ids)
        for name, extractor in (("per_episode", per_episode), ("cached", cached)):
            t = time.perf_counter()
            if extractor is per_episode:
                extractor.clear()
            extractor.extract(support)
            for batch in query:
                extractor.extract(batch)
            clock.add(name, t)
    t = time.perf_counter()
    cached.flush()
    clock.add("cached", t)

    warm = FeatureExtractor(backbone, batch_size=args.batch_size, cache_dir=cache_dir)
    walk = episodes()
    while True:
        t = time.perf_counter()
        episode = next(walk, None)
        clock.add("build_again", t)
        if episode is None:
            break
        t = time.perf_counter()
        warm.extract(episode[0])
        for batch in episode[1]:
            warm.extract(batch)
        clock.add("warm", t)

    s = clock.seconds
    n_episodes = args.episodes * len(sources)
    print(f"\n{n_episodes} episodes, {seen} images in them, {len(unique)} unique images "
          f"({seen / len(unique):.1f} appearances per image)")
    print("backbone forward passes per unique image:")
    print(f"  per episode           {per_episode.forward_images / len(unique):7.3f}  ({per_episode.forward_images})")
    print(f"  cache, cold           {cached.forward_images / len(unique):7.3f}  ({cached.forward_images})")
    print(f"  cache, warm (2nd run) {warm.forward_images / len(unique):7.3f}  ({warm.forward_images}; "
          f"{warm.stats.hits} hits from disk)")
    print("wall time (s):")
    print(f"  building episodes (decode + resize)   {s['build']:8.1f}   (second pass {s['build_again']:.1f})")
    print(f"  extraction per episode                {s['per_episode']:8.1f}")
    print(f"  extraction with cache, cold           {s['cached']:8.1f}")
    print(f"  extraction with cache, warm           {s['warm']:8.1f}")
    print("ratios (per episode / cached):")
    print(f"  extraction only, cold                 x{s['per_episode'] / s['cached']:.1f}")
    print(f"  extraction only, warm                 x{s['per_episode'] / s['warm']:.1f}")
    print(f"  episodes + extraction, cold           x{(s['build'] + s['per_episode']) / (s['build'] + s['cached']):.2f}")
    print(f"  episodes + extraction, warm           x{(s['build'] + s['per_episode']) / (s['build_again'] + s['warm']):.2f}")
    size = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    print(f"cache on disk: {size / 2**20:.1f} MiB in {len(list(cache_dir.rglob('*.npy')))} shards")


if __name__ == "__main__":
    main()
