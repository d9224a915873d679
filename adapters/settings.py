"""Settings every role reads from the environment (prefix ``RECSYS_``), built once at start."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys_core.events import EventType
from recsys_core.keys import TOPICS, Keys, dead_letter_topic


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECSYS_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    model_dir: Path = Field(Path("artifacts/models"), description="Published model versions")
    event_log_dir: Path = Field(Path("runs/eventlog"),
                                description="Parquet event log the trainer reads")
    key_prefix: str = Field("recsys", description="Prefix of every Redis key")
    topic_prefix: str = Field("", description="Prefix of every topic name (for isolation)")
    user_history_cap: int = Field(500, ge=10, le=10_000,
                                  description="Interactions kept per user")

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    def topic(self, kind: EventType) -> str:
        return f"{self.topic_prefix}{TOPICS[kind]}"

    def dead_letter_topic(self, kind: EventType) -> str:
        return dead_letter_topic(self.topic(kind))
