"""``config check`` on remote models: what the remote scorer would refuse is refused before a deploy, each
``urls`` entry keeps its credentials hidden, and an API key headed over plain HTTP is warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.config_check import model_config_check as check

PASSWORD = "pa55-Wd-7731"


pytestmark = pytest.mark.usefixtures("no_bridge_environment")


COHERE = "protocol: cohere, model: rerank-v3.5, url: 'https://api.cohere.com/v2/rerank'"


@pytest.mark.parametrize(
    ("model_yaml", "where", "problem"),
    [
        (f"{{source: x, activation: softmax, remote: {{{COHERE}}}}}", "models.m.activation", "no softmax"),
        (f"{{source: x, label: entailment, remote: {{{COHERE}}}}}", "models.m.label", "1-label models only"),
        (
            "{source: x, activation: softmax, remote: {url: 'http://tei:8080'}}",
            "models.m.activation",
            "softmax",
        ),
    ],
)
def test_what_the_remote_scorer_refuses_fails_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_yaml: str, where: str, problem: str
) -> None:
    status, _, err = check(tmp_path, model_yaml, capsys)
    assert status == 2
    assert f"error: {where}:" in err and problem in err


@pytest.mark.parametrize(
    ("remote_yaml", "problem"),
    [
        ("protocol: cohere, url: 'http://a:1/rerank'", "needs `model`"),
        ("url: 'http://a:1', urls: ['http://b:1']", "not both"),
        ("urls: ['http://a:1/rerank', 'http://a:1/rerank']", "twice"),
        ("url: 'http://a:1', model: x", "cohere only"),
        (f"url: 'http://u:{PASSWORD}@a:1', api_key: k3y-s3cret", "would both set the Authorization header"),
        # The host forgotten: the password reads as a port, and the entry is named, not quoted.
        (f"urls: ['http://10.0.0.5:7997/rerank', 'http://admin:{PASSWORD}']", "entry 1 is not a valid URL"),
    ],
)
def test_contradicting_remote_settings_are_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], remote_yaml: str, problem: str
) -> None:
    status, _, err = check(tmp_path, f"{{source: x, remote: {{{remote_yaml}}}}}", capsys)
    assert status == 2
    assert "models.m.remote" in err and problem in err
    assert PASSWORD not in err and "k3y-s3cret" not in err


def test_every_url_is_shown_without_its_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = f"['http://scorer:{PASSWORD}@10.0.0.5:7997/rerank', 'http://10.0.0.6:7997/rerank']"
    status, out, err = check(
        tmp_path, f"{{source: x, remote: {{protocol: cohere, model: m, urls: {urls}}}}}", capsys
    )
    assert status == 0, err
    assert PASSWORD not in out + err
    remote = json.loads(out)["models"]["m"]["remote"]
    assert remote["urls"] == ["http://***@10.0.0.5:7997/rerank", "http://10.0.0.6:7997/rerank"]
    assert remote["url"] is None and remote["protocol"] == "cohere" and remote["eject_s"] == 5.0


def test_an_api_key_over_plain_http_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = check(
        tmp_path, "{source: x, remote: {url: 'http://tei.internal:8080', api_key: k3y-s3cret}}", capsys
    )
    assert status == 0
    assert "warning: models.m.remote.url: the api_key is sent in clear text to tei.internal" in err
    assert "k3y-s3cret" not in err
    status, _, err = check(tmp_path, f"{{source: x, remote: {{{COHERE}, api_key: k3y-s3cret}}}}", capsys)
    assert status == 0 and "warning" not in err
