"""The tests' own hygiene on a real engine: they create only uniquely named indices and remove exactly those."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.engine import remove_leftovers
from tests.indices import RUN_ID, TEST_PREFIX, scratch_name

pytestmark = pytest.mark.engine


def _put(url: str, name: str) -> None:
    request = urllib.request.Request(f"{url}/{name}", method="PUT")
    urllib.request.urlopen(request, timeout=30).close()


def _exists(url: str, name: str) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/{name}", method="HEAD"), timeout=30).close()
        return True
    except urllib.error.HTTPError as error:
        assert error.code == 404
        return False


def test_scratch_names_are_unique_to_this_run() -> None:
    assert scratch_name("products") == f"{TEST_PREFIX}-{RUN_ID}-products"
    assert len(RUN_ID) == 8 and scratch_name("products") != "products"


def test_the_leftover_sweep_removes_only_this_runs_indices(opensearch_url: str) -> None:
    ours = scratch_name("left-behind")
    # Named like another run's scratch index; this test creates it, so this test deletes it too.
    another_run = f"{TEST_PREFIX}-{'0' * 8 if RUN_ID != '0' * 8 else '1' * 8}-left-behind"
    for name in (ours, another_run):
        _put(opensearch_url, name)
    try:
        removed = remove_leftovers(opensearch_url)
        assert ours in removed and another_run not in removed
        assert all(name.startswith((f"{TEST_PREFIX}-{RUN_ID}-", f".kibana_{TEST_PREFIX}_{RUN_ID}")) for name in removed)
        assert not _exists(opensearch_url, ours)
        assert _exists(opensearch_url, another_run)
    finally:
        for name in (ours, another_run):
            request = urllib.request.Request(f"{opensearch_url}/{name}?ignore_unavailable=true", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()
