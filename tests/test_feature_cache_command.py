"""The `cache` command (show, prune, verify) on a small cache the test writes."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from fewshot_bench.backbones import feature_cache as fc
from fewshot_bench.backbones.commands import add_commands
from fewshot_bench.backbones.feature_cache import FeatureCache, describe, namespace_parts
from fewshot_bench.errors import ConfigError


def run(argv, capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


@pytest.fixture
def cache_dir(tmp_path):
    cache = FeatureCache(tmp_path)
    for backbone, version in [("bit_r50x1@aaaa", fc.CODE_VERSION), ("conv4@bbbb", fc.CODE_VERSION - 1)]:
        ns = cache.namespace(namespace_parts(backbone, (84, 84, 3), (-1.0, 1.0), ("embedding",), "avg", "float32",
                                             code_version=version))
        ns.put(["x/0", "x/1", "x/2"], np.ones((3, 5), np.float32))
        ns.flush()
    return tmp_path


def test_show_lists_namespaces(cache_dir, capsys):
    code, out = run(["cache", "show", "--dir", str(cache_dir)], capsys)
    assert code == 0
    assert "bit_r50x1@aaaa" in out and "84x84px" in out and "3 entries" in out
    assert out.count("STALE") == 1 and "2 namespaces, 6 entries" in out
    code, out = run(["cache", "show", "--dir", str(cache_dir), "--json"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["parts"]["backbone"] for r in rows) == ["bit_r50x1@aaaa", "conv4@bbbb"]
    assert {r["parts"]["backbone"]: r["stale"] for r in rows} == {"bit_r50x1@aaaa": False, "conv4@bbbb": True}


def test_prune_and_verify(cache_dir, capsys):
    code, out = run(["cache", "prune", "--dir", str(cache_dir), "--stale", "--dry_run"], capsys)
    assert "would remove 1 namespaces" in out and len(describe(cache_dir)) == 2
    code, out = run(["cache", "prune", "--dir", str(cache_dir), "--stale"], capsys)
    assert code == 0 and "removed 1 namespaces" in out
    assert [i.parts["backbone"] for i in describe(cache_dir)] == ["bit_r50x1@aaaa"]
    code, out = run(["cache", "verify", "--dir", str(cache_dir)], capsys)
    assert "checked 3 entries; dropped 0" in out
    with pytest.raises(ConfigError, match="--all"):
        run(["cache", "prune", "--dir", str(cache_dir), "--all", "--stale"], capsys)
    code, out = run(["cache", "prune", "--dir", str(cache_dir), "--all"], capsys)
    assert "removed 1 namespaces" in out and describe(cache_dir) == []


def test_missing_cache_is_reported_not_created(tmp_path, capsys):
    code, out = run(["cache", "show", "--dir", str(tmp_path / "none")], capsys)
    assert code == 0 and "no feature cache" in out and not (tmp_path / "none").exists()
