"""The endpoint pool as a rulebook: least in-flight, ejection with back-off, one half-open probe, 429 as busy,
retries elsewhere, and never "no endpoint". Time is a fake clock the tests move."""

from __future__ import annotations

import pytest

from bridge.scoring.remote_endpoints import EJECT_CAP_FACTOR, Endpoint, EndpointPool, Outcome


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def pool(clock: Clock, count: int = 2, eject_s: float = 5.0) -> EndpointPool:
    return EndpointPool([(f"http://e{i}/rerank", f"e{i}") for i in range(count)], eject_s, clock)


def labels(endpoints: list[Endpoint]) -> list[str]:
    return [endpoint.label for endpoint in endpoints]


def probing(clock: Clock) -> tuple[EndpointPool, Endpoint]:
    """Two endpoints, the first failed once, sat out its 5 s ejection and is now on its one probe request."""
    p = pool(clock, 2)
    a = p.endpoints[0]
    p.take(a)
    p.release(a, Outcome.FAILED)
    clock.now += 5.0
    assert p.take(a) is True
    return p, a


def test_least_in_flight_first_then_round_robin(clock: Clock) -> None:
    p = pool(clock, 3)
    taken = [p.acquire() for _ in range(6)]
    assert labels(taken) == ["e0", "e1", "e2", "e0", "e1", "e2"], "concurrent requests spread evenly"
    a, b, c = p.endpoints
    p.release(b, Outcome.OK)
    p.release(b, Outcome.OK)
    assert p.acquire() is b, "the endpoint with the fewest in flight"
    for endpoint in (a, a, b, b, c, c):
        p.release(endpoint, Outcome.OK)
    sequential = []
    for _ in range(6):  # one at a time: nothing in flight anywhere, so the least recently picked goes next
        endpoint = p.acquire()
        sequential.append(endpoint.label)
        p.release(endpoint, Outcome.OK)
    assert sorted(sequential) == ["e0", "e0", "e1", "e1", "e2", "e2"]


def test_a_failure_ejects_for_eject_s_doubling_per_failure_up_to_the_cap(clock: Clock) -> None:
    p = pool(clock, 2, eject_s=5.0)
    a, b = p.endpoints
    p.take(a)
    first = p.release(a, Outcome.FAILED)
    assert first is not None and first.kind == "ejected" and first.endpoint is a and first.seconds == 5.0
    durations = []
    for _ in range(4):
        clock.now = a.ejected_until or clock.now  # the ejection is over: the next request is the probe
        assert p.take(a) is True
        change = p.release(a, Outcome.FAILED, probe=True)
        assert change is not None
        durations.append(change.seconds)
    assert durations == [10.0, 20.0, 40.0, 40.0]
    assert EJECT_CAP_FACTOR * 5.0 == 40.0
    assert p.state(a) == "ejected" and not a.up and b.up


def test_an_ejected_endpoint_gets_no_traffic_until_its_probe(clock: Clock) -> None:
    p = pool(clock, 2)
    a, b = p.endpoints
    p.take(a)
    p.release(a, Outcome.FAILED)
    assert [p.acquire().label for _ in range(3)] == ["e1", "e1", "e1"]
    clock.now += 4.9
    assert p.choose() is b
    clock.now += 0.2
    assert p.state(a) == "half-open"
    assert p.choose() is a, "least in flight: the idle half-open endpoint is the next choice"
    assert p.take(a) is True, "it is the probe"
    assert [p.acquire().label for _ in range(3)] == ["e1", "e1", "e1"], "exactly one probe at a time"
    change = p.release(a, Outcome.OK, probe=True)
    assert change is not None and change.kind == "restored"
    assert a.up and a.failures == 0 and p.state(a) == "up"
    assert p.choose() is a, "restored: traffic again (fewest in flight)"


def test_a_failed_probe_ejects_again_for_longer(clock: Clock) -> None:
    p, a = probing(clock)
    change = p.release(a, Outcome.FAILED, probe=True)
    assert change is not None and change.seconds == 10.0
    assert p.state(a) == "ejected" and a.ejected_until == clock.now + 10.0


def test_a_cancelled_probe_judges_nothing_and_the_next_request_probes(clock: Clock) -> None:
    p, a = probing(clock)
    assert p.release(a, Outcome.CANCELLED, probe=True) is None
    assert p.state(a) == "half-open" and not a.probing and a.failures == 1
    assert p.usable(a) and p.take(a) is True, "the next request to it is the probe"


def test_requests_out_when_the_endpoint_was_ejected_do_not_escalate(clock: Clock) -> None:
    p = pool(clock, 2)
    a, _ = p.endpoints
    for _ in range(3):  # three parts of a split request, all sent before the first failure came back
        p.take(a)
    first = p.release(a, Outcome.FAILED)
    assert first is not None and first.seconds == 5.0
    assert p.release(a, Outcome.FAILED) is None and p.release(a, Outcome.FAILED) is None
    assert a.failures == 1 and a.ejected_until == clock.now + 5.0 and a.in_flight == 0


def test_an_answer_from_a_request_sent_before_the_ejection_restores_it(clock: Clock) -> None:
    p = pool(clock, 2)
    a, _ = p.endpoints
    p.take(a)
    p.take(a)
    p.release(a, Outcome.FAILED)
    change = p.release(a, Outcome.OK)
    assert change is not None and change.kind == "restored" and a.up


def test_429_is_busy_not_broken(clock: Clock) -> None:
    p = pool(clock, 2)
    a, _ = p.endpoints
    p.take(a)
    assert p.release(a, Outcome.BUSY, retry_after=2.0) is None, "not ejected"
    assert a.up and a.failures == 0 and p.wait_s(a) == pytest.approx(2.0)
    assert [p.acquire().label for _ in range(3)] == ["e1", "e1", "e1"], "left alone while another can take it"
    clock.now += 2.0
    assert p.choose() is a and p.wait_s(a) == 0.0


def test_when_every_endpoint_is_busy_the_one_free_soonest_is_chosen(clock: Clock) -> None:
    p = pool(clock, 2)
    a, b = p.endpoints
    p.take(a)
    p.release(a, Outcome.BUSY, retry_after=3.0)
    p.take(b)
    p.release(b, Outcome.BUSY, retry_after=1.0)
    assert p.choose() is b and p.wait_s(b) == pytest.approx(1.0)


def test_a_429_from_a_probe_means_it_is_alive(clock: Clock) -> None:
    p, a = probing(clock)
    change = p.release(a, Outcome.BUSY, probe=True, retry_after=1.0)
    assert change is not None and change.kind == "restored" and p.wait_s(a) == pytest.approx(1.0)


def test_a_retry_avoids_the_endpoint_that_just_failed(clock: Clock) -> None:
    p = pool(clock, 3)
    a, b, c = p.endpoints
    p.take(b)  # b is busier than a
    p.take(b)
    assert p.choose(avoid=(a,)) is c
    p.take(c)
    p.take(c)
    p.take(c)
    assert p.choose(avoid=(a,)) is b, "least in flight among the others"
    single = pool(clock, 1)
    (only,) = single.endpoints
    assert single.choose(avoid=(only,)) is only, "a single endpoint is retried"


def test_with_every_endpoint_ejected_the_one_back_soonest_is_still_tried(clock: Clock) -> None:
    p = pool(clock, 3)
    a, b, c = p.endpoints
    for endpoint, failures in ((a, 3), (b, 1), (c, 2)):
        endpoint.failures = failures - 1
        p.take(endpoint)
        p.release(endpoint, Outcome.FAILED)
    assert [e.ejected_until for e in (a, b, c)] == [clock.now + 20.0, clock.now + 5.0, clock.now + 10.0]
    assert not any(p.usable(e) for e in (a, b, c))
    assert p.choose() is b, "ejection ends soonest"
    assert p.choose(avoid=(b,)) is c
    assert p.take(b) is False, "a last-resort try is not the probe"
    assert p.release(b, Outcome.FAILED) is None, "nor does its failure escalate the ejection"
    assert b.failures == 1
    p.take(b)
    restored = p.release(b, Outcome.OK)
    assert restored is not None and restored.kind == "restored" and b.up, "but its success restores it"


def test_a_single_endpoint_always_gets_the_request(clock: Clock) -> None:
    p = pool(clock, 1)
    (a,) = p.endpoints
    p.take(a)
    p.release(a, Outcome.FAILED)
    assert p.acquire() is a and p.acquire() is a, "ejected or not, it is the only chance"
    clock.now += 5.0
    assert p.state(a) == "half-open"


def test_an_empty_pool_is_refused(clock: Clock) -> None:
    with pytest.raises(ValueError, match="at least one"):
        EndpointPool([], 5.0, clock)
