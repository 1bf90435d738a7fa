"""``kiln demo``: the whole tracking and registry story in one command, on data made on the spot.

It exists so a new user sees, in under a minute and with nothing to download, what Kiln
records for a real training job (params, per-iteration curves, final metrics, the model
file and reports), how the best model becomes a registered, verified champion with its
lineage, and how it serves: ``kiln serve`` runs as its own process, the champion
answers with features looked up online, and a 10% canary of the runner-up is judged by
a guard. It uses only the public API and commands, so it doubles as an end-to-end check
of the SDK and the server.
"""

from __future__ import annotations

import inspect
import shlex
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import kiln
from kiln.cli._demo_features import (
    DEMO_FEATURES,
    REQUEST_COLUMNS,
    SERVICE,
    define_features,
    online_vs_offline,
    training_set,
)
from kiln.cli._demo_monitoring import MonitoringReport, watch_traffic
from kiln.cli._demo_serving import DEPLOYMENT, CanaryReport, serve_canary
from kiln.cli._demo_tuning import best_settings, tune_lightgbm
from kiln.cli._models import lineage_tree
from kiln.core import InvalidInput, KilnError, mask_url
from kiln.core.openmp import prefer_passive_openmp
from kiln.data import make_fraud_transactions, train_valid_split
from kiln.registry import ModelVersion

__all__ = ["DemoSummary", "run_demo"]

# scikit-learn, SciPy and LightGBM are imported inside the functions that use them: they
# take seconds to import, and ``kiln`` commands other than ``demo`` must not pay for that.

MIN_TRANSACTIONS = 1_000  # below this the validation set has too few frauds to rank
VALID_FRACTION = 0.2
SGD_EPOCHS = 20
HIST_MAX_ITER = 150
HIST_CHUNK = 25  # each warm start re-scores the training set, so few large chunks
LGBM_ROUNDS = 200
MODEL_NAME = "fraud"
LGBM_THREADS = 2  # the demo must stay quick and polite on a 2-core laptop or CI runner


@dataclass(frozen=True, kw_only=True)
class DemoSummary:
    """What the demo left behind, so callers (and tests) can look it up again."""

    experiment: str
    run_ids: tuple[str, ...]
    best_run_id: str
    best_val_auc: float
    model_ref: str
    flow_run_id: str
    """The flow run that trained the candidates (one task per candidate)."""
    study: str
    """The hyperparameter study that chose the LightGBM candidate's settings."""
    canary: CanaryReport
    """What the 10% canary did on ``kiln serve`` and the guard's verdict."""
    monitoring: MonitoringReport
    """What the drift monitor made of ordinary traffic and of a category surge."""


@dataclass(frozen=True, kw_only=True)
class _Data:
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_valid: pd.DataFrame
    y_valid: np.ndarray
    params: dict[str, Any]
    summary: dict[str, Any]
    dataset_id: str
    features: tuple[str, ...]
    valid_rows: pd.DataFrame
    merchant_categories: pd.Series  # merchant_id -> category, for the traffic surge


@dataclass(frozen=True, kw_only=True)
class _Fitted:
    model: Any
    importance: pd.DataFrame
    fit_seconds: float
    last_step: int


Advance = Callable[[int], None]


@contextmanager
def _quiet_fitting() -> Iterator[None]:
    """Scope the warning filter to fitting so user code keeps its own warning settings."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        yield


def _scalar_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Estimator params as storable values: objects (rare in these models) become their repr."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[key] = value
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = repr(value)
    return out


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Rank-sum (Mann-Whitney) AUC: equal to ``roc_auc_score`` without its per-call checks,
    which dominate when it runs once per boosting round."""
    from scipy.stats import rankdata

    ranks = rankdata(p)
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _val_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"val_auc": _auc(y, p), "val_logloss": _logloss(y, p)}


def _prepare_data(fs: kiln.FeatureStore, n_transactions: int, seed: int) -> _Data:
    # One user per ~25 purchases keeps per-user history (and so the velocity and typical
    # spend features) meaningful at every demo size.
    n_users = int(min(2_000, max(50, n_transactions // 25)))
    n_merchants = 300
    days = 90
    # Midnight today: the same seed gives the same data all day, while dates stay recent.
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    df = make_fraud_transactions(
        n_transactions=n_transactions,
        n_users=n_users,
        n_merchants=n_merchants,
        days=days,
        seed=seed,
        end=end,
    )
    transactions = kiln.get_settings().home / "demo" / "transactions.parquet"
    transactions.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(transactions, index=False)
    fs.apply(define_features(transactions))
    snapshot = training_set(fs, df).save("fraud_demo_train")
    frame = snapshot.to_pandas()  # the snapshot is exactly what the models see
    train, valid = train_valid_split(frame, valid_fraction=VALID_FRACTION)
    features = list(DEMO_FEATURES)
    params: dict[str, Any] = {
        "data.generator": "kiln.data.make_fraud_transactions",
        "data.n_transactions": n_transactions,
        "data.n_users": n_users,
        "data.n_merchants": n_merchants,
        "data.days": days,
        "data.end": end.isoformat(),
        "data.seed": seed,
        "data.valid_fraction": VALID_FRACTION,
        "data.n_train": len(train),
        "data.n_valid": len(valid),
        "data.features": features,
        "data.snapshot": snapshot.id,
        "features.service": SERVICE,
    }
    summary: dict[str, Any] = {
        "generator": "kiln.data.make_fraud_transactions",
        "arguments": {
            "n_transactions": n_transactions,
            "n_users": n_users,
            "n_merchants": n_merchants,
            "days": days,
            "seed": seed,
            "end": end.isoformat(),
        },
        "rows": len(df),
        "columns": {str(c): str(t) for c, t in df.dtypes.items()},
        "features": features,
        "snapshot": snapshot.to_dict() | {"path": str(snapshot.path)},
        "label": "is_fraud",
        "split": {
            "method": "by time: the latest rows are the validation set",
            "valid_fraction": VALID_FRACTION,
            "train_rows": len(train),
            "valid_rows": len(valid),
            "valid_from": valid["event_timestamp"].iloc[0].isoformat(),
        },
        "fraud_rate": {
            "all": float(df["is_fraud"].mean()),
            "train": float(train["is_fraud"].mean()),
            "valid": float(valid["is_fraud"].mean()),
        },
        "time_range": {
            "start": df["event_timestamp"].iloc[0].isoformat(),
            "end": df["event_timestamp"].iloc[-1].isoformat(),
        },
        "distinct": {
            "users": int(df["user_id"].nunique()),
            "merchants": int(df["merchant_id"].nunique()),
        },
    }
    return _Data(
        dataset_id=snapshot.id,
        features=tuple(features),
        valid_rows=valid,
        merchant_categories=df.groupby("merchant_id")["merchant_category"].first().astype(str),
        x_train=train[features],
        y_train=train["is_fraud"].to_numpy(dtype=np.int64),
        x_valid=valid[features],
        y_valid=valid["is_fraud"].to_numpy(dtype=np.int64),
        params=params,
        summary=summary,
    )


# -- the three candidates ---------------------------------------------------------------


def _train_sgd(run: kiln.Run, data: _Data, seed: int, advance: Advance) -> _Fitted:
    """Logistic regression by SGD, one ``partial_fit`` per epoch so every epoch is a step."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    # Windows with no events have no mean: the median stands in, inside the model, so
    # serving imputes exactly as training did.
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    scaler = StandardScaler()
    clf = SGDClassifier(loss="log_loss", alpha=1e-4, penalty="l2", random_state=seed)
    run.log_params(
        {
            **_scalar_params(clf.get_params()),
            **{f"scaler.{k}": v for k, v in _scalar_params(scaler.get_params()).items()},
            "epochs": SGD_EPOCHS,
        }
    )
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    x_train = scaler.fit_transform(imputer.fit_transform(data.x_train))
    fit_seconds = time.perf_counter() - started
    x_valid = scaler.transform(imputer.transform(data.x_valid))
    classes = np.array([0, 1])
    for epoch in range(SGD_EPOCHS):
        order = rng.permutation(len(x_train))
        started = time.perf_counter()
        with _quiet_fitting():
            clf.partial_fit(x_train[order], data.y_train[order], classes=classes)
        fit_seconds += time.perf_counter() - started
        run.log_metrics(_val_metrics(data.y_valid, clf.predict_proba(x_valid)[:, 1]), step=epoch)
        advance(1)
    model = Pipeline([("impute", imputer), ("scaler", scaler), ("sgd", clf)])
    coef = clf.coef_[0]
    importance = pd.DataFrame(
        {
            "feature": list(data.features),
            "importance": np.abs(coef),
            "coefficient": coef,
            "method": "coefficient on standardized features",
        }
    )
    return _Fitted(
        model=model, importance=importance, fit_seconds=fit_seconds, last_step=SGD_EPOCHS - 1
    )


def _train_hist_gbdt(run: kiln.Run, data: _Data, seed: int, advance: Advance) -> _Fitted:
    """Warm-started in chunks so the progress bar moves; curves come from staged predictions."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance

    model = HistGradientBoostingClassifier(
        max_iter=HIST_MAX_ITER,
        learning_rate=0.1,
        max_leaf_nodes=31,
        min_samples_leaf=40,
        l2_regularization=1.0,
        early_stopping=False,
        warm_start=True,
        random_state=seed,
    )
    run.log_params(_scalar_params(model.get_params()))
    fit_seconds = 0.0
    for done in range(HIST_CHUNK, HIST_MAX_ITER + HIST_CHUNK, HIST_CHUNK):
        target = min(done, HIST_MAX_ITER)
        model.set_params(max_iter=target)
        started = time.perf_counter()
        with _quiet_fitting():
            model.fit(data.x_train, data.y_train)
        fit_seconds += time.perf_counter() - started
        advance(target - (done - HIST_CHUNK))
    step = -1
    for step, proba in enumerate(model.staged_predict_proba(data.x_valid)):
        run.log_metrics(_val_metrics(data.y_valid, proba[:, 1]), step=step)
    # Histogram GBDT keeps no split statistics, so ask the data: how much AUC is lost
    # when one feature is shuffled.
    perm = permutation_importance(
        model,
        data.x_valid,
        data.y_valid,
        scoring="roc_auc",
        n_repeats=2,
        random_state=seed,
        max_samples=min(len(data.x_valid), 5_000),
        n_jobs=1,
    )
    importance = pd.DataFrame(
        {
            "feature": list(data.features),
            "importance": perm.importances_mean,
            "importance_std": perm.importances_std,
            "method": "permutation (validation AUC drop)",
        }
    )
    return _Fitted(model=model, importance=importance, fit_seconds=fit_seconds, last_step=step)


def _train_lightgbm(run: kiln.Run, data: _Data, seed: int, advance: Advance) -> _Fitted:
    """Per-round validation metrics come from LightGBM's own evaluation, via a callback."""
    import lightgbm as lgb

    study = tune_lightgbm(
        data.x_train,
        data.y_train,
        experiment=f"{run.experiment}-tuning",
        seed=seed,
        threads=LGBM_THREADS,
        name=f"fraud-lightgbm-{run.id[-8:]}",
    )
    tuned = best_settings(study)
    run.set_tags({"tuned_by": study.name})
    run.log_input("study", study.run_id, name=study.name, best_trial=study.best_trial.number)
    model = lgb.LGBMClassifier(
        n_estimators=LGBM_ROUNDS,
        subsample=0.8,
        subsample_freq=1,
        n_jobs=LGBM_THREADS,
        random_state=seed,
        verbose=-1,
        **tuned,
    )
    run.log_params(_scalar_params(model.get_params()))
    names = {"auc": "val_auc", "binary_logloss": "val_logloss"}

    def log_round(env: Any) -> None:
        values = {
            names[metric]: float(value)
            for _data, metric, value, *_ in env.evaluation_result_list
            if metric in names
        }
        run.log_metrics(values, step=int(env.iteration - env.begin_iteration))
        advance(1)

    # LightGBM 4.7 renamed eval_set to eval_X/eval_y and warns on the old name.
    if "eval_X" in inspect.signature(lgb.LGBMClassifier.fit).parameters:
        evaluation: dict[str, Any] = {"eval_X": (data.x_valid,), "eval_y": (data.y_valid,)}
    else:
        evaluation = {"eval_set": [(data.x_valid, data.y_valid)]}
    started = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        eval_names=["valid"],
        eval_metric=["auc", "binary_logloss"],
        callbacks=[log_round],
        **evaluation,
    )
    fit_seconds = time.perf_counter() - started
    booster = model.booster_
    importance = pd.DataFrame(
        {
            "feature": booster.feature_name(),
            "importance": booster.feature_importance(importance_type="gain"),
            "splits": booster.feature_importance(importance_type="split"),
            "method": "total gain",
        }
    )
    return _Fitted(
        model=model, importance=importance, fit_seconds=fit_seconds, last_step=LGBM_ROUNDS - 1
    )


@dataclass(frozen=True, kw_only=True)
class _Candidate:
    name: str
    model_class: str
    steps: int
    tags: dict[str, str]
    train: Callable[[kiln.Run, _Data, int, Advance], _Fitted]


CANDIDATES: tuple[_Candidate, ...] = (
    _Candidate(
        name="sgd-logreg",
        model_class="sklearn.linear_model.SGDClassifier",
        steps=SGD_EPOCHS,
        tags={"library": "scikit-learn", "family": "linear"},
        train=_train_sgd,
    ),
    _Candidate(
        name="hist-gbdt",
        model_class="sklearn.ensemble.HistGradientBoostingClassifier",
        steps=HIST_MAX_ITER,
        tags={"library": "scikit-learn", "family": "gradient boosting"},
        train=_train_hist_gbdt,
    ),
    _Candidate(
        name="lightgbm",
        model_class="lightgbm.LGBMClassifier",
        steps=LGBM_ROUNDS,
        tags={"library": "lightgbm", "family": "gradient boosting"},
        train=_train_lightgbm,
    ),
)


def _train_candidate(
    candidate: _Candidate, data: _Data, *, experiment: str, seed: int, advance: Advance
) -> tuple[str, Any]:
    import joblib
    from sklearn.metrics import average_precision_score

    with kiln.start_run(
        experiment=experiment, name=candidate.name, tags={"demo": "fraud", **candidate.tags}
    ) as run:
        run.log_params({**data.params, "model.class": candidate.model_class})
        run.log_input(
            "dataset",
            data.dataset_id,
            name="fraud_demo_train",
            rows=data.summary["rows"],
            digest=data.summary["snapshot"]["digest"],
        )
        fitted = candidate.train(run, data, seed, advance)
        proba = fitted.model.predict_proba(data.x_valid)[:, 1]
        run.log_metrics(
            {
                "val_average_precision": float(average_precision_score(data.y_valid, proba)),
                "train_seconds": fitted.fit_seconds,
            },
            step=fitted.last_step,
        )
        with tempfile.TemporaryDirectory(prefix="kiln-demo-") as tmp:
            path = Path(tmp) / "model.joblib"
            joblib.dump(fitted.model, path)
            run.log_artifact(path, "model")
        run.log_text(fitted.importance.to_csv(index=False), "feature_importance.csv")
        run.log_dict(data.summary, "dataset.json")
        return run.id, fitted.model


@dataclass(frozen=True)
class _Trained:
    run_id: str
    model: Any


@kiln.step
def train_candidate(name: str, data: _Data, experiment: str, seed: int) -> _Trained:
    """One candidate in its own tracked run, nested under this task's run (so the flow
    run, the step and the candidate are one chain in the lineage graph)."""
    candidate = next(c for c in CANDIDATES if c.name == name)
    run_id, model = _train_candidate(
        candidate, data, experiment=experiment, seed=seed, advance=lambda n: None
    )
    return _Trained(run_id, model)


@kiln.flow(name="fraud_demo_training", experiment="fraud-demo-flows")
def train_candidates(data: _Data, experiment: str, seed: int) -> list[_Trained]:
    """Every candidate at once, one task each, on local worker processes."""
    names = [c.name for c in CANDIDATES]
    trained: list[_Trained] = train_candidate.map(
        name=names, data=data, experiment=experiment, seed=seed
    )
    return trained


def _train_all(
    console: Console, data: _Data, *, experiment: str, seed: int
) -> tuple[str, list[_Trained]]:
    """Run the training flow with a progress bar moved by its task events."""
    total = sum(c.steps for c in CANDIDATES)
    running: list[str] = []
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description:<30}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bar = progress.add_task("Training", total=total)

        def on_event(event: kiln.flows.Event) -> None:
            candidate = CANDIDATES[int(event.task.rsplit("[", 1)[1].rstrip("]"))]
            if event.kind == "started":
                running.append(candidate.name)
            elif event.kind in ("finished", "cached", "reused", "failed"):
                if candidate.name in running:
                    running.remove(candidate.name)
                if event.kind != "failed":
                    progress.advance(bar, candidate.steps)
            progress.update(bar, description=f"Training {', '.join(running)}".strip())

        try:
            run = train_candidates.run(
                data=data,
                experiment=experiment,
                seed=seed,
                executor="processes",
                max_parallel=min(2, len(CANDIDATES)),
                cache=False,  # the demo shows training; a rerun trains again
                on_event=on_event,
            )
        except kiln.flows.FlowFailed as failed:
            raise KilnError(f"the demo's training flow failed: {failed}") from None
        progress.update(bar, description=f"Trained {len(CANDIDATES)} candidates")
    return run.id, list(run.result)


# -- output -----------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _results_table(records: list[kiln.RunRecord]) -> Table:
    """Narrow enough for an 80-column terminal with full run ids, which users copy."""
    table = Table(
        title="Candidates, best first",
        title_justify="left",
        box=None,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold underline",
    )
    for column in ("run", "id", "val_auc", "avg_prec", "logloss", "train_s"):
        table.add_column(
            column, no_wrap=True, justify="left" if column in ("run", "id") else "right"
        )
    for rank, record in enumerate(records):
        m = record.metrics
        table.add_row(
            f"[green]★[/] {escape(record.name)}" if rank == 0 else f"  {escape(record.name)}",
            record.id,
            _fmt(m.get("val_auc")),
            _fmt(m.get("val_average_precision")),
            _fmt(m.get("val_logloss")),
            _fmt(m.get("train_seconds"), 2),
        )
    table.caption = "avg_prec: average precision; train_s: seconds spent fitting"
    table.caption_justify = "left"
    return table


def _print_where(
    console: Console, experiment: str, best: str, run_ids: tuple[str, ...], flow_run: str
) -> None:
    """Plain lines, soft-wrapped, so paths and commands copy-paste whole from any terminal."""
    settings = kiln.get_settings()
    console.print()
    console.print("[bold]Stored in[/]")
    for label, value in (
        ("home", str(settings.home)),
        ("metadata", mask_url(settings.db_url)),
        ("artifacts", mask_url(settings.artifact_uri)),
    ):
        console.print(f"  {label:<10} {escape(value)}", soft_wrap=True, highlight=False)
    console.print("[bold]See it again with[/]")
    for command in (
        f"kiln runs list --experiment {shlex.quote(experiment)}",
        f"kiln runs show {best}",
        f"kiln runs compare {' '.join(run_ids)}",
        f"kiln flows show {flow_run}",
        "kiln experiments list",
        f"kiln models show {MODEL_NAME}@champion",
        f"kiln models lineage {MODEL_NAME}@champion",
        "kiln features list",
        f"kiln monitor events --deployment {DEPLOYMENT}",
        f"kiln monitor report {DEPLOYMENT} --window 1h",
    ):
        console.print(f"  [cyan]{escape(command)}[/]", soft_wrap=True, highlight=False)
    console.print("[bold]Open the dashboard[/]")
    console.print(
        f"  [cyan]kiln ui[/]   then http://127.0.0.1:5000/experiments/{quote(experiment)}",
        soft_wrap=True,
        highlight=False,
    )


def run_demo(
    console: Console,
    *,
    n_transactions: int = 50_000,
    seed: int = 7,
    experiment: str = "fraud-demo",
) -> DemoSummary:
    """Generate data, train three tracked candidates, compare them and say where they live.

    Every run goes through the same public calls a user would write, into the store that
    the current settings (``KILN_HOME`` and friends) name.
    """
    if (
        isinstance(n_transactions, bool)
        or not isinstance(n_transactions, int)
        or n_transactions < MIN_TRANSACTIONS
    ):
        raise InvalidInput(
            f"The 'n_transactions' parameter of run_demo must be an integer of at least "
            f"{MIN_TRANSACTIONS:,}. Got {n_transactions!r} instead."
        )

    prefer_passive_openmp()
    started = time.perf_counter()
    fs = kiln.FeatureStore()
    with console.status(f"Generating {n_transactions:,} card transactions and their features..."):
        data = _prepare_data(fs, n_transactions, seed)
    split = data.summary["split"]
    console.print(
        f"[bold]Data[/] {n_transactions:,} transactions, "
        f"{data.summary['fraud_rate']['all']:.2%} fraud; "
        f"train {split['train_rows']:,} / validation {split['valid_rows']:,} (latest rows) "
        f"in {time.perf_counter() - started:.2f}s"
    )

    started_training = time.perf_counter()
    flow_run_id, trained = _train_all(console, data, experiment=experiment, seed=seed)
    run_ids = [t.run_id for t in trained]
    fitted_models = {t.run_id: t.model for t in trained}
    steps = kiln.flows.tasks(flow_run_id)
    console.print(
        f"[bold]Flow run[/] {flow_run_id} (fraud_demo_training): {len(steps)} "
        f"{steps[0].step if steps else 'train'} tasks on local processes, "
        f"{time.perf_counter() - started_training:.1f}s"
    )

    ids = ", ".join(f"'{run_id}'" for run_id in run_ids)
    records = kiln.runs.search(
        experiment,
        filter=f"attributes.id IN ({ids})",
        order_by=["-metrics.val_auc"],
    )
    study = _print_study(console, next(r for r in records if r.name == "lightgbm"))
    console.print(_results_table(records))
    best = records[0]
    version = _register_champion(console, best, fitted_models[best.id], data)
    _serve_features(console, fs, data)
    runner_up = records[1]
    challenger = kiln.models.register(
        MODEL_NAME,
        fitted_models[runner_up.id],
        input_example=data.x_valid[:5],
        run=runner_up.id,
        method="predict_proba",
        training_data=data.x_train,
        description=f"{runner_up.name} from kiln demo, the challenger",
    )
    canary = serve_canary(
        console,
        model_name=MODEL_NAME,
        challenger=challenger,
        service=SERVICE,
        rows=data.valid_rows,
        request_columns=REQUEST_COLUMNS,
        features=data.features,
    )
    monitoring = watch_traffic(
        console,
        rows=data.valid_rows,
        categories=data.merchant_categories,
        request_columns=REQUEST_COLUMNS,
    )
    _print_where(console, experiment, best.id, tuple(run_ids), flow_run_id)
    console.print(f"Done in {time.perf_counter() - started:.1f}s.")
    return DemoSummary(
        experiment=experiment,
        run_ids=tuple(run_ids),
        best_run_id=best.id,
        best_val_auc=float(best.metrics["val_auc"]),
        model_ref=version.ref,
        flow_run_id=flow_run_id,
        study=study.name,
        canary=canary,
        monitoring=monitoring,
    )


def _print_study(console: Console, lightgbm: kiln.RunRecord) -> kiln.tuning.Study:
    """The study behind the LightGBM candidate: what it tried and what it chose."""
    study = kiln.tuning.load_study(lightgbm.tags["tuned_by"])
    trials = study.trials
    pruned = sum(t.state == "PRUNED" for t in trials)
    seconds = kiln.runs.get(study.run_id).duration_s or 0.0
    chosen = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in best_settings(study).items()
    )
    console.print(
        f"[bold]Tuned[/] lightgbm: study {escape(study.name)}, {len(trials)} trials "
        f"({pruned} pruned early) in {seconds:.1f}s; best val_auc on held-out training "
        f"rows {study.best_value:.4f} with {chosen}",
        highlight=False,
    )
    return study


def _serve_features(console: Console, fs: kiln.FeatureStore, data: _Data) -> None:
    """Materialize, then read one entity online beside the offline value at that instant."""
    with console.status("Materializing features to the online store..."):
        started = time.perf_counter()
        results = fs.materialize()
        seconds = time.perf_counter() - started
    entities = ", ".join(f"{r.view} {r.entities:,}" for r in results)
    console.print(f"[bold]Materialized[/] {entities} entities in {seconds:.2f}s")
    table, same = online_vs_offline(fs, data.valid_rows.iloc[-1])
    console.print(table)
    if not same:
        raise KilnError("online and offline feature values differ for the same entity and time")


def _register_champion(
    console: Console, best: kiln.RunRecord, model: Any, data: _Data
) -> ModelVersion:
    """Register the best candidate, make it champion, and prove the stored copy scores alike."""
    with console.status(f"Registering {best.name} as model '{MODEL_NAME}'..."):
        version = kiln.models.register(
            MODEL_NAME,
            model,
            input_example=data.x_valid[:5],
            run=best.id,
            method="predict_proba",
            training_data=data.x_train,
            description=f"{best.name} from kiln demo, val_auc {best.metrics['val_auc']:.4f}",
        )
        kiln.models.set_alias(
            MODEL_NAME,
            "champion",
            version.version,
            reason=f"best val_auc of the demo's {len(CANDIDATES)} candidates",
        )
        champion = kiln.models.load(f"{MODEL_NAME}@champion")
        sample = data.x_valid[:2_000]
        stored = champion.predict(sample)
        np.testing.assert_allclose(stored, model.predict_proba(sample), rtol=1e-9, atol=1e-12)
    console.print(
        f"[bold]Registered[/] {version.ref} ({version.flavor}) as "
        f"[green]{MODEL_NAME}@champion[/]; loaded back hash-verified, and its scores on "
        f"{len(sample):,} validation rows match the trained model"
    )
    console.print(lineage_tree(version, kiln.models.lineage(version.ref), limit=6))
    return version
