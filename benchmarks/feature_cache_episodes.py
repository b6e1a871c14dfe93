"""Frozen-backbone features for MD-style episodes: persistent cache against extracting per episode.

Walks ``--episodes`` test episodes of every MD-style source of the offline
``mini`` suite (built on first use under ``--home``, default a temporary
FEWSHOT_BENCH_HOME) and extracts the support set and every query batch of each
episode, as a frozen-feature learner does. Each episode is built once, every
image decoded and resized by the MD reader, and fed to

- per episode: one FeatureExtractor whose features are cleared before each
  episode (a forward pass for every image of every episode);
- cached (cold): a FeatureExtractor on an empty persistent cache, shared by
  all episodes;

then the episodes are rebuilt twice and read by new extractors on the now
filled cache (warm: what the next learner, task or run gets): once decoding
every image as it is built (eager, as before episodes were lazy), once lazily
(an image is decoded only if the cache misses it).

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

    def episodes(decode: bool):
        for source in sources:
            for index in range(args.episodes):
                task = suite.task(source, index, args.seed, args.image_size)
                query = list(task.query)
                if decode:  # what building an episode cost before its examples were lazy
                    for part in [task.support] + query:
                        part.images  # noqa: B018 -- decodes the part's images and keeps them
                yield task.support, query

    clock = Clock()
    seen, unique = 0, set()
    walk = episodes(decode=True)
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

    warm_decoded: dict[str, int] = {}

    def warm_pass(mode: str) -> FeatureExtractor:
        """Rebuild every episode (``mode``: "eager" decodes its images, "lazy" not) and extract it from the cache."""
        warm = FeatureExtractor(backbone, batch_size=args.batch_size, cache_dir=cache_dir)
        walk, decoded = episodes(decode=mode == "eager"), 0
        while True:
            t = time.perf_counter()
            episode = next(walk, None)
            clock.add(f"build_{mode}", t)
            if episode is None:
                break
            t = time.perf_counter()
            for part in [episode[0]] + episode[1]:
                warm.extract(part)
                decoded += len(part) if part.decoded else 0
            clock.add(f"warm_{mode}", t)
        warm_decoded[mode] = decoded
        return warm

    warm = warm_pass("lazy")
    warm_pass("eager")

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
    print(f"  building episodes (decode + resize)   {s['build']:8.1f}")
    print(f"  extraction per episode                {s['per_episode']:8.1f}")
    print(f"  extraction with cache, cold           {s['cached']:8.1f}")
    eager, lazy = s["build_eager"] + s["warm_eager"], s["build_lazy"] + s["warm_lazy"]
    print("warm pass (2nd run: rebuild the episodes, extract from the cache):")
    print(f"  eager decoding: build {s['build_eager']:8.1f} + extraction {s['warm_eager']:6.1f} = {eager:8.1f}   "
          f"({warm_decoded['eager']} images decoded)")
    print(f"  lazy decoding:  build {s['build_lazy']:8.1f} + extraction {s['warm_lazy']:6.1f} = {lazy:8.1f}   "
          f"({warm_decoded['lazy']} images decoded)")
    print(f"  eager / lazy                          x{eager / lazy:.1f}")
    print("ratios (per episode / cached):")
    print(f"  extraction only, cold                 x{s['per_episode'] / s['cached']:.1f}")
    print(f"  extraction only, warm                 x{s['per_episode'] / s['warm_lazy']:.1f}")
    print(f"  episodes + extraction, cold           x{(s['build'] + s['per_episode']) / (s['build'] + s['cached']):.2f}")
    print(f"  episodes + extraction, warm, eager    x{(s['build'] + s['per_episode']) / eager:.2f}")
    print(f"  episodes + extraction, warm, lazy     x{(s['build'] + s['per_episode']) / lazy:.2f}")
    size = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    print(f"cache on disk: {size / 2**20:.1f} MiB in {len(list(cache_dir.rglob('*.npy')))} shards")


if __name__ == "__main__":
    main()
