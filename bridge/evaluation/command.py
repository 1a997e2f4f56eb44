"""``rerank-bridge eval``: BM25 straight from the engine against the same queries reranked through the bridge.

Given a BEIR-layout collection it loads the corpus into an index (once), runs every judged query to the engine
and through the bridge once per combination mode (``--combine replace,linear:0.5,rrf``), and reports NDCG@10,
MRR@10 and Recall@100 for BM25 and each mode, per-query win/tie/loss against BM25, latency, and a sampled check
that the bridge applied the model exactly. Output: a table, ``report.json`` and ``ndcg_change.png`` (and, with
``--html``, ``report.html``: the same figures with each query's two top-10 lists, see ``html.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import HttpUrl, TypeAdapter, ValidationError

from bridge.config import (
    ConfigError,
    RuleSettings,
    Settings,
    describe_validation_error,
)
from bridge.engine_access import opensearch_client, ssl_context
from bridge.evaluation.collection import Collection, CollectionError, load_collection
from bridge.evaluation.indexing import (
    ANALYZERS,
    FIELDS,
    IndexingError,
    ensure_index,
    index_body,
)
from bridge.evaluation.metrics import METRICS, Evaluation, evaluate, win_tie_loss
from bridge.evaluation.modes import SYNTAX, Mode, parse_mode, parse_modes
from bridge.evaluation.report import plot_ndcg_change, table, write_json
from bridge.evaluation.runner import (
    QUERY_TYPES,
    Answer,
    ModeRun,
    QueryBuilder,
    RunError,
    Searcher,
    engine_headers,
    latency_summary,
    rerank_outcomes,
    run_modes,
)
from bridge.evaluation.verify import (
    BI_ENCODER_TOLERANCES,
    CROSS_ENCODER_REFERENCE,
    TOLERANCES,
    BiEncoderReference,
    Reference,
    ReferenceScorer,
    VerifyReport,
    bi_encoder_reference_problem,
    sample,
    verify_sample,
)
from bridge.redact import hide_url_credentials
from bridge.scoring.settings import ModelSettings

EVAL_MODEL = "eval"
KINDS = ("auto", "cross-encoder", "bi-encoder")


def add_eval_parser(commands: Any) -> None:
    """``rerank-bridge eval COLLECTION_DIR [options]``."""
    parser = commands.add_parser(
        "eval",
        help="relevance evaluation: BM25 vs reranked on a judged collection (BEIR layout)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("collection", type=Path, metavar="COLLECTION_DIR",
                        help="folder with corpus.jsonl, queries.jsonl and qrels.tsv (with a header line)")
    parser.add_argument("--config", type=Path, default=None, help="bridge YAML config; BRIDGE_* variables override it")
    parser.add_argument("--upstream", default=None, help="engine URL (default: upstream.url of the config)")
    parser.add_argument("--bridge", default=None, metavar="URL",
                        help="use this running bridge (its rules must cover the index) instead of one in-process")
    parser.add_argument("--index", default=None, help="index name (default: eval-<collection folder name>)")
    parser.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                        help="a model named in the config, else a local directory or Hub id "
                             "(default: the config's first model)")
    parser.add_argument("--kind", choices=KINDS, default="auto",
                        help="the model's kind; auto: a configured model's own kind, else bi-encoder for a "
                             "sentence-transformers directory whose modules.json has a Pooling module, "
                             "else cross-encoder")
    parser.add_argument("--combine", default=None, metavar="MODES",
                        help=f"comma-separated combination modes compared in one run, each sent as ext.rerank "
                             f"keys: {SYNTAX} (linear defaults 0.5:min_max, rrf 60; rule sends none). "
                             f"Default: replace, or rule with --bridge (the running bridge's rules as they are)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16", "auto"), default="float32",
                        help="dtype the bridge runs the model in")
    parser.add_argument("--device", default=None, help="torch device for the model (default: the model's setting)")
    parser.add_argument("--max-passage-tokens", type=int, default=None, metavar="N",
                        help="the model's max_passage_tokens: each passage cut to its first N tokens "
                             "(default: the model's setting)")
    parser.add_argument("--max-query-tokens", type=int, default=None, metavar="N",
                        help="the model's max_query_tokens: the query cut to its first N tokens "
                             "(default: the model's setting)")
    parser.add_argument("--window", type=int, default=100, help="hits the bridge reranks per query")
    parser.add_argument("--depth", type=int, default=100, help="hits asked for per query (Recall@100 needs 100)")
    parser.add_argument("--queries", type=int, default=None, metavar="N", help="only the first N judged queries")
    parser.add_argument("--concurrency", type=int, default=1, help="queries in flight at once (both paths paired)")
    parser.add_argument("--fields", default=",".join(FIELDS),
                        help="comma-separated fields: queried by multi_match and passed to the model")
    parser.add_argument("--query-type", choices=QUERY_TYPES, default="best_fields", help="multi_match type")
    parser.add_argument("--query-template", type=Path, default=None, metavar="FILE",
                        help="search body JSON with a \"{{query_text}}\" placeholder, instead of multi_match")
    parser.add_argument("--analyzer", choices=ANALYZERS, default="english",
                        help="analyzer of title and text; plain = lower-cased [a-z0-9] runs, no stemming, "
                             "no stop words")
    parser.add_argument("--mapping", type=Path, default=None, metavar="FILE",
                        help="create-index body (JSON settings + mappings) instead of the built-in mapping")
    parser.add_argument("--bm25-k1", type=float, default=None, help="BM25 k1 of the index (engine default 1.2)")
    parser.add_argument("--bm25-b", type=float, default=None, help="BM25 b of the index (engine default 0.75)")
    parser.add_argument("--reindex", action="store_true",
                        help="replace the index even if this tool did not create it")
    parser.add_argument("--no-load", action="store_true",
                        help="evaluate the existing index as it is; create and load nothing")
    parser.add_argument("--gain", choices=("exponential", "linear"), default="exponential",
                        help="NDCG gain: 2^rel-1 (exponential) or rel (linear, trec_eval's)")
    parser.add_argument("--verify-sample", type=int, default=10, metavar="N",
                        help="queries whose bridge window is checked against the model run directly (0: off)")
    parser.add_argument("--verify-tolerance", type=float, default=None,
                        help="score gap that counts as a tie in that check (default: by dtype)")
    parser.add_argument("--rerank-timeout-ms", type=int, default=60000,
                        help="rerank budget of the in-process bridge's rule")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where report.json and ndcg_change.png go (default: ./eval-out/<collection>)")
    parser.add_argument("--html", action="store_true",
                        help="also write report.html: the summary, the per-query change chart and each query's "
                             "top 10 of BM25 and of every mode, judged documents marked (one self-contained file)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    """Run the evaluation; 0 when every query was answered and reranked and the exactness sample agrees."""
    try:
        return _run(settings, args)
    except (CollectionError, IndexingError, RunError, ConfigError, ValueError) as error:
        print(f"rerank-bridge eval: {error}", file=sys.stderr)
        return 2


def _run(settings: Settings, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    _check_numbers(args)
    if args.bridge is not None:
        args.bridge = checked_bridge_url(args.bridge)
    fields = [name.strip() for name in args.fields.split(",") if name.strip()]
    if not fields:
        raise ValueError("--fields: name at least one field")
    collection = load_collection(args.collection)
    for warning in collection.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    query_ids = collection.judged_queries(args.queries)
    index = args.index or default_index_name(collection)
    modes = parse_modes(default_combine(args))
    model_name, model = resolve_model(
        settings, args.model, args.dtype, args.device, args.kind,
        max_passage_tokens=args.max_passage_tokens, max_query_tokens=args.max_query_tokens,
    )
    _check_model(model_name, model, args)
    builder = QueryBuilder(fields, args.depth, args.query_type, args.query_template)
    for mode in modes:  # a template whose ext cannot take the mode's keys is refused before indexing
        mode.body(builder.body("probe"))

    body = index_body(args.analyzer, args.bm25_k1, args.bm25_b, args.mapping)
    client = opensearch_client(settings.upstream, timeout_s=settings.upstream.timeout_s)
    try:
        indexed = ensure_index(
            client, collection, index, body, reindex=args.reindex, load=not args.no_load,
            progress=not args.no_progress,
        )
    except IndexingError:
        raise
    except Exception as error:  # opensearch-py's connection and HTTP errors
        raise IndexingError(f"engine at {settings.upstream.url}: {error}") from error
    finally:
        client.close()
    index_s = time.perf_counter() - started
    print(f"index {index}: {indexed.action} ({indexed.documents} documents)", file=sys.stderr)

    bridge_settings = eval_settings(settings, index, model_name, model, fields, args.window, args.rerank_timeout_ms)
    outcome = asyncio.run(
        _measure(
            settings, bridge_settings, args, collection, query_ids, index, builder, model_name, model, fields, modes
        )
    )
    run, verify, timings = outcome
    report = build_report(
        collection, query_ids, args, indexed.action, indexed.documents, body, builder, model_name, model, run,
        verify, fields, modes,
    )
    report["timing_s"] = {"index": round(index_s, 2), **timings, "total": round(time.perf_counter() - started, 2)}
    out = args.out or Path("eval-out") / collection.name
    write_json(report, out / "report.json")
    plot_ndcg_change(report, out / "ndcg_change.png")
    written = [out / "report.json", out / "ndcg_change.png"]
    if args.html:
        from bridge.evaluation.html import write_html

        write_html(report, run, collection, fields, out / "report.html")
        written.append(out / "report.html")
    print(table(report))
    print(f"\nwrote {', '.join(str(path) for path in written[:-1])} and {written[-1]}")
    return _exit_code(report)


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("window", "depth", "concurrency", "rerank_timeout_ms"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("queries", "max_passage_tokens", "max_query_tokens"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.verify_sample < 0:
        raise ValueError("--verify-sample must be 0 or more")
    if args.no_load and args.reindex:
        raise ValueError("--no-load and --reindex contradict each other")


def default_combine(args: argparse.Namespace) -> str:
    """``--combine`` as given; else ``replace`` in-process, and ``rule`` against a running ``--bridge``: its rules
    decide, and an index they do not cover is reported as not reranked (``no_rule``) rather than asked to be."""
    if args.combine is not None:
        return str(args.combine)
    return "rule" if args.bridge is not None else "replace"


def checked_bridge_url(given: str) -> str:
    """``--bridge`` validated like ``--upstream`` (an http(s) URL with a host and a valid port), before anything
    is indexed. Credentials in it are refused: eval sends the bridge the engine's credentials, as a client
    would, and a second set could only clash with them; the password is never repeated in the message."""
    try:
        url = TypeAdapter(HttpUrl).validate_python(given)
    except ValidationError as error:
        problem = error.errors()[0]["msg"]
        raise ConfigError(f"--bridge: {problem} (got {hide_url_credentials(given)})") from None
    if url.username is not None or url.password is not None:
        raise ConfigError(
            "--bridge: credentials in the URL are not accepted; the bridge is sent the engine's credentials "
            "(upstream.username/password or api_key), as a client sends them"
        )
    if url.query is not None or url.fragment is not None:
        raise ConfigError("--bridge: no query string or fragment; give the bridge's base URL")
    return str(url).rstrip("/")


def _check_model(name: str, model: ModelSettings, args: argparse.Namespace) -> None:
    """Before indexing anything: what would stop the in-process bridge, or the exactness check, from loading
    the model (a running ``--bridge`` has its own device; only the check loads the model here)."""
    from bridge.scoring.preflight import Finding, check_model, check_source

    if args.bridge is None:
        findings = check_model(name, model)
    elif args.verify_sample:
        problem = check_source(name, model.source, model.revision).problem
        findings = [Finding(f"models.{name}.source", problem)] if problem is not None else []
    else:
        findings = []
    for finding in findings:
        if finding.error:
            raise ConfigError(f"{finding.where}: {finding.message}")
        print(f"warning: {finding.where}: {finding.message}", file=sys.stderr)


def default_index_name(collection: Collection) -> str:
    """``eval-<folder>``, lower-cased, with characters an index name may not hold replaced."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", collection.name.lower()).strip("-._") or "collection"
    return f"eval-{name}"


def resolve_model(
    settings: Settings,
    wanted: str | None,
    dtype: str,
    device: str | None,
    kind: str = "auto",
    *,
    max_passage_tokens: int | None = None,
    max_query_tokens: int | None = None,
) -> tuple[str, ModelSettings]:
    """A configured model by name, else ``wanted`` as a directory or Hub id; dtype (and device) as asked.

    ``kind`` auto keeps a configured model's kind and detects a directory's or cached Hub model's
    (:func:`detect_kind`); any other value is that kind. Token budgets given replace the model's own.
    """
    configured = wanted is None or wanted in settings.models
    if wanted is None:
        name = settings.default_model()
        if name is None:
            raise ConfigError(
                "no model: pass --model NAME_OR_PATH, or configure models in --config "
                "(with --bridge, it is the model the exactness check loads)"
            )
        model = settings.models[name]
    elif wanted in settings.models:
        name, model = wanted, settings.models[wanted]
    else:
        looks_local = wanted.startswith((".", "/", "~")) or Path(wanted).expanduser().exists()
        if looks_local and not Path(wanted).expanduser().is_dir():
            known = ", ".join(sorted(settings.models)) or "none configured"
            raise ConfigError(f"--model {wanted}: not a configured model ({known}) nor a model directory")
        source = str(Path(wanted).expanduser().resolve()) if looks_local else wanted
        name = EVAL_MODEL if EVAL_MODEL not in settings.models else f"{EVAL_MODEL}-model"
        model = ModelSettings(source=source)
    update: dict[str, Any] = {"dtype": dtype}
    if kind != "auto":
        update["kind"] = kind
    elif not configured:
        update["kind"] = detect_kind(model.source, model.revision)
    if device is not None:
        update["device"] = device
    if max_passage_tokens is not None:
        update["max_passage_tokens"] = max_passage_tokens
    if max_query_tokens is not None:
        update["max_query_tokens"] = max_query_tokens
    try:  # validated like the config's own models
        return name, ModelSettings.model_validate({**model.model_dump(), **update})
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, prefix=("models", name))) from error


def detect_kind(source: str, revision: str | None = None) -> str:
    """``bi-encoder`` for a sentence-transformers embedding model, else ``cross-encoder``.

    An embedding model's ``modules.json`` lists a ``Pooling`` module (how token vectors become one sentence
    vector); a cross-encoder has none. A Hub id is looked up in the local Hugging Face cache only (eval never
    downloads to decide); a Hub model not cached there counts as a cross-encoder, and ``--kind`` says otherwise.
    """
    path = Path(source).expanduser()
    modules_file: Path | None = path / "modules.json" if path.is_dir() else None
    if modules_file is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "modules.json", revision=revision)
        except Exception:  # an id the cache cannot parse: nothing cached
            cached = None
        modules_file = Path(cached) if isinstance(cached, str) else None
    if modules_file is None or not modules_file.is_file():
        return "cross-encoder"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "cross-encoder"
    if isinstance(modules, list) and any(
        isinstance(module, dict) and str(module.get("type", "")).rsplit(".", 1)[-1] == "Pooling"
        for module in modules
    ):
        return "bi-encoder"
    return "cross-encoder"


def eval_settings(
    settings: Settings,
    index: str,
    model_name: str,
    model: ModelSettings,
    fields: list[str],
    window: int,
    timeout_ms: int,
) -> Settings:
    """The in-process bridge's settings: the user's upstream and limits, only the eval model, one rule."""
    if window > settings.limits.max_window:
        raise ConfigError(f"--window {window} exceeds limits.max_window ({settings.limits.max_window})")
    rule = RuleSettings(
        indices=[index], fields=fields, window=window, max_window=max(window, 1000), model=model_name,
        timeout_ms=timeout_ms, separator="\n",
    )
    return settings.model_copy(update={"models": {model_name: model}, "rules": [rule]})


@asynccontextmanager
async def in_process_bridge(settings: Settings) -> AsyncIterator[str]:
    """The bridge as ``rerank-bridge serve`` runs it, on a free port of 127.0.0.1 (the model loads first)."""
    from aiohttp import web

    from bridge.server.app import create_app
    from bridge.server.run import make_runner

    runner = make_runner(create_app(settings), settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _measure(
    settings: Settings,
    bridge_settings: Settings,
    args: argparse.Namespace,
    collection: Collection,
    query_ids: list[str],
    index: str,
    builder: QueryBuilder,
    model_name: str,
    model: ModelSettings,
    fields: list[str],
    modes: list[Mode],
) -> tuple[ModeRun, VerifyReport | str | None, dict[str, float]]:
    import aiohttp
    from tqdm import tqdm

    timings: dict[str, float] = {}
    async with _bridge_url(args.bridge, bridge_settings, timings) as bridge_url:
        timeout = aiohttp.ClientTimeout(total=settings.upstream.timeout_s + args.rerank_timeout_ms / 1000 + 30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = engine_headers(settings.upstream)
            engine = Searcher(session, str(settings.upstream.url), index, headers, ssl_context(settings.upstream))
            bridge = Searcher(session, bridge_url, index, headers)
            queries = {query_id: collection.queries[query_id] for query_id in query_ids}
            await _warm_up(engine, bridge, builder, modes, next(iter(queries.values())))
            label = "BM25 + " + ", ".join(mode.label for mode in modes)
            with tqdm(total=len(queries), unit="query", desc=label, disable=args.no_progress) as bar:
                run = await run_modes(
                    queries, builder, engine, bridge, modes, args.concurrency, lambda: bar.update(1)
                )
            timings["runs"] = round(run.wall_s, 2)
            verify: VerifyReport | str | None = None
            if args.verify_sample:
                started = time.perf_counter()
                verify = await _verify(args, queries, run, engine, bridge, builder, model, fields, modes)
                timings["verify"] = round(time.perf_counter() - started, 2)
    return run, verify, timings


@asynccontextmanager
async def _bridge_url(given: str | None, settings: Settings, timings: dict[str, float]) -> AsyncIterator[str]:
    if given is not None:
        yield given.rstrip("/")
        return
    started = time.perf_counter()
    async with in_process_bridge(settings) as url:
        timings["bridge_start"] = round(time.perf_counter() - started, 2)
        yield url


async def _warm_up(
    engine: Searcher, bridge: Searcher, builder: QueryBuilder, modes: list[Mode], text: str
) -> None:
    """One untimed search to the engine and one per mode (connections, caches, the model's first call); a
    different text, so the bridge's score cache holds nothing the timed run asks for."""
    body = builder.body(f"{text} warm up")
    searches = [(engine, body)] + [(bridge, mode.body(body)) for mode in modes]
    for searcher, sent in searches:
        answer, _ = await searcher.search(sent)
        if answer.error is not None:
            raise RunError(f"warm-up search to {hide_url_credentials(searcher.url)} failed: {answer.error}")


REPLACE = parse_mode("replace")


class BudgetedReference:
    """A reference model given the texts the bridge's token budgets leave: each cut, by the reference's own
    tokenizer's offsets, after its first ``max_query_tokens`` / ``max_passage_tokens`` tokens (for WordPiece
    tokenizers that is exactly those tokens), so the check compares like with like."""

    def __init__(self, inner: Reference, query_tokens: int | None, passage_tokens: int | None) -> None:
        from bridge.scoring.encoder import PrefixTokenizer

        self.inner = inner
        self.source = inner.source
        self.max_length = inner.max_length
        tokenizer = getattr(inner, "tokenizer", None) or inner.model.tokenizer  # type: ignore[attr-defined]
        self.cutter = PrefixTokenizer(tokenizer)
        self.query_tokens, self.passage_tokens = query_tokens, passage_tokens
        budgets = f"max_query_tokens {query_tokens}, max_passage_tokens {passage_tokens}"
        self.description = f"{getattr(inner, 'description', CROSS_ENCODER_REFERENCE)}, texts cut to {budgets}"

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        (query,) = self.cutter.cut_to_tokens([query], self.query_tokens)
        return self.inner.score(query, self.cutter.cut_to_tokens(passages, self.passage_tokens))


async def _verify(
    args: argparse.Namespace,
    queries: dict[str, str],
    run: ModeRun,
    engine: Searcher,
    bridge: Searcher,
    builder: QueryBuilder,
    model: ModelSettings,
    fields: list[str],
    modes: list[Mode],
) -> VerifyReport | str:
    """The exactness sample, on ``replace`` answers (the model's own order); when the run has no replace mode,
    the sampled queries are asked once more with ``combine: replace`` (scores cached: cheap, and not timed).
    A string is the reason the check was skipped."""
    if model.remote is not None:
        print("note: the model scores remotely; the exactness check loads its source locally", file=sys.stderr)
    reference: Reference
    if model.kind == "bi-encoder":
        problem = bi_encoder_reference_problem()
        if problem is not None:
            print(f"note: exactness check skipped: {problem}", file=sys.stderr)
            return problem
        similarity = model.similarity if model.similarity != "auto" else None
        reference = await asyncio.to_thread(
            BiEncoderReference, model.source, max_length=model.max_length, revision=model.revision,
            trust_remote_code=model.trust_remote_code, similarity=similarity,
        )
        tolerances = BI_ENCODER_TOLERANCES
    else:
        reference = await asyncio.to_thread(
            ReferenceScorer, model.source, max_length=model.max_length, revision=model.revision,
            trust_remote_code=model.trust_remote_code, label=model.label,
        )
        tolerances = TOLERANCES

    async def fetch_window(text: str) -> list[dict[str, Any]]:
        body = builder.body(text)
        body["size"] = args.window
        body["_source"] = fields
        answer, document = await engine.search(body)
        if document is None:
            raise RunError(f"exactness check: engine search failed: {answer.error}")
        hits: list[dict[str, Any]] = document["hits"]["hits"]
        return hits

    replace = next((mode for mode in modes if mode.combine == "replace" and mode.keys), None)
    answers: dict[str, Answer]
    if replace is not None:
        answers = run.modes[replace.label]
        chosen = sample([q for q in queries if answers[q].error is None], args.verify_sample)
    else:
        first = run.modes[modes[0].label]
        chosen = sample([q for q in queries if first[q].error is None], args.verify_sample)
        answers = {}
        for query_id in chosen:
            answers[query_id], _ = await bridge.search(REPLACE.body(builder.body(queries[query_id])))
    if model.max_passage_tokens is not None or model.max_query_tokens is not None:
        reference = BudgetedReference(reference, model.max_query_tokens, model.max_passage_tokens)
    tolerance = args.verify_tolerance if args.verify_tolerance is not None else tolerances[args.dtype]
    return await verify_sample(chosen, queries, answers, fetch_window, reference, fields, "\n", tolerance)


def build_report(
    collection: Collection,
    query_ids: list[str],
    args: argparse.Namespace,
    index_action: str,
    documents: int,
    body: dict[str, Any],
    builder: QueryBuilder,
    model_name: str,
    model: ModelSettings,
    run: ModeRun,
    verify: VerifyReport | str | None,
    fields: list[str],
    modes: list[Mode],
) -> dict[str, Any]:
    """Everything the table, the JSON file and the plot show.

    ``modes`` holds every mode's figures. The top-level ``reranked`` entries repeat the first mode's, so that
    scripts written for one mode per run keep working.
    """
    bm25 = evaluate(collection.qrels, {q: run.engine[q].ids for q in query_ids}, args.gain)
    evaluated: dict[str, Evaluation] = {
        mode.label: evaluate(collection.qrels, {q: run.modes[mode.label][q].ids for q in query_ids}, args.gain)
        for mode in modes
    }
    similarity = body.get("settings", {}).get("index", {}).get("similarity", {}).get("default", {})
    paths: list[tuple[str, dict[str, Answer]]] = [("bm25", run.engine)]
    paths += [(mode.label, run.modes[mode.label]) for mode in modes]
    first = modes[0].label
    mode_reports = {
        mode.label: _mode_report(mode, position, evaluated[mode.label], bm25, run.modes[mode.label], query_ids, args,
                                 model)
        for position, mode in enumerate(modes)
    }
    errors = {
        "bm25": sum(run.engine[q].error is not None for q in query_ids),
        "reranked": mode_reports[first]["errors"],
        "modes": {label: entry["errors"] for label, entry in mode_reports.items()},
        "examples": [
            {"query_id": q, "path": path, "error": answers[q].error}
            for path, answers in paths
            for q in query_ids
            if answers[q].error is not None
        ][:5],
    }
    if isinstance(verify, VerifyReport):
        verify_entry: dict[str, Any] | None = verify.as_dict()
    elif isinstance(verify, str):
        verify_entry = {"skipped": verify}
    else:
        verify_entry = None
    return {
        "tool": "rerank-bridge eval",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "collection": {
            "name": collection.name,
            "path": str(collection.path.resolve()),
            "queries": len(collection.queries),
            "judged_queries": len(collection.judged_queries()),
            "warnings": collection.warnings,
        },
        "index": {
            "name": args.index or default_index_name(collection),
            "action": index_action,
            "documents": documents,
            "analyzer": None if args.mapping else args.analyzer,
            "mapping_file": str(args.mapping) if args.mapping else None,
            "bm25": {"k1": similarity.get("k1", "engine default"), "b": similarity.get("b", "engine default")},
            "body": body,
        },
        "query": builder.describe(),
        "model": {
            "name": model_name,
            "label": Path(model.source).name if model_name.startswith(EVAL_MODEL) else model_name,
            "kind": model.kind,
            "source": model.source,
            "dtype": model.dtype,
            "device": model.device,
            "max_length": model.max_length,
            "max_passage_tokens": model.max_passage_tokens,
            "max_query_tokens": model.max_query_tokens,
            "cache_size": model.cache_size if args.bridge is None else None,
        },
        "bridge": {
            "mode": "external" if args.bridge else "in-process",
            "url": args.bridge,
            "fields": fields,
            "x_rerank": mode_reports[first]["x_rerank"],
        },
        "run": {
            "queries": len(query_ids),
            "window": args.window,
            "depth": args.depth,
            "concurrency": args.concurrency,
            "gain": args.gain,
            "combine": [mode.label for mode in modes],
            "metrics_library": _library_version(),
            "latency_note": LATENCY_NOTE,
        },
        "metrics": {"bm25": _rounded(bm25.means), "reranked": mode_reports[first]["metrics"]},
        "change": mode_reports[first]["change"],
        "per_query_ndcg@10": mode_reports[first]["per_query_ndcg@10"],
        "latency_ms": {
            "bm25": latency_summary({q: run.engine[q] for q in query_ids}),
            "reranked": mode_reports[first]["latency_ms"],
        },
        "modes": mode_reports,
        "errors": errors,
        "verify": verify_entry,
        "per_query": {
            q: {
                "bm25": _rounded(bm25.per_query[q]),
                "reranked": _rounded(evaluated[first].per_query[q]),
                "modes": {label: _rounded(evaluated[label].per_query[q]) for label in evaluated},
                "latency_ms": {path: round(answers[q].latency_ms, 2) for path, answers in paths},
                "rerank_ms": {
                    label: run.modes[label][q].rerank_ms for label in evaluated
                },
                "x_rerank": {label: run.modes[label][q].x_rerank for label in evaluated},
            }
            for q in query_ids
        },
    }


LATENCY_NOTE = (
    "client-side per search; a query's modes run back to back, so the first mode pays for the model and the "
    "later ones are served by the bridge's score cache (scores_from); rerank_ms is the bridge's own "
    "Server-Timing rerank duration: the model's time for the first mode"
)


def _mode_report(
    mode: Mode,
    position: int,
    evaluated: Evaluation,
    bm25: Evaluation,
    answers: dict[str, Answer],
    query_ids: list[str],
    args: argparse.Namespace,
    model: ModelSettings,
) -> dict[str, Any]:
    """One mode's figures: metrics, change against BM25, win/tie/loss, latency and where its scores came from."""
    if position == 0:
        scores_from = "model"
    elif args.bridge is not None:
        scores_from = "score cache, if the bridge keeps one"
    else:
        scores_from = "score cache" if model.cache_size > 0 else "model"
    chosen = {q: answers[q] for q in query_ids}
    return {
        **mode.describe(),
        "metrics": _rounded(evaluated.means),
        "change": {m: round(evaluated.means[m] - bm25.means[m], 6) for m in METRICS},
        "per_query_ndcg@10": win_tie_loss(bm25.per_query, evaluated.per_query, "ndcg@10"),
        "latency_ms": latency_summary(chosen),
        "rerank_ms": latency_summary(chosen, of="rerank_ms"),
        "scores_from": scores_from,
        "x_rerank": rerank_outcomes(chosen),
        "errors": sum(answer.error is not None for answer in chosen.values()),
    }


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 6) for key, value in values.items()}


def _library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ir-measures {version('ir-measures')}"
    except PackageNotFoundError:
        return "ir-measures"


def _exit_code(report: dict[str, Any]) -> int:
    problems = []
    if report["errors"]["bm25"] or any(report["errors"]["modes"].values()):
        problems.append("some searches failed")
    several = len(report["modes"]) > 1
    for label, entry in report["modes"].items():
        outcomes = entry["x_rerank"]
        if outcomes["applied"] != outcomes["total"]:
            where = f" with {label}" if several else ""
            problems.append(f"the bridge reranked {outcomes['applied']} of {outcomes['total']} queries{where}")
    verify = report.get("verify")
    if verify and "skipped" not in verify and not verify["all_agree"]:
        problems.append("the bridge's order differs from the model applied directly (see verify in the JSON)")
    for problem in problems:
        print(f"rerank-bridge eval: {problem}", file=sys.stderr)
    return 1 if problems else 0
