"""The README's examples, run as written: every ``curl`` line of the API section against a
real API (``python -m serving`` under uvicorn, with a worker, broker and Redis), and every
option of the command-line table against the real ``recsys --help`` of that command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from live_site import Site, running_site  # noqa: E402
from stream_harness import REPO_ROOT, shared_model_dir  # noqa: E402

from devstack import DevStack  # noqa: E402
from recsys_cli.main import app  # noqa: E402
from recsys_core.dataset import Dataset  # noqa: E402

pytestmark = pytest.mark.integration

README = (REPO_ROOT / "README.md").read_text()
DOCUMENTED_BASE = "http://127.0.0.1:8000"


def section(title: str) -> str:
    return README.split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def shell_commands(block: str) -> list[str]:
    """Commands of a shell block: continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@pytest.fixture(scope="module")
def site(devstack: DevStack, ml100k: Dataset,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    model_dir = shared_model_dir(tmp_path_factory.getbasetemp(), ml100k)
    with running_site(devstack, model_dir, tmp_path_factory.mktemp("readme-site")) as s:
        yield s


def test_every_curl_example_of_the_api_section_answers_2xx(site: Site) -> None:
    commands = [c for b in code_blocks(section("API"), "bash") for c in shell_commands(b)]
    curls = [c for c in commands if c.startswith("curl ")]
    assert len(curls) >= 4, commands
    for command in curls:
        assert DOCUMENTED_BASE in command, command
        run = command.replace(DOCUMENTED_BASE, site.base_url)
        out = subprocess.run(["bash", "-c", run + " -w '\\n%{http_code}'"], text=True,
                             capture_output=True, timeout=30,
                             env={"PATH": "/usr/bin:/bin", "RECSYS_API_KEY": ""})
        body, _, status = out.stdout.rpartition("\n")
        assert out.returncode == 0 and status.startswith("2"), (command, out.stdout, out.stderr)
        assert "error" not in json.loads(body), (command, body)


def test_the_documented_recommendations_answer_has_the_fields_shown(site: Site) -> None:
    block = code_blocks(section("API"), "bash")[0]
    shown_lines = "\n".join(line for line in block.splitlines() if line.startswith("#"))
    shown = re.findall(r'"(\w+)":', shown_lines)
    assert {"user_id", "items", "reason"} <= set(shown)
    body = site.get_json("/v1/users/42/recommendations?k=3")
    item_fields = set(body["items"][0]) if body["items"] else set()
    for name in shown:
        assert name in body or name in item_fields, name


def test_every_option_of_the_command_line_table_exists() -> None:
    rows = re.findall(r"^\| `recsys ([^`]+)`(?: / `recsys ([^`]+)`)*", section("Command line"),
                      flags=re.M)
    assert len(rows) >= 10
    runner = CliRunner()
    for row in rows:
        usage = row[0]
        words = usage.split()
        command: list[str] = []
        for w in words:
            first = w.split("\\|")[0]  # `produce rating\|watch\|catalog`: the first one
            if not re.fullmatch(r"[a-z]+", first):
                break
            command.append(first)
            if first != w:
                break
        options = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", usage))
        helped = runner.invoke(app, [*command, "--help"], terminal_width=200)
        assert helped.exit_code == 0, (command, helped.output)
        for option in options:
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helped.output), (
                f"`recsys {usage}` documents {option}, which `recsys {' '.join(command)}` "
                "does not take")
