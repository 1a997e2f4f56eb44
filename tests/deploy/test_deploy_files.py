"""Static validation of deploy/: Dockerfile, docker-compose.yml, bridge configs, Kubernetes manifests.

Fast and offline. Tools that make the checks stronger are installed by
``deploy/validate-requirements.sh`` (kubernetes-validate's bundled schemas, a Docker
Compose binary, hadolint); without them those tests skip and say why, unless
RERANK_BRIDGE_REQUIRE_DEPLOY_TOOLS=1, which turns each such skip into a failure (for CI).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import tomllib
import typing
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import UnionType
from typing import Any, Union

import pytest
import yaml
from pydantic import BaseModel

from bridge.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
K8S_BASE = K8S / "base"
K8S_REMOTE = K8S / "remote-scorer"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
CONFIG_PATH = "/etc/rerank-bridge/bridge.yaml"
# Oldest Kubernetes minor still commonly run, and the newest the schema package knows.
K8S_VERSIONS = ("1.28.0", "latest")
REQUIRE_TOOLS = os.environ.get("RERANK_BRIDGE_REQUIRE_DEPLOY_TOOLS", "") not in ("", "0", "false")
INSTALL_HINT = "run `bash deploy/validate-requirements.sh`"


def missing_tool(reason: str) -> None:
    """Skip, or fail when the environment says the tools must be there."""
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason} (RERANK_BRIDGE_REQUIRE_DEPLOY_TOOLS is set)")
    pytest.skip(reason)


# ----------------------------------------------------------------------------- helpers


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def is_k8s_resource(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc and doc["kind"] != "Kustomization"


def kustomization_resources(directory: Path) -> list[str]:
    return list(yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"])


@cache
def base_resources() -> tuple[dict[str, Any], ...]:
    """The base manifests as the base kustomization lists them (no kustomize needed)."""
    docs: list[dict[str, Any]] = []
    for name in kustomization_resources(K8S_BASE):
        docs.extend(load_docs(K8S_BASE / name))
    return tuple(docs)


def one(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def bridge_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == "bridge"]
    assert found, "the Deployment has no container named 'bridge'"
    return found[0]


def env_map(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def configmap_bridge_yaml() -> str:
    return str(one(base_resources(), "ConfigMap")["data"]["bridge.yaml"])


def compose_raw() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))  # resolves << merge keys


def remote_urls(model: Any) -> list[Any]:
    """The URLs a model's remote scorer calls (``url`` or ``urls``); none for an in-process model."""
    if model.remote is None:
        return []
    return list(model.remote.urls) if model.remote.urls is not None else [model.remote.url]


def served_model_name(args: list[str]) -> str:
    """infinity's ``--served-model-name`` (the name requests must send as ``model``) from its arguments."""
    assert "--served-model-name" in args, f"no --served-model-name in {args}"
    return str(args[args.index("--served-model-name") + 1])


def default_of(value: str) -> str:
    """'${VAR:-default}' -> 'default' (the value when the variable is unset)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No BRIDGE_* variable of the caller's shell leaks into the settings under test."""
    for name in list(os.environ):
        if name.startswith("BRIDGE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def unknown_bridge_variable(name: str) -> str | None:
    """Why BRIDGE_<NAME> names no setting (pydantic-settings silently ignores unknown ones), or None."""
    parts = name.removeprefix("BRIDGE_").lower().split("__")
    model: Any = Settings
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            return f"{name}: '{part}' is not one of {sorted(fields)}"
        if depth + 1 == len(parts):
            return None
        annotation = fields[part].annotation
        candidates = (
            typing.get_args(annotation)
            if typing.get_origin(annotation) in (Union, UnionType)
            else (annotation,)
        )
        if any(typing.get_origin(c) is dict for c in candidates):
            return None  # a mapping such as models.<name>: any key is fine
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return f"{name}: '{part}' is a plain value, it has no nested settings"
        model = nested[0]
    return None


def load_config_text(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "bridge.yaml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path)


# ------------------------------------------------------------------------ every YAML


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_file_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no YAML document"


def test_expected_files_exist() -> None:
    for name in (
        "Dockerfile",
        "Dockerfile.dockerignore",
        "docker-compose.yml",
        "bridge.yaml",
        "README.md",
        "validate-requirements.sh",
        "kubernetes/kustomization.yaml",
        "kubernetes/base/kustomization.yaml",
        "kubernetes/gpu/kustomization.yaml",
        "kubernetes/remote-scorer/kustomization.yaml",
        "kubernetes/secret.example.yaml",
        "bridge-remote.yaml",
    ):
        assert (DEPLOY / name).is_file(), f"deploy/{name} is missing"


# ------------------------------------------------------------- bridge configurations


@pytest.mark.parametrize("name", ["bridge.yaml", "bridge-tei.yaml", "bridge-remote.yaml"])
def test_bridge_config_file_validates(name: str, clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings(DEPLOY / name)
    assert settings.models, f"deploy/{name} configures no model"
    assert settings.rules, f"deploy/{name} configures no rule"
    assert settings.server.port == 9400


def test_configmap_bridge_yaml_validates(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    settings = load_config_text(configmap_bridge_yaml(), tmp_path)
    assert settings.models and settings.rules
    assert settings.server.host == "0.0.0.0"


def test_unknown_bridge_variable() -> None:
    for good in (
        "BRIDGE_UPSTREAM__PASSWORD",
        "BRIDGE_UPSTREAM_URL",
        "BRIDGE_SERVER__DRAIN_TIMEOUT_S",
        "BRIDGE_LOG_FORMAT",
    ):
        assert unknown_bridge_variable(good) is None, good
    for bad in ("BRIDGE_LOG_FORMATT", "BRIDGE_SERVER__HOSTNAME", "BRIDGE_UPSTREAM__PASSWORD__X"):
        assert unknown_bridge_variable(bad) is not None, bad


def test_bad_config_is_rejected(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The check above can fail: load_settings does reject a broken file."""
    broken = configmap_bridge_yaml().replace("window: 100", "window: -5")
    assert broken != configmap_bridge_yaml()
    with pytest.raises(ConfigError):
        load_config_text(broken, tmp_path)


def test_deployment_env_is_valid_for_the_bridge(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The BRIDGE_* variables the Deployment sets are names the settings accept."""
    container = bridge_container(one(base_resources(), "Deployment"))
    for name, entry in env_map(container).items():
        if not name.startswith("BRIDGE_"):
            continue
        assert unknown_bridge_variable(name) is None, unknown_bridge_variable(name)
        value = entry.get("value", "dummy-secret-value")  # secretKeyRef: any string will do
        clean_env.setenv(name, str(value))
    settings = load_config_text(configmap_bridge_yaml(), tmp_path)
    assert settings.server.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings.server.port == ports["http"]
    assert settings.upstream.password is not None and settings.upstream.password.get_secret_value()


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def console_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(pyproject["project"]["scripts"])


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_entrypoint_is_the_console_script() -> None:
    entrypoints = [args for keyword, args in final_stage() if keyword == "ENTRYPOINT"]
    assert entrypoints, "the runtime stage has no ENTRYPOINT"
    entrypoint = json.loads(entrypoints[-1])  # exec form, so SIGTERM reaches the bridge
    assert entrypoint == ["rerank-bridge", "serve"]
    assert entrypoint[0] in console_scripts(), "ENTRYPOINT names no console script of pyproject.toml"
    cmd = json.loads([args for keyword, args in final_stage() if keyword == "CMD"][-1])
    assert cmd == ["--config", CONFIG_PATH]


def test_dockerfile_runtime_properties() -> None:
    stage = final_stage()
    exposed = [args for keyword, args in stage if keyword == "EXPOSE"]
    assert exposed == ["9400"]
    healthchecks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/_bridge/health" in healthchecks[0]
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the runtime stage runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), "USER must be a numeric non-root uid (runAsNonRoot)"
    env = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert "BRIDGE_SERVER__HOST=0.0.0.0" in env
    assert "HF_HOME=" in env
    copies = [args for keyword, args in stage if keyword == "COPY"]
    assert any(args.endswith(CONFIG_PATH) for args in copies), f"no default config copied to {CONFIG_PATH}"


def test_dockerfile_torch_variant() -> None:
    instructions = dockerfile_instructions()
    args = [a for keyword, a in instructions if keyword == "ARG"]
    assert "TORCH_VARIANT=cpu" in args, "ARG TORCH_VARIANT must default to cpu"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "download.pytorch.org/whl/cpu" in text
    assert re.search(r"^\s*cpu\)", text, re.M) and re.search(r"^\s*cuda\)", text, re.M)
    # torch is installed before the project, so `pip install .` does not pull the CUDA wheel
    runs = [a for keyword, a in instructions if keyword == "RUN"]
    torch_step = next(i for i, a in enumerate(runs) if "TORCH_VARIANT" in a)
    project_step = next(i for i, a in enumerate(runs) if re.search(r"pip install (\.|/src)\b", a))
    assert torch_step < project_step


def test_dockerfile_copy_sources_exist_and_pass_the_dockerignore() -> None:
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", "the .dockerignore is an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for required in ("pyproject.toml", "bridge", "deploy/bridge.yaml"):
        assert required in allowed, f"{required} is not sent in the build context"
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY" or "--from" in args:
            continue
        *sources, _destination = shlex.split(args)
        for source in sources:
            if source == ".":
                continue
            assert (REPO / source).exists(), f"COPY source {source} does not exist"
            assert source.rstrip("/") in allowed, (
                f"COPY source {source} is excluded by Dockerfile.dockerignore"
            )


class _StubBridge(BaseHTTPRequestHandler):
    """Answers like the bridge's admin endpoints; `status` sets what /_bridge/* returns."""

    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path.startswith("/_bridge/") else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub_bridge() -> Iterator[tuple[int, type[_StubBridge]]]:
    handler = type("Handler", (_StubBridge,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def healthchecks() -> dict[str, list[str]]:
    """Exec-form health commands of the image and of the compose bridge services."""
    stage = final_stage()
    image = next(args for keyword, args in stage if keyword == "HEALTHCHECK")
    found = {"Dockerfile": json.loads(image.split(" CMD ", 1)[1])}
    for name, spec in compose_raw()["services"].items():
        test = spec.get("healthcheck", {}).get("test")
        if name.startswith("bridge") and test:
            assert test[0] == "CMD", f"{name}: exec-form healthcheck expected"
            found[f"compose:{name}"] = list(test[1:])
    return found


@pytest.mark.parametrize("which", sorted(healthchecks()))
def test_healthcheck_command_works(which: str, stub_bridge: tuple[int, type[_StubBridge]]) -> None:
    """Run the health command (the image has python, not curl) against a stand-in on loopback."""
    port, handler = stub_bridge
    command = healthchecks()[which]
    assert command[0] == "python"
    env = {**os.environ, "BRIDGE_SERVER__PORT": str(port)}

    def run() -> int:
        return subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
        ).returncode

    handler.status = 200
    assert run() == 0, "healthy bridge reported unhealthy"
    handler.status = 503
    assert run() != 0, "a 503 (not ready) passed the healthcheck"


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint") or _scripts_binary("hadolint")
    if hadolint is None:
        pytest.skip(f"hadolint is not installed (optional; {INSTALL_HINT})")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------ docker compose


def _scripts_binary(name: str) -> str | None:
    candidate = Path(sysconfig.get_path("scripts")) / name
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


@cache
def compose_command() -> tuple[str, ...] | None:
    """`docker compose` (plugin), else a docker-compose binary; None when there is none."""
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    for binary in (_scripts_binary("docker-compose"), shutil.which("docker-compose")):
        if binary:
            candidates.append((binary,))
    for command in candidates:
        try:
            probe = subprocess.run(
                [*command, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return command
    return None


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        missing_tool(f"no Docker Compose implementation (docker compose / docker-compose); {INSTALL_HINT}")
    assert command is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [*command, "--project-directory", str(DEPLOY), "-f", str(COMPOSE_FILE), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    "profiles",
    [(), ("gpu",), ("tei",), ("infinity",), ("gpu", "tei", "infinity")],
    ids=lambda p: "+".join(p) or "default",
)
def test_compose_config_is_valid(profiles: tuple[str, ...]) -> None:
    flags = [flag for profile in profiles for flag in ("--profile", profile)]
    result = run_compose(*flags, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_compose_resolved_model() -> None:
    """Compose v2+ prints the resolved model as JSON: check what it will actually run."""
    result = run_compose(
        "--profile", "gpu", "--profile", "tei", "--profile", "infinity", "config", "--format", "json"
    )  # fmt: skip
    if result.returncode != 0 and "format" in result.stderr:
        pytest.skip("this Compose implementation has no `config --format json` (Compose v1)")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) >= {
        "opensearch",
        "opensearch-dashboards",
        "bridge",
        "bridge-gpu",
        "tei-reranker",
        "bridge-tei",
        "infinity-a",
        "infinity-b",
        "bridge-remote",
    }
    for name in ("bridge", "bridge-gpu", "bridge-tei", "bridge-remote"):
        service = services[name]
        assert Path(service["build"]["context"]).resolve() == REPO
        assert service["build"]["dockerfile"] in ("deploy/Dockerfile", str(DOCKERFILE))
        mounts = {v["target"]: v for v in service["volumes"]}
        assert mounts[CONFIG_PATH]["type"] == "bind" and Path(mounts[CONFIG_PATH]["source"]).is_file()
    assert services["bridge"]["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert services["bridge-gpu"]["build"]["args"]["TORCH_VARIANT"] == "cuda"
    devices = services["bridge-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_structure() -> None:
    services = compose_raw()["services"]

    opensearch = services["opensearch"]
    assert re.fullmatch(r"opensearchproject/opensearch:2\.19\.\d+", default_of(opensearch["image"]))
    assert str(opensearch["environment"]["DISABLE_SECURITY_PLUGIN"]) == "true"
    assert str(opensearch["environment"]["DISABLE_INSTALL_DEMO_CONFIG"]) == "true"
    assert opensearch["environment"]["discovery.type"] == "single-node"
    assert "healthcheck" in opensearch

    dashboards = services["opensearch-dashboards"]
    assert json.loads(dashboards["environment"]["OPENSEARCH_HOSTS"]) == ["http://bridge:9400"]
    assert str(dashboards["environment"]["DISABLE_SECURITY_DASHBOARDS_PLUGIN"]) == "true"
    assert dashboards["depends_on"]["bridge"]["condition"] == "service_healthy"

    bridge = services["bridge"]
    assert bridge["depends_on"]["opensearch"]["condition"] == "service_healthy"
    assert "/_bridge/" in " ".join(bridge["healthcheck"]["test"])
    assert "profiles" not in bridge
    assert f"./bridge.yaml:{CONFIG_PATH}:ro" in bridge["volumes"]
    assert bridge["environment"]["BRIDGE_SERVER__HOST"] == "0.0.0.0"

    assert services["bridge-gpu"]["profiles"] == ["gpu"]
    assert services["bridge-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert services["tei-reranker"]["profiles"] == ["tei"]
    assert "text-embeddings-inference" in default_of(services["tei-reranker"]["image"])
    assert services["bridge-tei"]["profiles"] == ["tei"]
    for name in ("infinity-a", "infinity-b", "bridge-remote"):
        assert services[name]["profiles"] == ["infinity"], name


def test_compose_remote_profile_matches_its_scorers(clean_env: pytest.MonkeyPatch) -> None:
    """bridge-remote.yaml speaks the Cohere-style API to both infinity services, by their served name and port."""
    services = compose_raw()["services"]
    model = next(iter(load_settings(DEPLOY / "bridge-remote.yaml").models.values()))
    assert model.remote is not None and model.remote.protocol == "cohere"
    assert model.activation == "identity" and model.remote.raw_scores, "ms-marco's logits, as in-process"
    urls = remote_urls(model)
    assert len({url.host for url in urls}) == len(urls) >= 2, "several endpoints, to survive one down"
    for url in urls:
        scorer = services[url.host]
        command = [default_of(part) for part in scorer["command"]]
        assert command[0] == "v2" and "michaelf34/infinity" in default_of(scorer["image"])
        assert served_model_name(command) == model.remote.model
        assert url.path == "/rerank" and str(url.port) == command[command.index("--port") + 1]
        assert {"--engine", "--device", "--no-bettertransformer"} <= set(command)
        assert str(scorer["environment"]["DO_NOT_TRACK"]) == "1"
        assert str(scorer["environment"]["INFINITY_ANONYMOUS_USAGE_STATS"]) == "0"
        assert all(port.startswith("127.0.0.1:") for port in scorer["ports"]), "scorers stay on loopback"


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, f"unsupported duration {duration!r}"
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


@pytest.mark.parametrize("service", ["bridge", "bridge-gpu", "bridge-tei", "bridge-remote"])
def test_compose_bridge_services_fit_their_config(
    service: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """Each bridge service's mounted config plus its environment is a valid bridge configuration."""
    spec = compose_raw()["services"][service]
    mounted = next(v.split(":")[0] for v in spec["volumes"] if f":{CONFIG_PATH}" in v)
    for name, value in spec["environment"].items():
        if name.startswith("BRIDGE_"):
            assert unknown_bridge_variable(name) is None, unknown_bridge_variable(name)
            clean_env.setenv(name, default_of(value))
    settings = load_settings(DEPLOY / mounted)
    assert settings.server.host == "0.0.0.0"
    assert any(port.endswith(f":{settings.server.port}") for port in spec["ports"])
    assert _seconds(spec["stop_grace_period"]) > settings.server.drain_timeout_s
    services = compose_raw()["services"]
    for model in settings.models.values():  # remote scorers point at services of this file
        for url in remote_urls(model):
            assert url.host in services, f"remote scorer host {url.host} is no compose service"
            assert set(services[url.host].get("profiles", [])) <= set(spec.get("profiles", [])), (
                f"{service} starts without its scorer {url.host}"
            )
            assert url.host in spec["depends_on"], f"{service} does not wait for {url.host}"


# ------------------------------------------------------------------ Kubernetes: schemas


@cache
def kubectl() -> str | None:
    binary = shutil.which("kubectl")
    if binary is None:
        return None
    probe = subprocess.run([binary, "kustomize", "--help"], capture_output=True, timeout=60, check=False)
    return binary if probe.returncode == 0 else None


@cache
def kustomize_build(directory: Path) -> tuple[dict[str, Any], ...]:
    binary = kubectl()
    if binary is None:
        missing_tool(f"kubectl (for `kubectl kustomize`) is not installed; {INSTALL_HINT} or install kubectl")
    assert binary is not None
    result = subprocess.run(
        [binary, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return tuple(yaml.safe_load_all(result.stdout))


def kubernetes_validate_module() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing_tool(
            f"kubernetes-validate (bundled Kubernetes JSON schemas) is not installed; {INSTALL_HINT}"
        )
    return kubernetes_validate


def schema_validate(doc: dict[str, Any], where: str) -> None:
    kv = kubernetes_validate_module()
    for version in K8S_VERSIONS:
        wanted = kv.latest_version() if version == "latest" else version
        try:
            kv.validate(doc, wanted, strict=True)
        except kv.ValidationError as error:
            at = ".".join(str(part) for part in error.absolute_path) or "(top level)"
            pytest.fail(
                f"{where}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {wanted}"
                f" at {at}: {error.message}",
                pytrace=False,
            )


def raw_manifests() -> Iterator[Path]:
    for path in sorted(K8S.rglob("*.yaml")):
        docs = load_docs(path)
        if docs and all(is_k8s_resource(d) for d in docs) and not path.name.endswith("-patch.yaml"):
            yield path


@pytest.mark.parametrize("path", list(raw_manifests()), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_matches_kubernetes_schema(path: Path) -> None:
    for doc in load_docs(path):
        schema_validate(doc, str(path.relative_to(REPO)))


@pytest.mark.parametrize("flavour", ["", "gpu"], ids=["cpu", "gpu"])
def test_kustomize_build_matches_kubernetes_schema(flavour: str) -> None:
    docs = kustomize_build(K8S / flavour)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    for doc in docs:
        schema_validate(doc, f"kubectl kustomize deploy/kubernetes/{flavour}")


# --------------------------------------------------------------- Kubernetes: structure


@cache
def remote_overlay_docs() -> tuple[dict[str, Any], ...]:
    return tuple(d for d in kustomize_build(K8S_REMOTE) if d)


def test_kustomize_build_of_the_remote_scorer_matches_kubernetes_schema() -> None:
    docs = remote_overlay_docs()
    kinds = sorted(d["kind"] for d in docs)
    assert (
        kinds
        == sorted(
            ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"] * 2
        )[1:]
    ), "the base's five resources plus the scorer's Deployment, Service, HPA and PDB"
    for doc in docs:
        schema_validate(doc, "kubectl kustomize deploy/kubernetes/remote-scorer")


def named(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def check_remote_overlay(docs: tuple[dict[str, Any], ...], tmp_path: Path) -> None:
    """The bridge's ConfigMap points its model at the scorer Service, by the scorers' served name and port."""
    scorer = named(docs, "Deployment", "rerank-scorer")
    service = named(docs, "Service", "rerank-scorer")
    container = scorer["spec"]["template"]["spec"]["containers"][0]
    args = [str(a) for a in container["args"]]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args[0] == "v2" and container["image"].startswith("michaelf34/infinity:")
    assert str(ports["http"]) == args[args.index("--port") + 1]
    assert args[args.index("--host") + 1] == "0.0.0.0", "reachable from the bridge pods"
    settings = load_config_text(
        named(docs, "ConfigMap", "rerank-bridge-config")["data"]["bridge.yaml"], tmp_path
    )
    (rule,) = settings.rules
    model = settings.models[rule.model or next(iter(settings.models))]
    assert model.remote is not None and model.remote.protocol == "cohere"
    assert model.remote.model == served_model_name(args)
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in ports or service_port["targetPort"] in ports.values()
    for url in remote_urls(model):
        assert url.host == service["metadata"]["name"] and url.port == service_port["port"]
        assert url.path == "/rerank"
    pod_labels = scorer["spec"]["template"]["metadata"]["labels"]
    bridge_labels = named(docs, "Deployment", "rerank-bridge")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not service["spec"]["selector"].items() <= bridge_labels.items(), (
        "the scorer Service selects bridges"
    )
    bridge_service = named(docs, "Service", "rerank-bridge")
    assert not bridge_service["spec"]["selector"].items() <= pod_labels.items(), (
        "the bridge Service selects scorers"
    )
    hpa = named(docs, "HorizontalPodAutoscaler", "rerank-scorer")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "rerank-scorer",
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in scorer["spec"], "the scorer HPA owns the replica count"
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU utilisation needs a CPU request"
    pdb = named(docs, "PodDisruptionBudget", "rerank-scorer")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "the PDB would block every drain"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert container[probe]["httpGet"]["port"] in ports
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert (
        scorer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        > pre_stop + model.remote.timeout_s
    )
    env = env_map(container)
    assert env["DO_NOT_TRACK"]["value"] == "1" and env["INFINITY_ANONYMOUS_USAGE_STATS"]["value"] == "0"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["HF_HOME"]["value"] in mounts and "/tmp" in mounts, "writable caches on a read-only root"


def test_remote_scorer_overlay_points_the_bridge_at_its_scorers(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    check_remote_overlay(remote_overlay_docs(), tmp_path)


def test_remote_scorer_overlay_without_kustomize(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """The same checks on the overlay's files merged by hand (the ConfigMap patch replaces bridge.yaml)."""
    docs = list(base_resources())
    for name in kustomization_resources(K8S_REMOTE):
        if name != "../base":
            docs.extend(load_docs(K8S_REMOTE / name))
    patch = load_docs(K8S_REMOTE / "configmap-remote-patch.yaml")[0]
    configmap = dict(one(docs, "ConfigMap"), data=patch["data"])
    docs = [configmap if d["kind"] == "ConfigMap" else d for d in docs]
    check_remote_overlay(tuple(docs), tmp_path)
    bridge = bridge_container(load_docs(K8S_REMOTE / "deployment-remote-patch.yaml")[0])
    requests, limits = bridge["resources"]["requests"], bridge["resources"]["limits"]
    assert (requests["cpu"], requests["memory"]) == (limits["cpu"], limits["memory"]), (
        "whole cores, as in base"
    )


def test_kustomizations_list_existing_files() -> None:
    for directory in (K8S, K8S_BASE, K8S / "gpu", K8S_REMOTE):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for resource in kustomization["resources"]:
            assert (directory / resource).exists(), f"{directory}/kustomization.yaml: {resource} missing"
        for patch in kustomization.get("patches", []):
            assert (directory / patch["path"]).is_file()
    listed = set(kustomization_resources(K8S_BASE))
    on_disk = {p.name for p in K8S_BASE.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == on_disk, "every manifest in base/ is a resource, and only those"
    everything = " ".join(
        (d / "kustomization.yaml").read_text() for d in (K8S, K8S_BASE, K8S / "gpu", K8S_REMOTE)
    )
    assert "secret.example.yaml" not in re.sub(r"#.*", "", everything), (
        "the example Secret must not be applied"
    )


def test_every_resource_is_named() -> None:
    for path in raw_manifests():
        for doc in load_docs(path):
            assert doc.get("apiVersion") and doc.get("kind"), path
            assert doc.get("metadata", {}).get("name"), f"{path}: {doc['kind']} without metadata.name"


def test_deployment_probes() -> None:
    deployment = one(base_resources(), "Deployment")
    container = bridge_container(deployment)
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/_bridge/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/_bridge/health"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] in ("/_bridge/health", "/_bridge/ready")
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    assert budget >= 300, f"startupProbe allows only {budget}s for model download and load"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        port = container[probe]["httpGet"]["port"]
        assert port in port_names or port in port_names.values(), f"{probe} port {port} is no container port"


def test_deployment_shutdown_outlasts_the_drain(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    deployment = one(base_resources(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = bridge_container(deployment)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", "preStop must hold the pod while endpoints drop"
    pre_stop = float(command[1])
    env = env_map(container)
    drain = float(
        env["BRIDGE_SERVER__DRAIN_TIMEOUT_S"]["value"]
        if "BRIDGE_SERVER__DRAIN_TIMEOUT_S" in env
        else load_config_text(configmap_bridge_yaml(), tmp_path).server.drain_timeout_s
    )
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_deployment_security_and_volumes() -> None:
    deployment = one(base_resources(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = bridge_container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    docker_user = [a for k, a in final_stage() if k == "USER"][-1].split(":")[0]
    assert str(pod["securityContext"]["runAsUser"]) == docker_user, "runAsUser differs from the image's USER"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env = env_map(container)
    hf_home = env["HF_HOME"]["value"]
    assert "emptyDir" in volumes[mounts[hf_home]], "HF_HOME must be a writable emptyDir"
    assert "emptyDir" in volumes[mounts["/tmp"]]

    # --config points at the ConfigMap's key where it is mounted
    config_dir, config_file = CONFIG_PATH.rsplit("/", 1)
    assert container["args"] == ["--config", CONFIG_PATH]
    config_volume = volumes[mounts[config_dir]]["configMap"]
    assert config_volume["name"] == one(base_resources(), "ConfigMap")["metadata"]["name"]
    assert {"key": "bridge.yaml", "path": config_file} in config_volume["items"]
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU utilisation needs a CPU request"


def test_deployment_reads_credentials_from_the_secret() -> None:
    container = bridge_container(one(base_resources(), "Deployment"))
    secret = one(load_docs(K8S / "secret.example.yaml"), "Secret")
    ref = env_map(container)["BRIDGE_UPSTREAM__PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]
    assert "password" not in configmap_bridge_yaml().split("upstream:", 1)[1].split("server:", 1)[0]


def test_service_routes_to_the_container_port() -> None:
    deployment = one(base_resources(), "Deployment")
    service = one(base_resources(), "Service")
    container = bridge_container(deployment)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        target = port["targetPort"]
        assert target in ports or target in ports.values(), f"targetPort {target} is no container port"
        assert ports.get(target, target) == 9400
    assert next(a for k, a in final_stage() if k == "EXPOSE") == "9400"


def test_hpa_and_pdb() -> None:
    deployment = one(base_resources(), "Deployment")
    hpa = one(base_resources(), "HorizontalPodAutoscaler")
    pdb = one(base_resources(), "PodDisruptionBudget")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "the PDB would block every drain"


def test_gpu_patch_requests_a_gpu() -> None:
    """Without kustomize: the patch itself asks for one GPU, request equal to limit."""
    patch = load_docs(K8S / "gpu" / "deployment-gpu-patch.yaml")[0]
    container = bridge_container(patch)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"].get("nvidia.com/gpu", 1) == 1


def test_gpu_flavour_renders() -> None:
    docs = kustomize_build(K8S / "gpu")
    deployment = one(list(docs), "Deployment")
    container = bridge_container(deployment)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":cuda")
    assert container["readinessProbe"]["httpGet"]["path"] == "/_bridge/ready"
    assert any(t["key"] == "nvidia.com/gpu" for t in deployment["spec"]["template"]["spec"]["tolerations"])
    cpu = one(list(kustomize_build(K8S)), "Deployment")
    assert bridge_container(cpu)["image"].endswith(":cpu")
    assert "nvidia.com/gpu" not in bridge_container(cpu)["resources"]["limits"]


# -------------------------------------------------------------------- install script


def test_validate_requirements_script_is_valid_bash() -> None:
    script = DEPLOY / "validate-requirements.sh"
    assert os.access(script, os.X_OK), "deploy/validate-requirements.sh is not executable"
    result = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
