"""Meta-Dataset: the reference records layout, the episode sampler and episodes as Tasks."""

from fewshot_bench.datasets.meta_dataset.episodes import md_source
from fewshot_bench.datasets.meta_dataset.reader import SourceReader, image_id, parse_image_id
from fewshot_bench.datasets.meta_dataset.sampler import EpisodeConfig, EpisodeDescription, EpisodeSampler
from fewshot_bench.datasets.meta_dataset.spec import DatasetSpec, load_spec

__all__ = ["md_source", "SourceReader", "image_id", "parse_image_id", "EpisodeConfig", "EpisodeDescription",
           "EpisodeSampler", "DatasetSpec", "load_spec"]
