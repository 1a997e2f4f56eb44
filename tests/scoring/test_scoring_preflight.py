"""``config check`` refuses what ``serve`` would refuse when it loads a model (missing or non-model directory,
a device torch will not take, a Hub that cannot be reached), in one line each, and warns about bf16 forced on
a CPU without native bf16. ``serve`` fails on an unreachable Hub in seconds, not ~48 s of retries."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bridge.scoring.device as device
from bridge.scoring.model import CrossEncoderModel
from bridge.scoring.preflight import check_model
from bridge.scoring.settings import ModelSettings
from tests.config_check import model_config_check as config_check

HUB_ID = "cross-encoder/ms-marco-MiniLM-L-6-v2"


pytestmark = pytest.mark.usefixtures("no_bridge_environment")


def not_a_model(tmp_path: Path, tiny_model: Path) -> dict[str, Path]:
    """Directories ``from_pretrained`` refuses: empty, a config without weights, weights without a tokenizer."""
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(tiny_model / "config.json", no_weights)
    shutil.copy(tiny_model / "tokenizer.json", no_weights)
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    shutil.copy(tiny_model / "config.json", no_tokenizer)
    shutil.copy(tiny_model / "model.safetensors", no_tokenizer)
    return {"empty": empty, "no-weights": no_weights, "no-tokenizer": no_tokenizer}


@pytest.mark.parametrize(
    ("case", "field", "says"),
    [
        ("missing", "models.m.source", "does not exist"),
        ("empty", "models.m.source", "no config.json"),
        ("no-weights", "models.m.source", "no weights"),
        ("no-tokenizer", "models.m.source", "no tokenizer"),
        ("device gpu", "models.m.device", "'gpu' is not a torch device"),
        ("device cuda:7", "models.m.device", "'cuda:7'"),
    ],
)
def test_config_check_refuses_a_model_serve_would_refuse(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], case: str, field: str, says: str
) -> None:
    directories = not_a_model(tmp_path, tiny_model)
    source, model_device = {
        "missing": (tmp_path / "no-such-model", "auto"),
        "device gpu": (tiny_model, "gpu"),
        "device cuda:7": (tiny_model, "cuda:7"),
    }.get(case, (directories.get(case), "auto"))
    status, out, err = config_check(tmp_path, f"{{source: '{source}', device: '{model_device}'}}", capsys)
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and says in lines[0], err


def test_config_check_accepts_a_loadable_model(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = config_check(tmp_path, f"{{source: '{tiny_model}', device: cpu}}", capsys)
    assert status == 0 and err == ""
    assert '"device": "cpu"' in out


@pytest.mark.parametrize(("model_device", "says"), [("gpu", "not a torch device"), ("cuda:7", "'cuda:7'")])
def test_serve_refuses_a_bad_device_with_the_same_line(tiny_model: Path, model_device: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        CrossEncoderModel("m", ModelSettings(source=str(tiny_model), device=model_device))


def test_bfloat16_forced_on_a_cpu_without_native_bf16_is_a_warning(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forced = ModelSettings(source=str(tiny_model), device="cpu", dtype="bfloat16")
    [finding] = check_model("m", forced, cpu_flags=set())
    assert not finding.error and finding.where == "models.m.dtype" and "slower than float32" in finding.message
    assert check_model("m", forced, cpu_flags={"avx512_bf16"}) == []
    assert check_model("m", forced.model_copy(update={"dtype": "auto"}), cpu_flags=set()) == []

    monkeypatch.setattr(device, "cpu_bf16_flags", lambda cpuinfo=None: set())
    status, out, err = config_check(tmp_path, f"{{source: '{tiny_model}', device: cpu, dtype: bfloat16}}", capsys)
    assert status == 0 and out  # a warning: the config is still printed
    assert "warning: models.m.dtype" in err and "5.3x" in err
    with caplog.at_level(logging.WARNING, logger="bridge.scoring.model"):
        CrossEncoderModel("m", forced).close()
    assert "slower than float32" in caplog.text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_offline(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The CLI with a Hub on a closed port of 127.0.0.1 (nothing leaves the machine) and an empty cache."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "HF_"))}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **clean,
            "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "HF_HOME": str(tmp_path / "hf-home"),
            "BRIDGE_MODELS__MINILM__SOURCE": HUB_ID,
            "BRIDGE_SERVER__PORT": "0",
            **env,
        },
    )
    return done, time.monotonic() - started


def test_config_check_fails_in_one_line_when_the_hub_cannot_be_reached(tmp_path: Path) -> None:
    done, _ = run_offline(["config", "check"], tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "models.minilm.source" in lines[0] and HUB_ID in lines[0] and "cannot reach" in lines[0]
    assert "local" in lines[0] and "--local-dir" in lines[0]

    offline, _ = run_offline(["config", "check"], tmp_path, HF_HUB_OFFLINE="1")
    assert offline.returncode == 2
    assert len(offline.stderr.strip().splitlines()) == 1 and "HF_HUB_OFFLINE" in offline.stderr


def test_a_hub_mirror_token_in_hf_endpoint_never_reaches_the_message(tmp_path: Path) -> None:
    endpoint = f"http://mirror-user:mirror-token-123@127.0.0.1:{closed_port()}"
    done, _ = run_offline(["config", "check"], tmp_path, HF_ENDPOINT=endpoint)
    assert done.returncode == 2 and "cannot reach" in done.stderr
    assert "mirror-token-123" not in done.stderr + done.stdout


def test_serve_fails_fast_in_one_line_when_the_hub_cannot_be_reached(tmp_path: Path) -> None:
    done, seconds = run_offline(["serve"], tmp_path, BRIDGE_LOG_FORMAT="text")
    assert done.returncode == 1
    assert "Retrying" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, done.stderr
    assert "cannot load the configured models: model minilm:" in errors[0] and HUB_ID in errors[0]
    assert "local-dir" in errors[0]
    assert seconds < 30, f"{seconds:.1f} s (from_pretrained's retries take ~48 s)"


def test_a_cached_hub_model_loads_without_the_hub(tmp_path: Path, tiny_model: Path) -> None:
    """Hub unreachable but the model in the cache: loaded from there at once, without retry warnings."""
    snapshot = tmp_path / "hf-home" / "hub" / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model, snapshot)
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    done, _ = run_offline(["config", "check"], tmp_path, BRIDGE_MODELS__MINILM__DEVICE="cpu")
    assert done.returncode == 0, done.stderr
    load = subprocess.run(
        [
            sys.executable, "-c",
            "from bridge.scoring.model import CrossEncoderModel as M; from bridge.scoring.settings import "
            f"ModelSettings as S; m = M('minilm', S(source='{HUB_ID}', device='cpu')); print(len(m.predict('q', ['p'])))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "HF_"))},
            "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
            "HF_HOME": str(tmp_path / "hf-home"),
        },
    )
    assert load.returncode == 0, load.stderr
    assert load.stdout.strip() == "1"
    assert "Retrying" not in load.stderr


class _FakeHub:
    """A Hub on 127.0.0.1 that knows one model: HEAD .../resolve/main/config.json is 200 for it, else the
    Hub's own 404 for a repository it does not have."""

    def __init__(self) -> None:
        import http.server
        import threading

        known = f"/{HUB_ID}/resolve/main/config.json"

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                if self.path == known:
                    self.send_response(200)
                    self.send_header("ETag", '"abc"')
                    self.send_header("X-Repo-Commit", "0" * 40)
                else:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("source", "status", "says"), [(HUB_ID, 0, ""), ("someone/no-such-model", 2, "was not found")])
def test_config_check_asks_the_hub_once_for_a_hub_id(tmp_path: Path, source: str, status: int, says: str) -> None:
    hub = _FakeHub()
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "HF_"))}
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "config", "check"],
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **clean, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"),
                "BRIDGE_MODELS__M__SOURCE": source, "BRIDGE_MODELS__M__DEVICE": "cpu",
            },
        )
    finally:
        hub.close()
    assert done.returncode == status, done.stderr
    assert says in done.stderr
    if status:
        assert len(done.stderr.strip().splitlines()) == 1 and "models.m.source" in done.stderr
