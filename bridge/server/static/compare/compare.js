/* rerank-bridge compare: the engine's order and the bridge's side by side.
 *
 * One file for two pages: the bridge's /_bridge/compare page (renderCompare) and the report.html that
 * `rerank-bridge eval --html` writes (renderReport). Both draw their hit lists with renderColumns.
 * Every text that comes from data (titles, ids, reasons) is set with textContent or setAttribute, never
 * parsed as HTML: a stored script tag or an img tag with onerror is shown as the text it is.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ shared

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  var MIN_DECIMALS = 4;
  var MAX_DECIMALS = 8;

  function isScore(value) {
    return typeof value === "number" && isFinite(value);
  }

  /* `decimals` digits after the point (MIN_DECIMALS when not given); exponent form for tiny or huge values,
   * with as many significant digits. */
  function formatScore(value, decimals) {
    if (!isScore(value)) return "–";
    var digits = decimals || MIN_DECIMALS;
    var magnitude = Math.abs(value);
    if (magnitude !== 0 && (magnitude < 0.001 || magnitude >= 100000)) return value.toExponential(digits - 1);
    return value.toFixed(digits);
  }

  /* The fewest decimals (MIN_DECIMALS..MAX_DECIMALS) at which every pair of neighbouring, different scores
   * in `orders` (lists of numbers in display order) also reads differently, so two hits the model told apart
   * never show the same number; MAX_DECIMALS when even that is not enough. */
  function decimalsFor(orders) {
    for (var digits = MIN_DECIMALS; digits < MAX_DECIMALS; digits++) {
      var clash = orders.some(function (values) {
        for (var i = 1; i < values.length; i++) {
          var a = values[i - 1];
          var b = values[i];
          if (isScore(a) && isScore(b) && a !== b && formatScore(a, digits) === formatScore(b, digits)) return true;
        }
        return false;
      });
      if (!clash) return digits;
    }
    return MAX_DECIMALS;
  }

  /* BEIR qrels.tsv: a header line, then "query-id<TAB>corpus-id<TAB>score" rows (whitespace-separated
   * rows are read too, as bridge/evaluation/collection.py reads them). Returns a Map of query id to a Map of
   * document id to integer grade, and the count of rows read. */
  function parseQrels(text) {
    var qrels = new Map();
    var rows = 0;
    var lines = String(text).split(/\r?\n/);
    var first = true;
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i];
      if (!line.trim()) continue;
      var parts = (line.indexOf("\t") >= 0 ? line.split("\t") : line.trim().split(/\s+/)).map(function (p) {
        return p.trim();
      });
      if (first) {
        first = false;
        if (parts.length === 3 && !/^[+-]?\d+$/.test(parts[2])) continue; // the header
      }
      if (parts.length !== 3 || !parts[0] || !parts[1] || !/^[+-]?\d+$/.test(parts[2])) {
        throw new Error("line " + (i + 1) + ": expected 'query-id corpus-id score', got " + JSON.stringify(line));
      }
      if (!qrels.has(parts[0])) qrels.set(parts[0], new Map());
      qrels.get(parts[0]).set(parts[1], parseInt(parts[2], 10));
      rows++;
    }
    return { qrels: qrels, rows: rows };
  }

  /* NDCG@10 as `rerank-bridge eval` computes it by default (bridge/evaluation/metrics.py: ir-measures nDCG@10,
   * trec_eval's ndcg_cut, with gains 2^rel - 1): DCG = sum over ranks i = 1..10 of gain(rel_i) / log2(i + 1),
   * gain(rel) = 2^rel - 1 for rel > 0 and 0 otherwise (unjudged documents too), each document counted at its
   * first rank only; IDCG is the DCG of all the query's judgments sorted by grade. null when the query has no
   * relevant judgment. */
  function ndcgAt10(ids, judged) {
    function gain(grade) {
      return grade > 0 ? Math.pow(2, grade) - 1 : 0;
    }
    var seen = new Set();
    var dcg = 0;
    var rank = 0;
    for (var i = 0; i < ids.length && rank < 10; i++) {
      if (seen.has(ids[i])) continue;
      seen.add(ids[i]);
      rank++;
      dcg += gain(judged.has(ids[i]) ? judged.get(ids[i]) : 0) / Math.log2(rank + 1);
    }
    var grades = Array.from(judged.values()).filter(function (g) { return g > 0; });
    grades.sort(function (a, b) { return b - a; });
    var idcg = 0;
    for (var j = 0; j < grades.length && j < 10; j++) idcg += gain(grades[j]) / Math.log2(j + 2);
    return idcg > 0 ? dcg / idcg : null;
  }

  function moveNode(hit) {
    var move = hit.move;
    var node = el("span", "move");
    if (move === null || move === undefined) {
      var gone = hit.rerank_rank === null || hit.rerank_rank === undefined;
      node.textContent = gone ? "✕" : "new";
      node.setAttribute("aria-label", gone ? "left the reranked answer" : "not in the engine's list");
      return node;
    }
    node.setAttribute("data-move", String(move));
    if (move > 0) {
      node.textContent = "▲ " + move;
      node.classList.add("up");
      node.setAttribute("aria-label", "up " + move);
    } else if (move < 0) {
      node.textContent = "▼ " + -move;
      node.classList.add("down");
      node.setAttribute("aria-label", "down " + -move);
    } else {
      node.textContent = "= 0";
      node.setAttribute("aria-label", "same place");
    }
    return node;
  }

  function scoreNode(className, label, value, decimals) {
    var node = el("span", className, formatScore(value, decimals));
    node.setAttribute("data-label", label);
    if (typeof value === "number") node.setAttribute("data-value", String(value));
    return node;
  }

  /* One hit as an <li>: title, engine score, model score (and final score when the combination differs),
   * rank change, grade when judged. `hit` is the compare API's shape (see bridge/search/compare.py). */
  function hitNode(hit, judged, decimals) {
    var digits = decimals || {};
    var li = el("li", "hit");
    li.setAttribute("data-id", hit._id === null || hit._id === undefined ? "" : String(hit._id));
    li.setAttribute("data-index", hit._index === null || hit._index === undefined ? "" : String(hit._index));
    if (hit.status) li.setAttribute("data-status", hit.status);
    var line = el("div", "line");
    var text = String(hit.title || hit._id || "");
    var titleNode = el("span", "title", text);
    titleNode.setAttribute("title", text); // the whole text, where the clamp to two lines cut it
    line.appendChild(titleNode);
    li.appendChild(line);
    var scores = el("div", "scores");
    scores.appendChild(scoreNode("engine-score", "engine", hit.engine_score, digits.engine_score));
    // The compare API always sends model_score (null past the window); a report hit without the key is from
    // a mode whose run kept no model score, and shows none rather than a dash.
    if (Object.prototype.hasOwnProperty.call(hit, "model_score")) {
      scores.appendChild(scoreNode("model-score", "model", hit.model_score, digits.model_score));
    }
    var final = hit.final_score;
    if (typeof final === "number" && final !== hit.model_score && final !== hit.engine_score) {
      scores.appendChild(scoreNode("final-score", "final", hit.final_score, digits.final_score));
    }
    var move = moveNode(hit);
    var where = (hit.engine_rank ? "engine #" + hit.engine_rank : "not in the engine's list") + " → " +
      (hit.rerank_rank ? "reranked #" + hit.rerank_rank : "left out");
    move.setAttribute("title", where + (hit.status ? " (" + hit.status + ")" : ""));
    scores.appendChild(move);
    if (judged && hit._id !== null && hit._id !== undefined && judged.has(String(hit._id))) {
      var grade = judged.get(String(hit._id));
      li.setAttribute("data-grade", String(grade));
      li.classList.add("judged", grade > 0 ? "relevant" : "not-relevant");
      var badge = el("span", "grade", "rel " + grade);
      badge.setAttribute("title", "judged: grade " + grade);
      scores.appendChild(badge);
    }
    li.appendChild(scores);
    return li;
  }

  /* Both columns, in display order; `judged` is a Map of document id to grade, or null. */
  function renderColumns(engineList, rerankList, engineHits, rerankHits, judged) {
    clear(engineList);
    clear(rerankList);
    // One precision per kind of score for both columns, enough for the neighbours in either order to differ.
    var decimals = {};
    ["engine_score", "model_score", "final_score"].forEach(function (key) {
      decimals[key] = decimalsFor([engineHits, rerankHits].map(function (hits) {
        return hits.map(function (hit) { return hit[key]; });
      }));
    });
    engineHits.forEach(function (hit) { engineList.appendChild(hitNode(hit, judged, decimals)); });
    rerankHits.forEach(function (hit) { rerankList.appendChild(hitNode(hit, judged, decimals)); });
  }

  function ids(hits) {
    return hits.map(function (hit) { return String(hit._id); });
  }

  // ------------------------------------------------------------------ the bridge's page

  var API = "compare/api";

  function renderCompare() {
    var form = document.getElementById("compare-form");
    var results = document.getElementById("results");
    var fields = {
      index: document.getElementById("index"),
      q: document.getElementById("q"),
      body: document.getElementById("body"),
      size: document.getElementById("size"),
      qid: document.getElementById("qid"),
    };
    var state = { qrels: null, last: null };

    function judgmentsFor() {
      if (!state.qrels) return null;
      var qid = fields.qid.value.trim();
      if (!qid && state.qrels.has(fields.q.value.trim())) qid = fields.q.value.trim();
      return qid && state.qrels.has(qid) ? state.qrels.get(qid) : null;
    }

    function showError(message) {
      var node = document.getElementById("error");
      node.textContent = message;
      node.hidden = false;
      // No stale columns under a new query's error.
      state.last = null;
      ["engine-col", "rerank-col", "meta"].forEach(function (id) { clear(document.getElementById(id)); });
      document.getElementById("reason").hidden = true;
      document.getElementById("ndcg-engine").textContent = "–";
      document.getElementById("ndcg-rerank").textContent = "–";
      results.setAttribute("data-state", "error");
      results.setAttribute("aria-busy", "false");
    }

    function metaItem(parent, label, value) {
      var item = el("span", "meta-item");
      item.appendChild(el("span", "meta-label", label));
      item.appendChild(el("span", "meta-value", value));
      parent.appendChild(item);
    }

    function renderMeta(data) {
      var meta = document.getElementById("meta");
      clear(meta);
      var plan = data.plan;
      if (plan) {
        var combine = plan.combine || {};
        var mode = [combine.mode].concat(Object.keys(combine).filter(function (k) { return k !== "mode"; })
          .map(function (k) { return k + " " + combine[k]; })).join(", ");
        metaItem(meta, "rule", plan.rule);
        metaItem(meta, "model", plan.model);
        metaItem(meta, "mode", mode);
        metaItem(meta, "window", windowText(plan));
        metaItem(meta, "fields", (plan.fields || []).join(", "));
        metaItem(meta, "query text", plan.query_text);
      } else {
        metaItem(meta, "rule", skippedRuleText(data));
      }
      var timings = data.timings || {};
      metaItem(meta, "engine", formatMs(timings.engine_ms));
      metaItem(meta, "scoring", formatMs(timings.scoring_ms) + cachedText(timings.cached));
      metaItem(meta, "X-Rerank", data.x_rerank || "");
    }

    /* The window the model scored (X-Rerank's window=) and, when the engine returned fewer hits, the
     * configured one. */
    function windowText(plan) {
      var held = typeof plan.window_hits === "number" ? plan.window_hits : plan.window;
      if (held === plan.window) return String(plan.window);
      return held + " of " + plan.window + ": the engine returned " + held + (held === 1 ? " hit" : " hits");
    }

    /* A skipped search: the rule that matched (and what turned it off), or that none did. */
    function skippedRuleText(data) {
      var rule = data.rule;
      if (!rule) return "none matches this index";
      if (data.reason === "disabled_by_request") return rule.label + " matched; the request turned reranking off";
      if (data.reason === "rule_disabled" || rule.enabled === false) return rule.label + " matched; the rule is disabled";
      return rule.label + " matched; not applied (" + data.reason + ")";
    }

    /* This search's score-cache share, so a fast "scoring" reads as what it is. */
    function cachedText(cached) {
      if (!cached || !cached.hits) return "";
      return " (" + cached.hits + " of " + cached.of + " from the score cache)";
    }

    function formatMs(value) {
      return typeof value === "number" ? value.toFixed(1) + " ms" : "–";
    }

    function renderResult() {
      var data = state.last;
      if (!data) return;
      var judged = judgmentsFor();
      renderMeta(data);
      var reason = document.getElementById("reason");
      if (data.reason) {
        var why = data.rule && data.plan === null ? " " + skippedRuleText(data) + ";" : "";
        reason.textContent = "Not reranked (" + data.reason + "):" + why + " both columns are the engine's order.";
        reason.hidden = false;
      } else {
        reason.textContent = "";
        reason.hidden = true;
      }
      renderColumns(
        document.getElementById("engine-col"), document.getElementById("rerank-col"),
        data.engine, data.reranked, judged
      );
      var engineNdcg = judged ? ndcgAt10(ids(data.engine), judged) : null;
      var rerankNdcg = judged ? ndcgAt10(ids(data.reranked), judged) : null;
      document.getElementById("ndcg-engine").textContent = engineNdcg === null ? "–" : engineNdcg.toFixed(4);
      document.getElementById("ndcg-rerank").textContent = rerankNdcg === null ? "–" : rerankNdcg.toFixed(4);
    }

    function payload() {
      var wanted = { index: fields.index.value.trim() };
      var size = parseInt(fields.size.value, 10);
      if (size > 0) wanted.size = size;
      var text = fields.body.value.trim();
      if (text) {
        try {
          wanted.body = JSON.parse(text);
        } catch (error) {
          throw new Error("the search body is not valid JSON: " + error.message);
        }
      } else {
        wanted.q = fields.q.value;
      }
      return wanted;
    }

    function describeError(status, answer) {
      if (answer && answer.error) {
        if (typeof answer.error === "string") return "HTTP " + status + ": " + answer.error;
        return "HTTP " + status + ": " + (answer.error.type || "error") + ": " + (answer.error.reason || "");
      }
      return "HTTP " + status;
    }

    function run() {
      var wanted;
      document.getElementById("error").hidden = true;
      try {
        wanted = payload();
      } catch (error) {
        showError(error.message);
        return Promise.resolve();
      }
      results.setAttribute("data-state", "loading");
      results.setAttribute("aria-busy", "true");
      return fetch(API, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(wanted),
      }).then(function (response) {
        return response.text().then(function (text) {
          var answer = null;
          try { answer = JSON.parse(text); } catch (ignored) { answer = null; }
          if (!response.ok || !answer || !Array.isArray(answer.engine)) {
            showError(describeError(response.status, answer));
            return;
          }
          state.last = answer;
          renderResult();
          results.setAttribute("data-state", "done");
          results.setAttribute("aria-busy", "false");
        });
      }).catch(function (error) {
        showError("the bridge did not answer: " + error.message);
      });
    }

    function fromUrl() {
      var params = new URLSearchParams(window.location.search);
      fields.index.value = params.get("index") || "";
      fields.q.value = params.get("q") || "";
      fields.body.value = params.get("body") || "";
      if (params.get("size")) fields.size.value = params.get("size");
      if (params.get("qid") !== null) fields.qid.value = params.get("qid");
      return fields.index.value && (fields.q.value || fields.body.value);
    }

    function toUrl() {
      var params = new URLSearchParams();
      params.set("index", fields.index.value.trim());
      if (fields.body.value.trim()) params.set("body", fields.body.value.trim());
      else params.set("q", fields.q.value);
      if (fields.size.value && fields.size.value !== "10") params.set("size", fields.size.value);
      if (fields.qid.value.trim()) params.set("qid", fields.qid.value.trim());
      var target = window.location.pathname + "?" + params.toString();
      if (target !== window.location.pathname + window.location.search) {
        window.history.pushState(null, "", target);
      }
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      toUrl();
      run();
    });
    fields.body.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event("submit"));
      }
    });
    fields.qid.addEventListener("input", renderResult);
    document.getElementById("qrels").addEventListener("change", function (event) {
      var file = event.target.files && event.target.files[0];
      var status = document.getElementById("qrels-status");
      if (!file) return;
      file.text().then(function (text) {
        var parsed = parseQrels(text);
        state.qrels = parsed.qrels;
        status.textContent = file.name + ": " + parsed.rows + " judgments of " + parsed.qrels.size + " queries";
        var list = document.getElementById("qid-list");
        clear(list);
        Array.from(parsed.qrels.keys()).slice(0, 2000).forEach(function (qid) {
          var option = document.createElement("option");
          option.value = qid;
          list.appendChild(option);
        });
        renderResult();
      }).catch(function (error) {
        state.qrels = null;
        status.textContent = file.name + ": not read (" + error.message + ")";
      });
    });
    window.addEventListener("popstate", function () {
      if (fromUrl()) run();
    });
    if (fromUrl()) run();
  }

  // ------------------------------------------------------------------ eval's report.html

  /* The report's data (see bridge/evaluation/html.py): docs {id: title}, modes [labels], replace_modes [labels
   * whose final score is the model's], index, queries [{id, anchor (the article's element id, which the
   * chart's bars link to), text, ndcg: {bm25, modes: {label}}, judged: {doc id: grade},
   * columns: {label: {engine: [...], reranked: [...]}}}]; a column's hits are {_id, engine_rank, rerank_rank,
   * move, engine_score, final_score, and model_score where the run kept the model's score}. */
  function renderReport() {
    var data = JSON.parse(document.getElementById("report-data").textContent);
    var container = document.getElementById("queries");
    var modeSelect = document.getElementById("mode");
    var filterSelect = document.getElementById("filter");
    var sortSelect = document.getElementById("sort");
    data.modes.forEach(function (label) {
      var option = el("option", null, label);
      option.value = label;
      modeSelect.appendChild(option);
    });

    function withTitles(hits) {
      return hits.map(function (hit) {
        var full = Object.assign({}, hit);
        full.title = Object.prototype.hasOwnProperty.call(data.docs, hit._id) ? data.docs[hit._id] : hit._id;
        full._index = data.index;
        return full;
      });
    }

    function anchorOf(query) {
      return query.anchor || "q-" + query.id;
    }

    /* The queries in the chosen order: as in the queries file, or by NDCG@10 change under the shown mode
     * (the chart's order), ties kept in file order. */
    function ordered(label) {
      var order = sortSelect ? sortSelect.value : "id";
      var list = data.queries.slice();
      if (order === "worst" || order === "best") {
        var sign = order === "worst" ? 1 : -1;
        list.sort(function (a, b) {
          return sign * ((a.ndcg.modes[label] - a.ndcg.bm25) - (b.ndcg.modes[label] - b.ndcg.bm25));
        });
      }
      return list;
    }

    function draw() {
      var label = modeSelect.value;
      var which = filterSelect.value;
      clear(container);
      var shown = 0;
      ordered(label).forEach(function (query) {
        var before = query.ndcg.bm25;
        var after = query.ndcg.modes[label];
        var delta = after - before;
        if (which === "better" && !(delta > 1e-9)) return;
        if (which === "worse" && !(delta < -1e-9)) return;
        if (which === "same" && Math.abs(delta) > 1e-9) return;
        shown++;
        var judged = new Map(Object.keys(query.judged).map(function (id) { return [id, query.judged[id]]; }));
        var article = el("article", "query");
        article.setAttribute("data-query-id", query.id);
        article.id = anchorOf(query);
        var heading = el("h3", null);
        heading.appendChild(el("span", "query-id", query.id));
        heading.appendChild(el("span", "query-text", query.text));
        article.appendChild(heading);
        var line = el("p", "query-ndcg");
        line.appendChild(el("span", null, "NDCG@10 BM25 " + before.toFixed(4) + " → " + label + " " + after.toFixed(4) + " "));
        line.appendChild(el("span", delta > 1e-9 ? "delta up" : delta < -1e-9 ? "delta down" : "delta",
          (delta >= 0 ? "+" : "") + delta.toFixed(4)));
        article.appendChild(line);
        var columns = el("div", "columns");
        var left = el("section", "column");
        left.appendChild(el("h4", null, "BM25 (engine)"));
        var engineList = el("ol", "hits engine-col");
        left.appendChild(engineList);
        var right = el("section", "column");
        right.appendChild(el("h4", null, label));
        var rerankList = el("ol", "hits rerank-col");
        right.appendChild(rerankList);
        columns.appendChild(left);
        columns.appendChild(right);
        article.appendChild(columns);
        var pair = query.columns[label];
        [query.engine_error && "BM25: " + query.engine_error, pair.error && label + ": " + pair.error]
          .filter(Boolean).forEach(function (message) { article.appendChild(el("p", "error", message)); });
        renderColumns(engineList, rerankList, withTitles(pair.engine), withTitles(pair.reranked), judged);
        container.appendChild(article);
      });
      document.getElementById("shown").textContent = shown + " of " + data.queries.length + " queries";
    }

    /* A chart bar's link (#<anchor>, data-mode): show that mode's lists, and every query when the filter
     * hides this one, before the browser follows the link to the article. */
    function reveal(anchor, label) {
      if (label && data.modes.indexOf(label) >= 0 && modeSelect.value !== label) {
        modeSelect.value = label;
        draw();
      }
      if (anchor && !document.getElementById(anchor) &&
          data.queries.some(function (query) { return anchorOf(query) === anchor; })) {
        filterSelect.value = "all";
        draw();
      }
    }

    function fragment() {
      try {
        return decodeURIComponent(window.location.hash.slice(1));
      } catch (ignored) {
        return window.location.hash.slice(1);
      }
    }

    modeSelect.addEventListener("change", draw);
    filterSelect.addEventListener("change", draw);
    if (sortSelect) sortSelect.addEventListener("change", draw);
    var chart = document.getElementById("chart");
    if (chart) {
      chart.addEventListener("click", function (event) {
        var link = event.target && event.target.closest ? event.target.closest("a[data-mode]") : null;
        if (!link) return;
        reveal((link.getAttribute("href") || "").replace(/^#/, ""), link.getAttribute("data-mode"));
      });
    }
    window.addEventListener("hashchange", function () {
      var anchor = fragment();
      if (!anchor || document.getElementById(anchor)) return;
      reveal(anchor, null);
      var target = document.getElementById(anchor);
      if (target) target.scrollIntoView();
    });
    draw();
    // Opened as report.html#q-<id>: the articles exist only now, after the browser looked for the fragment.
    var start = fragment();
    if (start) {
      reveal(start, null);
      var target = document.getElementById(start);
      if (target) target.scrollIntoView();
    }
  }

  var api = {
    renderColumns: renderColumns,
    renderCompare: renderCompare,
    renderReport: renderReport,
    ndcgAt10: ndcgAt10,
    decimalsFor: decimalsFor,
    formatScore: formatScore,
    parseQrels: parseQrels,
  };
  if (typeof module === "object" && module && module.exports) module.exports = api; // node, for the tests
  if (typeof window === "undefined" || typeof document === "undefined") return;
  window.RerankCompare = api;

  function start() {
    if (document.getElementById("report-data")) renderReport();
    else if (document.getElementById("compare-form")) renderCompare();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
