"""`pipeline tune`: an Optuna search over the config's own keys, on the validation split only.

A trial is one network: the chosen strategy (`strategy` in the space, else the first of
`train.strategies`), the first seed and the largest train fraction, trained by `pipeline.train.fit`
on the train split and scored on the validation split after every epoch; the pruner reads those
scores. The test split is never evaluated. MLflow holds one parent run per study and one child run
per trial (tag `state`: finished, pruned or failed). The study lives in an Optuna storage (default:
`optuna.db` next to the MLflow SQLite store), so the same command continues it and several
processes pointing at one database tune it together. The best trial becomes `<name>.tuned.yaml`
next to the input, for `pipeline run`.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from pipeline import provenance
from pipeline.augment import make_augment
from pipeline.config import JobConfig, SearchSpec, _apply_override, _tuples, load_config
from pipeline.errors import ConfigError, UserError

STRATEGY_KEY = "strategy"
STUDY_RUN_ATTR = "mlflow_run_id"  # the study's user attribute naming its MLflow parent run
_STRATEGY_PARAM = re.compile(r"^train\.strategies\.(\d+)\.")


class InvalidSample(Exception):
    """A sampled combination of values the schema refuses: the trial fails, the study goes on."""


# ------------------------------------------------------------------------------------ the space


def default_space(cfg: JobConfig) -> dict[str, SearchSpec]:
    """The space of a config without `tune.space`: the strategy (when there are several), each
    strategy's rate over two decades around its own, weight decay, dropout, and for image jobs with
    augmentation its brightness and contrast."""
    space: dict[str, SearchSpec] = {}
    names = [s.name for s in cfg.train.networks]
    if len(names) > 1:
        space[STRATEGY_KEY] = SearchSpec(choice=tuple(names))
    for i, s in enumerate(cfg.train.strategies):
        if not s.is_baseline:  # baselines have no rate; the search trains networks only
            space[f"train.strategies.{i}.lr"] = SearchSpec(
                log=(max(s.rate / 10, 1e-7), min(s.rate * 10, 10.0))
            )
    space["train.weight_decay"] = SearchSpec(log=(1e-5, 1e-1))
    space["model.dropout"] = SearchSpec(float=(0.0, 0.5))
    if cfg.train.augment.image_active:
        space["train.augment.brightness"] = SearchSpec(float=(0.0, 0.2))
        space["train.augment.contrast"] = SearchSpec(float=(0.0, 0.3))
    return space


def search_space(cfg: JobConfig) -> dict[str, SearchSpec]:
    """`tune.space`, else `default_space`; every key and value checked against the schema.

    Raises:
        ConfigError: an unknown key, a key that is a section, or a value (an end of a range, a
            choice) the config refuses; the message names `tune.space.<key>`, the value and the fix.
    """
    space = dict(cfg.tune.space) if cfg.tune is not None and cfg.tune.space else default_space(cfg)
    base = base_tree(cfg)
    names = [s.name for s in cfg.train.networks]
    for key, spec in space.items():
        where = f"tune.space.{key}"
        if key == STRATEGY_KEY:
            unknown = [v for v in spec.values_to_check() if v not in names]
            if spec.kind != "choice" or unknown:
                raise ConfigError(
                    f"{where}: chooses among the names of train.strategies {names}; got "
                    f"{unknown or spec.kind!r}; write {STRATEGY_KEY}: {{choice: {names}}}"
                )
            continue
        match = _STRATEGY_PARAM.match(key)
        first = strategy_index(cfg, {})
        if match and STRATEGY_KEY not in space and int(match.group(1)) != first and len(names) > 1:
            raise ConfigError(
                f"{where}: without a '{STRATEGY_KEY}' key the trials train only the first strategy "
                f"({names[0]!r}); add {STRATEGY_KEY}: {{choice: {names}}} to tune.space or remove this key"
            )
        for value in spec.values_to_check():
            tree = copy.deepcopy(base)
            set_key(tree, key, value, where=where)
            try:
                JobConfig.model_validate(_tuples(tree))
            except Exception as exc:  # the schema's own message, on one line
                reason = _schema_message(exc)
                fix = (
                    f"the key takes integers: write int: {[int(v) for v in spec.values_to_check()]}"
                    if "expected an integer" in reason and spec.kind in ("log", "float")
                    else "narrow the range or pick valid values"
                )
                raise ConfigError(
                    f"{where}: the value {value!r} ({spec.kind} {spec.values_to_check()}) is refused: "
                    f"{reason}; {fix}"
                ) from None
    return space


def _schema_message(exc: Exception) -> str:
    from pydantic import ValidationError

    from pipeline.config import _explain

    if isinstance(exc, ValidationError):
        return "; ".join(_explain(err) for err in exc.errors())
    return str(exc)


def base_tree(cfg: JobConfig) -> dict[str, Any]:
    """The whole config as plain data without its `tune` section: what a trial's values go into."""
    return cfg.model_dump(mode="json", exclude={"tune"})


def set_key(tree: dict[str, Any], key: str, value: Any, *, where: str) -> None:
    """Set dotted `key` (list items by index: `train.strategies.0.lr`) of `tree` to `value`.

    Raises:
        ConfigError: the key is not in the config (with a suggestion), or names a section.
    """
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        path = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"{where}: {'.'.join(parts[:i])} is a list of {len(node)} item(s); "
                    f"{part!r} is no index of it (0 to {len(node) - 1})"
                )
            index: Any = int(part)
        elif isinstance(node, dict):
            if part not in node:
                hint = difflib.get_close_matches(part, list(node), n=1, cutoff=0.5)
                fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {', '.join(node)}"
                raise ConfigError(f"{where}: unknown key {path!r}; {fix}")
            index = part
        else:
            raise ConfigError(f"{where}: {'.'.join(parts[:i])} is a value, not a section; shorten the key")
        if last:
            if isinstance(node[index], dict):
                raise ConfigError(
                    f"{where}: {path} is a section; search one of its keys ({', '.join(node[index])}) instead"
                )
            node[index] = value
            return
        if node[index] is None:
            raise ConfigError(
                f"{where}: {path} is not set in the config; add the section before tuning its keys"
            )
        node = node[index]


def trial_config(cfg: JobConfig, params: dict[str, Any]) -> JobConfig:
    """The config of a trial: `params` set, only the strategy it trains kept, no `tune` section.

    Raises:
        InvalidSample: the combination breaks a rule across keys (each value alone was checked).
    """
    tree = base_tree(cfg)
    for key, value in params.items():
        if key != STRATEGY_KEY:
            set_key(tree, key, value, where=f"tune.space.{key}")
    chosen = strategy_index(cfg, params)
    tree["train"]["strategies"] = [tree["train"]["strategies"][chosen]]
    try:
        return JobConfig.model_validate(_tuples(tree))
    except Exception as exc:
        raise InvalidSample(f"this combination is refused: {_schema_message(exc)}") from None


def strategy_index(cfg: JobConfig, params: dict[str, Any]) -> int:
    """Index in `train.strategies` of the network a trial trains: the chosen one, else the first
    network (baselines are not tuned; the tuned config keeps them beside the network)."""
    names = [s.name for s in cfg.train.strategies]
    if STRATEGY_KEY in params:
        return names.index(params[STRATEGY_KEY])
    return next(i for i, s in enumerate(cfg.train.strategies) if not s.is_baseline)


def suggest(trial: Any, space: dict[str, SearchSpec], cfg: JobConfig) -> dict[str, Any]:
    """The trial's values: the strategy first, then only the keys of the strategy it trains."""
    params: dict[str, Any] = {}
    if STRATEGY_KEY in space:
        params[STRATEGY_KEY] = trial.suggest_categorical(STRATEGY_KEY, list(space[STRATEGY_KEY].choice or ()))
    chosen = strategy_index(cfg, params)
    for key, spec in space.items():
        match = _STRATEGY_PARAM.match(key)
        if key == STRATEGY_KEY or (match and int(match.group(1)) != chosen):
            continue  # a conditional space: another strategy's rate means nothing to this trial
        if spec.log is not None:
            params[key] = trial.suggest_float(key, *spec.log, log=True)
        elif spec.float_ is not None:
            params[key] = trial.suggest_float(key, *spec.float_)
        elif spec.int_ is not None:
            params[key] = trial.suggest_int(key, *spec.int_)
        else:
            params[key] = trial.suggest_categorical(key, list(spec.choice or ()))
    return params


# ------------------------------------------------------------------------------------- the study


def default_storage(tracking_uri: str) -> str:
    """`optuna.db` next to an SQLite MLflow store, else in the working directory."""
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return f"sqlite:///{Path('optuna.db').resolve()}"


def open_storage(url: str) -> Any:
    """An Optuna RDB storage with a heartbeat (a trial whose process died is marked failed by the
    next process); SQLite waits for the other processes' writes instead of failing at once.

    Raises:
        UserError: the URL is not a database Optuna can open.
    """
    import optuna

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    # Two processes creating the tables of a new database at the same instant collide: one sees
    # "table ... already exists", or a UNIQUE failure on alembic_version. The second try finds them made.
    races = ("already exists", "UNIQUE constraint failed", "alembic_version", "database is locked")
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=180
                )
        except Exception as exc:  # sqlalchemy's errors for a bad URL, a missing driver, no server
            if attempt == 3 or not any(race in str(exc) for race in races):
                raise UserError(
                    f"--storage {masked(url)!r}: Optuna cannot open it ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200]}); give a database URL such as "
                    "sqlite:///optuna.db or postgresql://user@host/db"
                ) from None
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def masked(url: str) -> str:
    """The URL without its password (it goes into logs and MLflow tags)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def make_pruner(cfg: JobConfig, space: dict[str, SearchSpec]) -> Any:
    import optuna

    pruner = cfg.tune.pruner if cfg.tune is not None else None
    kind = pruner.kind if pruner else "median"
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        epochs = space.get("train.epochs")
        most = max(epochs.values_to_check()) if epochs is not None else cfg.train.epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(most))
    return optuna.pruners.MedianPruner(
        n_startup_trials=pruner.startup_trials if pruner else 3,
        n_warmup_steps=pruner.warmup_epochs if pruner else 1,
    )


def open_study(cfg: JobConfig, storage: Any, name: str, space: dict[str, SearchSpec]) -> tuple[Any, bool]:
    """(study, created): a new study with the seeded sampler, or the existing one (another process's,
    or an interrupted run's) with a fresh unseeded sampler, so processes do not repeat each other."""
    import optuna

    tune = cfg.tune
    startup, seed = (tune.startup_trials, tune.seed) if tune is not None else (5, 0)
    pruner = make_pruner(cfg, space)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
            pruner=pruner,
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        sampler = optuna.samplers.TPESampler(n_startup_trials=startup)
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False


def study_name(cfg: JobConfig) -> str:
    """`<job>-<hash of the config>`: the same command continues its study, a changed config starts one."""
    return f"{cfg.name}-{provenance.config_hash(cfg)[:8]}"


def finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def parse_duration(text: str) -> float:
    """`--timeout`: seconds from `2h`, `90m`, `1h30m`, `45s` or a plain number of seconds.

    Raises:
        UserError: anything else, or not positive.
    """
    match = re.fullmatch(
        r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text
    )
    if not text.strip() or match is None or not any(match.groups()):
        raise UserError(f"--timeout {text!r}: give a duration such as 2h, 45m, 1h30m or 600 (seconds)")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise UserError(f"--timeout {text!r} must be longer than 0 seconds")
    return seconds


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m {seconds % 60:02d}s"


# ------------------------------------------------------------------------------------ the search


@dataclass
class TuneResult:
    """What `run_tune` did: the study, its best trial, the tuned config file and the parent run."""

    study_name: str
    storage: str
    parent_run_id: str
    best_number: int
    best_value: float
    tuned_path: Path
    counts: dict[str, int]


def run_tune(
    cfg: JobConfig,
    *,
    config_path: str,
    overrides: tuple[str, ...] = (),
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    study: str | None = None,
    echo: Callable[[str], None] = print,
) -> TuneResult:
    """Tune `cfg` until the study holds `trials` finished (complete or pruned) trials, or `timeout`
    seconds have passed in this process; then write and log the tuned config.

    Raises:
        UserError: a bad search space, storage or data; no trial of the study completed.
    """
    import mlflow
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from pipeline.job import check_before_training, setup_device
    from pipeline.tracking import (
        check_server,
        ensure_experiment,
        resolve_tracking_uri,
        tracked_run,
        use_store,
    )

    space = search_space(cfg)
    metric = cfg.train.select_metric
    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    check_server(tracking_uri, source="tracking.uri")
    use_store(tracking_uri)
    storage_url = storage or default_storage(tracking_uri)
    name = study or study_name(cfg)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the progress lines below say it all
    the_study, created = open_study(cfg, open_storage(storage_url), name, space)
    experiment_id = ensure_experiment(
        cfg.tracking.experiment, tracking_uri=tracking_uri, artifact_dir=cfg.tracking.artifact_dir
    )
    parent_id = study_run(the_study, created, experiment_id, cfg, storage_url)
    done = len(finished(the_study))
    target = trials if trials is not None else (None if timeout is not None else 20)
    echo(
        f"study {name!r} in {masked(storage_url)}: {done} finished trial(s) so far"
        + (f", {target} wanted" if target is not None else "")
        + (f", for at most {_clock(timeout)}" if timeout is not None else "")
        + f"; maximising {metric} on the validation split over {', '.join(space)}"
    )
    device = setup_device(cfg)
    check_before_training(cfg, device, resume=False, echo=echo)
    start = time.monotonic()
    with tracked_run(run_id=parent_id), tempfile.TemporaryDirectory(prefix="pipeline-tune-") as scratch:
        if target is None or done < target:
            objective = Objective(
                cfg, space, device=device, experiment_id=experiment_id, scratch=Path(scratch), echo=echo
            )
            callbacks: list[Any] = [Progress(metric, target, timeout, start, echo)]
            if target is not None:
                callbacks.insert(
                    0, MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.PRUNED))
                )
            the_study.optimize(objective, timeout=timeout, callbacks=callbacks, catch=(InvalidSample,))
        else:
            echo(f"  the study already has {done} finished trials; raise --trials to continue it")
        complete = the_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        counts = {
            state.name.lower(): len(the_study.get_trials(deepcopy=False, states=(state,)))
            for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        mlflow.log_metrics({f"trials_{k}": v for k, v in counts.items()})
        if not complete:
            raise UserError(
                f"study {name!r}: no trial completed ({counts['pruned']} pruned, {counts['fail']} failed); "
                "run more trials, widen the search space, or prune later (raise tune.pruner.startup_trials "
                "or warmup_epochs)"
            )
        best = the_study.best_trial
        tuned = write_tuned_config(cfg, config_path, overrides, best, name=name, counts=counts, metric=metric)
        mlflow.log_artifact(str(tuned))
        mlflow.log_metric(f"best_{metric}", float(best.value))
        mlflow.set_tags({"best_trial": str(best.number), "best_run_id": best.user_attrs.get("run_id", "")})
        log_study_plots(the_study, echo)
    echo(
        f"best: trial {best.number}, {metric} {best.value:.4f}; tuned config {tuned} "
        f"(next: pipeline run {tuned})"
    )
    return TuneResult(name, masked(storage_url), parent_id, best.number, float(best.value), tuned, counts)


def study_run(study: Any, created: bool, experiment_id: str, cfg: JobConfig, storage_url: str) -> str:
    """The study's MLflow parent run: made by the process that created the study, found by the
    others through the study's user attribute (waiting a little for the creator to set it)."""
    import mlflow

    client = mlflow.MlflowClient()
    run_id = None
    if not created:
        for _ in range(120):
            run_id = study.user_attrs.get(STUDY_RUN_ATTR)
            if run_id:
                try:
                    client.get_run(run_id)
                    return str(run_id)
                except Exception:  # the study is shared, the MLflow store is not: a parent run here
                    break
            time.sleep(0.5)
    tags = {
        "tune_study": study.study_name,
        "optuna_storage": masked(storage_url),
        "tune_job": cfg.name,
        "mlflow.runName": f"tune-{study.study_name}",
    }
    run = client.create_run(experiment_id, tags=tags)
    params = cfg.flat_params()
    for start in range(0, len(params), 100):
        chunk = list(params.items())[start : start + 100]
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v[:6000]) for k, v in chunk])
    client.set_terminated(run.info.run_id, "KILLED")  # RUNNING only while a process tunes
    if not run_id:  # a process with its own MLflow store leaves the study's parent run as it is
        study.set_user_attr(STUDY_RUN_ATTR, run.info.run_id)
    return str(run.info.run_id)


class Objective:
    """One trial: its config, a child run, `fit` with the pruner after every epoch; returns the best
    validation score. Data are prepared once per distinct data/transform/backbone."""

    def __init__(
        self,
        cfg: JobConfig,
        space: dict[str, SearchSpec],
        *,
        device: Any,
        experiment_id: str,
        scratch: Path,
        echo: Callable[[str], None],
    ) -> None:
        self.cfg, self.space, self.device, self.echo = cfg, space, device, echo
        self.experiment_id, self.scratch = experiment_id, scratch
        self._data_key: str | None = None
        self._data: Any = None

    def data(self, cfg: JobConfig) -> Any:
        from pipeline.data import prepare_data

        key = cfg.model_dump_json(
            include={"data": True, "transform": True, "model": {"backbone", "in_channels"}}
        )
        if key != self._data_key:
            self._data, self._data_key = None, None  # free the old inputs first
            self.echo(
                f"  data: {cfg.data.source}, {cfg.transform.kind} inputs of {cfg.transform.image_size} px"
            )
            self._data, self._data_key = prepare_data(cfg, echo=self.echo), key
        return self._data

    def __call__(self, trial: Any) -> float:
        import mlflow
        import optuna

        from pipeline.data import train_subset
        from pipeline.tracking import tracked_run
        from pipeline.train import fit
        from pipeline.trials import new_model, trial_data

        params = suggest(trial, self.space, self.cfg)
        seed, fraction = self.cfg.train.seeds[0], max(self.cfg.train.train_fraction)
        metric = self.cfg.train.select_metric
        tags = {"tune_trial": str(trial.number), "tune_study": trial.study.study_name, "state": "running"}
        pruned_at: int | None = None
        last_epoch = [0]
        with tracked_run(
            nested=True, experiment_id=self.experiment_id, run_name=f"trial-{trial.number}", tags=tags
        ) as run:
            trial.set_user_attr("run_id", run.info.run_id)
            mlflow.log_params({**params, "seed": seed, "train_fraction": fraction})
            try:
                cfg = trial_config(self.cfg, params)
                strategy = cfg.train.strategies[0]
                mlflow.log_params({"strategy": strategy.name, "kind": strategy.kind})
                data = self.data(cfg)
                subset = train_subset(data.windows["train"], fraction, seed)

                def on_epoch(epoch: int, row: dict[str, float]) -> None:
                    mlflow.log_metrics(row, step=epoch)
                    last_epoch[0] = epoch
                    trial.report(row[metric], epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(
                            f"pruned after epoch {epoch + 1} ({metric} {row[metric]:.4f})"
                        )

                result = fit(
                    new_model(cfg, strategy, len(data.classes), seed),
                    *trial_data(data, subset),
                    n_classes=len(data.classes),
                    strategy=strategy,
                    cfg=cfg.train,
                    seed=seed,
                    device=self.device,
                    checkpoint=self.scratch / f"trial-{trial.number}.pt",
                    backbone=cfg.model.backbone,
                    on_epoch=on_epoch,
                    augment=make_augment(cfg.train.augment, data.transform.std[0]),
                )
            except optuna.TrialPruned:
                pruned_at = last_epoch[0]
                mlflow.set_tags({"state": "pruned", "pruned_after_epoch": str(pruned_at + 1)})
            except BaseException as exc:  # Ctrl-C included: the trial fails, the study stays
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:500])
                mlflow.set_tag("state", "failed")
                raise
            else:
                best_row = result.history[result.best_epoch]
                mlflow.log_metrics(
                    {
                        f"best_{metric}": result.best_score,
                        "best_val_accuracy": best_row["val_accuracy"],
                        "best_val_macro_f1": best_row["val_macro_f1"],
                        "best_epoch": result.best_epoch,
                        "train_seconds": result.train_seconds,
                    }
                )
                mlflow.set_tag("state", "finished")
                trial.set_user_attr("best_epoch", result.best_epoch)
        if pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at + 1}")
        return float(result.best_score)


class Progress:
    """An Optuna callback: one line per trial with its value, the best so far and the time left."""

    def __init__(
        self,
        metric: str,
        target: int | None,
        timeout: float | None,
        start: float,
        echo: Callable[[str], None],
    ) -> None:
        self.metric, self.target, self.timeout, self.start, self.echo = metric, target, timeout, start, echo
        self.runs = 0

    def __call__(self, study: Any, trial: Any) -> None:
        from optuna.trial import TrialState

        self.runs += 1
        elapsed = time.monotonic() - self.start
        if trial.state == TrialState.COMPLETE:
            what = f"{self.metric} {trial.value:.4f}"
        elif trial.state == TrialState.PRUNED:
            steps = trial.intermediate_values
            last = max(steps) if steps else 0
            what = f"pruned after epoch {last + 1} ({self.metric} {steps.get(last, math.nan):.4f})"
        else:
            what = f"failed ({trial.user_attrs.get('error', 'see the MLflow run')})"
        try:
            best = study.best_trial
            best_text = f"best {best.value:.4f} (trial {best.number})"
        except ValueError:
            best_text = "no completed trial yet"
        done = len(finished(study))
        left = []
        if self.target is not None:
            remaining = max(0, self.target - done)
            left.append(f"~{_clock(elapsed / self.runs * remaining)} left" if remaining else "done")
        if self.timeout is not None:
            left.append(f"{_clock(self.timeout - elapsed)} of the timeout left")
        count = f"{done}/{self.target}" if self.target is not None else f"{done}"
        params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in trial.params.items())
        self.echo(f"trial {trial.number} [{count}] {what}; {best_text}; {'; '.join(left)}  ({params})")


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# -------------------------------------------------------------------------------- what it writes


def write_tuned_config(
    cfg: JobConfig,
    config_path: str,
    overrides: tuple[str, ...],
    best: Any,
    *,
    name: str,
    counts: dict[str, int],
    metric: str,
) -> Path:
    """`<name>.tuned.yaml` next to the input: the user's YAML (and `--set` overrides) with the best
    trial's values, only its network (and the config's baselines), no `tune` section; commented
    with the trial and its score. Checked to load as exactly the best trial's config."""
    source = Path(config_path)
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    for item in overrides:
        _apply_override(raw, item)
    raw.pop("tune", None)
    full = base_tree(cfg)
    params = dict(best.params)
    chosen = strategy_index(cfg, params)
    raw_train = raw.setdefault("train", {})
    if "strategies" not in raw_train:
        raw_train["strategies"] = full["train"]["strategies"]
    for key, value in params.items():
        if key != STRATEGY_KEY:
            _set_creating(raw, full, key.split("."), value)
    baselines = [i for i, s in enumerate(cfg.train.strategies) if s.is_baseline]
    raw_train["strategies"] = [raw_train["strategies"][i] for i in (chosen, *baselines)]
    expected = trial_config(cfg, params).model_dump()
    written = JobConfig.model_validate(_tuples(copy.deepcopy(raw))).model_dump()
    written["train"]["strategies"] = written["train"]["strategies"][:1]  # the baselines ride along
    assert written == expected, "the tuned config does not rebuild the best trial"
    tuned_values = ", ".join(f"{k} = {_short(v)}" for k, v in params.items())
    header = [
        f"Tuned by `pipeline tune {config_path}` (Optuna study {name!r}, {date.today().isoformat()}).",
        f"Best of {counts['complete']} completed trials ({counts['pruned']} pruned, "
        f"{counts['fail']} failed): trial {best.number}, validation {metric} {best.value:.4f}",
        f"at epoch {best.user_attrs.get('best_epoch', -1) + 1}, seed {cfg.train.seeds[0]}, "
        f"train fraction {max(cfg.train.train_fraction):g}.",
        f"Tuned values: {tuned_values}.",
        "The search saw the validation split only; `pipeline run` on this file gives the test scores.",
    ]
    out = source.with_name(f"{source.name.removesuffix('.yaml').removesuffix('.yml')}.tuned.yaml")
    body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=100)
    out.write_text("".join(f"# {line}\n" for line in header) + body, encoding="utf-8")
    load_config(out)  # what `pipeline run` will do with it
    return out


def _set_creating(raw: dict[str, Any], full: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set a dotted key in the user's YAML, creating the sections it does not write (from `full`)."""
    node: Any = raw
    ref: Any = full
    for part in parts[:-1]:
        index: Any = int(part) if isinstance(node, list) else part
        ref = ref[index]
        if isinstance(node, dict) and index not in node:
            node[index] = copy.deepcopy(ref) if isinstance(ref, list) else {}
        node = node[index]
    last = parts[-1]
    node[int(last) if isinstance(node, list) else last] = value


def log_study_plots(study: Any, echo: Callable[[str], None]) -> None:
    """The optimisation history and, with two or more completed trials, the parameter importances
    as PNG artifacts of the active (parent) run, drawn by Optuna's matplotlib backend."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna

    from pipeline.plots import to_png
    from pipeline.tracking import log_png

    vis = optuna.visualization.matplotlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        log_png(to_png(_fitted(vis.plot_optimization_history(study).figure)), "optimization_history.png")
        try:
            log_png(to_png(_fitted(vis.plot_param_importances(study).figure)), "param_importances.png")
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            echo(f"  no parameter importances yet ({exc})")


def _fitted(fig: Any) -> Any:
    """Room for the long dotted parameter names on the axis."""
    fig.set_size_inches(9, 5)
    fig.tight_layout()
    return fig
