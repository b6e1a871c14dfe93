"""Leaderboards: published references, submissions, significance-aware ranking and reports.

- :mod:`.submission`: the submission format (``submission.schema.json``), validation, files.
- :mod:`.export`: results database runs -> submissions (scored by ``evaluation.scores``).
- :mod:`.ranking`: the ranking rule with ties for insignificant differences.
- :mod:`.tables`: MD, VTAB and VTAB+MD tables; :mod:`.render`: Markdown, CSV, HTML; :mod:`.plots`.
- :mod:`.commands`: ``fewshot-bench report``, ``submission export|check``, ``leaderboard``.
"""

from fewshot_bench.leaderboard.ranking import Estimate, rank_source, significantly_different
from fewshot_bench.leaderboard.submission import Figure, Submission, from_dict, read_submissions
from fewshot_bench.leaderboard.tables import Board, build_board

__all__ = ["Board", "Estimate", "Figure", "Submission", "build_board", "from_dict", "rank_source",
           "read_submissions", "significantly_different"]
