"""Writing the class files of a source: atomic, resumable, in parallel, with a progress bar.

A class is written to ``<class_id>.tfrecords.tmp`` and renamed to
``<class_id>.tfrecords`` only once every record is in; then a small marker
``.md_convert/<class_id>.json`` records the class's fingerprint (its name, its
images in order, how they are encoded), its record count and the images that
were skipped. On a restart a class is skipped when its marker matches the
planned class and its file has the size written then; anything else (no
marker, another fingerprint, a truncated file, a leftover ``.tmp``) is
written again; class files of ids the plan no longer has are deleted. The
fingerprint covers the image paths, crops and order, not the file contents:
replace a raw image in place and delete the class's marker to redo it.
Classes are converted by a process pool (``spawn``: every
worker imports TensorFlow once); ``workers <= 1`` converts in this process.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from data_prep.md_convert.images import ImageError
from data_prep.md_records import FILE_PATTERN, example_bytes

STATE_DIR = ".md_convert"
TMP_SUFFIX = ".tmp"
FORMAT_VERSION = 1  # bump when the bytes a job writes change for the same inputs


@dataclasses.dataclass(frozen=True)
class ClassJob:
    """One class to write: its id, name and images in record order.

    ``encode`` turns one item into the image bytes of its record; it must be a
    module-level function (or a ``functools.partial`` of one) so that the job
    can be sent to a worker process.
    """

    class_id: int
    name: str
    items: Sequence
    encode: Callable[[object], bytes]

    def fingerprint(self) -> str:
        encode = self.encode
        if isinstance(encode, functools.partial):
            encode_id = f"{encode.func.__module__}.{encode.func.__qualname__}{encode.args!r}{encode.keywords!r}"
        else:
            encode_id = f"{encode.__module__}.{encode.__qualname__}"
        digest = hashlib.sha256(f"{FORMAT_VERSION}|{self.class_id}|{self.name}|{encode_id}|".encode())
        if isinstance(self.items, (tuple, list)):
            for item in self.items:
                digest.update(repr(item).encode())
                digest.update(b"\n")
        else:  # a lazy sequence whose repr names its items (e.g. NpyRows)
            digest.update(repr(self.items).encode())
        return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ClassResult:
    """A written class: its record count and the ``(image, reason)`` of every image skipped."""

    class_id: int
    records: int
    skipped: tuple[tuple[str, str], ...] = ()


def class_path(dest: Path, class_id: int) -> Path:
    return dest / FILE_PATTERN.format(class_id)


def marker_path(dest: Path, class_id: int) -> Path:
    return dest / STATE_DIR / f"{class_id}.json"


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def completed(dest: Path, job: ClassJob) -> Optional[ClassResult]:
    """The result of an earlier run if ``job`` is already written whole, else None."""
    try:
        marker = json.loads(marker_path(dest, job.class_id).read_text())
        if marker["fingerprint"] != job.fingerprint():
            return None
        if class_path(dest, job.class_id).stat().st_size != int(marker["bytes"]):
            return None
        skipped = tuple((str(image), str(reason)) for image, reason in marker["skipped"])
        return ClassResult(job.class_id, int(marker["records"]), skipped)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_job(dest: str, job: ClassJob) -> ClassResult:
    """Write one class file atomically, then its marker; unreadable images are skipped and listed."""
    import tensorflow as tf

    dest_dir = Path(dest)
    final = class_path(dest_dir, job.class_id)
    marker = marker_path(dest_dir, job.class_id)
    marker.unlink(missing_ok=True)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    skipped, records = [], 0
    with tf.io.TFRecordWriter(str(tmp)) as writer:
        for item in job.items:
            try:
                data = job.encode(item)
            except ImageError as e:
                skipped.append((str(item), str(e)))
                continue
            writer.write(example_bytes(data, job.class_id))
            records += 1
    size = tmp.stat().st_size
    tmp.replace(final)
    _write_json_atomically(marker, {"fingerprint": job.fingerprint(), "name": job.name, "records": records,
                                    "bytes": size, "skipped": skipped})
    return ClassResult(job.class_id, records, tuple(skipped))


def _remove_other_classes(dest: Path, class_ids: set[int]) -> None:
    """Delete class files (and markers) of an earlier conversion whose ids the plan no longer has."""
    for path in list(dest.glob("*.tfrecords")) + list((dest / STATE_DIR).glob("*.json")):
        stem = path.name.split(".", 1)[0]
        if stem.isdigit() and int(stem) not in class_ids:
            path.unlink()


def _quiet_worker() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def write_classes(dest: Path, jobs: Sequence[ClassJob], workers: int = 2, progress: bool = True,
                  desc: str = "") -> tuple[list[ClassResult], list[int]]:
    """Write every job not already complete in ``dest``.

    Returns the results of all jobs (in class-id order) and the ids of the
    classes written by this call (the others were complete already).
    """
    from tqdm import tqdm

    dest.mkdir(parents=True, exist_ok=True)
    (dest / STATE_DIR).mkdir(exist_ok=True)
    for leftover in dest.glob(f"*{TMP_SUFFIX}"):
        leftover.unlink()
    _remove_other_classes(dest, {job.class_id for job in jobs})
    results: dict[int, ClassResult] = {}
    todo: list[ClassJob] = []
    for job in jobs:
        done = completed(dest, job)
        if done is None:
            todo.append(job)
        else:
            results[job.class_id] = done
    total = sum(len(job.items) for job in jobs)
    with tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        bar.update(sum(len(job.items) for job in jobs if job.class_id in results))
        for job, result in _run(str(dest), todo, workers):
            results[job.class_id] = result
            bar.update(len(job.items))
            bar.set_postfix(classes=f"{len(results)}/{len(jobs)}", skipped=sum(len(r.skipped)
                                                                                for r in results.values()))
    return [results[job.class_id] for job in jobs], [job.class_id for job in todo]


def _run(dest: str, jobs: Sequence[ClassJob], workers: int) -> Iterable[tuple[ClassJob, ClassResult]]:
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, write_job(dest, job)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context,
                                                initializer=_quiet_worker) as pool:
        futures = {pool.submit(write_job, dest, job): job for job in jobs}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
