"""SAE analyses of unlearning: a TopK SAE (SAELens) on the original model, expert features per forget
concept, and three signals (passive retention, active restoration, probe readout) giving a verdict per
unlearned model and sample: erased / suppressed / inconclusive. See ``analysis.sae.restore`` for the rule."""

from analysis.sae.features import ExpertFeature, ExpertFeatures, find_expert_features
from analysis.sae.probe import ProbeResult, probe_training_set, run_probe
from analysis.sae.restore import ALPHAS, RestorationReport, restore, restore_all, steered_correct
from analysis.sae.train import SAEHealth, SAEOptions, TrainedSAE, load_sae, train_sae

__all__ = ["ALPHAS", "ExpertFeature", "ExpertFeatures", "ProbeResult", "RestorationReport", "SAEHealth",
           "SAEOptions", "TrainedSAE", "find_expert_features", "load_sae", "probe_training_set", "restore",
           "restore_all", "run_probe", "steered_correct", "train_sae"]
