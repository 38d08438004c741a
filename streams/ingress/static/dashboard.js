// Sluice dashboard: polls /api/summary every 2 s and draws plain SVG charts (no libraries, works offline).
"use strict";

const POLL_MS = 2000;
const W = 600, H = 220, PAD = { l: 64, r: 12, t: 12, b: 28 };
const COLORS = ["#4cc9f0", "#f72585", "#b5e48c", "#ffd166", "#9d4edd", "#06d6a0", "#ef476f", "#118ab2"];
const NS = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function usd(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "$0";
  return Math.abs(v) < 0.01 ? "$" + v.toPrecision(3) : "$" + v.toFixed(4);
}

function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }

// Round an axis maximum up to 1, 2, 2.5 or 5 × 10^k so the gridlines get readable labels.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 2.5, 5, 10].map(m => m * p).find(m => m >= v * 0.9999);
}

function count(v) { return Number.isInteger(v) ? String(v) : v.toFixed(1); }

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

function empty(svg, message) {
  clear(svg);
  svg.setAttribute("data-points", "0");
  svg.appendChild(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, message || "no data yet"));
}

function yAxis(svg, max, fmt) {
  for (let i = 0; i <= 4; i++) {
    const y = PAD.t + (H - PAD.t - PAD.b) * (1 - i / 4);
    svg.appendChild(el("line", { class: "gridline", x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }));
    svg.appendChild(el("text", { x: PAD.l - 6, y: y + 4, "text-anchor": "end" }, fmt(max * i / 4)));
  }
}

// series: [{name, points: [[t, v], ...]}]; draws one polyline and a circle per point for each series.
function lineChart(svg, series, fmt, fixedMax) {
  const all = series.flatMap(s => s.points);
  if (!all.length) return empty(svg);
  clear(svg);
  const t0 = Math.min(...all.map(p => p[0])), t1 = Math.max(...all.map(p => p[0]));
  const max = fixedMax || niceMax(Math.max(...all.map(p => p[1]), 0));
  const x = t => PAD.l + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = v => PAD.t + (H - PAD.t - PAD.b) * (1 - v / max);
  yAxis(svg, max, fmt);
  const span = Math.round((t1 - t0) / 1000);
  svg.appendChild(el("text", { x: W - PAD.r, y: H - 8, "text-anchor": "end" }, span ? `last ${span} s` : "now"));
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = s.points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(el("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": 2, "data-series": s.name }));
    const every = Math.max(1, Math.ceil(s.points.length / 60));
    s.points.forEach((p, j) => {
      if (j % every && j !== s.points.length - 1) return;
      svg.appendChild(el("circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.5, fill: color, "data-value": p[1] }));
    });
    const last = s.points[s.points.length - 1];
    svg.appendChild(el("text", { x: PAD.l + 8, y: PAD.t + 14 + 14 * i, fill: color, style: `fill:${color}` },
      `${s.name}: ${fmt(last ? last[1] : 0)}`));
  });
  svg.setAttribute("data-points", String(all.length));
  svg.setAttribute("data-last", String(series.length ? (series[0].points.at(-1) || [0, 0])[1] : 0));
}

function barChart(svg, rows, fmt) {
  if (!rows.length) return empty(svg);
  clear(svg);
  const max = Math.max(...rows.map(r => r[1]), 0) || 1;
  const band = (H - PAD.t - PAD.b) / rows.length;
  const width = W - PAD.l - PAD.r - 90;
  rows.forEach(([name, v, requests], i) => {
    const y = PAD.t + i * band;
    const color = COLORS[i % COLORS.length];
    svg.appendChild(el("text", { x: PAD.l - 6, y: y + band / 2 + 4, "text-anchor": "end" }, name));
    svg.appendChild(el("rect", { x: PAD.l, y: y + band * 0.15, height: band * 0.7, width: Math.max(1, width * v / max),
      fill: color, "data-tenant": name, "data-value": v, "data-requests": requests }));
    svg.appendChild(el("text", { x: PAD.l + Math.max(1, width * v / max) + 6, y: y + band / 2 + 4 },
      `${fmt(v)} · ${requests} req`));
  });
  svg.setAttribute("data-points", String(rows.length));
}

function render(s) {
  document.getElementById("kpi-requests").textContent = String(s.requests);
  document.getElementById("kpi-cost").textContent = usd(s.cost_usd);
  document.getElementById("kpi-savings").textContent =
    usd(s.savings_usd) + (s.savings_ratio === null ? "" : ` (${pct(s.savings_ratio)})`);
  document.getElementById("kpi-hitrate").textContent = pct(s.cache_hit_rate);
  const lagTotal = Object.values(s.lag).reduce((a, g) => a + g.total, 0);
  document.getElementById("kpi-lag").textContent = String(lagTotal);
  document.getElementById("kpi-breakers").textContent = String(s.breakers_open.length);

  const tenants = Object.entries(s.by_tenant).map(([k, v]) => [k, v.cost_usd, v.requests]).sort((a, b) => b[1] - a[1]);
  barChart(document.getElementById("chart-tenant-cost"), tenants.slice(0, 8), usd);
  const names = tenants.slice(0, 8).map(t => t[0]);
  lineChart(document.getElementById("chart-tenant-series"),
    names.map(n => ({ name: n, points: s.series.map(p => [p.t, p.cost_by_tenant[n] || 0]) })), usd);
  lineChart(document.getElementById("chart-savings"),
    [{ name: "saved", points: s.series.map(p => [p.t, p.savings_usd]) }], usd);
  lineChart(document.getElementById("chart-hitrate"),
    [{ name: "hit rate", points: s.series.map(p => [p.t, p.hit_rate]) }], pct, 1);
  const groups = Object.keys(s.lag);
  lineChart(document.getElementById("chart-lag"),
    groups.map(g => ({ name: g, points: s.series.filter(p => g in p.lag).map(p => [p.t, p.lag[g]]) })), count);

  const body = document.getElementById("breakers");
  body.replaceChildren();
  if (!s.breakers_open.length) {
    const row = body.insertRow(); const cell = row.insertCell(); cell.colSpan = 4; cell.className = "empty"; cell.textContent = "none";
  }
  for (const b of s.breakers_open) {
    const row = body.insertRow();
    for (const v of [b.session, b.tenant || "", b.reason || "", b.until_ms ? new Date(b.until_ms).toLocaleTimeString() : "–"]) {
      row.insertCell().textContent = v;
    }
  }
  const updated = document.getElementById("updated");
  updated.className = "";
  updated.textContent = "updated " + new Date(s.now_ms).toLocaleTimeString();
  document.body.setAttribute("data-loaded", "1");
}

async function poll() {
  try {
    const r = await fetch("/api/summary", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    const updated = document.getElementById("updated");
    updated.className = "error";
    updated.textContent = "cannot reach /api/summary: " + e.message;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
