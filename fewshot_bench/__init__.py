"""fewshot_bench: VTAB+MD evaluation of transfer learners and meta-learners."""

__version__ = "0.1.0"
