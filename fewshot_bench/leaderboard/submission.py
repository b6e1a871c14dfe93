"""Submissions: one method's results in a documented JSON format, validated.

Submissions come from other people, so every file is checked against
``submission.schema.json`` (JSON Schema 2020-12) and then against the protocol
it names; every problem is reported with the field at fault, e.g.
``results[2].accuracy_pct: 150 is greater than the maximum of 100``.

A ``.json`` file holds one submission; a ``.jsonl`` file holds one per line
(the format of ``leaderboards/references/``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from fewshot_bench.errors import DataError
from fewshot_bench.leaderboard.protocols import MD, SourceInfo, protocol_parts

FORMAT = "fewshot-bench-submission/1"
SCHEMA_PATH = Path(__file__).with_name("submission.schema.json")
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PROBLEMS = 20


@dataclasses.dataclass(frozen=True)
class Figure:
    """One VTAB task's or MD source's result, in percent."""

    source: str
    accuracy_pct: float
    ci95_pct: Optional[float] = None   # MD: 95% half-width
    episodes: Optional[int] = None     # MD: episodes the mean is over


@dataclasses.dataclass(frozen=True)
class Submission:
    """One method's results under one protocol (see ``submission.schema.json``).

    ``origin`` says where it was read from (a file and line, or a database run);
    it is not part of the JSON document.
    """

    method: str
    backbone: str
    pretraining_data: str
    image_size: Optional[int]
    protocol: str
    results: tuple[Figure, ...]
    provenance: Mapping[str, Any]
    reported_means: Mapping[str, float] = dataclasses.field(default_factory=dict)
    notes: str = ""
    origin: str = ""

    @property
    def identity(self) -> tuple[str, str, str, Optional[int]]:
        """What makes two submissions the same method: name, backbone, pretraining data, image size."""
        return (self.method, self.backbone, self.pretraining_data, self.image_size)

    def figures(self, benchmark: str) -> dict[str, Figure]:
        """The figures of one half (``"vtab"`` or ``"md"``) by source name."""
        names = {s.name for s in protocol_parts(self.protocol).get(benchmark, ())}
        return {f.source: f for f in self.results if f.source in names}

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": FORMAT, "method": self.method, "backbone": self.backbone,
            "pretraining_data": self.pretraining_data, "image_size": self.image_size,
            "protocol": self.protocol,
            "results": [{k: v for k, v in dataclasses.asdict(f).items() if v is not None} for f in self.results],
        }
        if self.reported_means:
            doc["reported_means"] = dict(self.reported_means)
        doc["provenance"] = dict(self.provenance)
        if self.notes:
            doc["notes"] = self.notes
        return doc


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The submission JSON schema shipped with the package."""
    return json.loads(SCHEMA_PATH.read_text())


def _field(path: Iterable[Any]) -> str:
    """``["results", 2, "accuracy_pct"]`` -> ``results[2].accuracy_pct``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def schema_problems(doc: Any) -> list[str]:
    """Every way ``doc`` breaks the JSON schema, as ``field: message`` lines."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [_short(f"{_field(e.absolute_path)}: {e.message}") for e in errors]


def protocol_problems(doc: Mapping[str, Any]) -> list[str]:
    """Checks the schema cannot express: names, required MD intervals, duplicates.

    ``doc`` must already satisfy the schema.
    """
    parts = protocol_parts(doc["protocol"])
    known: dict[str, SourceInfo] = {s.name: s for sources in parts.values() for s in sources}
    problems, seen = [], {}
    for i, fig in enumerate(doc["results"]):
        name = fig["source"]
        info = known.get(name)
        if info is None:
            valid = ", ".join(sorted(known))
            problems.append(f"results[{i}].source: {_short(repr(name), 80)} is not a task or source of protocol "
                            f"{doc['protocol']!r}; use one of: {valid}")
            continue
        if name in seen:
            problems.append(f"results[{i}].source: {name!r} already given in results[{seen[name]}]")
        seen[name] = i
        for key in ("accuracy_pct", "ci95_pct"):
            if key in fig and not math.isfinite(fig[key]):
                problems.append(f"results[{i}].{key}: {fig[key]} is not a finite number")
        for key in ("ci95_pct", "episodes"):
            if info.benchmark == MD and key not in fig:
                problems.append(f"results[{i}].{key}: required for Meta-Dataset source {name!r} "
                                "(the 95% interval in percent and the number of test episodes)")
            if info.benchmark != MD and key in fig:
                problems.append(f"results[{i}].{key}: VTAB task {name!r} is scored by accuracy pooled over its "
                                "test set and has no interval or episodes; remove the field")
    for key, value in doc.get("reported_means", {}).items():
        if not math.isfinite(value):
            problems.append(f"reported_means.{key}: {value} is not a finite number")
    if "reported_means" in doc and "vtab" not in parts:
        problems.append(f"reported_means: protocol {doc['protocol']!r} has no VTAB half")
    if not doc["results"] and "reported_means" not in doc:
        problems.append("results: empty; give at least one figure (or reported_means)")
    return problems


def from_dict(doc: Any, origin: str = "") -> Submission:
    """Validate a parsed JSON document and build its :class:`Submission`.

    Raises :class:`DataError` naming ``origin`` and every field at fault.
    """
    problems = schema_problems(doc)
    if not problems:
        problems = protocol_problems(doc)
    if problems:
        shown = problems[:MAX_PROBLEMS] + ([f"... and {len(problems) - MAX_PROBLEMS} more"]
                                           if len(problems) > MAX_PROBLEMS else [])
        raise DataError(f"invalid submission {origin or '(document)'}:\n  " + "\n  ".join(shown)
                        + f"\n(the format is described in {SCHEMA_PATH.name}; "
                          "check a file with `fewshot-bench submission check FILE`)")
    return Submission(
        method=doc["method"], backbone=doc["backbone"], pretraining_data=doc["pretraining_data"],
        image_size=doc["image_size"], protocol=doc["protocol"],
        results=tuple(Figure(f["source"], float(f["accuracy_pct"]),
                             None if "ci95_pct" not in f else float(f["ci95_pct"]), f.get("episodes"))
                      for f in doc["results"]),
        provenance=dict(doc["provenance"]), reported_means=dict(doc.get("reported_means", {})),
        notes=doc.get("notes", ""), origin=origin)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse(text: str, origin: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise DataError(f"invalid submission {origin}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except ValueError as e:
        raise DataError(f"invalid submission {origin}: {e}") from e


def read_submissions(path: str | Path) -> list[Submission]:
    """The submissions of a ``.json`` (one) or ``.jsonl`` (one per line) file, validated."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"submission file {path} does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"submission file {path} is larger than {MAX_FILE_BYTES // 2**20} MiB; "
                        "a submission is a few kilobytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"submission file {path} is not UTF-8 text ({e})") from e
    if path.suffix == ".jsonl":
        return [from_dict(_parse(line, f"{path} line {n}"), f"{path} line {n}")
                for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    return [from_dict(_parse(text, str(path)), str(path))]


def write_submissions(path: str | Path, submissions: Iterable[Submission]) -> None:
    """Write one submission (``.json``) or several, one per line (``.jsonl``)."""
    path = Path(path)
    submissions = list(submissions)
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(s.to_dict(), sort_keys=False) + "\n" for s in submissions)
    elif len(submissions) == 1:
        text = json.dumps(submissions[0].to_dict(), indent=2) + "\n"
    else:
        raise DataError(f"{path}: a .json file holds one submission, got {len(submissions)}; "
                        "write a .jsonl file (one per line) or choose one run")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
