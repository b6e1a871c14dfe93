import numpy as np
import pytest

from fewshot_bench.errors import LearnerError
from fewshot_bench.tasks import Examples, QueryStream, Task, TaskInfo, check_support, fingerprint, median_area


def _examples(n, labels=None, prefix="x"):
    return Examples(np.zeros((n, 4, 4, 3), np.float32),
                    np.arange(n) % 3 if labels is None else np.asarray(labels),
                    tuple(f"{prefix}{i}" for i in range(n)))


def test_examples_take_concat_and_unlabelled():
    ex = _examples(6)
    part = ex.take([4, 1])
    assert part.ids == ("x4", "x1") and part.labels.tolist() == [1, 1]
    both = Examples.concat([part, ex.take([0])])
    assert both.ids == ("x4", "x1", "x0") and len(both) == 3
    assert ex.unlabelled().labels is None and ex.unlabelled().ids == ex.ids


def test_examples_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="must agree"):
        Examples(np.zeros((2, 4, 4, 3)), np.zeros(3), ("a", "b"))


def test_query_stream_is_reiterable_and_chunked():
    stream = QueryStream.from_examples(_examples(7), batch_size=3)
    assert [len(b) for b in stream] == [3, 3, 1]
    assert [b.ids[0] for b in stream] == ["x0", "x3", "x6"]


def test_fingerprint_depends_on_ids_labels_and_roles():
    s, q = _examples(3), _examples(2, prefix="q")
    base = fingerprint(s, [q])
    assert base == fingerprint(s, QueryStream.from_examples(q, 1))  # chunking does not matter
    assert base != fingerprint(s, [_examples(2, labels=[1, 1], prefix="q")])
    assert base != fingerprint(q, [s])
    assert base != fingerprint(s.take([1, 0, 2]), [q])


def test_check_support_names_the_problem():
    check_support(_examples(3), 3)
    with pytest.raises(LearnerError, match=r"classes \[2\]"):
        check_support(_examples(2), 3)
    with pytest.raises(LearnerError, match="empty"):
        check_support(_examples(0), 3)
    with pytest.raises(LearnerError, match="0..1"):
        check_support(_examples(3), 2)


def test_task_info_defaults_to_the_source_name():
    stream = QueryStream.from_examples(_examples(2))
    task = Task(_examples(3), stream, 3, "s", "g", "omniglot", "0", 0)
    assert task.info == TaskInfo("omniglot", "", None)
    given = TaskInfo("mini_dsprites_orientation", "vtab", 4096.0)
    assert Task(_examples(3), stream, 3, "s", "g", "x", "0", 0, info=given).info is given


def test_median_area():
    # areas 6, 20, 100 -> 20; an even count averages the middle two: (2 + 12) / 2 = 7
    assert median_area(np.array([[2, 3], [10, 10], [4, 5]])) == 20.0
    assert median_area(np.array([[1, 2], [3, 4]])) == 7.0
    assert median_area(np.zeros((0, 2))) is None
