"""Layer 4: hyperparameter studies on Optuna, every trial a tracked run.

``kiln.tune(objective, n_trials=..., sampler="tpe", parallel=4, executor="processes")``
runs a study: Optuna samples and prunes, Kiln runs the trials (in this process, on local
worker processes or on Ray, through the flow executors) and records each as a child run
of the study's run, so a study is shown, compared, warm-started from and resumed after
a crash from what tracking stores. See ``docs/tuning.md``.

Names load their module on first use (:func:`kiln.core.lazy_exports`): Optuna is
imported only when a study runs or is read.
"""

from typing import TYPE_CHECKING

from kiln.core import lazy_exports

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "Categorical": "kiln.tuning.spaces",
            "Float": "kiln.tuning.spaces",
            "Int": "kiln.tuning.spaces",
            "Study": "kiln.tuning.study",
            "StudyConfig": "kiln.tuning.records",
            "StudyFailed": "kiln.tuning.study",
            "StudySummary": "kiln.tuning.summary",
            "Trial": "kiln.tuning.trial",
            "TrialPruned": "kiln.tuning.trial",
            "TrialRecord": "kiln.tuning.records",
            "list_studies": "kiln.tuning.study",
            "load_study": "kiln.tuning.study",
            "resume": "kiln.tuning.study",
            "study_summaries": "kiln.tuning.summary",
            "tune": "kiln.tuning.study",
        },
    )

if TYPE_CHECKING:
    from kiln.tuning.records import StudyConfig, TrialRecord
    from kiln.tuning.spaces import Categorical, Float, Int
    from kiln.tuning.study import Study, StudyFailed, list_studies, load_study, resume, tune
    from kiln.tuning.summary import StudySummary, study_summaries
    from kiln.tuning.trial import Trial, TrialPruned

__all__ = [
    "Categorical",
    "Float",
    "Int",
    "Study",
    "StudyConfig",
    "StudyFailed",
    "StudySummary",
    "Trial",
    "TrialPruned",
    "TrialRecord",
    "list_studies",
    "load_study",
    "resume",
    "study_summaries",
    "tune",
]
