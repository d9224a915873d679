"""``recsys replay`` and ``recsys produce rating|watch|catalog``: events into Kafka."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from recsys_cli.common import DataDir, console, err_console, fail
from recsys_core.errors import InvalidEvent, RecsysError
from recsys_core.events import EventType, RatingEvent, validate_event

if TYPE_CHECKING:
    from adapters.kafka import EventProducer
    from adapters.settings import CommonSettings

KafkaBootstrap = Annotated[str | None, typer.Option(
    "--kafka-bootstrap", envvar="RECSYS_KAFKA_BOOTSTRAP",
    help="Kafka bootstrap servers, HOST:PORT (default: $RECSYS_KAFKA_BOOTSTRAP).")]
TopicPrefix = Annotated[str | None, typer.Option(
    "--topic-prefix", envvar="RECSYS_TOPIC_PREFIX",
    help="Prefix of every topic name (default: $RECSYS_TOPIC_PREFIX, else none).")]
EventId = Annotated[str | None, typer.Option(
    "--event-id", help="Event id (default: a new random one).")]
At = Annotated[str | None, typer.Option(
    "--at", help="When it happened, ISO 8601 with a zone (default: now).")]
User = Annotated[str, typer.Option("--user", "-u", help="User id.")]
Movie = Annotated[str, typer.Option("--movie", "-m", help="Movie id.")]
Names = Annotated[list[str] | None, typer.Option(help="Repeatable.")]

#: how long a command may wait for the broker before saying it cannot reach it
CONNECT_TIMEOUT_MS = 8_000
ACK_TIMEOUT_S = 15.0
FLUSH_TIMEOUT_S = 30.0

produce_app = typer.Typer(help="Send one event to Kafka and wait for the broker's ack.",
                          no_args_is_help=True)


def _connect(kafka_bootstrap: str | None,
             topic_prefix: str | None) -> tuple[CommonSettings, EventProducer]:
    """Settings and a producer whose bootstrap succeeded, or one red line and exit 1 (~8 s)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError
    from pydantic import ValidationError

    from adapters.kafka import EventProducer
    from adapters.settings import CommonSettings

    given: dict[str, Any] = {"kafka_bootstrap": kafka_bootstrap, "topic_prefix": topic_prefix}
    try:
        settings = CommonSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise fail(f"bad settings: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    config: dict[str, Any] = {"max_block_ms": 10_000, "request_timeout_ms": 10_000}
    if "bootstrap_timeout_ms" in KafkaProducer.DEFAULT_CONFIG:  # kafka-python >= 3
        config["bootstrap_timeout_ms"] = CONNECT_TIMEOUT_MS
    try:
        return settings, EventProducer(settings, **config)
    except (KafkaError, ValueError, OSError) as exc:
        raise fail(f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); is the broker "
                   "running? set --kafka-bootstrap or RECSYS_KAFKA_BOOTSTRAP") from None


def _parse_time(value: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{option} must be an ISO 8601 time, got {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s",
                    style="progress.data.speed")


def replay_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset name or directory.")]
    = "ml-100k",
    data_dir: DataDir = None,
    from_time: Annotated[str | None, typer.Option(
        "--from-time", help="Replay events at or after this ISO 8601 time (UTC if no zone).")]
    = None,
    fraction: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Skip the oldest share: 0.8 replays the newest 20%.")] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="Send at most N events.")] = None,
    rate: Annotated[float | None, typer.Option(help="At most N events per second.")] = None,
    speedup: Annotated[float | None, typer.Option(
        help="Reproduce the dataset's time gaps divided by X.")] = None,
    max_gap: Annotated[float, typer.Option(
        help="With --speedup, the longest single wait in seconds.")] = 2.0,
    partitions: Annotated[int | None, typer.Option(
        min=1, help="Create missing topics with N partitions first (default: leave it to "
                    "the broker or the stream worker).")] = None,
    kafka_bootstrap: KafkaBootstrap = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Send a dataset's ratings to Kafka in time order, keyed by user, with stable event ids.

    Ctrl-C stops after flushing what was sent and prints the summary (exit code 130).
    """
    from kafka.errors import KafkaError

    from adapters.kafka import ensure_topics
    from adapters.replay import (
        Deliveries,
        Pacer,
        ReplayRun,
        rating_events,
        replay,
        select_interactions,
    )
    from recsys_core.loaders import load_dataset

    if from_time is not None and fraction is not None:
        raise fail("give --from-time or --fraction, not both")
    if rate is not None and speedup is not None:
        raise fail("give --rate or --speedup, not both")
    start_at = _parse_time(from_time, "--from-time") if from_time is not None else None
    stop = threading.Event()
    try:
        pacer = Pacer(rate, speedup, max_gap=max_gap, sleep=stop.wait)
    except ValueError as exc:
        raise fail(f"--{exc}") from None
    try:
        ds = load_dataset(dataset, data_dir)
    except RecsysError as exc:
        raise fail(exc) from None
    rows = select_interactions(ds.interactions, fraction=fraction, from_time=start_at,
                               limit=limit)
    settings, producer = _connect(kafka_bootstrap, topic_prefix)
    topic = settings.topic("rating")
    deliveries = Deliveries()
    invalid: list[str] = []

    def on_invalid(position: int, exc: InvalidEvent) -> None:
        invalid.append(f"row {position}: {exc}")

    def send(event: RatingEvent) -> None:
        try:
            future = producer.send("rating", event)
        except KafkaError as exc:  # no metadata or buffer full for max_block_ms: stop
            deliveries.error(exc)
            stop.set()
            return
        future.add_callback(deliveries.ok)
        future.add_errback(deliveries.error)

    bar = Progress(TextColumn(f"[bold]{ds.name} → {topic}"), BarColumn(), MofNCompleteColumn(),
                   _RateColumn(), TimeElapsedColumn(), console=err_console, transient=True)
    task = bar.add_task("replay", total=len(rows))
    shown = [0.0]

    def progress(done: int) -> None:
        now = time.monotonic()
        if now - shown[0] >= 0.1 or done == len(rows):
            shown[0] = now
            bar.update(task, completed=done)

    started = time.monotonic()
    run = ReplayRun()
    previous = _on_sigint(stop)
    try:
        if partitions is not None:
            ensure_topics(settings, partitions)
        with bar:
            run = replay(rating_events(ds.name, rows, on_invalid), send, pacer,
                         should_stop=stop.is_set, progress=progress)
            bar.update(task, completed=run.submitted)
        producer.flush(timeout=FLUSH_TIMEOUT_S)
    except KafkaError as exc:  # topic creation or the final flush
        deliveries.error(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        producer.close()
    seconds = time.monotonic() - started

    table = Table(title=f"Replayed {ds.name} → {topic}", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in (
        ("events sent", f"{deliveries.acked:,}"),
        ("failures", f"{deliveries.failed + len(invalid):,}"),
        ("seconds", f"{seconds:.2f}"),
        ("rate", f"{deliveries.acked / seconds if seconds > 0 else 0:,.0f} events/s"),
        ("first event", _when(run.first_time)),
        ("last event", _when(run.last_time)),
    ):
        table.add_row(name, value)
    console.print(table)
    if invalid:
        err_console.print(f"[yellow]{len(invalid)} invalid rows, first: {invalid[0]}[/yellow]",
                          highlight=False)
    if deliveries.first_error is not None:
        raise fail(f"{deliveries.failed} events not delivered to {settings.kafka_bootstrap}: "
                   f"{deliveries.first_error}")
    if run.stopped:
        err_console.print("[yellow]stopped by Ctrl-C[/yellow]")
        raise typer.Exit(code=130)
    if invalid:
        raise typer.Exit(code=1)


def _on_sigint(stop: threading.Event) -> Any:
    """First Ctrl-C sets ``stop``; a second one aborts. Returns the handler to restore."""
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, no clean stop
        return None
    return previous


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "-"


def _produce(kind: EventType, fields: dict[str, Any], event_id: str | None, at: str | None,
             kafka_bootstrap: str | None, topic_prefix: str | None) -> None:
    """Validate, send, wait for the ack, print where it landed."""
    from kafka.errors import KafkaError

    data = {"event_id": event_id or f"cli-{uuid.uuid4().hex}",
            "occurred_at": at or datetime.now(UTC).isoformat(), **fields}
    try:
        event = validate_event(kind, data)
    except InvalidEvent as exc:
        raise fail(f"invalid {kind} event: {exc}") from None
    settings, producer = _connect(kafka_bootstrap, topic_prefix)
    try:
        meta = producer.send(kind, event).get(timeout=ACK_TIMEOUT_S)
    except KafkaError as exc:
        raise fail(f"{kind} event {event.event_id} not delivered to "
                   f"{settings.kafka_bootstrap}: {type(exc).__name__}: {exc}") from None
    finally:
        producer.close()
    console.print(f"[green]sent[/green] {kind} event {event.event_id} to {meta.topic} "
                  f"partition {meta.partition} offset {meta.offset}", highlight=False,
                  soft_wrap=True)


@produce_app.command("rating")
def produce_rating(
    user: User,
    movie: Movie,
    rating: Annotated[float, typer.Option("--rating", "-r", help="0.5 to 5 stars.")],
    event_id: EventId = None,
    at: At = None,
    kafka_bootstrap: KafkaBootstrap = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Send one rating."""
    _produce("rating", {"user_id": user, "movie_id": movie, "rating": rating}, event_id, at,
             kafka_bootstrap, topic_prefix)


@produce_app.command("watch")
def produce_watch(
    user: User,
    movie: Movie,
    watched_seconds: Annotated[float | None, typer.Option(help="Seconds watched.")] = None,
    duration_seconds: Annotated[float | None, typer.Option(help="Length of the movie.")] = None,
    completion: Annotated[float | None, typer.Option(help="Share watched, 0 to 1.")] = None,
    event_id: EventId = None,
    at: At = None,
    kafka_bootstrap: KafkaBootstrap = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Send one watch: --completion, or --watched-seconds and --duration-seconds."""
    fields: dict[str, Any] = {"user_id": user, "movie_id": movie}
    for name, value in (("watched_seconds", watched_seconds),
                        ("duration_seconds", duration_seconds), ("completion", completion)):
        if value is not None:
            fields[name] = value
    _produce("watch", fields, event_id, at, kafka_bootstrap, topic_prefix)


@produce_app.command("catalog")
def produce_catalog(
    movie: Movie,
    title: Annotated[str, typer.Option("--title", "-t", help="Title.")],
    year: Annotated[int | None, typer.Option("--year", "-y", help="Release year.")] = None,
    genre: Names = None,
    director: Names = None,
    writer: Names = None,
    actor: Names = None,
    tag: Names = None,
    event_id: EventId = None,
    at: At = None,
    kafka_bootstrap: KafkaBootstrap = None,
    topic_prefix: TopicPrefix = None,
) -> None:
    """Add or update one movie of the catalog."""
    people = {kind: names for kind, names in
              (("director", director), ("writer", writer), ("actor", actor)) if names}
    fields: dict[str, Any] = {"movie_id": movie, "title": title, "genres": genre or [],
                              "people": people, "tags": tag or []}
    if year is not None:
        fields["year"] = year
    _produce("catalog", fields, event_id, at, kafka_bootstrap, topic_prefix)


def register(app: typer.Typer) -> None:
    app.command("replay")(replay_cmd)
    app.add_typer(produce_app, name="produce")
