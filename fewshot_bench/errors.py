"""The one exception family of fewshot_bench.

Every error a user can cause is a :class:`FewshotBenchError`; its message names
the file, dataset or option at fault and says how to fix it.
"""


class FewshotBenchError(Exception):
    """Base class of every error raised on purpose by fewshot_bench."""


class ConfigError(FewshotBenchError):
    """An unknown name, a malformed option or an impossible setting."""


class DataError(FewshotBenchError):
    """Data that is missing, damaged or inconsistent (files, records, caches)."""


class LearnerError(FewshotBenchError):
    """A learner could not adapt to a task (bad support set, NaN, divergence)."""
