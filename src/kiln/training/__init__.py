"""Layer 4: checkpointed, resumable and distributed training.

A :class:`Checkpointer` saves a training state atomically, content-addressed in the
artifact store and recorded on its run, and gives the latest good one back; ``fit`` runs
a training function on several workers with ``torch.distributed`` set up (local processes
through torch's elastic launcher, or Ray Train) and restarts the group from the latest
checkpoint when a worker dies. See ``docs/training.md``.

Names load their module on first use (:func:`kiln.core.lazy_exports`): importing
``kiln.training`` does not import torch.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            # checkpoints (names added here one per line)
            "Checkpoint": "kiln.training._checkpoint",
            "CheckpointInfo": "kiln.training._checkpoint",
            "Checkpointer": "kiln.training.checkpoints",
            "LoopResult": "kiln.training.torch_loop",
            "Preempted": "kiln.training.preemption",
            "lightgbm_checkpoint": "kiln.training.boosting",
            "resume_lightgbm": "kiln.training.boosting",
            "resume_or_start": "kiln.training.preemption",
            "resume_xgboost": "kiln.training.boosting",
            "train_loop": "kiln.training.torch_loop",
            "xgboost_checkpoint": "kiln.training.boosting",
            # distributed (names added here one per line)
            "FitFailed": "kiln.training.distributed",
            "FitResult": "kiln.training.distributed",
            "TrainContext": "kiln.training.distributed",
            "fit": "kiln.training.distributed",
            "get_context": "kiln.training.distributed",
        },
    )

if TYPE_CHECKING:
    from kiln.training._checkpoint import Checkpoint, CheckpointInfo
    from kiln.training.boosting import (
        lightgbm_checkpoint,
        resume_lightgbm,
        resume_xgboost,
        xgboost_checkpoint,
    )
    from kiln.training.checkpoints import Checkpointer
    from kiln.training.distributed import FitFailed, FitResult, TrainContext, fit, get_context
    from kiln.training.preemption import Preempted, resume_or_start
    from kiln.training.torch_loop import LoopResult, train_loop

__all__: list[str] = [
    "Checkpoint",
    "CheckpointInfo",
    "Checkpointer",
    "FitFailed",
    "FitResult",
    "LoopResult",
    "Preempted",
    "TrainContext",
    "fit",
    "get_context",
    "lightgbm_checkpoint",
    "resume_lightgbm",
    "resume_or_start",
    "resume_xgboost",
    "train_loop",
    "xgboost_checkpoint",
]
