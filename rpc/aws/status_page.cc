// The status page (rpc/aws/status_page.h).
//
// Where the history lives. The chart needs the last minutes of throughput and timeouts; the
// page keeps them (a bounded array of limits::kStatusPageHistorySamples samples in the browser)
// rather than the gateway keeping a ring of samples, because:
//   - the gateway then has no timer, no per-second engine call and no state for a page that
//     nobody may be looking at; every figure it serves is read from the engine when asked;
//   - each open page measures at its own pace, and closing it frees everything;
//   - long-term history is Prometheus's job (GET /metrics); this page is for a glance.
// The price: a page opened a moment ago shows a short chart, which fills as it polls.
//
// Rates are counter differences divided by the difference of the gateway clock's `nowMs`
// between two answers, not by the browser's clock: a browser slows the timers of a background
// tab, and that must not read as a drop in throughput. A counter that went down (the engine
// restarts its counters after a storage reopen) counts from zero.
#include "rpc/aws/status_page.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string_view>

#include "engine/assert.h"
#include "engine/limits.h"
#include "engine/types.h"
#include "rpc/json_forms.h"

namespace tw::rpc::aws {

namespace {

using nlohmann::json;

// The page. @POLL_MS@ and @HISTORY_SAMPLES@ are replaced with the bounds of engine/limits.h.
// Every figure is put in with textContent, never innerHTML: an activity name is not markup.
// The favicon is an empty data: URL, so the browser asks the gateway for nothing but the page
// and status.json (a GET /favicon.ico would be counted as a rejected request).
constexpr std::string_view kPage = R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'">
<link rel="icon" href="data:,">
<title>tokenwheel status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f4f6f9; }
  header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px;
           background: #1d2330; color: #fff; }
  header h1 { font-size: 18px; margin: 0; }
  #state { font-weight: 600; }
  body[data-state="ok"] #state { color: #7ee2a8; }
  body[data-state="storage-failed"] #state, body[data-state="unreachable"] #state { color: #ff8a80; }
  #updated { margin-left: auto; color: #b8c0cc; font-size: 12px; }
  main { padding: 16px 20px; max-width: 1100px; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
  .card { background: #fff; border-radius: 6px; padding: 10px 12px; box-shadow: 0 1px 2px #0002; }
  .card .v { font-size: 24px; font-weight: 600; font-variant-numeric: tabular-nums; }
  .card .k { color: #5b6575; font-size: 12px; }
  h2 { font-size: 15px; margin: 20px 0 8px; }
  .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 10px; }
  .chart { background: #fff; border-radius: 6px; padding: 8px 10px; box-shadow: 0 1px 2px #0002; }
  .chart svg { width: 100%; height: 160px; display: block; }
  .chart .title { font-size: 12px; color: #5b6575; }
  svg text { font-size: 10px; fill: #5b6575; }
  table { border-collapse: collapse; width: 100%; background: #fff; border-radius: 6px;
          box-shadow: 0 1px 2px #0002; }
  th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e7ee; }
  th { font-size: 12px; color: #5b6575; font-weight: 600; }
  td.queued, td.started { font-variant-numeric: tabular-nums; text-align: right; }
  th.queued { text-align: right; }
  td.arn { color: #5b6575; font-size: 12px; word-break: break-all; }
  .note { color: #5b6575; font-size: 12px; }
</style>
</head>
<body data-state="loading" data-polls="0">
<header><h1>tokenwheel</h1><span id="state">loading</span><span id="updated"></span></header>
<main>
<div class="cards">
  <div class="card"><div class="v" id="live-tasks">-</div><div class="k">live tasks</div></div>
  <div class="card"><div class="v" id="queued-tasks">-</div><div class="k">queued (scheduled)</div></div>
  <div class="card"><div class="v" id="started-tasks">-</div><div class="k">started</div></div>
  <div class="card"><div class="v" id="pending-timers">-</div><div class="k">timers pending</div></div>
  <div class="card"><div class="v" id="waiting-polls">-</div><div class="k">waiting polls</div></div>
  <div class="card"><div class="v" id="throughput">-</div><div class="k">transitions / s</div></div>
  <div class="card"><div class="v" id="timeouts-total">-</div><div class="k">timeouts since start</div></div>
  <div class="card"><div class="v" id="events-not-acked">-</div><div class="k">events not acked</div></div>
  <div class="card"><div class="v" id="connections">-</div><div class="k">gateway connections</div></div>
</div>
<h2>Throughput and timeouts (up to the last <span id="window-minutes"></span> minutes)</h2>
<div class="charts">
  <div class="chart"><div class="title">transitions per second (engine commands applied)</div>
    <svg id="chart-throughput" viewBox="0 0 600 160" preserveAspectRatio="none" role="img"></svg></div>
  <div class="chart"><div class="title">timeouts per second (heartbeat, overall, schedule-to-start)</div>
    <svg id="chart-timeouts" viewBox="0 0 600 160" preserveAspectRatio="none" role="img"></svg></div>
</div>
<h2>Activities</h2>
<table>
  <thead><tr><th>name</th><th>ARN</th><th class="queued">queued</th><th class="queued">started</th></tr></thead>
  <tbody id="activities"><tr><td colspan="4" class="note">loading</td></tr></tbody>
</table>
<p class="note">The started card counts every started task, callback tasks (issued with no
activity) included; the table, those of each activity.
Timeouts by clock: <span id="timeouts-by-clock">-</span>.</p>
</main>
<script>
'use strict';
const POLL_MS = @POLL_MS@;
const HISTORY_SAMPLES = @HISTORY_SAMPLES@;
const samples = [];  // {t: server ms, rate: commands/s, timeouts: timeouts/s}; at most HISTORY_SAMPLES
let prev = null;
let polls = 0;

function num(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
function setText(id, v) { document.getElementById(id).textContent = v; }
// A counter's growth between two answers; one that went down restarted from zero.
function grown(now, before) { return now >= before ? now - before : now; }

function addSample(s) {
  if (prev !== null && s.nowMs > prev.nowMs) {
    const dt = (s.nowMs - prev.nowMs) / 1000;
    samples.push({t: s.nowMs,
                  rate: grown(s.commands, prev.commands) / dt,
                  timeouts: grown(s.timeouts.total, prev.timeouts.total) / dt});
    while (samples.length > HISTORY_SAMPLES) samples.shift();
  }
  prev = s;
}

// The smallest of 1, 2, 5 x 10^k at or above v (the chart's top), at least 1.
function niceMax(v) {
  let step = 1;
  while (step * 10 <= v) step *= 10;
  for (const m of [1, 2, 5, 10]) if (step * m >= v) return step * m;
  return step * 10;
}

// The <svg> element's own namespace: the page names no URL at all.
function svgEl(svg, name, attrs, text) {
  const e = document.createElementNS(svg.namespaceURI, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawChart(id, key, color) {
  const svg = document.getElementById(id);
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 600, H = 160, L = 44, B = 16, T = 6;
  // The window grows with the page's history (at least a minute) up to HISTORY_SAMPLES polls.
  const end = samples.length ? samples[samples.length - 1].t : 0;
  const full = HISTORY_SAMPLES * POLL_MS;
  const span = samples.length ? Math.min(full, Math.max(60000, end - samples[0].t)) : full;
  const top = niceMax(Math.max(0, ...samples.map(p => p[key])));
  const x = t => L + (W - L) * (1 - (end - t) / span);
  const y = v => T + (H - B - T) * (1 - v / top);
  for (const f of [0, 0.5, 1]) {
    svg.appendChild(svgEl(svg, 'line', {x1: L, x2: W, y1: y(top * f), y2: y(top * f),
                                   stroke: '#e3e7ee', 'stroke-width': 1}));
    svg.appendChild(svgEl(svg, 'text', {x: L - 4, y: y(top * f) + 3, 'text-anchor': 'end'},
                          num(Math.round(top * f * 10) / 10)));
  }
  const ago = span >= 120000 ? Math.round(span / 60000) + ' min ago' : Math.round(span / 1000) + ' s ago';
  svg.appendChild(svgEl(svg, 'text', {x: L, y: H - 3}, ago));
  svg.appendChild(svgEl(svg, 'text', {x: W, y: H - 3, 'text-anchor': 'end'}, 'now'));
  if (samples.length === 0) return;
  const pts = samples.map(p => x(p.t).toFixed(1) + ',' + y(p[key]).toFixed(1));
  const first = x(samples[0].t).toFixed(1), last = x(end).toFixed(1), base = y(0).toFixed(1);
  svg.appendChild(svgEl(svg, 'polygon', {points: first + ',' + base + ' ' + pts.join(' ') + ' ' +
                                            last + ',' + base,
                                    fill: color, 'fill-opacity': 0.15}));
  svg.appendChild(svgEl(svg, 'polyline', {points: pts.join(' '), fill: 'none', stroke: color,
                                     'stroke-width': 1.5, class: 'series'}));
}

function renderActivities(list) {
  const body = document.getElementById('activities');
  while (body.firstChild) body.removeChild(body.firstChild);
  if (list.length === 0) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = 4;
    td.className = 'note';
    td.textContent = 'no activities';
    return;
  }
  for (const a of list) {
    const tr = body.insertRow();
    tr.dataset.arn = a.arn;
    const cells = [['name', a.name], ['arn', a.arn], ['queued', num(a.queued)],
                   ['started', num(a.started)]];
    for (const [cls, v] of cells) {
      const td = tr.insertCell();
      td.className = cls;
      td.textContent = v;
    }
  }
}

function render(s) {
  addSample(s);
  setText('live-tasks', num(s.liveTasks));
  setText('queued-tasks', num(s.queuedTasks));
  setText('started-tasks', num(s.startedTasks));
  setText('pending-timers', num(s.pendingTimers));
  setText('waiting-polls', num(s.waitingPolls));
  setText('timeouts-total', num(s.timeouts.total));
  setText('events-not-acked', num(s.eventsNotAcked));
  setText('connections', num(s.gateway.connections));
  setText('throughput', samples.length ? num(Math.round(samples[samples.length - 1].rate)) : '-');
  setText('timeouts-by-clock', 'heartbeat ' + num(s.timeouts.heartbeat) + ', overall ' +
          num(s.timeouts.overall) + ', schedule-to-start ' + num(s.timeouts.scheduleToStart));
  setText('state', s.storage.ok ? 'storage ok' : 'storage failed: ' + (s.storage.error || ''));
  setText('updated', 'updated ' + new Date(s.nowMs).toISOString().replace('T', ' ').slice(0, 19) +
          ' UTC');
  document.body.dataset.state = s.storage.ok ? 'ok' : 'storage-failed';
  renderActivities(s.activities);
  drawChart('chart-throughput', 'rate', '#2f6fde');
  drawChart('chart-timeouts', 'timeouts', '#d9482b');
}

// The next poll is set once this one is answered: never two in flight.
async function poll() {
  try {
    const r = await fetch('status.json', {cache: 'no-store'});
    if (!r.ok) throw new Error('HTTP ' + r.status);
    render(await r.json());
  } catch (e) {
    document.body.dataset.state = 'unreachable';
    setText('state', 'gateway unreachable (' + e.message + ')');
  }
  document.body.dataset.polls = ++polls;
  setTimeout(poll, POLL_MS);
}

setText('window-minutes', Math.round(HISTORY_SAMPLES * POLL_MS / 60000));
drawChart('chart-throughput', 'rate', '#2f6fde');
drawChart('chart-timeouts', 'timeouts', '#d9482b');
poll();
</script>
</body>
</html>
)html";

void ReplaceOnce(std::string& s, std::string_view from, const std::string& to) {
  const size_t at = s.find(from);
  TW_ASSERT(at != std::string::npos);
  s.replace(at, from.size(), to);
  TW_ASSERT(s.find(from) == std::string::npos);
}

// "arn:aws:states:REGION:ACCOUNT:activity:NAME" -> NAME (activity names hold no ':').
std::string ActivityName(const std::string& arn) { return arn.substr(arn.rfind(':') + 1); }

}  // namespace

std::string StatusPageHtml() {
  std::string page(kPage);
  ReplaceOnce(page, "@POLL_MS@", std::to_string(limits::kStatusPagePollMs));
  ReplaceOnce(page, "@HISTORY_SAMPLES@", std::to_string(limits::kStatusPageHistorySamples));
  return page;
}

std::string RenderStatusJson(const EngineStats& s, const GatewayCounters& g, int64_t now_ms) {
  json activities = json::array();
  uint64_t queued = 0;
  for (const ActivityCounts& a : s.per_activity) {
    activities.push_back({{"arn", a.arn},
                          {"name", ActivityName(a.arn)},
                          {"queued", a.queued},
                          {"started", a.started}});
    queued += a.queued;
  }
  const auto timeouts = [&s](TimeoutKind k) { return s.timeouts[static_cast<size_t>(k)]; };
  const uint64_t heartbeat = timeouts(TimeoutKind::kHeartbeat);
  const uint64_t overall = timeouts(TimeoutKind::kOverall);
  const uint64_t schedule_to_start = timeouts(TimeoutKind::kScheduleToStart);
  // Live tasks are SCHEDULED (queued in their activity) or STARTED. Both figures come from one
  // answer of the engine thread, so queued cannot exceed live; the clamp only keeps a bug from
  // showing as 2^64.
  const uint64_t started = s.live_tasks - std::min(queued, s.live_tasks);
  json j{{"nowMs", now_ms},
         {"liveTasks", s.live_tasks},
         {"queuedTasks", queued},
         {"startedTasks", started},
         {"pendingTimers", s.pending_timers},
         {"waitingPolls", s.waiting_polls},
         {"commands", s.commands},
         {"batches", s.batches},
         {"lastEventSequence", s.last_event_seq},
         {"eventsNotAcked", s.events_not_acked},
         {"timeouts",
          {{"heartbeat", heartbeat},
           {"overall", overall},
           {"scheduleToStart", schedule_to_start},
           {"total", heartbeat + overall + schedule_to_start}}},
         {"activities", std::move(activities)},
         {"storage", StorageJson(s.storage)},
         {"gateway",
          {{"connections", g.connections},
           {"callsInFlight", g.calls_in_flight},
           {"waitingPolls", g.waiting_polls}}}};
  return Dump(j);
}

}  // namespace tw::rpc::aws
