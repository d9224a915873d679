"""The deployment files are wired to the code: docker-compose.yml, the Dockerfile,
.env.example and infra/ use the settings, ports, topics and metric names the roles define."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.metrics import MetricWrapperBase
from pydantic import TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from adapters.settings import CommonSettings
from recsys_core.keys import TOPICS, dead_letter_topic
from serving.settings import ServingSettings
from streams.settings import StreamSettings
from training.rebuild import RebuildSettings
from training.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
INFRA = ROOT / "infra"
PROMETHEUS = INFRA / "prometheus" / "prometheus.yml"
DATASOURCES = INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = INFRA / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "recsys.json"
TOPIC_SCRIPT = INFRA / "kafka" / "create-topics.sh"
DEPLOY_DOC = ROOT / "docs" / "deployment.md"
CONSTRAINTS = INFRA / "constraints.txt"

SETTINGS_CLASSES: tuple[type[BaseSettings], ...] = (
    CommonSettings, StreamSettings, TrainerSettings, RebuildSettings, ServingSettings)
SERVICES = {"kafka", "kafka-init", "redis", "worker", "trainer", "api", "prometheus", "grafana"}
ONE_SHOT = {"kafka-init"}
#: role service -> the setting that gives the port Prometheus scrapes
METRICS_PORT_SETTING = {
    "worker": "RECSYS_STREAM_METRICS_PORT",
    "trainer": "RECSYS_TRAINER_METRICS_PORT",
    "api": "RECSYS_API_PORT",
}
RECSYS_NAME = re.compile(r"\bRECSYS_[A-Z0-9_]+\b")


def settings_fields() -> dict[str, FieldInfo]:
    """Environment name -> field, over every settings class."""
    fields: dict[str, FieldInfo] = {}
    for cls in SETTINGS_CLASSES:
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            fields.setdefault(f"{prefix}{name}".upper(), info)
    return fields


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def env_example_entries() -> dict[str, tuple[str | None, str]]:
    """Name -> (value, or None when commented out; the comment line above it)."""
    entries: dict[str, tuple[str | None, str]] = {}
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([A-Z][A-Z0-9_]*)=(.*)", line)
        if m:
            entries[m.group(2)] = (None if m.group(1) else m.group(3), previous)
        previous = line
    return entries


# ---- docker-compose.yml ----

def test_compose_has_a_service_for_every_role(services: dict[str, Any]) -> None:
    assert SERVICES <= set(services), f"missing: {SERVICES - set(services)}"


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", name
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]) -> None:
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            wanted = ("service_completed_successfully" if target in ONE_SHOT
                      else "service_healthy")
            assert spec.get("condition") == wanted, f"{name} -> {target}"
    for role in ("worker", "api"):
        assert {"kafka", "kafka-init", "redis"} <= set(services[role]["depends_on"]), role
    assert "kafka" in services["kafka-init"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_worker_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a fixed host port stops --scale worker=N"


def test_roles_run_their_entry_points(services: dict[str, Any]) -> None:
    assert services["worker"]["command"][:3] == ["python", "-m", "streams"]
    assert services["trainer"]["command"][:2] == ["recsys", "trainer"]
    assert services["api"]["command"][:3] == ["python", "-m", "serving"]
    assert environment(services["api"])["RECSYS_API_HOST"] == "0.0.0.0"
    for role in METRICS_PORT_SETTING:
        assert services[role].get("build"), f"{role} runs the project's image"
        assert services[role]["image"] == services["api"]["image"]


def test_roles_reach_kafka_and_redis_inside_the_network(services: dict[str, Any]) -> None:
    kafka_env = environment(services["kafka"])
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka_env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    node = kafka_env["KAFKA_NODE_ID"]
    assert kafka_env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    for role in METRICS_PORT_SETTING:
        env = environment(services[role])
        assert env["RECSYS_KAFKA_BOOTSTRAP"] == "kafka:9092", role
        assert env["RECSYS_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD}@redis:6379"), role


def test_roles_share_the_model_and_event_log_volumes(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    def mounts(role: str) -> dict[str, str]:
        """Container path -> named volume."""
        out = {}
        for spec in services[role].get("volumes", []):
            source, target = spec.split(":")[:2]
            if source in compose["volumes"]:
                out[target] = source
        return out

    needs = {
        "worker": ("RECSYS_MODEL_DIR", "RECSYS_EVENT_LOG_DIR"),
        "trainer": ("RECSYS_MODEL_DIR", "RECSYS_EVENT_LOG_DIR", "RECSYS_DATA_DIR"),
        "api": ("RECSYS_MODEL_DIR",),
    }
    volume_of: dict[str, set[str]] = {}
    for role, names in needs.items():
        env, mounted = environment(services[role]), mounts(role)
        for name in names:
            assert env[name] in mounted, f"{role}: {name}={env[name]} is not on a volume"
            volume_of.setdefault(name, set()).add(mounted[env[name]])
    assert all(len(v) == 1 for v in volume_of.values()), volume_of


def test_bind_mounts_point_at_files_in_the_repository(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for spec in service.get("volumes", []):
            source = spec.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source}"


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", service["image"])
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d", tag), f"{name}: {image}"


# ---- settings names and .env.example ----

def test_every_recsys_name_in_the_deploy_files_is_a_setting() -> None:
    known = set(settings_fields())
    for path in (COMPOSE, DOCKERFILE, ENV_EXAMPLE, TOPIC_SCRIPT, DEPLOY_DOC):
        unknown = set(RECSYS_NAME.findall(path.read_text())) - known
        assert not unknown, f"{path.name} uses names no settings class reads: {unknown}"


def test_env_example_lists_every_setting_with_its_default() -> None:
    entries = env_example_entries()
    fields = settings_fields()
    listed = {name for name in entries if name.startswith("RECSYS_")}
    assert listed == set(fields), (f"missing: {set(fields) - listed}, "
                                   f"unknown: {listed - set(fields)}")
    for name, info in fields.items():
        value, comment = entries[name]
        assert info.description and info.description in comment, name
        if info.default is None:
            assert value is None, f"{name} has no default: it must be commented out"
            continue
        assert value is not None, name
        parsed = TypeAdapter(info.annotation).validate_python(value)
        assert parsed == info.default, f"{name}={value} but the default is {info.default!r}"


def test_env_example_documents_every_compose_variable() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert used, "docker-compose.yml interpolates nothing?"
    missing = used - set(env_example_entries())
    assert not missing, f".env.example does not list {missing}"


def test_secrets_are_required_not_defaulted() -> None:
    text = COMPOSE.read_text()
    for secret in ("RECSYS_API_KEY", "GRAFANA_ADMIN_PASSWORD", "REDIS_PASSWORD"):
        assert re.search(rf"\$\{{{secret}:\?", text), f"{secret} must be required"
        assert env_example_entries()[secret][0] == "", f"{secret} has no value in the example"


def test_only_the_api_and_grafana_publish_ports(services: dict[str, Any]) -> None:
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"api", "grafana"}
    for name, service in services.items():
        assert not service.get("network_mode"), f"{name}: host networking publishes it all"
    grafana = environment(services["grafana"])
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_kafka_listens_inside_the_network_only(services: dict[str, Any]) -> None:
    env = environment(services["kafka"])
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert advertised == ["PLAINTEXT://kafka:9092"], "no listener advertised to the host"
    assert "localhost" not in env["KAFKA_LISTENERS"] and "HOST" not in env["KAFKA_LISTENERS"]


def test_redis_wants_a_password_that_every_role_and_the_healthcheck_use(
    services: dict[str, Any]
) -> None:
    redis = services["redis"]
    command = [str(part) for part in redis["command"]]
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${REDIS_PASSWORD:?"), "the password comes from the env"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert environment(redis)["REDISCLI_AUTH"] == "${REDIS_PASSWORD}"
    assert "redis-cli" in healthcheck_command(redis) and " -a " not in healthcheck_command(redis)
    for name, service in services.items():
        url = environment(service).get("RECSYS_REDIS_URL")
        if url is not None:
            assert url.startswith("redis://:${REDIS_PASSWORD}@redis:"), name


def test_metrics_ports_bind_inside_the_containers_and_are_not_published(
    services: dict[str, Any]
) -> None:
    for role, setting in {"worker": "RECSYS_STREAM_METRICS_HOST",
                          "trainer": "RECSYS_TRAINER_METRICS_HOST"}.items():
        assert environment(services[role])[setting] == "0.0.0.0", role
        assert not services[role].get("ports"), role
    fields = settings_fields()
    for name in ("RECSYS_STREAM_METRICS_HOST", "RECSYS_TRAINER_METRICS_HOST"):
        assert fields[name].default == "127.0.0.1", f"{name}: loopback unless told otherwise"


def test_deployment_doc_says_what_is_published_and_which_secrets_to_set() -> None:
    text = DEPLOY_DOC.read_text()
    for needle in ("REDIS_PASSWORD", "RECSYS_API_KEY", "RECSYS_API_EVENTS_KEY",
                   "RECSYS_API_ADMIN_KEY", "GRAFANA_ADMIN_PASSWORD", "TLS", "noeviction",
                   "maxmemory"):
        assert needle in text, needle
    readme = (ROOT / "README.md").read_text()
    assert "docs/deployment.md" in readme


# ---- Prometheus ----

def scrape_ports(job: dict[str, Any]) -> set[tuple[str, int]]:
    found = set()
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, port = target.rsplit(":", 1)
            found.add((host, int(port)))
    for dns in job.get("dns_sd_configs", []):
        for name in dns["names"]:
            found.add((name, int(dns["port"])))
    return found


def test_prometheus_scrapes_the_ports_the_roles_listen_on(services: dict[str, Any]) -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS)["scrape_configs"]}
    for role, setting in METRICS_PORT_SETTING.items():
        port = int(environment(services[role])[setting])
        assert port > 0, f"{role}: {setting}=0 turns the metrics off"
        assert scrape_ports(jobs[role]) == {(role, port)}, role
        assert f"127.0.0.1:{port}/" in healthcheck_command(services[role]), role
    assert jobs["api"].get("metrics_path", "/metrics") == "/metrics"
    published = [str(p).rsplit(":", 1)[-1] for p in services["api"]["ports"]]
    assert environment(services["api"])["RECSYS_API_PORT"] in published


def test_prometheus_finds_every_worker_replica() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS)["scrape_configs"]}
    worker = jobs["worker"]
    assert not worker.get("static_configs"), "a static target sees one replica only"
    assert [d["type"] for d in worker["dns_sd_configs"]] == ["A"]


# ---- Grafana ----

def role_metric_modules() -> list[ModuleType]:
    import adapters.eventlog
    import serving.metrics
    import streams.metrics
    import training.gate
    import training.trainer

    return [streams.metrics, serving.metrics, training.trainer, training.gate, adapters.eventlog]


SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def defined_metrics() -> dict[str, set[str]]:
    """Every sample name the roles can expose -> its label names."""
    samples: dict[str, set[str]] = {}
    for module in role_metric_modules():
        for obj in vars(module).values():
            if not isinstance(obj, MetricWrapperBase):
                continue
            labels = set(obj._labelnames)  # prometheus_client has no public accessor
            for family in obj.describe():
                for suffix in SUFFIXES[family.type]:
                    extra = {"le"} if suffix == "_bucket" else set()
                    samples[family.name + suffix] = labels | extra
    return samples


def dashboard_targets() -> list[tuple[str, dict[str, Any]]]:
    dashboard = json.loads(DASHBOARD.read_text())
    targets = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            targets.append((panel["title"], target))
    return targets


def test_code_defines_the_metrics_this_test_relies_on() -> None:
    samples = defined_metrics()
    assert "recsys_stream_events_total" in samples
    assert samples["recsys_api_request_seconds_bucket"] >= {"route", "le"}
    assert "recsys_trainer_gate_total" in samples


def test_dashboard_queries_only_metrics_and_labels_the_code_defines() -> None:
    samples = defined_metrics()
    targets = dashboard_targets()
    assert targets
    for title, target in targets:
        expr = target["expr"]
        used = re.findall(r"\brecsys_[a-z0-9_]+\b", expr)
        unknown = [m for m in used if m not in samples]
        assert not unknown, f"panel {title!r}: no such metric {unknown}"
        if not used:
            continue
        labels = set().union(*(samples[m] for m in used)) | {"job", "instance"}
        grouped = {lbl.strip() for group in re.findall(r"\bby\s*\(([^)]*)\)", expr)
                   for lbl in group.split(",") if lbl.strip()}
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert grouped | legend <= labels, f"panel {title!r}: labels {(grouped | legend) - labels}"


def test_dashboard_has_the_operating_panels() -> None:
    exprs = " ".join(t["expr"] for _, t in dashboard_targets())
    for metric in ("recsys_stream_consumer_lag", "recsys_stream_events_total",
                   "recsys_stream_dead_letters_total", "recsys_api_request_seconds_count",
                   "recsys_api_fallbacks_total", "recsys_api_model_version",
                   "recsys_trainer_published_version", "recsys_trainer_phase_seconds",
                   "recsys_trainer_gate_total"):
        assert metric in exprs, metric
    for q in ("0.5", "0.95", "0.99"):
        assert re.search(rf"histogram_quantile\({q}, .*recsys_api_request_seconds_bucket",
                         exprs), q


def test_dashboard_reads_the_provisioned_datasource(services: dict[str, Any]) -> None:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    mounts = dict(spec.split(":")[:2] for spec in services["grafana"]["volumes"])
    assert mounts["./infra/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./infra/grafana/provisioning"] == "/etc/grafana/provisioning"


# ---- Kafka topics ----

def test_kafka_init_runs_the_topic_script(services: dict[str, Any]) -> None:
    init = services["kafka-init"]
    mounts = dict(spec.split(":")[:2] for spec in init["volumes"])
    script = mounts["./infra/kafka/create-topics.sh"]
    assert init["entrypoint"][-1] == script
    assert init["image"] == services["kafka"]["image"]
    env = environment(init)
    assert env["BOOTSTRAP_SERVER"] == "kafka:9092"
    assert env["RECSYS_STREAM_PARTITIONS"].startswith("${RECSYS_STREAM_PARTITIONS")
    assert env["RECSYS_TOPIC_PREFIX"].startswith("${RECSYS_TOPIC_PREFIX")


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_topic_script_creates_the_topics_the_code_uses(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\n"
                    f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    fake.chmod(0o755)
    env = {**os.environ, "KAFKA_TOPICS_CMD": str(fake), "BOOTSTRAP_SERVER": "kafka:9092",
           "RECSYS_STREAM_PARTITIONS": "5", "RECSYS_TOPIC_PREFIX": "t1-"}
    subprocess.run(["sh", str(TOPIC_SCRIPT)], env=env, check=True, capture_output=True,
                   timeout=30)
    created: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        args = json.loads(line)
        assert args[:2] == ["--bootstrap-server", "kafka:9092"]
        if "--create" in args:
            assert "--if-not-exists" in args
            created[args[args.index("--topic") + 1]] = args

    settings = CommonSettings(topic_prefix="t1-")
    inputs = {settings.topic(kind) for kind in TOPICS}
    letters = {settings.dead_letter_topic(kind) for kind in TOPICS}
    assert letters == {dead_letter_topic(f"t1-{t}") for t in TOPICS.values()}
    assert set(created) == inputs | letters
    for topic, args in created.items():
        partitions = args[args.index("--partitions") + 1]
        assert partitions == ("5" if topic in inputs else "1"), topic
        compacted = "cleanup.policy=compact" in args
        assert compacted == (topic == settings.topic("catalog")), topic


# ---- Dockerfile, pins and build context ----

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_as_an_unprivileged_user_with_a_healthcheck() -> None:
    steps = dockerfile_instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    assert any(word == "USER" for word, _ in steps[last_from:]), "USER must be in the final stage"
    (check,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert "/healthz" in check
    assert ("CMD", '["python", "-m", "serving"]') in steps
    env = " ".join(rest for word, rest in steps if word == "ENV")
    assert "OPENBLAS_NUM_THREADS=1" in env
    assert "RECSYS_API_HOST=0.0.0.0" in env


def test_dockerfile_base_images_are_pinned() -> None:
    steps = dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in steps if word == "ARG" and "=" in rest)
    stages: set[str] = set()
    for word, rest in steps:
        if word != "FROM":
            continue
        parts = rest.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
        if image not in stages:
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest" and re.search(r"\d", tag), image
        if len(parts) == 3 and parts[1].upper() == "AS":
            stages.add(parts[2])


def test_dockerfile_installs_with_the_pinned_constraints() -> None:
    installs = [rest for word, rest in dockerfile_instructions()
                if word == "RUN" and "pip install" in rest]
    assert installs
    for rest in installs:
        for command in rest.split("&&"):
            if "pip install" in command:
                assert "-c infra/constraints.txt" in command, command


def test_constraints_pin_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line.strip())
            assert m, f"not an exact pin: {line}"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned: run infra/lock_constraints.py"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]}"


def test_data_files_of_the_packages_are_installed_too() -> None:
    """The image installs with ``pip install .`` (not editable): a non-Python file inside a
    package (the API's web pages, say) is in the wheel only if package-data names it."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data: dict[str, list[str]] = tool.get("package-data", {})
    for top in tool["packages"]["find"]["include"]:
        for path in sorted((ROOT / top.rstrip("*")).rglob("*")):
            if not path.is_file() or path.suffix in (".py", ".pyc", ".pyi") \
                    or "__pycache__" in path.parts or path.name == "py.typed":
                continue
            package = path.parent
            while not (package / "__init__.py").exists():
                package = package.parent
            name = ".".join(package.relative_to(ROOT).parts)
            relative = path.relative_to(package).as_posix()
            patterns = package_data.get(name, []) + package_data.get("*", [])
            assert any(fnmatch(relative, p) for p in patterns), (
                f"{path.relative_to(ROOT)} would be missing from the image: add it to "
                f"[tool.setuptools.package-data] {name} in pyproject.toml")


def test_build_context_holds_every_package() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", ".dockerignore is an allow-list"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]
                ["include"]}
    needed = packages | {"pyproject.toml", "README.md", "infra/constraints.txt"}
    assert needed <= allowed, f"not sent to the build: {needed - allowed}"
    assert ".env" not in allowed
