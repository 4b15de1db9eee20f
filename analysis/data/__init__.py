"""Samples: the schema, JSONL readers/writers and validation."""

from analysis.data.schema import SPLITS, Sample, read_jsonl, validate_samples, write_jsonl

__all__ = ["SPLITS", "Sample", "read_jsonl", "validate_samples", "write_jsonl"]
