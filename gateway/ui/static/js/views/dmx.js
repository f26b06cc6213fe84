// DMX: each universe's 512 channels as a grid of cells with their levels, asked of /dmx at most POLL_HZ times a
// second for all the universes shown, only while the view is shown and the page visible (the next round waits
// for the last one's answers).
import { html, useEffect, useState } from '../lib.js';

const POLL_HZ = 4;
const CHANNELS = 512;
const MAX_BACKOFF_MS = 10000;

/** The levels of each of `universes` from GET /dmx, polled together while mounted: universe -> {levels, at, error}. */
function useLevels(api, universes) {
  const [state, setState] = useState({});
  const key = universes.join(',');
  useEffect(() => {
    let live = true;
    let timer = 0;
    let backoff = 0; // after a failure (the gateway away), the next round waits longer, up to MAX_BACKOFF_MS
    const poll = () => {
      if (!live) return;
      if (document.hidden) { timer = setTimeout(poll, 1000 / POLL_HZ); return; }
      const asked = performance.now();
      Promise.all(universes.map((u) => api.get(`/dmx?universe=${encodeURIComponent(u)}`).then(
        (doc) => [u, { levels: doc.levels, at: Date.now(), error: null }],
        (e) => [u, { error: e.message }],
      ))).then((answers) => {
        if (!live) return;
        setState((before) => Object.fromEntries(answers.map(([u, a]) => [u, a.levels ? a : { ...before[u], ...a }])));
        const failed = answers.some(([, a]) => !a.levels);
        backoff = failed ? Math.min(MAX_BACKOFF_MS, backoff ? backoff * 2 : 1000) : 0;
        timer = setTimeout(poll, Math.max(backoff, 1000 / POLL_HZ - (performance.now() - asked)));
      });
    };
    poll();
    return () => { live = false; clearTimeout(timer); };
  }, [key]);
  return state;
}

function Universe({ universe, state }) {
  const { levels, at, error } = state ?? {};
  const lit = levels ? levels.filter((v) => v > 0).length : 0;
  return html`<section class="universe" data-testid=${`dmx-universe-${universe}`}>
    <h3>Universe ${universe}</h3>
    <p class="note" role="status">${levels
      ? `${lit} of ${CHANNELS} channels above 0 · updated ${new Date(at).toLocaleTimeString([], { hour12: false })}`
      : 'Loading…'}${error ? ` · ${error}` : ''}</p>
    ${levels && html`<ol class="dmx-grid" aria-label=${`universe ${universe} levels`}>
      ${Array.from({ length: CHANNELS }, (_, i) => {
        const v = levels[i] ?? 0;
        return html`<li key=${i} class=${v > 0 ? 'on' : ''} title=${`channel ${i + 1}: ${v}`}
          data-testid=${`dmx-${universe}-${i + 1}`}>
          <span class="ch">${i + 1}</span><span class="lv">${v}</span>
          <span class="bar" style=${{ height: `${(v / 255) * 100}%` }} aria-hidden="true"></span>
        </li>`;
      })}
    </ol>`}
  </section>`;
}

function DmxView({ ctx }) {
  const universes = ctx.layout?.universes ?? [];
  const [chosen, setChosen] = useState('all');
  const shown = chosen === 'all' ? universes : universes.filter((u) => String(u) === chosen);
  const levels = useLevels(ctx.api, shown);
  return html`<div class="view view-dmx" data-testid="view-dmx">
    <h2>DMX</h2>
    ${universes.length === 0 ? html`<p class="note">No DMX universes configured.</p>` : html`
      <label>Universe <select value=${chosen} onChange=${(e) => setChosen(e.currentTarget.value)}
          data-testid="dmx-choose">
        <option value="all">All</option>
        ${universes.map((u) => html`<option key=${u} value=${String(u)}>${u}</option>`)}
      </select></label>`}
    ${shown.map((u) => html`<${Universe} key=${u} universe=${u} state=${levels[u]} />`)}
  </div>`;
}

export default { id: 'dmx', title: 'DMX', role: 'viewer', View: DmxView };
