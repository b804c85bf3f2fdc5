// sentient dev dashboard: plain JavaScript, no build step. Live updates come from
// /_dev/api/stream (server-sent events): a "snapshot" first, then "request", "event",
// "reload", "config" and "metrics" events. The console talks to the agent itself (/assist).
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { requests: new Map(), selected: null, metrics: [], config: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function time(at) {
  return new Date(at * 1000).toLocaleTimeString([], { hour12: false });
}

// ------------------------------------------------------------------ live view

function cells(r) {
  const status = r.done ? r.status : r.status ? `${r.status}…` : "…";
  const statusClass = r.done ? `s${String(r.status)[0]}` : "pending";
  const rate = r.ratelimit ? (r.ratelimit.allowed ? "allowed" : `refused (${r.ratelimit.limit})`) : "";
  const caller = r.caller ? `${r.caller.id}${r.caller.tier ? " · " + r.caller.tier : ""}` : "";
  const what = r.prompt != null ? `${r.method} ${r.path} “${r.prompt}”` : `${r.method} ${r.path}`;
  return [
    el("td", {}, time(r.at)),
    el("td", { class: "prompt", title: what }, what),
    el("td", {}, caller),
    el("td", {}, r.provider ? `${r.provider} (${r.model})` : ""),
    el("td", { class: statusClass }, status),
    el("td", {}, r.ms ?? ""),
    el("td", {}, r.tokens.input || r.tokens.output ? `${r.tokens.input}/${r.tokens.output}` : ""),
    el("td", {}, r.retries || ""),
    el("td", {}, r.failovers || ""),
    el("td", {}, rate),
    el("td", {}, r.guardrails.join(" ")),
    el("td", {}, r.events || ""),
  ];
}

function upsertRequest(r) {
  state.requests.set(r.id, r);
  const body = $("#requests tbody");
  let row = body.querySelector(`tr[data-id="${CSS.escape(r.id)}"]`);
  if (!row) {
    row = el("tr", { "data-id": r.id });
    row.addEventListener("click", () => openRequest(r.id));
    body.prepend(row);
    while (body.rows.length > 300) body.deleteRow(-1);
  }
  row.replaceChildren(...cells(r));
  row.classList.toggle("selected", state.selected === r.id);
  if (state.selected === r.id && r.done) refreshDetail();
}

// ------------------------------------------------------------------ one request in full

async function openRequest(id) {
  state.selected = id;
  for (const row of document.querySelectorAll("#requests tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  await refreshDetail();
}

let detailTimer = null;
function refreshDetail() {
  // Coalesce bursts (one per streamed chunk) into one fetch.
  if (detailTimer) return;
  detailTimer = setTimeout(async () => {
    detailTimer = null;
    const id = state.selected;
    if (!id) return;
    const response = await fetch(`/_dev/api/requests/${encodeURIComponent(id)}`);
    if (!response.ok) return;
    showDetail(await response.json());
  }, 50);
}

function showDetail(d) {
  $("#detail-id").textContent = d.id;
  const replay = $("#detail-replay");
  replay.hidden = !d.request.body;
  replay.onclick = () => loadReplay(d);
  const stream = d.stream.map((e) => `+${e.t} ms  ${e.event}  ${eventText(e.data)}`).join("\n");
  const runtime = d.runtime.map((e) => {
    const { kind, at, ...rest } = e;
    return `${time(at)}  ${kind}  ${JSON.stringify(rest)}`;
  }).join("\n");
  $("#detail-body").replaceChildren(
    el("h3", {}, `${d.request.method} ${d.request.path} → ${d.response.status ?? "…"} in ${d.ms ?? "…"} ms` +
      (d.runtime_ms != null ? ` (runtime ${d.runtime_ms} ms)` : "")),
    el("h3", {}, "request headers"),
    el("pre", {}, JSON.stringify(d.request.headers, null, 2)),
    el("h3", {}, "request body"),
    el("pre", {}, pretty(d.request.body)),
    el("h3", {}, `event stream (${d.stream.length})`),
    el("pre", { class: "stream" }, stream || pretty(d.response.body)),
    el("h3", {}, "runtime decisions (caller, rate limit, guardrails, attempts, retries, failover)"),
    el("pre", { class: "runtime" }, runtime || "(none)"),
  );
}

// One event as a line: a Sentient event by its content type and content, anything else as JSON.
function eventText(data) {
  if (data && typeof data === "object" && "content_type" in data) {
    const complete = data.is_complete ? " (complete)" : "";
    const content = data.content === undefined ? "" : JSON.stringify(data.content);
    return `${data.content_type}${complete} ${content}`;
  }
  return JSON.stringify(data);
}

function pretty(text) {
  if (!text) return "";
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

function loadReplay(d) {
  $("#console-body").value = pretty(d.request.body);
  $("#console-path").value = d.request.path;
  $("#console-body").closest("details").open = true;
  sendConsole(d.request.body, d.request.path);
}

// ------------------------------------------------------------------ console

function newId() {
  return `dash-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

async function sendConsole(bodyText, path) {
  const output = $("#console-output");
  output.replaceChildren();
  const say = (text, cls) => output.append(el("li", cls ? { class: cls } : {}, text));
  const requestId = newId();
  const headers = { "content-type": "application/json", "x-request-id": requestId };
  const key = $("#console-key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  let body = bodyText;
  try {
    // A replay gets a fresh query id: the agent may remember the ones it answered.
    const parsed = JSON.parse(bodyText);
    if (parsed.query && typeof parsed.query === "object") parsed.query.id = requestId;
    body = JSON.stringify(parsed);
  } catch { /* sent as written */ }
  say(`→ POST ${path} [${requestId}]`);
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method: "POST", headers, body });
  } catch (err) {
    say(`✗ ${err}`, "error");
    return;
  }
  say(`← ${response.status} ${response.headers.get("content-type") || ""}`, response.ok ? "" : "error");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) consoleEvent(say, data.join("\n"), started);
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).replace(/^ /, ""));
      }
    }
  }
  if (buffer.trim() && !data.length) say(buffer.trim());
  say(`done in ${Math.round(performance.now() - started)} ms`);
}

function consoleEvent(say, text, started) {
  const at = `+${Math.round(performance.now() - started)} ms`;
  let event;
  try { event = JSON.parse(text); } catch { say(`${at} ${text}`); return; }
  const kind = event.content_type || event.object || "";
  if (kind === "atomic.error") {
    say(`${at} error ${event.content?.error_code}: ${event.content?.error_message}`, "error");
  } else if (kind === "atomic.done") {
    say(`${at} done`);
  } else if (typeof event.content === "string") {
    say(`${at} ${event.event_name || kind} ${JSON.stringify(event.content)}`);
  } else {
    say(`${at} ${event.event_name || kind} ${JSON.stringify(event.content ?? event)}`);
  }
}

$("#console-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const custom = $("#console-body").value.trim();
  const path = $("#console-path").value.trim() || "/assist";
  const prompt = $("#console-prompt").value;
  const body = custom || JSON.stringify({ query: { id: newId(), prompt } });
  sendConsole(body, path);
});

// ------------------------------------------------------------------ metrics charts

const SERIES = {
  "chart-rps": [["rps", "#3554d1"]],
  "chart-latency": [["p50", "#3554d1"], ["p95", "#b7791f"], ["p99", "#c23a3a"]],
  "chart-tokens": [["tokens", "#1f8a4c"]],
  "chart-errors": [["errors", "#c23a3a"]],
};

function drawCharts() {
  const points = state.metrics;
  for (const [id, series] of Object.entries(SERIES)) {
    const canvas = document.getElementById(id);
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth * ratio;
    const height = canvas.clientHeight * ratio;
    if (canvas.width !== width) canvas.width = width;
    if (canvas.height !== height) canvas.height = height;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const values = points.flatMap((p) => series.map(([key]) => p[key] ?? 0));
    const top = Math.max(1, ...values);
    ctx.fillStyle = "#6b7385";
    ctx.font = `${10 * ratio}px system-ui`;
    ctx.fillText(String(Math.round(top * 10) / 10), 4 * ratio, 11 * ratio);
    const step = width / Math.max(1, 119);
    const offset = 120 - points.length;
    for (const [key, color] of series) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5 * ratio;
      ctx.beginPath();
      points.forEach((p, i) => {
        const x = (offset + i) * step;
        const y = height - 2 * ratio - ((p[key] ?? 0) / top) * (height - 16 * ratio);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
      ctx.stroke();
    }
  }
  const last = points[points.length - 1];
  if (last) {
    $("#breakers").replaceChildren(...Object.entries(last.breakers).map(([provider, s]) =>
      el("span", { class: `breaker ${s}`, title: "circuit breaker" }, `${provider}: ${s.replace("_", "-")}`)));
  }
}

// ------------------------------------------------------------------ reloads and config

function addReload(r) {
  const text = r.ok
    ? `${time(r.at)} generation ${r.generation} serving` +
      (r.since_edit != null ? ` ${r.since_edit.toFixed(2)} s after the edit` : "") +
      ` (start ${r.took.toFixed(2)} s)${r.changed.length ? " · " + r.changed.join(", ") : ""}`
    : `${time(r.at)} not reloaded: ${r.error}${r.changed.length ? " · " + r.changed.join(", ") : ""}`;
  $("#reloads").prepend(el("li", { class: r.ok ? "ok" : "failed" }, text));
}

function showConfig(config, notes, generation) {
  state.config = config;
  $("#config").textContent = JSON.stringify(config, null, 2);
  $("#notes").replaceChildren(...(notes || []).map((n) => el("li", {}, n)));
  const agent = config && config.agent ? `${config.agent.namespace}/${config.agent.name}` : "";
  $("#agent").textContent = agent;
  if (generation != null) $("#generation").textContent = `generation ${generation}`;
}

// ------------------------------------------------------------------ live updates

function connect() {
  const source = new EventSource("/_dev/api/stream");
  source.addEventListener("open", () => $("#connection").classList.add("on"));
  source.addEventListener("error", () => $("#connection").classList.remove("on"));
  source.addEventListener("snapshot", (m) => {
    const s = JSON.parse(m.data);
    $("#requests tbody").replaceChildren();
    state.requests.clear();
    for (const r of s.requests) upsertRequest(r);
    $("#reloads").replaceChildren();
    for (const r of s.reloads) addReload(r);
    showConfig(s.config, s.notes, s.generation);
    state.metrics = s.metrics;
    drawCharts();
  });
  source.addEventListener("request", (m) => upsertRequest(JSON.parse(m.data).request));
  source.addEventListener("event", (m) => {
    if (JSON.parse(m.data).request_id === state.selected) refreshDetail();
  });
  source.addEventListener("reload", (m) => {
    const r = JSON.parse(m.data).reload;
    addReload(r);
    if (r.ok) $("#generation").textContent = `generation ${r.generation}`;
  });
  source.addEventListener("config", (m) => {
    const c = JSON.parse(m.data);
    showConfig(c.config, c.notes, null);
  });
  source.addEventListener("metrics", (m) => {
    state.metrics.push(JSON.parse(m.data).point);
    if (state.metrics.length > 120) state.metrics.shift();
    drawCharts();
  });
}

connect();
