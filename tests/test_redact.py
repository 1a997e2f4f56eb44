"""One rule hides URL credentials wherever the bridge shows text: config messages, eval reports, scorers."""

from __future__ import annotations

import pytest

from bridge.redact import hide_url_credentials, hide_url_secrets


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://admin:pw-1@search:9200/x", "https://***@search:9200/x"),
        ('(got "http://admin:pw-1@search:99999")', '(got "http://***@search:99999")'),
        ("admin:pw-1@search.internal:9200", "***@search.internal:9200"),  # the scheme forgotten
        ("cannot reach bob:pw-1@127.0.0.1:9400/idx", "cannot reach ***@127.0.0.1:9400/idx"),
        ("HTTPConnectionPool: https://tok:pw-1@mirror/p failed", "HTTPConnectionPool: https://***@mirror/p failed"),
    ],
)
def test_credentials_in_urls_are_hidden_with_or_without_a_scheme(text: str, shown: str) -> None:
    assert hide_url_credentials(text) == shown


@pytest.mark.parametrize("text", ["mail a@b.com", "http://search:9200/idx", "at 12:30 @ noon", "https://***@h"])
def test_text_without_credentials_is_left_as_it_is(text: str) -> None:
    assert hide_url_credentials(text) == text


def test_url_secrets_also_lose_their_query_and_fragment() -> None:
    text = "bad response: url='http://bob:pw-1@127.0.0.1:7997/rerank?token=t0k3n#f', then https://a.example/x?k=v"
    assert hide_url_secrets(text) == "bad response: url='http://***@127.0.0.1:7997/rerank', then https://a.example/x"
