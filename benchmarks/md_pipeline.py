"""Meta-Dataset episode pipeline: speed, memory and open files, next to a naive baseline.

Writes a synthetic source (default 1000 classes x 100 JPEGs at 126 px, all in
the test split), then measures in two fresh processes:

- ours: ``md_source`` (lazy per-class indexing, seeks, one file open at a time);
- naive: the reference pipeline's shape, one ``TFRecordDataset`` per class
  with a shuffle buffer, an iterator per class, opened when the source is.

Both decode and resize the same way and read the same episode descriptions
(ways, shots, query). Prints first-episode latency (from opening the source to
the last query image), episodes per second, peak RSS and peak open files.
Figures only, no asserts.

    python benchmarks/md_pipeline.py [--root DIR] [--classes 1000] [--images 100] [--episodes 20]
                                     [--naive_episodes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def synthetic_pixels(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random image (gradients plus mild noise), so JPEGs have a realistic size."""
    y, x = np.mgrid[0:size, 0:size] / size
    colour = rng.uniform(0, 255, size=(3, 3))
    image = colour[:, 0] + colour[:, 1] * x[..., None] * 0.5 + colour[:, 2] * y[..., None] * 0.5
    image = image + rng.normal(0, 8, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_source(root: Path, classes: int, images: int, size: int) -> Path:
    from fewshot_bench.datasets.meta_dataset.writer import encode_jpeg, write_class, write_flat_spec

    records = root / "synthetic"
    spec = records / "dataset_spec.json"
    if spec.exists() and json.loads(spec.read_text())["images_per_class"].get(str(classes - 1)) == images:
        return records
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for c in range(classes):
        write_class(records, c, [encode_jpeg(synthetic_pixels(rng, size)) for _ in range(images)])
    write_flat_spec(records, "synthetic", {"train": 0, "valid": 0, "test": classes}, {c: images for c in range(classes)})
    mb = sum(p.stat().st_size for p in records.glob("*.tfrecords")) / 2**20
    print(f"wrote {classes} classes x {images} JPEGs ({mb:.0f} MiB) in {time.perf_counter() - start:.0f} s to {records}")
    return records


class FdWatcher(threading.Thread):
    """Polls the number of open file descriptors of this process."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = self.count()
        self.running = True

    @staticmethod
    def count() -> int:
        return len(os.listdir("/proc/self/fd"))

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.count())
            time.sleep(0.002)


def run_ours(root: Path, episodes: int, size: int) -> dict:
    from fewshot_bench.datasets.meta_dataset import md_source

    start = time.perf_counter()
    source = md_source(root, "synthetic", num_episodes=episodes)

    def episode(i: int) -> int:
        task = source.build(i, 0, size)
        return len(task.support) + sum(len(b) for b in task.query)

    images = episode(0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    images += sum(episode(i) for i in range(1, episodes))
    return {"first_episode_s": first, "episodes_per_s": (episodes - 1) / (time.perf_counter() - start),
            "images": images}


def run_naive(root: Path, episodes: int, size: int) -> dict:
    import tensorflow as tf

    from fewshot_bench.datasets.meta_dataset.reader import decode_image, parse_example
    from fewshot_bench.datasets.meta_dataset.sampler import EpisodeSampler
    from fewshot_bench.datasets.meta_dataset.spec import load_spec

    start = time.perf_counter()
    spec = load_spec(root / "synthetic")
    sampler = EpisodeSampler(spec, "test")
    iterators = {c: iter(tf.data.TFRecordDataset(str(spec.class_file(root / "synthetic", c)))
                         .repeat().shuffle(1000, seed=c)) for c in spec.classes("test")}

    def episode(i: int) -> int:
        description = sampler.episode(0, i)
        count = 0
        for c, k, q in zip(description.classes, description.shots, description.query):
            for _ in range(k + q):
                image, _ = parse_example(next(iterators[c]).numpy(), "naive")
                decode_image(image, size, "naive")
                count += 1
        return count

    images = episode(0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    images += sum(episode(i) for i in range(1, episodes))
    return {"first_episode_s": first, "episodes_per_s": (episodes - 1) / (time.perf_counter() - start),
            "images": images}


def measure(mode: str, root: Path, episodes: int, size: int) -> dict:
    """Run one pipeline in this process and add its memory and open-file figures."""
    import tensorflow as tf  # import first so both pipelines start from the same baseline

    tf.constant(0)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    watcher = FdWatcher()
    baseline_fds = watcher.count()
    watcher.start()
    result = (run_ours if mode == "ours" else run_naive)(root, episodes, size)
    watcher.running = False
    watcher.join()
    result.update(peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  rss_growth_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_rss,
                  peak_open_files=watcher.peak, extra_open_files=watcher.peak - baseline_fds)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "fewshot_bench_md_pipeline")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, default=126)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--naive_episodes", type=int, default=5, help="episodes for the (slow) baseline")
    parser.add_argument("--mode", choices=["ours", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.root, args.episodes, args.size)))
        return
    write_source(args.root, args.classes, args.images, args.size)
    results = {}
    for mode in ("ours", "naive"):
        episodes = args.episodes if mode == "ours" else args.naive_episodes
        print(f"measuring {mode} ({episodes} episodes) ...", flush=True)
        child = subprocess.run([sys.executable, __file__, "--mode", mode, "--root", str(args.root),
                                "--episodes", str(episodes), "--size", str(args.size)],
                               capture_output=True, text=True)
        if child.returncode != 0:
            print(f"{mode} failed:\n{child.stderr[-3000:]}")
            return
        results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    ours, naive = results["ours"], results["naive"]
    print(f"\n{args.classes} classes x {args.images} images at {args.size} px ({os.cpu_count()} CPUs); "
          f"episodes: ours {args.episodes}, naive {args.naive_episodes}, the first ones identical in composition")
    print(f"{'':28}{'ours':>12}{'naive':>12}{'ratio':>10}")
    rows = [("first episode (s)", "first_episode_s", "{:.2f}"), ("episodes / s", "episodes_per_s", "{:.2f}"),
            ("peak RSS (MiB)", "peak_rss_mb", "{:.0f}"), ("RSS growth (MiB)", "rss_growth_mb", "{:.0f}"),
            ("peak open files", "peak_open_files", "{:.0f}"), ("extra open files", "extra_open_files", "{:.0f}")]
    for label, key, fmt in rows:
        ratio = ours[key] / naive[key] if naive[key] else float("nan")
        print(f"{label:28}{fmt.format(ours[key]):>12}{fmt.format(naive[key]):>12}{ratio:>10.2f}")
    print(f"images read: ours {ours['images']}, naive {naive['images']}")


if __name__ == "__main__":
    main()
