"""``recsys train``, ``recsys eval`` and ``recsys model list|show|rollback``."""

from __future__ import annotations

import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from recsys_cli.common import (
    DEFAULT_MODEL_DIR,
    DataDir,
    FoundModelDir,
    ModelDir,
    check_fraction,
    console,
    err_console,
    fail,
    resolve_model_dir,
)
from recsys_core.errors import RecsysError

if TYPE_CHECKING:
    from training.settings import TrainerSettings

model_app = typer.Typer(help="List, inspect and roll back published model versions.",
                        no_args_is_help=True)

Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Dataset name or directory.")]
BaseDataset = Annotated[str, typer.Option(
    "--dataset", "-d", envvar="RECSYS_DATASET",
    help="Base dataset name or directory ($RECSYS_DATASET).")]
PROTOCOLS = ("topn", "rating", "stream")


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=console, transient=True)


def _trainer_settings(**given: Any) -> TrainerSettings:
    from pydantic import ValidationError

    from training.settings import TrainerSettings

    try:
        return TrainerSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise fail(f"bad settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
               '"message":"%(message)s"}',
    )


def train(
    dataset: BaseDataset = "ml-100k",
    data_dir: DataDir = None,
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
    fit_weights: Annotated[bool, typer.Option(
        help="Fit blend weights on the newest events (else reuse the current version's).")] = True,
    publish: Annotated[bool, typer.Option(help="Publish the new version.")] = True,
    with_event_log: Annotated[bool | None, typer.Option(
        "--with-event-log/--no-event-log",
        help="Add the stream's event log ($RECSYS_EVENT_LOG_DIR) to the dataset "
             "(default: $RECSYS_TRAIN_WITH_EVENT_LOG, else yes).")] = None,
    since: Annotated[float | None, typer.Option(
        help="Train on the last N days before the newest event "
             "(default: $RECSYS_TRAIN_WINDOW_DAYS, else everything).")] = None,
    force: Annotated[bool, typer.Option(
        help="Publish even if the quality gate refuses the new version.")] = False,
    train_fraction: Annotated[float | None, typer.Option(
        "--train-fraction", callback=check_fraction,
        help="Use only the oldest share of the dataset's interactions by time, as "
             "`recsys replay --fraction` splits them (default: $RECSYS_TRAIN_BASE_FRACTION, "
             "else 1).")] = None,
) -> None:
    """Train every model on a dataset (plus the event log) and publish a new model version
    if it passes the quality gate."""
    from training.train import run_training
    from training.trainer import train_once, training_dataset

    settings = _trainer_settings(dataset=dataset, data_dir=data_dir, model_dir=model_dir,
                                 train_base_fraction=train_fraction)
    try:
        with _progress() as bar:
            task = bar.add_task("loading data", total=None)

            def progress(p: str) -> None:
                bar.update(task, description=f"training: {p}")

            if publish:
                run = train_once(settings, fit_weights=fit_weights, force=force,
                                 with_event_log=with_event_log, window_days=since,
                                 progress=progress)
            else:
                with_log = settings.train_with_event_log if with_event_log is None \
                    else with_event_log
                days = settings.train_window_days if since is None else since
                ds = training_dataset(settings, with_log, days)
                run = run_training(ds, None, fit_weights=fit_weights, progress=progress,
                                   holdout_fraction=settings.train_holdout_fraction,
                                   holdout_max_events=settings.train_holdout_max_events)
    except RecsysError as exc:
        raise fail(exc) from None
    table = Table(title=f"Trained on {run.models.bundle.manifest['dataset']}", show_header=True)
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for phase, secs in run.seconds.items():
        table.add_row(phase, f"{secs:.3f}")
    console.print(table)
    console.print(f"blend weights: {run.weights.to_dict()}")
    metrics = {k: v for k, v in run.metrics.items() if k.startswith("holdout")}
    console.print(f"holdout: {metrics}")
    if run.published:
        console.print(f"[green]published version {run.version}[/green] under {model_dir}"
                      + (" (forced past the quality gate)" if force and run.gate
                         and not run.gate.passed else ""))
    elif run.gate is not None:
        err_console.print(f"[yellow]quality gate refused version {run.version}[/yellow] "
                          f"(saved, not published): {run.gate.reason}; --force publishes it")
        raise typer.Exit(code=2)


def trainer(
    dataset: BaseDataset = "ml-100k",
    data_dir: DataDir = None,
    model_dir: ModelDir = DEFAULT_MODEL_DIR,
    every_minutes: Annotated[float | None, typer.Option(
        help="Retrain at least this often (default: $RECSYS_TRAIN_EVERY_MINUTES, else 60).")]
    = None,
    after_events: Annotated[int | None, typer.Option(
        help="Retrain early after this many new events in the event log "
             "(default: $RECSYS_TRAIN_AFTER_EVENTS, else 10000).")] = None,
) -> None:
    """Long-running trainer: retrain, gate and publish periodically until SIGINT/SIGTERM."""
    from prometheus_client import start_http_server
    from threadpoolctl import threadpool_limits

    from training.trainer import Trainer

    settings = _trainer_settings(dataset=dataset, data_dir=data_dir, model_dir=model_dir,
                                 train_every_minutes=every_minutes,
                                 train_after_events=after_events)
    _configure_logging(settings.log_level)
    threadpool_limits(1, "blas")
    try:
        loop = Trainer(settings)
    except RecsysError as exc:
        raise fail(exc) from None

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping after the current run", signum)
        loop.stop()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if settings.trainer_metrics_port:
        start_http_server(settings.trainer_metrics_port, addr=settings.trainer_metrics_host)
    loop.run_forever()


def evaluate(
    dataset: Dataset = "ml-100k",
    protocol: Annotated[list[str], typer.Option(
        "--protocol", "-p", help="topn (A), rating (B), stream (C) or all; repeatable.")] = ["all"],  # noqa: B006
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds for protocol A.")] = "42,7,2026",
    stratify: Annotated[str, typer.Option(help="Protocol A split: user or movie.")] = "user",
    retrain_every: Annotated[int, typer.Option(
        help="Protocol C: also score models retrained after every N replayed events, as the "
             "periodic trainer does (0: off).", min=0)] = 1000,
    rerank_every: Annotated[int, typer.Option(
        help="Protocol C, with --retrain-every: refit the reranker after every N events, as "
             "RECSYS_TRAIN_RERANK_EVERY does (0: blend only).", min=0)] = 5000,
    out: Annotated[Path, typer.Option(help="Directory for the JSON and the chart.")] = Path(
        "reports"),
    data_dir: DataDir = None,
) -> None:
    """Run the offline evaluation protocols; print a table, write JSON and a PNG chart."""
    from recsys_core.loaders import load_dataset
    from training.evaluation.report import run_evaluation, write_report
    from training.pipeline import TrainParams

    chosen = list(PROTOCOLS) if "all" in protocol else protocol
    bad = [p for p in chosen if p not in PROTOCOLS]
    if bad or stratify not in ("user", "movie"):
        raise fail(f"unknown protocol {bad} or stratify {stratify!r}; "
                   f"protocols: {', '.join(PROTOCOLS)}, all; stratify: user, movie")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise fail(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    try:
        with _progress() as bar:
            task = bar.add_task("loading data", total=None)
            ds = load_dataset(dataset, data_dir)
            # the trainer's parameters: scoring reads the history the stream keeps
            # (RECSYS_USER_HISTORY_CAP), as what it publishes is served
            params = TrainParams(history_cap=_trainer_settings().user_history_cap)
            result = run_evaluation(ds, chosen, seed_list, stratify,  # type: ignore[arg-type]
                                    params=params,
                                    progress=lambda p: bar.update(task, description=p),
                                    retrain_every=retrain_every, rerank_every=rerank_every)
    except RecsysError as exc:
        raise fail(exc) from None
    result["created_at"] = datetime.now(UTC).isoformat()
    _print_result(result)
    json_path, png_path = write_report(result, out)
    console.print(f"wrote {json_path} and {png_path}")


def _print_result(result: dict[str, Any]) -> None:
    if "topn" in result:
        t = Table(title=f"A · top-10 on {result['dataset']} "
                        f"(mean of seeds {result['topn']['seeds']}, {result['topn']['stratify']}"
                        "-stratified; for_you and up_next: the trainer's surfaces, default "
                        f"{result['topn'].get('default_surface')})")
        cols = ["precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10", "novelty@10",
                "diversity@10"]
        t.add_column("model", no_wrap=True)
        for c in cols:
            t.add_column(c.replace("precision", "P").replace("recall", "R").replace(
                "coverage", "cov").replace("novelty", "nov").replace("diversity", "div"),
                justify="right")
        for name, row in result["topn"]["mean"].items():
            t.add_row(name, *[f"{row[c]:.4f}" for c in cols])
        console.print(t)
    if "rating" in result:
        t = Table(title=f"B · rating prediction, {result['rating']['folds']}-fold CV")
        t.add_column("model")
        t.add_column("RMSE", justify="right")
        t.add_column("MAE", justify="right")
        for name, row in result["rating"]["models"].items():
            t.add_row(name, f"{row['rmse']:.4f}", f"{row['mae']:.4f}")
        console.print(t)
    if "stream" in result:
        s = result["stream"]
        t = Table(title=f"C · streaming replay ({s['replay_events']} events after "
                        f"{s['train_events']} for training)")
        t.add_column("model")
        t.add_column("HR@10", justify="right")
        t.add_column("MRR@10", justify="right")
        for name, row in s["models"].items():
            t.add_row(name, f"{row['hr@10']:.4f}", f"{row['mrr@10']:.4f}")
        console.print(t)


@model_app.command("list")
def list_models(model_dir: FoundModelDir = None) -> None:
    """Published versions, newest last; the current one is marked."""
    from training.registry import ModelRegistry

    model_dir = resolve_model_dir(model_dir)
    reg = ModelRegistry(model_dir)
    try:
        current = reg.current_version()
        t = Table(title=f"Model versions under {model_dir}")
        for col in ("version", "current", "created", "dataset", "interactions", "validation"):
            t.add_column(col)
        for v in reg.versions():
            m = reg.manifest(v)
            val = m.get("metrics", {}).get("validation_ndcg@10")
            t.add_row(str(v), "*" if v == current else "", str(m.get("created_at", ""))[:19],
                      str(m.get("dataset", "")), str(m.get("data_window", {}).get("interactions")),
                      f"{val:.4f}" if isinstance(val, float) else "")
    except RecsysError as exc:
        raise fail(exc) from None
    console.print(t)


@model_app.command("show")
def show_model(
    version: Annotated[int | None, typer.Argument(help="Version (default: current).")] = None,
    model_dir: FoundModelDir = None,
) -> None:
    """Print a version's manifest."""
    from training.registry import ModelRegistry

    model_dir = resolve_model_dir(model_dir)
    reg = ModelRegistry(model_dir)
    try:
        v = version if version is not None else reg.current_version()
        if v is None:
            raise fail(f"no model published under {model_dir}")
        console.print_json(json.dumps(reg.manifest(v)))
    except RecsysError as exc:
        raise fail(exc) from None


@model_app.command("rollback")
def rollback_model(
    version: Annotated[int | None, typer.Argument(help="Version (default: previous).")] = None,
    model_dir: FoundModelDir = None,
) -> None:
    """Make an older version current again."""
    from training.registry import ModelRegistry

    model_dir = resolve_model_dir(model_dir)
    try:
        v = ModelRegistry(model_dir).rollback(version)
    except RecsysError as exc:
        raise fail(exc) from None
    console.print(f"[green]current version is now {v}[/green]")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("trainer")(trainer)
    app.command("eval")(evaluate)
    app.command("recommend")(recommend_offline)
    app.add_typer(model_app, name="model")


def recommend_offline(
    user: Annotated[str, typer.Argument(help="User id as in the dataset.")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="How many movies.")] = 10,
    dataset: Dataset = "ml-100k",
    data_dir: DataDir = None,
    model_dir: FoundModelDir = None,
) -> None:
    """Top-k for a dataset user from the current model version, each with its reason."""
    model_dir = resolve_model_dir(model_dir)
    from recsys_core.explain import explain
    from recsys_core.history import UserHistory
    from recsys_core.loaders import load_dataset
    from recsys_core.scoring import BlendWeights, recommend
    from training.matrices import aggregate_pairs
    from training.registry import ModelRegistry

    try:
        bundle = ModelRegistry(model_dir).load()
        ds = load_dataset(dataset, data_dir)
        rows = ds.interactions[ds.interactions["user_id"] == user]
        if rows.empty:
            raise fail(f"user {user!r} has no interactions in {ds.name}")
        from recsys_core.confidence import ConfidenceRule

        rule = ConfidenceRule.from_dict(bundle.manifest.get("confidence_rule", {}))
        pairs = aggregate_pairs(rows, rule)
        idx = bundle.movies.indices(pairs["movie_id"], on_missing="minus_one")
        keep = idx >= 0
        history = UserHistory.build(idx[keep], pairs["confidence"].to_numpy()[keep],
                                    pairs["timestamp"].to_numpy(float)[keep],
                                    pairs["rating"].to_numpy(float)[keep])
        weights = BlendWeights.from_dict(bundle.manifest.get("blend_weights", {}))
        items, scores, parts = recommend(bundle, history, weights, k)
        reasons = explain(bundle, history, weights, parts, items)
    except RecsysError as exc:
        raise fail(exc) from None
    t = Table(title=f"Top {k} for user {user} (model v{bundle.version})")
    for col in ("#", "movie", "title", "score", "reason"):
        t.add_column(col)
    for n, (i, s, r) in enumerate(zip(items, scores, reasons, strict=True), 1):
        t.add_row(str(n), bundle.movies.raw(int(i)), str(bundle.titles[i]), f"{s:.3f}", r)
    console.print(t)
