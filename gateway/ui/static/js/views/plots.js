// Plots: any asset's metrics over a span, from the store's history (reduced by the server to the plot's width, with
// each column's min/max as a band) and, for a span that ends now, the live tail from the twin after it.
import { html, useEffect, useMemo, useRef, useState } from '../lib.js';
import { useTwin } from '../live.js';
import { loadSeries, metricsOf, Plot, plotWidth, seriesData, when } from '../plot.js';

export const SPANS = [['15m', '15 min', 900], ['1h', '1 h', 3600], ['6h', '6 h', 21600], ['24h', '24 h', 86400],
  ['custom', 'Custom', null]];
const MAX_SERIES = 16; // what /series takes at once
const TAIL_MAX = 4000; // live points kept per series (past that, the oldest go)

/** A datetime-local input's value for `ts` (seconds), in local time. */
function localInput(ts) {
  const d = new Date(ts * 1000 - new Date(ts * 1000).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

/** Each chosen series' live tail: its reported value each time its asset changes, after `since`. */
export function useTail(assets, pairs, since) {
  const store = useRef({ key: null, tails: new Map() });
  const key = `${since}\n${pairs.map((p) => p.join('/')).join('\n')}`;
  if (store.current.key !== key) store.current = { key, tails: new Map() };
  const tails = store.current.tails;
  return pairs.map(([asset, metric]) => {
    const id = `${asset}/${metric}`;
    let tail = tails.get(id);
    if (!tail) { tail = { t: [], v: [], version: -1 }; tails.set(id, tail); }
    const a = assets.get(asset);
    const value = a?.reported?.[metric];
    if (a && a.version !== tail.version && typeof value === 'number') {
      tail.version = a.version;
      const at = a.updated_at ? Date.parse(a.updated_at) / 1000 : Date.now() / 1000;
      if (at > since && (tail.t.length === 0 || at > tail.t[tail.t.length - 1])) {
        tail.t.push(at); tail.v.push(value);
        if (tail.t.length > TAIL_MAX) { tail.t.shift(); tail.v.shift(); }
      }
    }
    return [tail.t, tail.v];
  });
}

function PlotsView({ ctx }) {
  const twin = useTwin();
  const box = useRef(null);
  const ids = [...twin.assets].filter(([, a]) => metricsOf(a).length).map(([id]) => id).sort();
  const [asset, setAsset] = useState('');
  const [metric, setMetric] = useState('');
  const [pairs, setPairs] = useState([]);
  const [span, setSpan] = useState('1h');
  const [custom, setCustom] = useState(() => {
    const to = Date.now() / 1000;
    return [localInput(to - 3600), localInput(to)];
  });
  const [range, setRange] = useState(null); // [from, to, live] of the last request: live, the span ends now
  const [doc, setDoc] = useState(null);
  const requests = useRef(0);
  const chosen = asset || ids[0] || '';
  const metrics = metricsOf(twin.assets.get(chosen));
  const chosenMetric = metrics.includes(metric) ? metric : metrics[0] || '';

  const load = () => {
    if (pairs.length === 0) { setDoc(null); return; }
    let from; let to;
    const seconds = SPANS.find(([k]) => k === span)[2];
    if (seconds) { to = Date.now() / 1000; from = to - seconds; }
    else { from = new Date(custom[0]).getTime() / 1000; to = new Date(custom[1]).getTime() / 1000; }
    if (!(from < to)) { setDoc({ error: 'the span must start before it ends' }); return; }
    setRange([from, to, !!seconds]);
    setDoc({ loading: true });
    const asked = ++requests.current; // an answer to an older request than the last is dropped
    loadSeries(ctx.api, pairs, from, to, plotWidth(box.current))
      .then((d) => asked === requests.current && setDoc(d),
        (e) => asked === requests.current && setDoc({ error: e.message }));
  };
  useEffect(load, [pairs, span]);

  const live = range && range[2];
  const tails = useTail(twin.assets, live ? pairs : [], range ? range[1] : 0);
  const grown = tails.reduce((n, [t]) => n + t.length, 0); // the plot is drawn again only when a tail grows
  const data = useMemo(() => (doc && doc.series && doc.series.length === pairs.length
    ? seriesData(doc, live ? tails : []) : null), [doc, grown]);

  const add = () => {
    const pair = [chosen, chosenMetric];
    if (!chosen || !chosenMetric || pairs.length >= MAX_SERIES) return;
    if (!pairs.some((p) => p[0] === pair[0] && p[1] === pair[1])) setPairs([...pairs, pair]);
  };

  return html`<div class="view view-plots" data-testid="view-plots" ref=${box}>
    <h2>Plots</h2>
    <div class="toolbar wrap">
      <label>Asset <select value=${chosen} onChange=${(e) => setAsset(e.currentTarget.value)} data-testid="plots-asset">
        ${ids.map((id) => html`<option key=${id} value=${id}>${id}</option>`)}
      </select></label>
      <label>Metric <select value=${chosenMetric} onChange=${(e) => setMetric(e.currentTarget.value)}
          data-testid="plots-metric">
        ${metrics.map((m) => html`<option key=${m} value=${m}>${m}</option>`)}
      </select></label>
      <button type="button" onClick=${add} disabled=${!chosenMetric || pairs.length >= MAX_SERIES}
        data-testid="plots-add">Add to plot</button>
      <label>Span <select value=${span} onChange=${(e) => setSpan(e.currentTarget.value)} data-testid="plots-span">
        ${SPANS.map(([k, l]) => html`<option key=${k} value=${k}>${l}</option>`)}
      </select></label>
      ${span === 'custom' && html`
        <label>From <input type="datetime-local" value=${custom[0]}
          onChange=${(e) => setCustom([e.currentTarget.value, custom[1]])} data-testid="plots-from" /></label>
        <label>To <input type="datetime-local" value=${custom[1]}
          onChange=${(e) => setCustom([custom[0], e.currentTarget.value])} data-testid="plots-to" /></label>`}
      <button type="button" onClick=${load} disabled=${pairs.length === 0} data-testid="plots-load">
        ${span === 'custom' ? 'Show span' : 'Reload'}</button>
    </div>
    <ul class="chips" aria-label="series on the plot" data-testid="plots-series">
      ${pairs.map((p, i) => html`<li key=${p.join('/')}>${p[0]} ${p[1]}
        <button type="button" class="chip-x" aria-label=${`remove ${p[0]} ${p[1]}`}
          onClick=${() => setPairs(pairs.filter((_, j) => j !== i))}>×</button></li>`)}
    </ul>
    ${pairs.length === 0 && html`<p class="note">Choose an asset and a metric, then “Add to plot”.</p>`}
    ${doc?.loading && html`<p class="note" role="status">Loading…</p>`}
    ${doc?.error && html`<p class="error" role="alert">${doc.error}</p>`}
    ${range && doc && !doc.error && !doc.loading && html`<p class="note" data-testid="plots-summary">${
      `${when(range[0])} to ${live ? 'now (live)' : when(range[1])}: ${doc.series.map((s) => `${s.asset} ${s.metric} `
        + `${s.count} readings${s.reduced ? ' (reduced)' : ''}`).join('; ')}`}</p>`}
    ${data && html`<${Plot} data=${data} height=${320} label="Chosen series" testid="plots-plot"
      span=${live ? [Date.now() / 1000 - (range[1] - range[0]), Date.now() / 1000] : range.slice(0, 2)} />`}
  </div>`;
}

export default { id: 'plots', title: 'Plots', role: 'viewer', View: PlotsView };
