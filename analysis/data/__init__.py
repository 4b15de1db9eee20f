"""Samples: the schema, JSONL readers/writers and validation; other data formats (analysis.data.formats)."""

from analysis.data.formats import ImportOptions, read_sample_file, read_samples
from analysis.data.schema import SPLITS, Sample, read_jsonl, validate_samples, write_jsonl

__all__ = ["SPLITS", "ImportOptions", "Sample", "read_jsonl", "read_sample_file", "read_samples", "validate_samples",
           "write_jsonl"]
