"""The built-in model organism: a small HookedTransformer trained in seconds on the synthetic corpus."""

from analysis.organism.tokenizer import build_tokenizer
from analysis.organism.train import OrganismConfig, TrainReport, train_organism

__all__ = ["OrganismConfig", "TrainReport", "build_tokenizer", "train_organism"]
