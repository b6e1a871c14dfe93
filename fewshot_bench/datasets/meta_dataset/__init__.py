"""Meta-Dataset: the reference records layout, the episode sampler and episodes as Tasks.

- :func:`md_source` — one source's episodes as a TaskSource (``episodes.py``);
- :func:`md_suite` — the MD-v1 / MD-v2 protocols as suites (``protocol.py``, gin presets);
- :class:`EpisodeConfig`, :class:`EpisodeSampler` — the sampling rules (``sampler.py``);
- :func:`load_spec` — ``dataset_spec.json`` of the three kinds (``spec.py``);
- :class:`SourceReader` — seeked reads of ``<class_id>.tfrecords`` (``reader.py``);
- :func:`describe_episodes`, :func:`check_source` — inspection (``describe.py``);
- :func:`write_manifest`, :func:`manifest_source`, :func:`dump_episodes`, :func:`dumped_source` (``manifest.py``);
- :func:`split_batches` — non-episodic reading for pre-training (``batch.py``).
"""

from fewshot_bench.datasets.meta_dataset.batch import split_batches
from fewshot_bench.datasets.meta_dataset.describe import check_source, describe_episodes
from fewshot_bench.datasets.meta_dataset.episodes import md_source
from fewshot_bench.datasets.meta_dataset.manifest import (dump_episodes, dumped_source, manifest_source,
                                                          read_manifest, write_manifest)
from fewshot_bench.datasets.meta_dataset.protocol import MD_V1_TEST_SOURCES, MD_V2_TEST_SOURCES, md_suite
from fewshot_bench.datasets.meta_dataset.reader import SourceReader, image_id, parse_image_id
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig, EpisodeDescription, EpisodeSampler
from fewshot_bench.datasets.meta_dataset.spec import DatasetSpec, load_spec

__all__ = ["split_batches", "check_source", "describe_episodes", "md_source", "dump_episodes", "dumped_source",
           "manifest_source", "read_manifest", "write_manifest", "MD_V1_TEST_SOURCES", "MD_V2_TEST_SOURCES",
           "md_suite", "SourceReader", "image_id", "parse_image_id", "EpisodeConfig", "EpisodeDescription",
           "EpisodeSampler", "DatasetSpec", "load_spec"]
