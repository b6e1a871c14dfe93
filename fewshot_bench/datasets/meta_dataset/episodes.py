"""Meta-Dataset episodes as Tasks: ``md_source`` turns one source's records into a TaskSource."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from fewshot_bench.datasets.meta_dataset.reader import SourceReader, image_id
from fewshot_bench.datasets.meta_dataset.spec import check_split
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig, EpisodeDescription, EpisodeSampler
from fewshot_bench.tasks import EPISODES, Examples, Fingerprint, QueryStream, Task, TaskInfo, TaskSource, median_area


@dataclasses.dataclass(frozen=True)
class EpisodeLayout:
    """The (class id, record, label) of every support and query image of an episode, in Task order."""

    support: tuple[tuple[int, int, int], ...]
    query: tuple[tuple[int, int, int], ...]

    @classmethod
    def of(cls, episode: EpisodeDescription) -> "EpisodeLayout":
        support = tuple((c, r, label) for label, (c, records) in enumerate(zip(episode.classes, episode.support_records))
                        for r in records)
        query = tuple((c, r, label) for label, (c, records) in enumerate(zip(episode.classes, episode.query_records))
                      for r in records)
        return cls(support, query)

    def ids(self, source: str, role: str) -> tuple[str, ...]:
        return tuple(image_id(source, c, r) for c, r, _ in getattr(self, role))

    def labels(self, role: str) -> np.ndarray:
        return np.array([label for _, _, label in getattr(self, role)], dtype=np.int64)


def _placeholder(ids: tuple[str, ...], labels: np.ndarray) -> Examples:
    return Examples(np.zeros((len(ids), 0), np.float32), labels, ids)


def layout_fingerprint(source: str, layout: EpisodeLayout) -> str:
    """The episode's fingerprint from its ids and labels alone (no pixels read).

    Equal to ``fewshot_bench.tasks.fingerprint(task.support, task.query)``.
    """
    fp = Fingerprint()
    fp.update("support", _placeholder(layout.ids(source, "support"), layout.labels("support")))
    fp.update("query", _placeholder(layout.ids(source, "query"), layout.labels("query")))
    return fp.hexdigest()


Item = tuple[int, int, int]  # (class id, record, label)


def gather(items: Sequence[Item], read: Callable[[int, list[int]], np.ndarray], row_shape: tuple[int, ...],
           dtype: type) -> np.ndarray:
    """``read(class_id, records)`` for each class of ``items``, its rows put back in item order.

    One call, hence one open class file, per class.
    """
    out = np.empty((len(items), *row_shape), dtype=dtype)
    by_class: dict[int, list[int]] = {}
    for position, (c, _, _) in enumerate(items):
        by_class.setdefault(c, []).append(position)
    for c, positions in by_class.items():
        out[positions] = read(c, [items[p][1] for p in positions])
    return out


def read_items(reader: SourceReader, items: Sequence[Item], image_size: int) -> np.ndarray:
    """The decoded ``[n, image_size, image_size, 3]`` images of the items, in their order."""
    return gather(items, lambda c, records: reader.read_images(c, records, image_size),
                  (image_size, image_size, 3), np.float32)


def item_examples(reader: SourceReader, source: str, items: Sequence[Item], image_size: int) -> Examples:
    """Lazy Examples of the items: an image is read and decoded only when a learner asks for it."""
    ids = tuple(image_id(source, c, r) for c, r, _ in items)
    labels = np.array([label for _, _, label in items], dtype=np.int64)
    return Examples.lazy(ids, labels, (image_size, image_size, 3),
                         lambda indices: read_items(reader, [items[i] for i in indices], image_size))


def layout_task(reader: SourceReader, source: str, layout: EpisodeLayout, num_classes: int, *, image_size: int,
                task_id: str, seed: int, suite: str, group: str, query_batch_size: int) -> Task:
    """A Task whose support and query batches decode their images only when a learner reads them.

    Its info: ``TaskInfo(source, "md", median area of the support images before the resize)``,
    the sizes read from the image headers (no pixels decoded).
    """
    query_items = layout.query

    def batches():
        for start in range(0, len(query_items), query_batch_size):
            yield item_examples(reader, source, query_items[start:start + query_batch_size], image_size)

    sizes = gather(layout.support, reader.read_sizes, (2,), np.int64)
    return Task(support=item_examples(reader, source, layout.support, image_size),
                query=QueryStream(batches, size=len(query_items)), num_classes=num_classes,
                suite=suite, group=group, source=source, task_id=task_id, seed=seed, validation=None,
                info=TaskInfo(source, "md", median_area(sizes)))


class _LazySource:
    """Opens the spec and the reader on first use, so building a suite needs no data."""

    def __init__(self, records_dir: Path, source: str, split: str, config: EpisodeConfig):
        self.records_dir, self.source, self.split, self.config = records_dir, source, split, config
        self._lock = threading.Lock()
        self._opened: Optional[tuple[SourceReader, EpisodeSampler]] = None

    def open(self) -> tuple[SourceReader, EpisodeSampler]:
        with self._lock:
            if self._opened is None:
                reader = SourceReader(self.records_dir)
                self._opened = reader, EpisodeSampler(reader.spec, self.split, self.config, source=self.source)
            return self._opened


def md_source(records_root: str | Path, source: str, split: str = "test", num_episodes: int = 600,
              suite: str = "md-v2", group: str = "md", episode_config: EpisodeConfig | None = None,
              query_batch_size: int = 500) -> TaskSource:
    """The episodes of one Meta-Dataset source as a TaskSource scored per episode.

    ``build(index, seed, image_size)`` returns episode ``index``: support labels
    0..N-1 in the episode's class order, image ids ``"<source>/<class_id>/<record>"``,
    and a query stream read lazily in batches of ``query_batch_size``.
    """
    split = check_split(split)
    lazy = _LazySource(Path(records_root) / source, source, split, episode_config or EpisodeConfig())

    def build(index: int, seed: int, image_size: int) -> Task:
        reader, sampler = lazy.open()
        episode = sampler.episode(seed, index)
        return layout_task(reader, source, EpisodeLayout.of(episode), episode.num_ways, image_size=image_size,
                           task_id=str(index), seed=seed, suite=suite, group=group,
                           query_batch_size=query_batch_size)

    return TaskSource(name=source, group=group, scoring=EPISODES, num_tasks=num_episodes, build=build,
                      benchmark="md")
