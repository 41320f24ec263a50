// The timeline plot: an SVG built element by element (createElementNS and
// textContent only), from /api/v1/deployments/ID's `series`. Top: the
// chosen features, live solid and shadow dashed, each scaled to its own
// largest value. Bottom: P(failure) live and shadow against the
// threshold. Behind both: step spans; across both: the report's markers.
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const COLOURS = ['#2563eb', '#d97706', '#059669', '#db2777'];

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawTimeline(svg, series, elapsedMs) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 900, H = 470, L = 48, R = 12, T1 = 16, H1 = 230, T2 = 290, H2 = 140;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', W);
  svg.setAttribute('height', H);
  // The x range: from the install's first moment (snapshotting before it
  // can take seconds and would squeeze the plot) to now or the end.
  const seen = [];
  for (const p of series.live.concat(series.shadow)) seen.push(p.t_ms);
  for (const m of series.markers) seen.push(m.t_ms);
  for (const s of series.steps) seen.push(s.start_ms, s.end_ms);
  const first = seen.length ? Math.min(...seen) : 0;
  const last = Math.max(elapsedMs, ...seen, first + 1000);
  const tmin = Math.max(0, first - 0.05 * (last - first));
  const tmax = last + 0.02 * (last - tmin);
  const x = (t) => L + ((t - tmin) / (tmax - tmin)) * (W - L - R);
  const y1 = (v) => T1 + H1 - v * H1;
  const y2 = (v) => T2 + H2 - v * H2;

  for (const s of series.steps) {
    const r = svgEl('rect', {
      class: s.passed ? 'step' : 'step failed', 'data-kind': s.kind,
      x: x(s.start_ms), y: T1, width: Math.max(1, x(s.end_ms) - x(s.start_ms)), height: T2 + H2 - T1,
    });
    r.appendChild(svgEl('title', {}, `${s.kind} ${s.index} ${s.name}`));
    svg.appendChild(r);
  }
  for (const [top, h] of [[T1, H1], [T2, H2]]) {
    svg.appendChild(svgEl('line', { class: 'axis', x1: L, y1: top + h, x2: W - R, y2: top + h }));
    svg.appendChild(svgEl('line', { class: 'axis', x1: L, y1: top, x2: L, y2: top + h }));
  }
  svg.appendChild(svgEl('text', { x: 4, y: T1 + 10 }, 'features'));
  svg.appendChild(svgEl('text', { x: 4, y: T2 - 6 }, 'P(failure)'));
  svg.appendChild(svgEl('text', { x: L - 12, y: y2(0) }, '0'));
  svg.appendChild(svgEl('text', { x: L - 12, y: y2(1) + 10 }, '1'));
  svg.appendChild(svgEl('text', { x: L, y: H - 4 }, `${(tmin / 1000).toFixed(1)} s`));
  svg.appendChild(svgEl('text', { x: W / 2 - 60, y: H - 4 }, 'time since submission'));
  svg.appendChild(svgEl('text', { x: W - R - 50, y: H - 4 }, `${(tmax / 1000).toFixed(1)} s`));

  series.features.forEach((name, i) => {
    const all = series.live.concat(series.shadow).map((p) => p.values[i]);
    const top = Math.max(1e-9, ...all);
    for (const [stream, pts] of [['live', series.live], ['shadow', series.shadow]]) {
      line(svg, pts.map((p) => [x(p.t_ms), y1(p.values[i] / top)]), COLOURS[i % COLOURS.length], stream);
      for (const p of pts) {
        const c = svgEl('circle', {
          class: 'point', 'data-stream': stream, 'data-series': name,
          cx: x(p.t_ms), cy: y1(p.values[i] / top), r: 2.5, fill: COLOURS[i % COLOURS.length],
        });
        c.appendChild(svgEl('title', {}, `${stream} ${name} = ${p.values[i]} (window ${p.seq})`));
        svg.appendChild(c);
      }
    }
  });

  if (series.threshold !== null && series.threshold !== undefined) {
    svg.appendChild(svgEl('line', { class: 'threshold', x1: L, x2: W - R, y1: y2(series.threshold), y2: y2(series.threshold) }));
    svg.appendChild(svgEl('text', { x: W - R - 110, y: y2(series.threshold) - 3 }, `threshold ${series.threshold.toFixed(2)}`));
  }
  const live = series.p_failure.map((p) => [x(p.t_ms), y2(p.live)]);
  const shadow = series.p_failure.filter((p) => p.shadow !== null).map((p) => [x(p.t_ms), y2(p.shadow)]);
  line(svg, live, '#111827', 'live');
  line(svg, shadow, '#6b7280', 'shadow');
  for (const p of series.p_failure) {
    svg.appendChild(svgEl('circle', { class: 'point', 'data-stream': 'live', 'data-series': 'p_failure', cx: x(p.t_ms), cy: y2(p.live), r: 2.5, fill: p.counted ? '#111827' : '#d1d5db' }));
    if (p.shadow !== null) {
      svg.appendChild(svgEl('circle', { class: 'point', 'data-stream': 'shadow', 'data-series': 'p_failure', cx: x(p.t_ms), cy: y2(p.shadow), r: 2.5, fill: '#6b7280' }));
    }
  }

  series.markers.forEach((m, i) => {
    const g = svgEl('line', { class: 'marker', 'data-what': m.what, x1: x(m.t_ms), x2: x(m.t_ms), y1: T1, y2: T2 + H2 });
    g.appendChild(svgEl('title', {}, `${m.what}: ${m.detail}`));
    svg.appendChild(g);
    svg.appendChild(svgEl('text', { class: 'marker-label', x: x(m.t_ms) + 3, y: T1 + 12 + i * 13 }, m.what.replace(/_/g, ' ')));
  });
}

function line(svg, pts, colour, stream) {
  if (pts.length < 2) return;
  svg.appendChild(svgEl('polyline', {
    points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' '),
    fill: 'none', stroke: colour, 'stroke-width': 1.5,
    'stroke-dasharray': stream === 'shadow' ? '5 3' : 'none',
  }));
}

window.drawTimeline = drawTimeline;
window.plotColours = COLOURS;
