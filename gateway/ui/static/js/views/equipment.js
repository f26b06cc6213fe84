// Equipment: every amplifier channel and mains circuit with its live values, anomaly score and alarm state (the
// channels an alarm names); a row opens its metrics' plots over the last hour, alarm intervals shaded.
import { html, useEffect, useRef, useState } from '../lib.js';
import { useTwin } from '../live.js';
import { loadSeries, num, Plot, plotWidth, seriesData, stateClass } from '../plot.js';

const KINDS = { amplifier: 'Amplifier channels', power: 'Mains circuits' };
// The columns shown in the table, per kind: [field, label, digits]; and the metrics a row's plots show.
const COLUMNS = {
  amplifier: [['temperature_c', 'Temp °C', 1], ['current_a', 'Current A', 2], ['fan_rpm', 'Fan rpm', 0],
    ['load_ohm', 'Load Ω', 2], ['protect', 'Protect', 0]],
  power: [['voltage_v', 'Voltage V', 1], ['current_l1_a', 'I L1 A', 2], ['current_l2_a', 'I L2 A', 2],
    ['current_l3_a', 'I L3 A', 2], ['power_kw', 'Power kW', 2], ['frequency_hz', 'Hz', 2]],
};
const PLOTTED = {
  amplifier: ['temperature_c', 'current_a', 'fan_rpm', 'load_ohm', 'protect', 'anomaly_score'],
  power: ['voltage_v', 'current_l1_a', 'current_l2_a', 'current_l3_a', 'power_kw', 'frequency_hz', 'anomaly_score'],
};
const HOUR_S = 3600;

/** The alarm intervals of `id` within [from, to], from /alerts: its `anomaly:<id>` alerts raised and cleared (the
 * gateway keeps the recent ones in memory, not in the store), the one standing open until `to`. {intervals, error} */
function useAlarmIntervals(api, id, from, to) {
  const [found, setFound] = useState({ intervals: [], error: null });
  useEffect(() => {
    let live = true;
    api.get('/alerts').then((doc) => {
      const key = `anomaly:${id}`;
      const changes = doc.recent.filter((a) => a.key === key && a.state !== 'event')
        .map((a) => [Date.parse(a.time) / 1000, a.state]).sort((a, b) => a[0] - b[0]);
      const intervals = [];
      let open = null;
      for (const [at, state] of changes) {
        if (state === 'raised' && open === null) open = at;
        if (state === 'cleared') { intervals.push([open ?? from, at]); open = null; }
      }
      const standing = doc.standing.find((a) => a.key === key);
      if (standing || open !== null) intervals.push([open ?? Date.parse(standing.since) / 1000, to]);
      if (live) setFound({ intervals: intervals.filter(([a, b]) => b > from && a < to), error: null });
    }, (e) => live && setFound({ intervals: [], error: e.message }));
    return () => { live = false; };
  }, [id, from]);
  return found;
}

function Detail({ ctx, asset }) {
  const box = useRef(null);
  const [span, setSpan] = useState(() => { const to = Date.now() / 1000; return [to - HOUR_S, to]; });
  const [data, setData] = useState(null);
  const metrics = PLOTTED[asset.kind].filter((m) => m in asset.reported || m === 'anomaly_score');
  useEffect(() => {
    let live = true;
    loadSeries(ctx.api, metrics.map((m) => [asset.id, m]), span[0], span[1], plotWidth(box.current))
      .then((d) => live && setData({ plots: d.series.map((s) => [s.metric, seriesData({ step: d.step, series: [s] })]) }),
        (e) => live && setData({ error: e.message }));
    return () => { live = false; };
  }, [asset.id, span[0]]);
  const shade = useAlarmIntervals(ctx.api, asset.id, span[0], span[1]);
  return html`<div class="detail" ref=${box} data-testid=${`equipment-detail-${asset.id}`}>
    <div class="toolbar">
      <button type="button" onClick=${() => { const to = Date.now() / 1000; setSpan([to - HOUR_S, to]); }}>
        Refresh (last hour)</button>
      <span class="note" data-testid="alarm-shading-note">${shade.error
        ? `Alarm intervals unavailable: ${shade.error}`
        : `Shaded: ${shade.intervals.length} alarm interval(s), from the gateway's recent alerts (kept in memory since `
          + 'it started, not in the store: an alarm from before a restart is not shaded).'}</span>
    </div>
    ${data === null && html`<p class="note" role="status">Loading…</p>`}
    ${data?.error && html`<p class="error" role="alert">Plots unavailable: ${data.error}</p>`}
    ${data?.plots && data.plots.map(([metric, d]) => html`<${Plot} key=${metric} label=${metric} height=${140}
      data=${d} shade=${shade.intervals} span=${span} testid=${`plot-${asset.id}-${metric}`} />`)}
  </div>`;
}

function Row({ ctx, asset, open, toggle }) {
  const r = asset.reported;
  const state = r.anomaly ?? 'unknown';
  const channels = r.anomaly_channels ?? [];
  // The whole row opens its plots; its button (which a click or a key on it reaches too) is the keyboard's way in.
  return html`<tbody>
    <tr class=${`clickable ${stateClass(state)}`} data-testid=${`equipment-row-${asset.id}`} onClick=${toggle}>
      <th scope="row">
        <button type="button" class="link" aria-expanded=${open}
          data-testid=${`equipment-open-${asset.id}`}>${open ? '▾' : '▸'} ${asset.id}</button>
      </th>
      ${COLUMNS[asset.kind].map(([f, , d]) => (channels.includes(f)
        ? html`<td class="n flagged" data-testid=${`equipment-flag-${asset.id}-${f}`}>⚠ ${num(r[f], d)}</td>`
        : html`<td class="n">${num(r[f], d)}</td>`))}
      <td class="n">${num(r.anomaly_score, 2)}</td>
      <td><span class=${`badge ${stateClass(state)}`}>${state}</span>
        ${channels.length > 0 && html` <span class="channels">${channels.join(', ')}</span>`}
        ${state === 'not scored' && r.anomaly_reason && html` <span class="note">${r.anomaly_reason}</span>`}</td>
    </tr>
    ${open && html`<tr><td colspan=${COLUMNS[asset.kind].length + 3}><${Detail} ctx=${ctx} asset=${asset} /></td></tr>`}
  </tbody>`;
}

function EquipmentView({ ctx }) {
  const twin = useTwin();
  const [open, setOpen] = useState(null);
  const all = [...twin.assets].map(([id, a]) => ({ ...a, id }));
  return html`<div class="view view-equipment" data-testid="view-equipment">
    <h2>Equipment</h2>
    ${Object.entries(KINDS).map(([kind, title]) => {
      const rows = all.filter((a) => a.kind === kind).sort((a, b) => (a.id < b.id ? -1 : 1));
      return html`<section key=${kind}>
        <h3>${title}</h3>
        ${rows.length === 0 ? html`<p class="note">None reported.</p>` : html`<div class="table-wrap"><table class="data">
          <thead><tr><th scope="col">Asset</th>${COLUMNS[kind].map(([, l]) => html`<th scope="col" class="n">${l}</th>`)}
            <th scope="col" class="n">Anomaly score</th><th scope="col">Alarm</th></tr></thead>
          ${rows.map((a) => html`<${Row} key=${a.id} ctx=${ctx} asset=${a} open=${open === a.id}
            toggle=${() => setOpen(open === a.id ? null : a.id)} />`)}
        </table></div>`}
      </section>`;
    })}
  </div>`;
}

export default { id: 'equipment', title: 'Equipment', role: 'viewer', View: EquipmentView };
