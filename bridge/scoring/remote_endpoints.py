"""Which of several servers of one model gets the next request: a pure rulebook with an injected clock.

The rules (:class:`EndpointPool`):

1. **Least in-flight.** A request (each part of a split one) goes to the usable endpoint with the fewest
   requests in flight; ties go to the one picked least recently (round-robin), so idle endpoints share
   sequential traffic evenly.
2. **Ejection.** A connection error, a 5xx or a timeout ejects the endpoint for ``eject_s``, doubled per
   consecutive failure and capped at :data:`EJECT_CAP_FACTOR` times ``eject_s``. A 429 is *busy*, not broken:
   the endpoint stays in, but gets nothing until its ``Retry-After`` has passed while another one can take
   the request. Any other answer (2xx, or a 4xx, which a live server sends) counts as alive.
3. **Half-open.** When its ejection ends, exactly one real request is let through as a probe; its success
   restores the endpoint (failures reset), its failure ejects it again for longer. A cancelled probe judges
   nothing and the next request probes again.
4. **Retries elsewhere.** A retry avoids the endpoint that just failed whenever another one is usable.
5. **Never "no endpoint".** When none is usable (all ejected, probes out, or all avoided), the one whose
   ejection ends soonest is tried anyway: a search keeps its chance while time remains.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum

EJECT_CAP_FACTOR = 8.0


class Outcome(Enum):
    """How one request to an endpoint ended, as far as the endpoint's health goes."""

    OK = "ok"
    """Answered (2xx, or a 4xx: the server is alive and said no)."""
    FAILED = "failed"
    """Connection refused or reset, 5xx, timed out: eject."""
    BUSY = "busy"
    """429: keep it, but leave it alone until Retry-After."""
    CANCELLED = "cancelled"
    """The caller gave up first: says nothing about the endpoint."""


@dataclass
class Endpoint:
    """One server; ``url`` is what requests go to, ``label`` what logs and metrics show (no credentials)."""

    url: str
    label: str
    in_flight: int = 0
    failures: int = 0
    """Consecutive failures; 0 once a request succeeds."""
    ejected_until: float | None = None
    """None while the endpoint is in; else when its ejection ends (it may be half-open since)."""
    probing: bool = False
    """The one half-open probe is out."""
    busy_until: float = 0.0
    picked: int = field(default=0, repr=False)
    """Pick sequence number of the last request sent here (round-robin among ties)."""

    @property
    def up(self) -> bool:
        return self.ejected_until is None


@dataclass(frozen=True)
class Change:
    """What a finished request did to its endpoint, for a log line and the metrics."""

    endpoint: Endpoint
    kind: str
    """``ejected`` (with ``seconds``) or ``restored``."""
    seconds: float = 0.0


class EndpointPool:
    """The endpoints of one remote model and the rules above; not thread-safe (one event loop)."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, str]],
        eject_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.endpoints = [Endpoint(url, label) for url, label in endpoints]
        self.eject_s = eject_s
        self.max_eject_s = eject_s * EJECT_CAP_FACTOR
        self._clock = clock
        self._picks = 0

    # Choosing
    def _usable(self, endpoint: Endpoint, now: float) -> bool:
        """In, or ejected with the ejection over and no probe out (the next request is the probe)."""
        if endpoint.ejected_until is None:
            return True
        return endpoint.ejected_until <= now and not endpoint.probing

    def choose(self, avoid: Collection[Endpoint] = ()) -> Endpoint:
        """The endpoint the next request should go to (nothing is recorded until :meth:`take`)."""
        now = self._clock()
        usable = [e for e in self.endpoints if self._usable(e, now)]
        preferred = [e for e in usable if e not in avoid] or usable
        if preferred:
            free = [e for e in preferred if e.busy_until <= now]
            if free:
                return min(free, key=lambda e: (e.in_flight, e.picked))
            return min(preferred, key=lambda e: (e.busy_until, e.in_flight, e.picked))
        # Nothing usable: the ejection that ends soonest, one without a probe out first.
        others = [e for e in self.endpoints if e not in avoid] or self.endpoints
        return min(
            others,
            key=lambda e: (e.probing, e.ejected_until if e.ejected_until is not None else now, e.in_flight),
        )

    def take(self, endpoint: Endpoint) -> bool:
        """Record a request sent to ``endpoint``; True when it is the half-open probe."""
        now = self._clock()
        self._picks += 1
        endpoint.picked = self._picks
        endpoint.in_flight += 1
        probe = endpoint.ejected_until is not None and endpoint.ejected_until <= now and not endpoint.probing
        if probe:
            endpoint.probing = True
        return probe

    def acquire(self, avoid: Collection[Endpoint] = ()) -> Endpoint:
        """:meth:`choose` and :meth:`take` in one."""
        endpoint = self.choose(avoid)
        self.take(endpoint)
        return endpoint

    def wait_s(self, endpoint: Endpoint) -> float:
        """How long ``endpoint`` asked to be left alone (a 429's Retry-After still running)."""
        return max(0.0, endpoint.busy_until - self._clock())

    def usable(self, endpoint: Endpoint) -> bool:
        """Whether ``endpoint`` may take a request now by rule 1 or 3 (not only as rule 5's last resort)."""
        return self._usable(endpoint, self._clock())

    # Judging
    def release(
        self, endpoint: Endpoint, outcome: Outcome, *, probe: bool = False, retry_after: float | None = None
    ) -> Change | None:
        """Record how a request ended; returns the endpoint's change of state, if any."""
        now = self._clock()
        endpoint.in_flight = max(0, endpoint.in_flight - 1)
        if probe:
            endpoint.probing = False
        if outcome is Outcome.CANCELLED:
            return None
        if outcome is Outcome.BUSY:
            # Busy but alive: an ejection ends (the server answered), the failure streak does not grow.
            endpoint.busy_until = max(endpoint.busy_until, now + (retry_after or 0.0))
            return self._restore(endpoint)
        if outcome is Outcome.OK:
            return self._restore(endpoint)
        if endpoint.ejected_until is not None and endpoint.ejected_until > now and not probe:
            return None  # already out: a request sent before the ejection (or a forced try) failed too
        endpoint.failures += 1
        seconds = min(self.eject_s * 2.0 ** (endpoint.failures - 1), self.max_eject_s)
        endpoint.ejected_until = max(endpoint.ejected_until or 0.0, now + seconds)
        return Change(endpoint, "ejected", seconds)

    def _restore(self, endpoint: Endpoint) -> Change | None:
        endpoint.failures = 0
        if endpoint.ejected_until is None:
            return None
        endpoint.ejected_until = None
        return Change(endpoint, "restored")

    def state(self, endpoint: Endpoint) -> str:
        """``up``, ``ejected`` (no traffic), or ``half-open`` (the next request, or the one out, probes it)."""
        if endpoint.ejected_until is None:
            return "up"
        return "half-open" if endpoint.ejected_until <= self._clock() else "ejected"
