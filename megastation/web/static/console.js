// megastation operator console: live overview (server-sent events), charts (uPlot),
// tables and operator actions, all through /api/v1. No framework, no CDN.
"use strict";

const state = { me: null, overview: null, flowsChart: null, planChart: null, tz: "UTC", lastFlows: 0 };
window.megastation = state; // for tests and curious operators

const $ = (id) => document.getElementById(id);
const fmt = (v, unit, nd = 1) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(nd)} ${unit}`.trim());
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(0)} %`);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const localTime = (iso) => {
  if (!iso) return "–";
  try {
    return new Date(iso).toLocaleString("sv-SE", { timeZone: state.tz }).slice(0, 16);
  } catch (e) { return iso; }
};

async function api(path, opts = {}) {
  const headers = { "Accept": "application/json" };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  if (opts.method && opts.method !== "GET" && state.me) headers["X-CSRF-Token"] = state.me.csrf_token;
  const r = await fetch("/api/v1" + path, {
    method: opts.method || "GET", headers, credentials: "same-origin",
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  if (r.status === 401) { location.href = "/login"; throw new Error("not logged in"); }
  const data = await r.json();
  if (!r.ok) {
    const e = data.error || {};
    throw new Error((e.field ? e.field + ": " : "") + (e.message || r.statusText));
  }
  return data;
}

function row(cells) {
  return "<tr>" + cells.map((c) => `<td>${c}</td>`).join("") + "</tr>";
}

// ------------------------------------------------------------------ overview

function renderOverview(ov) {
  state.overview = ov;
  state.tz = ov.timezone || state.tz;
  $("station-name").textContent = ov.station;
  $("clock").textContent = localTime(ov.time) + " " + state.tz;
  const g = ov.grid;
  $("grid-import").textContent = fmt(g.import_kw, "kW");
  $("grid-limit").textContent = fmt(g.limit_kw, "kW", 0);
  $("grid-limit-source").textContent = "(" + g.limit_source + (g.limit_until ? " until " + localTime(g.limit_until) : "") + ")";
  $("pv-now").textContent = fmt(ov.pv.now_kw, "kW");
  $("pv-forecast").textContent = fmt(ov.pv.forecast_kw, "kW");
  $("battery-soc").textContent = pct(ov.battery.soc_frac);
  const bp = ov.battery.power_kw;
  $("battery-power").textContent = bp === null ? "–" : (bp >= 0 ? "discharging " : "charging ") + fmt(Math.abs(bp), "kW");
  $("battery-fault").textContent = ov.battery.fault ? "fault: " + ov.battery.fault : "";
  const t = ov.today;
  $("today-renewable").textContent = t.renewable_frac === null ? "–" : pct(t.renewable_frac) + " renewable";
  $("today-energy").textContent = fmt(t.energy_kwh, "kWh", 0);
  $("today-cost").textContent = t.cost_krw === null ? "–" : Math.round(t.cost_krw).toLocaleString() + " KRW";
  $("today-pv").textContent = fmt(t.pv_direct_kwh, "kWh", 0);
  $("today-battery").textContent = fmt(t.battery_kwh, "kWh", 0);
  $("today-grid").textContent = fmt(t.grid_kwh, "kWh", 0);
  $("policy").textContent = ov.policy;
  const p = ov.plan;
  $("plan-time").textContent = p ? localTime(p.time) : "none yet";
  $("plan-reason").textContent = p ? p.reason : "";
  $("plan-status").textContent = p ? `${p.status}, ${p.cycle_ms} ms, limit ${p.grid_limit_kw} kW` : "";
  const act = canAct();
  $("connectors").querySelector("tbody").innerHTML = ov.connectors.map((c) => {
    const stop = act && c.transaction_id !== null
      ? `<button data-stop="${c.transaction_id}">Stop</button>` : "";
    return `<tr data-charger="${esc(c.charger_id)}" data-connector="${esc(c.connector_id)}">` + [
      esc(c.charger_id), esc(c.connector_id ?? "–"),
      c.connected ? '<span class="ok">yes</span>' : '<span class="bad">no</span>',
      esc(c.status ?? "–") + (c.error_code && c.error_code !== "NoError" ? ` <span class="bad">${esc(c.error_code)}</span>` : ""),
      fmt(c.power_kw, "kW"), fmt(c.limit_kw, "kW") + (c.limit_source ? ` <span class="muted small">${esc(c.limit_source)}</span>` : ""),
      pct(c.soc_frac), fmt(c.energy_kwh, "kWh", 2), c.transaction_id ?? "–", stop,
    ].map((x) => `<td>${x}</td>`).join("") + "</tr>";
  }).join("");
}

function canAct() {
  return state.me && state.me.role === "operator";
}

// ------------------------------------------------------------------ charts

const COLORS = { pv: "#e0a800", ev: "#1f77b4", grid: "#d62728", battery: "#2ca02c", limit: "#555", band: "#c9b458" };

function chartOpts(title, series, width) {
  return {
    width, height: 280, title,
    scales: { x: { time: true } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), state.tz),
    series: [{}, ...series],
    axes: [{}, { label: "kW" }],
  };
}

function sizeOf(el) {
  return Math.max(320, el.clientWidth || 600);
}

function renderFlows(d) {
  const f = d.flows;
  const data = [f.time, f.pv_kw, f.ev_kw, f.grid_import_kw, f.battery_kw, f.grid_limit_kw, f.pv_p10_kw, f.pv_forecast_kw, f.pv_p90_kw];
  const el = $("flows-chart");
  if (!state.flowsChart) {
    state.flowsChart = new uPlot(chartOpts(null, [
      { label: "PV", stroke: COLORS.pv, width: 2 },
      { label: "cars", stroke: COLORS.ev, width: 2 },
      { label: "grid import", stroke: COLORS.grid, width: 2 },
      { label: "battery (+ discharge)", stroke: COLORS.battery, width: 1.5 },
      { label: "grid limit", stroke: COLORS.limit, dash: [6, 4], width: 1 },
      { label: "PV P10", stroke: COLORS.band, dash: [2, 3], width: 1 },
      { label: "PV forecast", stroke: COLORS.band, width: 1 },
      { label: "PV P90", stroke: COLORS.band, dash: [2, 3], width: 1 },
    ], sizeOf(el)), data, el);
  } else {
    state.flowsChart.setData(data);
  }
  el.dataset.points = String(f.time.length);
  const p = d.plan;
  const pel = $("plan-chart");
  if (p) {
    const s = p.series;
    const lim = s.time.map(() => p.grid_limit_kw);
    const pdata = [s.time, s.pv_p10_kw, s.pv_kw, s.pv_p90_kw, s.ev_kw, s.grid_import_kw, s.battery_kw, lim];
    if (!state.planChart) {
      state.planChart = new uPlot(chartOpts(null, [
        { label: "PV P10", stroke: COLORS.band, dash: [2, 3], width: 1 },
        { label: "PV forecast", stroke: COLORS.pv, width: 2 },
        { label: "PV P90", stroke: COLORS.band, dash: [2, 3], width: 1 },
        { label: "cars (plan)", stroke: COLORS.ev, width: 2 },
        { label: "grid import (plan)", stroke: COLORS.grid, width: 2 },
        { label: "battery (plan)", stroke: COLORS.battery, width: 1.5 },
        { label: "grid limit", stroke: COLORS.limit, dash: [6, 4], width: 1 },
      ], sizeOf(pel)), pdata, pel);
    } else {
      state.planChart.setData(pdata);
    }
    pel.dataset.points = String(s.time.length);
    pel.dataset.plan = String(p.id);
  }
}

async function refreshFlows() {
  state.lastFlows = Date.now();
  try {
    renderFlows(await api("/flows"));
  } catch (e) { console.warn(e); }
}

// ------------------------------------------------------------------ tables

const loaders = {
  async sessions() {
    const rows = await api("/sessions");
    const act = canAct();
    $("sessions").querySelector("tbody").innerHTML = rows.map((s) => row([
      s.transaction_id, esc(s.charger_id), esc(s.connector_id), esc(s.id_token ?? ""), esc(s.start_time_utc ?? ""),
      esc(s.stop_time_utc ?? ""), esc(s.state ?? ""), fmt(s.energy_kwh, "", 2), fmt(s.pv_direct_kwh, "", 2),
      fmt(s.battery_kwh, "", 2), fmt(s.grid_kwh, "", 2), pct(s.renewable_frac),
      act && s.state === "open" ? `<button data-stop="${s.transaction_id}">Stop</button>` : "",
    ])).join("");
  },
  async chargers() {
    const rows = await api("/chargers");
    const act = canAct();
    $("chargers").querySelector("tbody").innerHTML = rows.map((c) => row([
      esc(c.id), esc(c.registration), esc(c.ocpp_version ?? ""), esc(`${c.vendor ?? ""} ${c.model ?? ""}`),
      esc(c.firmware_version ?? ""), esc(c.serial_number ?? ""), c.connected ? '<span class="ok">yes</span>' : '<span class="bad">no</span>',
      localTime(c.last_boot_at), localTime(c.last_heartbeat_at), localTime(c.last_seen_at),
      act ? (c.registration === "Pending" ? `<button data-accept="${esc(c.id)}">Accept</button> ` : "")
        + `<button data-reset="${esc(c.id)}">Reset</button>` : "",
    ])).join("");
  },
  async commands() {
    const rows = await api("/commands");
    $("commands").querySelector("tbody").innerHTML = rows.map((c) => row([
      c.id, esc(c.charger_id), esc(c.action), esc(c.source), esc(c.status), esc(c.error ?? ""),
      localTime(c.created_at), localTime(c.finished_at),
    ])).join("");
  },
  async tokens() {
    const rows = await api("/id-tokens");
    $("tokens").querySelector("tbody").innerHTML = rows.map((t) => row([
      esc(t.id_token), esc(t.status), esc(t.expiry ?? ""), esc(t.parent_id_token ?? ""), esc(t.note ?? ""),
    ])).join("");
  },
  async actions() {
    const rows = await api("/actions");
    $("actions").querySelector("tbody").innerHTML = rows.map((a) => row([
      localTime(a.time), esc(a.user_name), esc(a.via), esc(a.action), esc(JSON.stringify(a.params)),
      esc(a.outcome), esc(a.detail ?? ""),
    ])).join("");
  },
};

function showTab() {
  const name = (location.hash || "#overview").slice(1);
  document.querySelectorAll(".tab").forEach((s) => { s.hidden = s.id !== "tab-" + name; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
  if (loaders[name]) loaders[name]().catch((e) => console.warn(e));
}

// ------------------------------------------------------------------ actions

async function act(question, path, body) {
  if (!window.confirm(question)) return;
  const out = $("action-result");
  try {
    const r = await api(path, { method: "POST", body });
    out.textContent = "done: " + JSON.stringify(r);
    out.className = "ok";
  } catch (e) {
    out.textContent = "refused: " + e.message;
    out.className = "error";
  }
  showTab();
}

function localInput(value) {
  // datetime-local is wall time of the browser; the API takes ISO without zone as station time
  return value ? value : undefined;
}

function wireActions() {
  $("limit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const kw = Number($("limit-kw").value);
    const until = localInput($("limit-until").value);
    act(`Set the grid import limit to ${kw} kW${until ? " until " + until : ""}?`, "/grid-limit",
      until ? { grid_kw: kw, until } : { grid_kw: kw });
  });
  $("limit-clear").addEventListener("click", () => act("Go back to the configured grid limit?", "/grid-limit", { clear: true }));
  $("policy-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = $("policy-select").value;
    act(`Set the dispatch policy to ${p}?`, "/policy", { policy: p });
  });
  $("needs-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const sid = Number($("needs-session").value);
    const body = {};
    if ($("needs-departure").value) body.departure = $("needs-departure").value;
    if ($("needs-energy").value !== "") body.energy_kwh = Number($("needs-energy").value);
    act(`Set session ${sid}'s needs to ${JSON.stringify(body)}?`, `/sessions/${sid}/needs`, body);
  });
  document.body.addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    if (b.dataset.stop) act(`Stop session ${b.dataset.stop}?`, `/sessions/${b.dataset.stop}/stop`, {});
    if (b.dataset.accept) act(`Accept charger ${b.dataset.accept}?`, `/chargers/${encodeURIComponent(b.dataset.accept)}/accept`, {});
    if (b.dataset.reset) act(`Soft-reset charger ${b.dataset.reset}?`, `/chargers/${encodeURIComponent(b.dataset.reset)}/reset`, { type: "Soft" });
  });
}

// ------------------------------------------------------------------ live

function connectEvents() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "badge on"; });
  es.addEventListener("error", () => { $("live").textContent = "reconnecting"; $("live").className = "badge off"; });
  es.addEventListener("overview", (ev) => {
    renderOverview(JSON.parse(ev.data));
    if (Date.now() - state.lastFlows > 15000) refreshFlows();
  });
  es.addEventListener("plan", () => refreshFlows());
}

async function main() {
  state.me = await api("/me");
  $("who").textContent = `${state.me.name} (${state.me.role})`;
  $("logout-csrf").value = state.me.csrf_token || "";
  document.body.classList.toggle("viewer", !canAct());
  $("operator-panel").hidden = !canAct();
  wireActions();
  window.addEventListener("hashchange", showTab);
  renderOverview(await api("/overview"));
  await refreshFlows();
  showTab();
  connectEvents();
  window.addEventListener("resize", () => {
    for (const [c, id] of [[state.flowsChart, "flows-chart"], [state.planChart, "plan-chart"]]) {
      if (c) c.setSize({ width: sizeOf($(id)), height: 280 });
    }
  });
}

main().catch((e) => console.error(e));
