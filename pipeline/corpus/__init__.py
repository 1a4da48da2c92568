"""The pretraining corpus (CXR-1M and its subsets): union of source manifests, de-duplication by decoded
pixels, near-duplicate flags, a contamination guard against evaluation test sets, and source-balanced
sharding order."""

from pipeline.corpus.build import CorpusConfig, CorpusResult, EvalInput, SourceInput, build_corpus, read_corpus_root
from pipeline.corpus.interleave import interleaved_order
from pipeline.corpus.sources import PAPER_TOTAL, SUBSETS, TABLE_I, resolve_subset

__all__ = [
    "PAPER_TOTAL",
    "SUBSETS",
    "TABLE_I",
    "CorpusConfig",
    "CorpusResult",
    "EvalInput",
    "SourceInput",
    "build_corpus",
    "interleaved_order",
    "read_corpus_root",
    "resolve_subset",
]
