"""Learners: every built-in one registers itself in ``LEARNERS`` on import."""

from fewshot_bench.learners.base import LEARNERS, Learner, Predictor
from fewshot_bench.learners import linear_probe  # noqa: F401  (registers "linear_probe")
from fewshot_bench.learners import head2toe  # noqa: F401  (registers "head2toe")
from fewshot_bench.learners import protonet  # noqa: F401  (registers "protonet")
from fewshot_bench.learners import protomaml  # noqa: F401  (registers "protomaml")
from fewshot_bench.learners import meta_training  # noqa: F401  (registers the backbone "meta_trained")
from fewshot_bench.learners import finetune  # noqa: F401  (registers "finetune")
from fewshot_bench.learners import bit  # noqa: F401  (registers "bit")

__all__ = ["LEARNERS", "Learner", "Predictor"]
