"""Prometheus metrics, in a registry of the bridge's own (no process-global state, so tests can run many apps)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridge.scoring.precision import PrecisionReport

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every series the bridge exports; also the scoring engine's ``ScoringObserver``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rerank_bridge_requests_total",
            "Requests handled, by route and outcome (passthrough, reranked, skipped) and skip reason.",
            ["route", "outcome", "reason"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "rerank_bridge_upstream_request_duration_seconds",
            "Time the engine took for searches the bridge intercepted.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rerank_latency = Histogram(
            "rerank_bridge_rerank_duration_seconds",
            "Time spent scoring one search's window, queueing included.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_latency = Histogram(
            "rerank_bridge_model_batch_duration_seconds",
            "Time of one model call (one batch).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_pairs = Histogram(
            "rerank_bridge_batch_pairs",
            "Pairs per model call.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "rerank_bridge_batch_padded_tokens",
            "Padded tokens per model call.",
            ["model"],
            buckets=(256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
            registry=r,
        )
        self.queue_pairs = Gauge(
            "rerank_bridge_queue_pairs", "Pairs waiting for the model.", ["model"], registry=r
        )
        self.cache_hits = Counter(
            "rerank_bridge_score_cache_hits_total",
            "Pairs answered from the score cache.",
            ["model"],
            registry=r,
        )
        self.cache_misses = Counter(
            "rerank_bridge_score_cache_misses_total", "Pairs the cache did not hold.", ["model"], registry=r
        )
        self.fail_open = Counter(
            "rerank_bridge_fail_open_total",
            "Searches answered in the engine's order because reranking failed.",
            ["reason"],
            registry=r,
        )
        self.in_flight = Gauge("rerank_bridge_requests_in_flight", "Requests being handled.", registry=r)
        self.upstream_in_use = Gauge(
            "rerank_bridge_upstream_connections_in_use",
            "Requests holding one of upstream.max_connections.",
            registry=r,
        )
        self.upstream_waiting = Gauge(
            "rerank_bridge_upstream_pool_waiting",
            "Requests waiting for an engine connection (the pool is saturated while this is above 0).",
            registry=r,
        )
        self.async_searches = Gauge(
            "rerank_bridge_async_searches",
            "Async searches the bridge holds, by state (running, done).",
            ["state"],
            registry=r,
        )
        self.model_precision = Gauge(
            "rerank_bridge_model_precision",
            "1 for the precision each local model scores in (float32, bfloat16, float16, int8, "
            "int8 (reduce_range)), after the start-up precision check.",
            ["model", "precision"],
            registry=r,
        )
        self.model_precision_delta = Gauge(
            "rerank_bridge_model_precision_max_abs_delta",
            "Largest |score difference| to float32 on the start-up check set (models not in float32).",
            ["model"],
            registry=r,
        )
        self.model_precision_fallback = Gauge(
            "rerank_bridge_model_precision_fell_back",
            "1 when a model fell back to float32 because its configured precision missed the tolerance.",
            ["model"],
            registry=r,
        )
        self.remote_requests = Counter(
            "rerank_bridge_remote_requests_total",
            "HTTP requests to remote scorers, by endpoint (URL without credentials or query) and outcome (ok, "
            "busy, server_error, client_error, unreachable, timeout, bad_response, cancelled).",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self.remote_latency = Histogram(
            "rerank_bridge_remote_request_seconds",
            "Time of one HTTP request to a remote scorer's endpoint (answered or failed; cancelled ones not).",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.remote_ejections = Counter(
            "rerank_bridge_remote_ejections_total",
            "Times a remote endpoint was taken out of rotation after a failure or timeout.",
            ["model", "endpoint"],
            registry=r,
        )
        self.remote_up = Gauge(
            "rerank_bridge_remote_endpoint_up",
            "1 while a remote endpoint gets traffic, 0 while it is ejected or waiting for its probe.",
            ["model", "endpoint"],
            registry=r,
        )
        self.async_search_bytes = Gauge(
            "rerank_bridge_async_search_bytes",
            "Bytes of async-search results kept (bounded by async_search.max_bytes).",
            registry=r,
        )

    def model_loaded(self, model: str, precision: PrecisionReport) -> None:
        """Record a started model's precision (set once per start; a scrape reads the gauges)."""
        self.model_precision.labels(model, precision.precision).set(1)
        self.model_precision_fallback.labels(model).set(1 if precision.fell_back else 0)
        if precision.max_abs_delta is not None:
            self.model_precision_delta.labels(model).set(precision.max_abs_delta)

    def watch_pool(self, state: Callable[[], Mapping[str, int | bool]]) -> None:
        """The pool gauges read ``state()`` when scraped: nothing to update on the request path."""
        self.upstream_in_use.set_function(lambda: float(state()["in_use"]))
        self.upstream_waiting.set_function(lambda: float(state()["waiting"]))

    def watch_async_store(self, state: Callable[[], Mapping[str, int]]) -> None:
        """The async-search gauges read ``state()`` when scraped."""
        self.async_searches.labels("running").set_function(lambda: float(state()["running"]))
        self.async_searches.labels("done").set_function(lambda: float(state()["done"]))
        self.async_search_bytes.set_function(lambda: float(state()["bytes"]))

    # ScoringObserver
    def batch_done(self, model: str, pairs: int, padded_tokens: int, seconds: float) -> None:
        self.model_latency.labels(model).observe(seconds)
        self.batch_pairs.labels(model).observe(pairs)
        self.batch_tokens.labels(model).observe(padded_tokens)

    def queue_depth(self, model: str, pairs: int) -> None:
        self.queue_pairs.labels(model).set(pairs)

    def cache_lookup(self, model: str, hits: int, misses: int) -> None:
        if hits:
            self.cache_hits.labels(model).inc(hits)
        if misses:
            self.cache_misses.labels(model).inc(misses)

    def remote_request(self, model: str, endpoint: str, outcome: str, seconds: float) -> None:
        self.remote_requests.labels(model, endpoint, outcome).inc()
        if outcome != "cancelled":
            self.remote_latency.labels(model, endpoint).observe(seconds)

    def remote_ejected(self, model: str, endpoint: str) -> None:
        self.remote_ejections.labels(model, endpoint).inc()

    def remote_endpoint_up(self, model: str, endpoint: str, up: bool) -> None:
        self.remote_up.labels(model, endpoint).set(1 if up else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
