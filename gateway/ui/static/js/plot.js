// Plots over uPlot, and the few helpers the views share for numbers and times. A plot takes its data as columns:
// times in seconds and, per series, its values with an optional min/max band (what /series gives a long span
// reduced to the plot's width); `shade` is a list of [from, to] intervals drawn behind the lines (alarms).
import { html, useEffect, useRef, uPlot } from './lib.js';

export const COLOURS = ['#4cc9f0', '#f4a261', '#90be6d', '#f72585', '#ffd166', '#b8b8ff', '#06d6a0', '#ef476f'];
const AXIS = { stroke: '#c8d0da', grid: { stroke: '#2a3340', width: 1 }, ticks: { stroke: '#2a3340', width: 1 } };

/** A number as text with `digits` decimals, or a dash when there is none. */
export function num(value, digits = 1) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–';
}

/** Seconds since the epoch as the local time of day (24 h). */
export function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour12: false });
}

/** A moment as a local date and time, for a span's ends. */
export function when(ts) {
  return new Date(ts * 1000).toLocaleString([], { hour12: false });
}

/** An asset's numeric reported fields, by name: what can be plotted of it. */
export function metricsOf(asset) {
  if (!asset || !asset.reported) return [];
  return Object.keys(asset.reported).filter((k) => typeof asset.reported[k] === 'number').sort();
}

/** The state's class for colour (the text beside it always says the state too). */
export function stateClass(state) {
  const s = String(state ?? 'unknown').toLowerCase();
  if (s === 'ok' || s === 'running' || s === 'sending') return 'st-ok';
  if (s === 'warning' || s === 'starting') return 'st-warn';
  if (s === 'over' || s === 'alarm' || s === 'failed' || s.startsWith('not sent')) return 'st-bad';
  return 'st-unknown';
}

// Times on the axes in 24 hours, as a venue's clocks are read.
const fmtDate = (tpl) => uPlot.fmtDate(tpl.replace(/\{h\}/g, '{HH}').replace(/\s*\{aa?\}/g, ''));

function options(data, width, height, shade, span) {
  const series = [{}];
  const bands = [];
  data.series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const main = series.length;
    series.push({ label: s.label, stroke: colour, width: 1.5, spanGaps: false,
      value: (u, v) => num(v, s.digits ?? 2) });
    if (s.min && s.max) {
      series.push({ label: `${s.label} max`, stroke: `${colour}55`, width: 1, points: { show: false },
        value: (u, v) => num(v, s.digits ?? 2) });
      series.push({ label: `${s.label} min`, stroke: `${colour}55`, width: 1, points: { show: false },
        value: (u, v) => num(v, s.digits ?? 2) });
      bands.push({ series: [main + 1, main + 2], fill: `${colour}22` });
    }
  });
  return {
    width, height, series, bands,
    fmtDate,
    scales: { x: { time: true, range: (u, min, max) => span.current ?? [min, max] } },
    axes: [{ ...AXIS }, { ...AXIS, size: 56 }],
    legend: { live: true },
    cursor: { focus: { prox: 16 } },
    hooks: {
      drawClear: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.fillStyle = 'rgba(255, 80, 80, 0.18)';
        for (const [from, to] of shade.current) {
          const x0 = Math.max(u.bbox.left, u.valToPos(from, 'x', true));
          const x1 = Math.min(u.bbox.left + u.bbox.width, u.valToPos(to, 'x', true));
          if (x1 > x0) ctx.fillRect(x0, u.bbox.top, x1 - x0, u.bbox.height);
        }
        ctx.restore();
      }],
    },
  };
}

function columns(data) {
  const cols = [data.x];
  for (const s of data.series) {
    cols.push(s.values);
    if (s.min && s.max) cols.push(s.max, s.min);
  }
  return cols;
}

/** A uPlot chart of `data` ({x, series: [{label, values, min?, max?, digits?}]}), as wide as its box; `span`
 * ([from, to], seconds) fixes the time axis, else it fits the data. */
export function Plot({ data, shade = [], span = null, height = 220, label, testid }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shading = useRef(shade);
  shading.current = shade;
  const spanned = useRef(span);
  spanned.current = span;
  const shape = data.series.map((s) => `${s.label}${s.min ? '+band' : ''}`).join('\n');
  useEffect(() => {
    const el = box.current;
    const u = new uPlot(options(data, Math.max(200, el.clientWidth), height, shading, spanned), columns(data), el);
    plot.current = u;
    const resize = new ResizeObserver(() => {
      const width = Math.max(200, el.clientWidth);
      if (width !== u.width) u.setSize({ width, height });
    });
    resize.observe(el);
    return () => { resize.disconnect(); u.destroy(); plot.current = null; };
  }, [shape, height]);
  useEffect(() => { plot.current?.setData(columns(data)); }, [data]);
  useEffect(() => { plot.current?.redraw(false); }, [shade]);
  return html`<figure class="plot" data-testid=${testid}>
    <figcaption>${label}</figcaption>
    <div class="plot-box" ref=${box}></div>
  </figure>`;
}

/** GET /series for `pairs` ([asset, metric]) over [from, to] reduced to `points` columns: the API's answer. */
export function loadSeries(api, pairs, from, to, points) {
  const query = new URLSearchParams();
  for (const [asset, metric] of pairs) query.append('series', `${asset}/${metric}`);
  query.set('from', from.toFixed(3));
  query.set('to', to.toFixed(3));
  query.set('points', String(Math.max(10, Math.min(4000, Math.round(points)))));
  return api.get(`/series?${query}`);
}

// One series' columns: [t, value, max, min] reduced (min/max per bucket; a null after a bucket followed by a gap,
// so the line breaks there), or [t, value] as read; a live tail ([t...], [value...]) after the last reading.
function table(s, step, tail) {
  const [t, ...rest] = s.data;
  const reduced = s.reduced && rest.length === 3;
  const out = reduced ? [[], [], [], []] : [[], []];
  const push = (time, value, max, min) => {
    out[0].push(time); out[1].push(value);
    if (reduced) { out[2].push(max); out[3].push(min); }
  };
  for (let i = 0; i < t.length; i++) {
    if (reduced) push(t[i], rest[2][i], rest[1][i], rest[0][i]);
    else push(t[i], rest[0][i]);
    if (reduced && i + 1 < t.length && t[i + 1] - t[i] > 1.5 * step) push(t[i] + step, null, null, null);
  }
  const last = t.length ? t[t.length - 1] : -Infinity;
  if (tail) {
    for (let i = 0; i < tail[0].length; i++) {
      if (tail[0][i] > last) push(tail[0][i], tail[1][i], tail[1][i], tail[1][i]);
    }
  }
  return out;
}

/** /series's answer (and each series' live tail, in the same order) as one plot's data: the series joined on
 * time (uPlot.join), each with its min/max band when it was reduced. */
export function seriesData(doc, tails = []) {
  const tables = doc.series.map((s, i) => table(s, doc.step, tails[i]));
  const joined = tables.length ? uPlot.join(tables) : [[]];
  const series = [];
  let col = 1;
  doc.series.forEach((s, i) => {
    const banded = tables[i].length === 4;
    series.push({ label: `${s.asset} ${s.metric}`, asset: s.asset, metric: s.metric, values: joined[col],
      ...(banded ? { max: joined[col + 1], min: joined[col + 2] } : {}) });
    col += banded ? 3 : 1;
  });
  return { x: joined[0], series };
}

/** The plot's width in pixel columns: what to ask /series to reduce a span to. */
export function plotWidth(el) {
  return Math.max(200, Math.min(4000, Math.round((el?.clientWidth || 800) * (window.devicePixelRatio || 1))));
}
