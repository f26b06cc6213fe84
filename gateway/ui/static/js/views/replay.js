// Replay: the venue as the store saw it at any moment it still holds (GET /replay): a timeline to scrub, played at
// 1x, 10x or 60x, the map's tiles and the equipment's values as they were, and a chosen series plotted around the
// moment. One request at a time: while one is out, the latest position waits for its answer.
import { html, useEffect, useMemo, useRef, useState } from '../lib.js';
import { useTwin } from '../live.js';
import { loadSeries, num, Plot, plotWidth, seriesData, stateClass, when } from '../plot.js';
import { ZoneTile } from './map.js';

const SPEEDS = [1, 10, 60];
const TICK_MS = 250; // the playhead moves this often while playing
const AROUND_S = 900; // the plot shows this long either side of the moment

/** The replay document as the twin's shape: asset id -> {kind, reported} (kinds from the live twin). */
function assetsAt(doc, live) {
  const out = new Map();
  for (const [id, metrics] of Object.entries(doc?.assets ?? {})) {
    const reported = Object.fromEntries(Object.entries(metrics).map(([m, r]) => [m, r.value]));
    out.set(id, { id, kind: live.get(id)?.kind, zone: live.get(id)?.zone, reported });
  }
  for (const [zone, row] of Object.entries(doc?.compliance ?? {})) {
    out.set(`compliance:${zone}`, { id: `compliance:${zone}`, kind: 'sound_compliance', zone, reported: {
      state: row.state, limits: [{ limit: row.limit, limit_db: row.limit_db, level_db: null, state: row.state,
        projected_db: row.projected_db, allowed_db: null }] } });
  }
  return out;
}

function Equipment({ assets }) {
  const rows = [...assets.values()].filter((a) => a.kind === 'amplifier' || a.kind === 'power')
    .sort((a, b) => (a.id < b.id ? -1 : 1));
  if (rows.length === 0) return html`<p class="note">No equipment readings at this moment.</p>`;
  return html`<div class="table-wrap"><table class="data" data-testid="replay-equipment">
    <thead><tr><th scope="col">Asset</th><th scope="col" class="n">Temp °C</th><th scope="col" class="n">Current A</th>
      <th scope="col" class="n">Fan rpm</th><th scope="col" class="n">Protect</th><th scope="col" class="n">Power kW</th>
      <th scope="col" class="n">Anomaly score</th></tr></thead>
    <tbody>${rows.map((a) => {
      const r = a.reported;
      return html`<tr key=${a.id} data-testid=${`replay-row-${a.id}`}
          class=${r.protect > 0 ? stateClass('alarm') : ''}>
        <th scope="row">${a.id}</th><td class="n">${num(r.temperature_c)}</td>
        <td class="n">${num(r.current_a ?? r.current_l1_a, 2)}</td><td class="n">${num(r.fan_rpm, 0)}</td>
        <td class="n">${r.protect > 0 ? 'PROTECT' : num(r.protect, 0)}</td><td class="n">${num(r.power_kw, 2)}</td>
        <td class="n">${num(r.anomaly_score, 2)}</td></tr>`;
    })}</tbody>
  </table></div>`;
}

function Around({ ctx, at, doc }) {
  const box = useRef(null);
  const options = useMemo(() => Object.entries(doc?.assets ?? {})
    .flatMap(([id, metrics]) => Object.keys(metrics).map((m) => `${id}/${m}`)).sort(), [doc]);
  const [chosen, setChosen] = useState('');
  const series = options.includes(chosen) ? chosen : options.find((o) => o.endsWith('/laeq_db')) ?? options[0];
  const [data, setData] = useState(null);
  const centre = Math.round(at / 60) * 60; // asked again each minute of the playhead, not each step
  useEffect(() => {
    if (!series) return undefined;
    let live = true;
    const cut = series.lastIndexOf('/');
    const to = Math.min(centre + AROUND_S, (doc?.newest ?? centre) + 1);
    loadSeries(ctx.api, [[series.slice(0, cut), series.slice(cut + 1)]], centre - AROUND_S, to, plotWidth(box.current))
      .then((d) => live && setData(seriesData(d)), (e) => live && setData({ error: e.message }));
    return () => { live = false; };
  }, [series, centre]);
  const marker = [[at - AROUND_S / 300, at + AROUND_S / 300]];
  return html`<section ref=${box}>
    <h3>Around the moment</h3>
    <label>Series <select value=${series} onChange=${(e) => setChosen(e.currentTarget.value)}
        data-testid="replay-series">
      ${options.map((o) => html`<option key=${o} value=${o}>${o}</option>`)}
    </select></label>
    ${data?.error && html`<p class="error" role="alert">${data.error}</p>`}
    ${data?.x && html`<${Plot} data=${data} shade=${marker} height=${200} testid="replay-plot"
      span=${[centre - AROUND_S, centre + AROUND_S]}
      label=${`${series}, ${AROUND_S / 60} min either side (the moment marked)`} />`}
  </section>`;
}

function ReplayView({ ctx }) {
  const twin = useTwin();
  const [bounds, setBounds] = useState(null); // [oldest, newest]
  const [at, setAt] = useState(null);
  const [doc, setDoc] = useState(null);
  const [error, setError] = useState(null);
  const [speed, setSpeed] = useState(10);
  const [playing, setPlaying] = useState(false);
  const asking = useRef(false);
  const current = useRef(null); // the playhead, for the player's timer
  const newest = useRef(null); // where the player stops
  const wanted = useRef(null);

  const ask = (moment) => {
    wanted.current = moment;
    if (asking.current) return;
    asking.current = true;
    ctx.api.get(`/replay?at=${moment.toFixed(3)}`).then((d) => {
      setDoc(d);
      setError(null);
      if (d.oldest != null && d.newest != null) {
        newest.current = d.newest;
        setBounds((b) => (b && b[0] === d.oldest && b[1] === d.newest ? b : [d.oldest, d.newest]));
      }
    }, (e) => setError(e.message)).finally(() => {
      asking.current = false;
      if (wanted.current !== moment) ask(wanted.current);
    });
  };
  useEffect(() => { // a minute back: the compliance log holds a minute once it has ended
    const start = Date.now() / 1000 - 60;
    current.current = start;
    setAt(start);
    ask(start);
  }, []);
  useEffect(() => {
    if (!playing) return undefined;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      let next = current.current + (speed * (now - last)) / 1000; // as fast as asked, however late the tick
      last = now;
      if (newest.current !== null && next >= newest.current) { next = newest.current; setPlaying(false); }
      current.current = next;
      setAt(next);
      ask(next);
    }, TICK_MS);
    return () => clearInterval(timer);
  }, [playing, speed]);

  const assets = useMemo(() => assetsAt(doc, twin.assets), [doc]);
  const zones = ctx.layout?.zones ?? [];
  const compliance = { zones: doc?.compliance ?? {} };
  const go = (t) => {
    const moment = bounds ? Math.min(bounds[1], Math.max(bounds[0], t)) : t;
    current.current = moment;
    setAt(moment);
    ask(moment);
  };

  return html`<div class="view view-replay" data-testid="view-replay">
    <h2>Replay</h2>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${bounds === null && !error && html`<p class="note" role="status">${doc ? 'The store holds no telemetry yet.'
      : 'Loading…'}</p>`}
    ${bounds && html`<div class="timeline">
      <label class="grow">Moment
        <input type="range" min=${Math.floor(bounds[0])} max=${Math.ceil(bounds[1])} step="1"
          value=${Math.round(at)} onInput=${(e) => go(Number(e.currentTarget.value))} data-testid="replay-timeline"
          aria-valuetext=${when(at)} /></label>
      <div class="toolbar wrap">
        <button type="button" onClick=${() => go(at - 60)} data-testid="replay-back">−1 min</button>
        <button type="button" onClick=${() => go(at + 60)} data-testid="replay-forward">+1 min</button>
        <button type="button" onClick=${() => setPlaying(!playing)} aria-pressed=${playing}
          data-testid="replay-play">${playing ? 'Pause' : 'Play'}</button>
        <label>Speed <select value=${String(speed)} onChange=${(e) => setSpeed(Number(e.currentTarget.value))}
            data-testid="replay-speed">
          ${SPEEDS.map((s) => html`<option key=${s} value=${String(s)}>${s}x</option>`)}
        </select></label>
        <span data-testid="replay-at">${when(at)}</span>
        <span class="note">store holds ${when(bounds[0])} to ${when(bounds[1])}</span>
      </div>
    </div>`}
    ${doc && html`<section>
      <h3>The map at ${when(doc.at)}</h3>
      <div class="plan">
        ${zones.map((z) => html`<${ZoneTile} key=${z.name} zone=${z} assets=${assets} compliance=${compliance}
          prefix="replay-" />`)}
      </div>
    </section>
    <section><h3>Equipment at ${when(doc.at)}</h3><${Equipment} assets=${assets} /></section>
    <${Around} ctx=${ctx} at=${at} doc=${doc} />`}
  </div>`;
}

export default { id: 'replay', title: 'Replay', role: 'viewer', View: ReplayView };
