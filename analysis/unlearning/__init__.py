"""Unlearning methods behind one registry: ``run_unlearning(model, method, forget, retain, cfg)``.

Importing the package registers every method (one module each) in :data:`UNLEARNING_METHODS`
(an :class:`analysis.registry.Registry`; ``UNLEARNING_METHODS.names()`` in registration order, ``.labels()``
for menus): ``grad_ascent``, ``grad_diff``, ``npo``, ``simnpo``, ``rmu`` and the two controls
``readout_suppression`` (only the unembedding changes) and ``retrain`` (a new organism trained without the
forget facts; needs ``corpus=``). See :mod:`analysis.unlearning.base` for the shared loop, the trajectory
and the observed per-sample difficulty, and :mod:`analysis.unlearning.log` for the record of a run saved
beside the model it produced (``unlearning.json``).

Adding a method: one module here with a class decorated ``@register("name", label="...")`` (a
:class:`GradientMethod` subclass implementing ``loss``, or an :class:`UnlearnMethod` implementing
``unlearn``), imported below so that it registers.

Default hyperparameters (``UnlearnConfig()``: ``steps``/``lr``/``retain_weight`` left None take the
method's ``defaults``; batch 32, Adam, grad-norm clip 1.0), measured on the built-in organism
(``OrganismConfig(seed=0)``: 200 people, forget = the 80 facts of 20 people, retain = 720 facts; the
original scores 1.00 / 1.00 / 1.00). Accuracy = top-1 on the canonical prompts; seconds = CPU seconds
on one thread (~ wall time on an idle core):

=====================  =====  ======  =====  ======  ======  =======  =======
method                 steps  lr      rw     forget  retain  utility  seconds
=====================  =====  ======  =====  ======  ======  =======  =======
grad_ascent            100    7e-5    --     0.24    0.54    1.00     5.5
grad_diff              100    3e-4    3.0    0.16    0.99    0.95     9.4
npo (beta 0.1)         100    3e-4    1.0    0.05    0.97    1.00     9.6
simnpo (beta 2.5, g 0) 100    3e-4    1.0    0.06    1.00    1.00     10.5
rmu (l=2, c=100, a=10) 100    3e-3    1.0    0.04    1.00    1.00     7.1
readout_suppression    200    5e-3    3.0    0.09    0.99    0.62     9.9
retrain                (organism recipe: 450 steps)  0.11    1.00    1.00     75
=====================  =====  ======  =====  ======  ======  =======  =======

Gradient ascent has no retain term and takes retained facts down with the forget set (expected). The
readout control keeps retained facts (they are in its retain term) but not the utility items (they are
not), since one shared readout has to serve both. Retrain's forget accuracy is the chance level of
guessing a value the organism never saw for that person; it is a from-scratch training run, so it takes
as long as training the organism (~48 s wall on 2 idle cores), not the ~20 s budget of the others.
"""

from analysis.unlearning import (  # noqa: F401 - imported to register the methods
    grad_ascent,
    grad_diff,
    npo,
    readout_suppression,
    retrain,
    rmu,
    simnpo,
)
from analysis.unlearning.base import (
    UNLEARNING_METHODS,
    GradientMethod,
    UnlearnConfig,
    UnlearnMethod,
    UnlearnResult,
    get_method,
    observed_difficulty,
    register,
    run_unlearning,
)
from analysis.unlearning.log import read_unlearning_log, write_unlearning_log

__all__ = [
    "UNLEARNING_METHODS",
    "GradientMethod",
    "UnlearnConfig",
    "UnlearnMethod",
    "UnlearnResult",
    "get_method",
    "observed_difficulty",
    "read_unlearning_log",
    "register",
    "run_unlearning",
    "write_unlearning_log",
]
