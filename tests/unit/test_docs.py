"""The README's configuration table lists exactly the settings the roles read."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic_settings import BaseSettings

from serving.settings import ServingSettings
from streams.settings import StreamSettings
from training.rebuild import RebuildSettings
from training.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
#: read by the dataset loaders directly rather than through a settings class
CLI_ONLY = {"RECSYS_DATA_DIR", "RECSYS_IMDB_DIR"}


def settings_classes() -> list[type[BaseSettings]]:
    return [StreamSettings, TrainerSettings, RebuildSettings, ServingSettings]


def env_names() -> set[str]:
    names = set(CLI_ONLY)
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        names |= {f"{prefix}{field}".upper() for field in cls.model_fields}
    return names


def test_readme_configuration_table_lists_every_setting() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(RECSYS_[A-Z0-9_]+)` \|", section, flags=re.M))
    assert documented == env_names()
