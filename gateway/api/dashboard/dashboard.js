// GLM Gateway dashboard: reads /dashboard/data, /_status and /stats and draws them, refreshing
// every few seconds. No library, no build step. Every string from the gateway goes into the DOM
// as text (textContent, text nodes, setAttribute on SVG geometry): never as HTML.
"use strict";

(() => {
  const KEY_STORE = "glm-gateway.admin-key"; // sessionStorage: this tab only, gone when it closes
  const REFRESH_STORE = "glm-gateway.refresh-s"; // localStorage: a preference, not a secret
  const SVG_NS = "http://www.w3.org/2000/svg";
  const LEFT = 72, RIGHT = 8, TOP = 10, BOTTOM = 22; // chart margins (viewBox units)
  const HOUR = 3600, DAY = 86400;
  const FETCH_TIMEOUT_MS = 15000;

  const $ = (id) => document.getElementById(id);
  let timer = null;
  let busy = false;
  const restLongest = new Map(); // provider/key -> the longest rest seen in its current rest (the bar's 100%)

  // ---- storage (a browser may refuse it: the page still works, it asks again) ---------------------

  function load(store, name) {
    try { return window[store].getItem(name); } catch (e) { return null; }
  }
  function save(store, name, value) {
    try {
      if (value === null) window[store].removeItem(name); else window[store].setItem(name, value);
    } catch (e) { /* storage refused: nothing kept */ }
  }

  // ---- DOM helpers -------------------------------------------------------------------------------

  function el(tag, className, ...children) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }
  function bar(fraction, className) {
    const outer = el("span", "bar" + (className ? " " + className : ""));
    const inner = el("span");
    inner.style.width = (Math.max(0, Math.min(1, fraction || 0)) * 100).toFixed(1) + "%"; // CSSOM: CSP allows it
    outer.append(inner);
    return outer;
  }
  function fill(tbody, rows, columns, emptyText) {
    tbody.replaceChildren();
    if (!rows.length) {
      const td = el("td", "empty", emptyText);
      td.colSpan = columns;
      tbody.append(el("tr", null, td));
      return;
    }
    for (const row of rows) tbody.append(row);
  }

  // ---- formatting --------------------------------------------------------------------------------

  function usd(x) {
    x = Number(x) || 0;
    if (x !== 0 && Math.abs(x) < 0.01) return "$" + x.toPrecision(2);
    return "$" + x.toFixed(2);
  }
  function usdTick(x) { // an axis label: short, whatever the scale ($0.00005, $12.5)
    return "$" + Number((Number(x) || 0).toPrecision(3));
  }
  function count(x) {
    x = Number(x) || 0;
    const a = Math.abs(x);
    if (a >= 1e9) return (x / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (x / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (x / 1e3).toFixed(1) + "k";
    return String(Math.round(x * 100) / 100);
  }
  function seconds(s) {
    s = Number(s) || 0;
    if (s >= 3600) return (s / 3600).toFixed(1) + " h";
    if (s >= 120) return Math.round(s / 60) + " min";
    return s.toFixed(1) + " s";
  }
  function clock(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString();
  }

  // ---- talking to the gateway --------------------------------------------------------------------

  class AuthError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  function messageOf(body, fallback) {
    const m = body && body.error && body.error.message;
    return typeof m === "string" ? m : fallback;
  }

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    const key = load("sessionStorage", KEY_STORE);
    if (key) headers.Authorization = "Bearer " + key;
    // a call that hangs must not stop the refreshing: it fails after FETCH_TIMEOUT_MS
    const signal = AbortSignal.timeout ? AbortSignal.timeout(FETCH_TIMEOUT_MS) : undefined;
    const resp = await fetch(path, { headers, cache: "no-store", credentials: "omit", redirect: "error", signal });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (resp.status === 401 || resp.status === 403) throw new AuthError(resp.status, messageOf(body, resp.statusText));
    if (!resp.ok) {
      throw new Error(path.split("?")[0] + " answered " + resp.status + ": " + messageOf(body, resp.statusText));
    }
    return body;
  }

  function monthStart(now) {
    const d = new Date(now * 1000);
    return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)).toISOString().slice(0, 10);
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    clearTimeout(timer);
    timer = null;
    try {
      const data = await getJSON("dashboard/data"); // first alone: a refused key is one refusal, not six
      const [status, day, month30, today, month] = await Promise.all([
        getJSON("_status"),
        getJSON("stats?since=24h&group_by=hour"),
        getJSON("stats?since=30d&group_by=day"),
        getJSON("stats?since=today&group_by=client"),
        getJSON("stats?since=" + monthStart(data.now) + "&group_by=client"),
      ]);
      $("login").hidden = true;
      $("board").hidden = false;
      $("forget").hidden = !data.auth_enabled;
      $("banner").hidden = true;
      drawKeys(status);
      drawTraffic(data);
      drawClients(today, month);
      drawLedgerCharts(day, month30, data.now);
      drawShare($("share-24h"), day);
      drawShare($("share-30d"), month30);
      drawErrors(data.last_errors || []);
      const dropped = Number(status.usage_rows_dropped) || 0;
      $("status").textContent = "updated " + clock(data.now) + " · up " + seconds(status.uptime_s) +
        " · client auth " + (data.auth_enabled ? "on" : "off") +
        (dropped ? " · " + dropped + " usage rows dropped" : "");
    } catch (e) {
      busy = false;
      if (e instanceof AuthError) { refused(e); return; } // no refresh until a key is given
      $("banner").textContent = "Could not refresh: " + (e && e.message ? e.message : String(e)) + " (retrying)";
      $("banner").hidden = false;
      $("board").hidden = false;
      $("status").textContent = "refresh failed at " + new Date().toLocaleTimeString();
    }
    busy = false;
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    const every = Number($("refresh").value);
    if (every > 0 && $("login").hidden && !document.hidden) timer = setTimeout(refresh, every * 1000);
  }

  // ---- the key -----------------------------------------------------------------------------------

  function refused(e) {
    const had = load("sessionStorage", KEY_STORE);
    save("sessionStorage", KEY_STORE, null);
    let text;
    if (e.status === 403) {
      text = "That key is not an admin key, and the dashboard needs one. The gateway said: " + e.message;
    } else if (had) {
      text = "The gateway refused that key (wrong, revoked or mistyped). The gateway said: " + e.message;
    } else {
      text = "This gateway needs an admin key to show its dashboard.";
    }
    askForKey(text);
  }

  function askForKey(text) {
    clearTimeout(timer);
    timer = null;
    $("board").hidden = true;
    $("forget").hidden = true;
    $("login-message").textContent = text;
    $("login").hidden = false;
    $("status").textContent = "waiting for a key";
    $("key").value = "";
    $("key").focus();
  }

  // ---- upstream keys -----------------------------------------------------------------------------

  function keyState(k) {
    const breaker = k.breaker || {};
    if (k.disabled_reason) return ["disabled", "disabled", k.disabled_reason];
    if (Number(k.rate_limited_for) > 0) return ["resting", "resting", k.cooldown_reason || "rate limited"];
    if (breaker.state === "open") return ["breaker open", "breaker-open", breaker.reason];
    if (breaker.state === "half_open") return ["probing", "probing", breaker.reason];
    return k.available ? ["available", "available", null] : ["busy", "busy", null];
  }

  function drawKeys(status) {
    const rows = [];
    for (const provider of status.providers || []) {
      for (const k of provider.keys || []) {
        const id = provider.name + "/" + k.name;
        const breaker = k.breaker || {};
        const [state, cls, why] = keyState(k);
        const left = Math.max(Number(k.rate_limited_for) || 0, Number(breaker.open_for) || 0);
        if (left > 0) restLongest.set(id, Math.max(restLongest.get(id) || 0, left)); else restLongest.delete(id);
        const rest = left > 0
          ? el("td", null, bar(left / restLongest.get(id), "rest"), seconds(left), why ? " · " + why : null)
          : el("td", "muted", why || "—");
        const tokens = k.remaining_tokens_minute === null || k.remaining_tokens_minute === undefined
          ? el("td", "muted", "not reported")
          : el("td", null, k.limit_tokens_minute ? bar(k.remaining_tokens_minute / k.limit_tokens_minute) : null,
            count(k.remaining_tokens_minute) + (k.limit_tokens_minute ? " / " + count(k.limit_tokens_minute) : ""));
        const perDay = k.remaining_requests_day === null || k.remaining_requests_day === undefined
          ? el("td", "muted", "not reported")
          : el("td", null, count(k.remaining_requests_day) +
            (k.limit_requests_day ? " / " + count(k.limit_requests_day) : ""));
        const tr = el("tr", null,
          el("td", "provider", provider.name),
          el("td", "key mono", k.name),
          el("td", "state " + cls, state),
          rest,
          el("td", "breaker", (breaker.state || "closed").replace("_", "-") +
            (breaker.consecutive_errors ? " · " + breaker.consecutive_errors + " errors in a row" : "")),
          tokens,
          perDay,
          el("td", "num", k.in_flight || 0),
          el("td", "num", k.requests || 0),
          el("td", "num", k.error_count || 0));
        tr.dataset.key = id;
        tr.dataset.state = cls;
        rows.push(tr);
      }
    }
    fill($("keys").tBodies[0], rows, 10, "no upstream configured");
  }

  // ---- traffic -----------------------------------------------------------------------------------

  function figure(value, label) {
    return el("div", "figure", el("b", null, value), el("span", null, label));
  }

  function drawTraffic(data) {
    const totals = data.totals || {};
    $("traffic").replaceChildren(
      figure(Number(data.requests_per_s || 0).toFixed(2), "requests/s, last minute"),
      figure(count(totals.requests), "requests, 15 min"),
      figure(count(totals.errors), "errors, 15 min"),
      figure(count(totals.fallbacks), "fallbacks, 15 min"),
      figure(count(data.in_flight), "in flight now"));
    const rows = data.series || [];
    lineChart($("chart-activity"), rows.map((r) => r.t), [
      { name: "requests", values: rows.map((r) => r.requests) },
      { name: "errors", values: rows.map((r) => r.errors) },
      { name: "fallbacks", values: rows.map((r) => r.fallbacks) },
    ], (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  }

  // ---- charts (SVG, drawn by hand: a few dozen lines, no library to ship or pin) -----------------

  function niceMax(x) {
    if (!(x > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
    return 10 * p;
  }

  function size(node) { // the chart's viewBox: its drawing units
    const box = node.viewBox.baseVal;
    return [box.width || 600, box.height || 200];
  }

  function axes(node, max, fmt, labels) {
    node.replaceChildren();
    const [W, H] = size(node);
    const bottom = H - BOTTOM;
    for (const f of [0, 0.5, 1]) {
      const y = bottom - f * (bottom - TOP);
      node.append(svg("line", { x1: LEFT, x2: W - RIGHT, y1: y, y2: y, class: "axis" }));
      node.append(svg("text", { x: LEFT - 4, y: y + 4, "text-anchor": "end" }, fmt(max * f)));
    }
    for (const [x, text, anchor] of labels) node.append(svg("text", { x, y: H - 6, "text-anchor": anchor }, text));
  }

  function xLabels(n, xAt, names) {
    if (!n) return [];
    const out = [[xAt(0), names(0), "start"], [xAt(n - 1), names(n - 1), "end"]];
    if (n > 4) out.push([xAt(Math.floor(n / 2)), names(Math.floor(n / 2)), "middle"]);
    return out;
  }

  function lineChart(node, xs, series, xfmt) {
    const n = xs.length;
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
    const [W, H] = size(node);
    const span = W - LEFT - RIGHT, bottom = H - BOTTOM;
    const xAt = (i) => LEFT + (n > 1 ? (i / (n - 1)) * span : span / 2);
    const yAt = (v) => bottom - (v / max) * (bottom - TOP);
    axes(node, max, count, xLabels(n, xAt, (i) => xfmt(xs[i])));
    for (const s of series) {
      const points = s.values.map((v, i) => xAt(i).toFixed(1) + "," + yAt(v).toFixed(1)).join(" ");
      node.append(svg("polyline", { points, class: "line " + s.name }));
      s.values.forEach((v, i) => {
        if (!v) return; // a point for each bucket that had any
        const dot = svg("circle",
          { cx: xAt(i).toFixed(1), cy: yAt(v).toFixed(1), r: 2.5, class: "pt " + s.name, "data-v": v });
        dot.append(svg("title", {}, s.name + " " + v + " at " + xfmt(xs[i])));
        node.append(dot);
      });
    }
  }

  function barChart(node, labels, values, fmt, labelFmt) {
    const n = values.length;
    const max = niceMax(Math.max(0, ...values));
    const [W, H] = size(node);
    const span = W - LEFT - RIGHT, bottom = H - BOTTOM;
    const step = n ? span / n : span;
    const xAt = (i) => LEFT + i * step + step / 2;
    axes(node, max, fmt, xLabels(n, xAt, (i) => labelFmt(labels[i])));
    values.forEach((v, i) => {
      const h = (v / max) * (bottom - TOP);
      const rect = svg("rect", {
        x: (LEFT + i * step + step * 0.1).toFixed(1), width: Math.max(1, step * 0.8).toFixed(1),
        y: (bottom - h).toFixed(1), height: h.toFixed(1), class: "bar-rect", "data-v": v,
      });
      rect.append(svg("title", {}, labels[i] + ": " + fmt(v)));
      node.append(rect);
    });
  }

  // the ledger's groups by hour or day, with a zero for every hour/day that had no request
  function buckets(groups, field, keys) {
    const by = new Map(groups.map((g) => [g[field], g]));
    return keys.map((k) => by.get(k) || { cost_usd: 0, total_tokens: 0 });
  }
  function hourKeys(now) {
    const out = [];
    for (let t = Math.floor((now - 24 * HOUR) / HOUR) * HOUR; t <= now; t += HOUR) {
      out.push(new Date(t * 1000).toISOString().slice(0, 13) + ":00:00Z");
    }
    return out;
  }
  function dayKeys(now) {
    const out = [];
    for (let t = Math.floor((now - 30 * DAY) / DAY) * DAY; t <= now; t += DAY) {
      out.push(new Date(t * 1000).toISOString().slice(0, 10));
    }
    return out;
  }

  function drawLedgerCharts(day, month30, now) {
    const hours = hourKeys(now), days = dayKeys(now);
    const perHour = buckets(day.groups || [], "hour", hours);
    const perDay = buckets(month30.groups || [], "day", days);
    const hourName = (k) => new Date(k).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const dayName = (k) => k.slice(5);
    barChart($("chart-cost-24h"), hours, perHour.map((g) => g.cost_usd), usdTick, hourName);
    barChart($("chart-tokens-24h"), hours, perHour.map((g) => g.total_tokens), count, hourName);
    barChart($("chart-cost-30d"), days, perDay.map((g) => g.cost_usd), usdTick, dayName);
    barChart($("chart-tokens-30d"), days, perDay.map((g) => g.total_tokens), count, dayName);
  }

  // ---- clients and budgets -----------------------------------------------------------------------

  const BUDGETS = [["daily_usd", "day", usd], ["monthly_usd", "month", usd],
    ["daily_tokens", "day", count], ["monthly_tokens", "month", count]];

  function clientName(g) {
    if (g.client) return g.client;
    return g.client_id === null || g.client_id === undefined ? "(no client key)" : "key #" + g.client_id;
  }

  function drawClients(today, month) {
    const rows = new Map(); // client id -> {name, today, month, budget}
    const row = (g) => {
      const id = String(g.client_id);
      if (!rows.has(id)) rows.set(id, { name: clientName(g) });
      return rows.get(id);
    };
    for (const g of today.groups || []) row(g).today = g;
    for (const g of month.groups || []) row(g).month = g;
    for (const b of month.budgets || []) row(b).budget = b;
    const trs = [];
    for (const r of rows.values()) {
      const t = r.today || {}, m = r.month || {};
      const budgets = el("td");
      for (const [field, window, fmt] of BUDGETS) {
        const b = r.budget && r.budget[field];
        if (!b) continue;
        const fraction = Number(b.fraction) || 0;
        budgets.append(el("span", "budget", bar(fraction, fraction >= 1 ? "over" : null),
          window + " " + fmt(b.used) + " / " + fmt(b.limit) + " (" + Math.round(fraction * 100) + "%)"));
      }
      if (!budgets.childNodes.length) budgets.append(el("span", "muted", "no budget"));
      const tr = el("tr", null,
        el("td", "client", r.name),
        el("td", "num", count(t.requests || 0)),
        el("td", "num", usd(t.cost_usd)),
        el("td", "num", count(t.total_tokens || 0)),
        el("td", "num", usd(m.cost_usd)),
        el("td", "num", count(m.total_tokens || 0)),
        budgets);
      tr.dataset.client = r.name;
      trs.push(tr);
    }
    fill($("clients").tBodies[0], trs, 7, "no requests this month");
  }

  // ---- share and savings -------------------------------------------------------------------------

  function drawShare(node, stats) {
    const totals = stats.totals || {};
    const parts = [];
    for (const p of stats.providers || []) {
      parts.push(el("div", "share-row", el("span", "name", p.provider), bar(p.share),
        (Number(p.share) * 100).toFixed(1) + "% · " + count(p.requests) + " requests"));
    }
    if (!parts.length) parts.push(el("p", "empty", "nothing served"));
    parts.push(el("div", "figures",
      figure(usd(totals.cost_usd), "spent"),
      figure(usd(totals.saved_usd), "saved by routing and fallbacks"),
      figure(usd(totals.primary_cost_usd), "on the primary alone"),
      figure(count(totals.total_tokens), "tokens")));
    node.replaceChildren(...parts);
  }

  // ---- last errors -------------------------------------------------------------------------------

  function drawErrors(errors) {
    const trs = errors.map((e) => el("tr", null,
      el("td", null, clock(e.at)),
      el("td", "mono request-id", e.request_id),
      el("td", "num", e.status),
      el("td", "mono", e.route),
      el("td", "code", e.code || "—"),
      el("td", "model", e.model || "—"),
      el("td", null, e.provider || "—"),
      el("td", null, e.client || "—"),
      el("td", "mono", (e.attempts || []).join("; ") || "—")));
    fill($("errors").tBodies[0], trs, 9, "no errors lately");
  }

  // ---- start -------------------------------------------------------------------------------------

  function start() {
    const every = load("localStorage", REFRESH_STORE);
    if (every !== null && [...$("refresh").options].some((o) => o.value === every)) $("refresh").value = every;
    $("refresh").addEventListener("change", () => {
      save("localStorage", REFRESH_STORE, $("refresh").value);
      if (!busy && $("login").hidden) refresh();
    });
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key").value.trim();
      $("key").value = "";
      if (!key) { $("login-message").textContent = "Paste an admin key first."; return; }
      save("sessionStorage", KEY_STORE, key);
      $("login").hidden = true;
      $("status").textContent = "checking the key…";
      refresh();
    });
    document.addEventListener("visibilitychange", () => { // a hidden tab does not poll the gateway
      if (!document.hidden && !busy && $("login").hidden && timer === null && Number($("refresh").value) > 0) refresh();
    });
    $("forget").addEventListener("click", () => {
      save("sessionStorage", KEY_STORE, null);
      askForKey("Key forgotten. Paste an admin key to open the dashboard again.");
    });
    refresh();
  }

  start();
})();
