"""Meta-Dataset converters: raw downloads -> the reference records layout.

``convert_source(source, raw, out)`` writes ``<out>/<source>/`` as the
reference converter does: ``dataset_spec.json`` plus one
``<class_id>.tfrecords`` per class (train classes first, then valid, then
test), so any Meta-Dataset reader reads it. One module per source states the
raw layout it expects and the protocol facts it implements; the shared pieces
are ``splits`` (split files, the seeded rule), ``images`` (record encoding,
crops), ``writer`` (atomic, resumable, parallel class writing with a progress
bar), ``wordnet`` (the ILSVRC DAG) and ``commands`` (``fewshot-bench prepare md``).
"""

from data_prep.md_convert.commands import add_md_arguments, run_prepare_md
from data_prep.md_convert.convert import SOURCES, ConversionReport, convert_source

__all__ = ["SOURCES", "ConversionReport", "convert_source", "add_md_arguments", "run_prepare_md"]
