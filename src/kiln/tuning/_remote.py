"""A trial in a worker process or on Ray: sampled against a copy of the study.

The worker gets the study's trials as they were when the trial was handed out (the ones
still running included, so a sampler with a constant liar spreads parallel trials) and
samples, prunes and records against a study of its own built from them. What it sends
back, :class:`~kiln.tuning.trial.Outcome`, the study's process applies to the real study.
This keeps sampling off the study's process and needs no storage the workers share
beyond Kiln's own stores.
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["run_trial"]


def run_trial(payload: dict[str, Any]) -> dict[str, Any]:
    import cloudpickle
    import optuna

    from kiln.tracking import active_run
    from kiln.tuning._algorithms import make_pruner, make_sampler
    from kiln.tuning.spaces import space_from_json
    from kiln.tuning.trial import execute

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = cloudpickle.loads(payload["objective"])
    seed = payload["seed"]
    study = optuna.create_study(
        storage=optuna.storages.InMemoryStorage(),
        sampler=make_sampler(
            payload["sampler"], None if seed is None else seed + payload["number"]
        ),
        pruner=make_pruner(payload["pruner"]),
        directions=payload["directions"],
    )
    own: Any = None
    for frozen in pickle.loads(payload["snapshot"]):
        if frozen.number == payload["number"]:
            own = frozen
        else:
            study.add_trial(frozen)
    fixed = own.system_attrs.get("fixed_params") if own is not None else None
    if fixed or (own is not None and own.params):
        study.enqueue_trial(fixed or own.params)
    space = payload["space"]
    trial = study.ask(fixed_distributions=space_from_json(space) if space else None)
    run = active_run()
    outcome = execute(
        objective,
        trial,
        run,
        number=payload["index"],
        study=payload["study"],
        metrics=payload["metrics"],
        space=bool(space),
    )
    mine = study.get_trials(deepcopy=False)[-1]
    outcome.system_attrs = {k: v for k, v in mine.system_attrs.items() if k != "fixed_params"}
    return outcome.to_dict()
