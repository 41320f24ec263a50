// The dashboard's views. Every string from the server (package and step
// names, step output, hosts) becomes a text node: elements are built with
// createElement and filled with textContent or append(string), never by
// parsing HTML, so a name holding markup stays text.
'use strict';

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k instanceof Node ? k : String(k === null || k === undefined ? '-' : k));
  return e;
}

function table(headers, rows, id) {
  const t = el('table', id ? { id } : {});
  t.append(el('tr', {}, ...headers.map((h) => el('th', {}, h))));
  for (const r of rows) t.append(el('tr', {}, ...r.map((c) => el('td', {}, c))));
  return t;
}

function ms(v) {
  if (v === null || v === undefined) return '-';
  return Math.abs(v) >= 1000 ? `${(v / 1000).toFixed(1)} s` : `${v} ms`;
}

function when(v) { return v ? new Date(v).toISOString().replace('T', ' ').slice(0, 19) : '-'; }

function num(v) { return typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : String(v); }

async function getJson(path) {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

function show(...nodes) {
  const v = document.getElementById('view');
  v.replaceChildren(...nodes);
}

function failure(e) { show(el('p', { class: 'error', id: 'error' }, e.message)); }

// --- deployments list -------------------------------------------------
const STATES = ['', 'running', 'rolling_back', 'rolled_back', 'committed', 'interrupted', 'refused', 'failed'];
const DECISIONS = ['', 'rollback', 'commit', 'inconclusive', 'none'];

function select(name, options, current) {
  const s = el('select', { name });
  for (const o of options) {
    const opt = el('option', { value: o }, o || 'any');
    if (o === current) opt.selected = true;
    s.append(opt);
  }
  return el('label', {}, name, s);
}

function filters(q) {
  const f = el('form', { class: 'filters', method: 'get', action: '/' });
  f.append(select('state', STATES, q.get('state') || ''));
  f.append(el('label', {}, 'host', el('input', { name: 'host', value: q.get('host') || '' })));
  f.append(el('label', {}, 'package', el('input', { name: 'package', value: q.get('package') || '' })));
  f.append(select('decision', DECISIONS, q.get('decision') || ''));
  f.append(el('button', { type: 'submit' }, 'filter'));
  return f;
}

async function listView() {
  const q = new URLSearchParams(location.search);
  const rows = await getJson('/api/v1/deployments' + location.search);
  const body = rows.map((d) => [
    el('a', { href: '/deployments/' + encodeURIComponent(d.id) }, d.id),
    el('span', { class: 'state-' + d.state }, d.state + (d.dry_run ? ' (dry run)' : '')),
    d.host, d.package || d.name, d.version,
    el('span', { class: 'v-' + (d.decision || 'none') }, d.decision || '-'),
    ms(d.lead_ms), ms(d.duration_ms), when(d.created_ms),
  ]);
  show(el('h1', {}, 'Deployments'), filters(q),
    table(['id', 'state', 'host', 'package', 'version', 'decision', 'lead time', 'duration', 'submitted'], body, 'deployments'));
  if (rows.some((d) => d.state === 'running' || d.state === 'rolling_back')) setTimeout(() => route().catch(failure), 2000);
}

// --- one deployment ---------------------------------------------------
function reasonText(r) {
  const rest = Object.entries(r).filter(([k]) => k !== 'kind').map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : num(v)}`);
  return `${r.kind}: ${rest.join(', ')}`;
}

function analysis(d) {
  const rep = d.report;
  const a = el('aside', { id: 'analysis' });
  a.append(el('h2', {}, 'Decision'));
  if (rep.decision) {
    a.append(el('p', { id: 'verdict', class: 'v-' + rep.decision.verdict }, rep.decision.verdict + (rep.decision.acted ? '' : ' (not acted on)')));
    const reasons = Array.isArray(rep.decision.reasons) ? rep.decision.reasons : [];
    a.append(el('ul', { id: 'reasons' }, ...reasons.map((r) => el('li', {}, reasonText(r)))));
  } else {
    a.append(el('p', { class: 'muted' }, 'no decision yet'));
  }
  a.append(el('p', {}, 'lead time: ', ms(rep.lead.lead_ms), rep.lead.step_end ? ` (${rep.lead.step_end} end)` : ''));
  a.append(el('h2', {}, 'First failing step'));
  const f = rep.first_failure;
  if (f) {
    a.append(el('p', { id: 'first-failure' }, `${f.stream} ${f.kind} ${f.index} `, el('code', {}, f.name),
      ` exited ${f.exit_code === null ? (f.timed_out ? 'nothing (timed out)' : 'nothing (killed)') : f.exit_code} after ${ms(Math.round(f.duration_ms))}`));
    if (f.errors.length) a.append(el('pre', { class: 'errors' }, f.errors.join('\n')));
    a.append(el('pre', { class: 'output' }, f.output_tail.join('\n')));
  } else {
    a.append(el('p', { class: 'muted' }, 'no step failed'));
  }
  a.append(el('h2', {}, 'Top deviating features'));
  a.append(el('p', { class: 'muted' }, `baseline: ${rep.baseline.kind} (${rep.baseline.windows} windows)`));
  a.append(table(['feature', 'value', 'baseline', 'score'],
    rep.deviations.slice(0, 8).map((v) => [v.feature, num(v.value), `${num(v.baseline_mean)} ± ${num(v.baseline_sd)}`, num(v.score)]), 'deviations'));
  a.append(el('h2', {}, 'Live against shadow'));
  if (rep.live_vs_shadow) {
    a.append(table(['feature', 'live', 'shadow', 'relative'],
      rep.live_vs_shadow.slice(0, 8).map((v) => [v.feature, num(v.live_mean), num(v.shadow_mean), num(v.relative)]), 'live-vs-shadow'));
  }
  a.append(el('p', { class: 'muted' }, rep.live_vs_shadow_note));
  return a;
}

function legend(s) {
  const l = el('p', { class: 'legend' });
  s.features.forEach((f, i) => {
    const sw = el('span', { class: 'swatch' });
    sw.style.background = window.plotColours[i % window.plotColours.length];
    l.append(el('span', {}, sw, f));
  });
  l.append(el('span', { class: 'muted' }, 'live solid, shadow dashed; model: ', s.model));
  return l;
}

function deploymentPage(d) {
  const row = d.deployment;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('id', 'timeline');
  svg.setAttribute('class', 'plot');
  drawTimeline(svg, d.series, d.elapsed_ms);
  svg.dataset.points = String(svg.querySelectorAll('.point').length);
  const status = el('p', { id: 'status' },
    el('span', { id: 'state', class: 'state-' + row.state }, row.state), ' on ', el('b', {}, row.host),
    ', elapsed ', el('span', { id: 'elapsed', 'data-ms': d.elapsed_ms }, ms(d.elapsed_ms)),
    d.live ? ' (live: updating every second)' : '', row.reason ? ` — ${row.reason}` : '');
  const steps = d.series.steps.map((s) => [s.kind, s.index, s.name, ms(s.start_ms), ms(s.end_ms - s.start_ms), s.passed ? 'passed' : 'FAILED']);
  const events = d.events.map((e) => [e.seq, when(e.at_ms), typeof e.event === 'string' ? e.event : Object.keys(e.event)[0]]);
  show(el('h1', { id: 'title' }, `${row.package || row.name} ${row.version || ''}`.trim(), el('span', { class: 'muted' }, ` ${row.id}`)),
    status,
    el('div', { class: 'layout' }, el('div', {}, svg, legend(d.series)), analysis(d)),
    el('h2', {}, 'Steps'), table(['kind', '#', 'name', 'start', 'took', 'result'], steps, 'steps'),
    el('h2', {}, 'Events'), table(['seq', 'at', 'event'], events, 'events'));
}

async function deploymentView(id) {
  const d = await getJson('/api/v1/deployments/' + encodeURIComponent(id));
  deploymentPage(d);
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  if (d.live) setTimeout(() => deploymentView(id).catch(failure), 1000);
}

// --- hosts and models -------------------------------------------------
async function hostsView() {
  const hosts = await getJson('/api/v1/hosts');
  show(el('h1', {}, 'Hosts'), table(['host', 'connected', 'agent', 'kernel', 'os', 'lost events', 'dropped windows', 'last seen'],
    hosts.map((h) => [h.name, h.connected ? 'connected' : 'gone', h.agent_version, h.kernel, h.os, h.lost_events, h.dropped_windows, when(h.last_seen_ms)]), 'hosts'));
}

async function modelsView() {
  const m = await getJson('/api/v1/models');
  if (!m.source) { show(el('h1', {}, 'Models'), el('p', { id: 'model' }, 'no model: deployments decide without P(failure)')); return; }
  const meta = m.meta || {};
  const ev = (meta.evaluation && meta.evaluation.detectors) || [];
  show(el('h1', {}, 'Models'),
    el('p', { id: 'model' }, 'in use: ', el('code', {}, m.source), `, schema ${meta.schema}, threshold ${num(meta.threshold)}, trained on ${meta.trained_on} deployments`),
    el('h2', {}, 'Evaluation'),
    ev.length ? table(['detector', 'recall', 'false positive rate', 'ROC AUC'], ev.map((d) => [d.detector, num(d.recall), num(d.false_positive_rate), num(d.roc_auc)]), 'evaluation')
      : el('p', { class: 'muted' }, 'no evaluation recorded with this model'),
    el('h2', {}, 'Recent alarms explained'),
    table(['deployment', 'package', 'window', 'P(failure)', 'features that moved it most'],
      m.recent_alarms.map((a) => [el('a', { href: '/deployments/' + encodeURIComponent(a.deployment) }, a.deployment), a.package, a.seq, num(a.p_failure),
        a.features.map(([f, c]) => `${f} ${num(c)}`).join(', ')]), 'alarms'));
}

async function route() {
  const p = location.pathname;
  if (p === '/') return listView();
  if (p === '/hosts') return hostsView();
  if (p === '/models') return modelsView();
  if (p.startsWith('/deployments/')) return deploymentView(decodeURIComponent(p.slice('/deployments/'.length)));
  throw new Error('no page at ' + p);
}

route().catch(failure);
