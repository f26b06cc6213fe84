// The show (operator): presets as big buttons with a zone chooser, stop and blackout, tempo and tap tempo, the recent
// effects with their delivery, and an effect's preview played zone by zone from the frames the bands would render
// (POST /effects with "preview": the engine's own renderer).
import { html, useEffect, useRef, useState } from '../lib.js';
import { useTwin } from '../live.js';
import { clock, num, stateClass } from '../plot.js';

const PREVIEW_MS = 4000;
const DOTS = 24; // people drawn per zone in the preview

/** An API failure as one line for a person: a 429 says when the same request will be taken. */
function failure(e) {
  const retry = e.retryAfter != null ? ` (retry after ${e.retryAfter} s)` : '';
  return `${e.message || e.code || 'request failed'}${retry}`;
}

function Preview({ preview }) {
  const canvas = useRef(null);
  const [frame, setFrame] = useState(0);
  useEffect(() => {
    const el = canvas.current;
    if (!el || !preview) return undefined;
    const zones = Object.keys(preview.zones);
    const count = Math.max(1, ...zones.map((z) => preview.zones[z].length));
    const started = performance.now();
    let raf = 0;
    let shown = -1;
    const draw = (now) => {
      const i = Math.floor((now - started) / preview.step_ms) % count;
      if (i !== shown) {
        shown = i;
        const ctx = el.getContext('2d');
        const width = el.width;
        const row = el.height / zones.length;
        ctx.fillStyle = '#0b0f14';
        ctx.fillRect(0, 0, width, el.height);
        zones.forEach((zone, z) => {
          const frames = preview.zones[zone];
          const [r, g, b] = frames[Math.min(i, frames.length - 1)] ?? [0, 0, 0];
          ctx.fillStyle = '#c8d0da';
          ctx.font = '14px system-ui, sans-serif';
          ctx.textBaseline = 'middle';
          ctx.fillText(zone, 8, z * row + row / 2); // canvas text: drawn, never parsed as markup
          const left = 110;
          const step = (width - left - 10) / DOTS;
          ctx.fillStyle = `rgb(${r}, ${g}, ${b})`;
          ctx.strokeStyle = '#3a4656';
          for (let d = 0; d < DOTS; d++) {
            ctx.beginPath();
            ctx.arc(left + step * (d + 0.5), z * row + row / 2 + ((d % 2) ? 5 : -5), Math.min(step, row) * 0.3,
              0, 2 * Math.PI);
            ctx.fill();
            ctx.stroke();
          }
        });
        setFrame(i);
      }
      raf = requestAnimationFrame(draw);
    };
    raf = requestAnimationFrame(draw);
    return () => cancelAnimationFrame(raf);
  }, [preview]);
  if (!preview) return null;
  const zones = Object.keys(preview.zones);
  const count = Math.max(1, ...zones.map((z) => preview.zones[z].length));
  const e = preview.effect;
  return html`<div class="preview" data-testid="preview">
    <p>Preview: ${preview.name} (${e.kind}${e.colour ? ` ${e.colour}` : ''}), ${count} frames of ${preview.step_ms} ms,
      looping. Frame <span data-testid="preview-frame">${frame + 1}</span> of ${count}.</p>
    <canvas ref=${canvas} width="640" height=${Math.max(60, 48 * zones.length)} data-testid="preview-canvas"
      role="img" aria-label=${`preview of ${preview.name}, zone by zone: ${zones.join(', ')}`}></canvas>
  </div>`;
}

function Recent({ effects }) {
  if (!effects) return html`<p class="note" role="status">Loading…</p>`;
  if (effects.length === 0) return html`<p class="note">Nothing fired yet.</p>`;
  return html`<div class="table-wrap"><table class="data">
    <thead><tr><th scope="col">Starts</th><th scope="col">Preset</th><th scope="col">Effect</th>
      <th scope="col">Zones</th><th scope="col">Delivery</th></tr></thead>
    <tbody>${effects.map((f) => html`<tr key=${f.effect_id} data-testid=${`recent-${f.effect_id}`}>
      <td>${f.starts_at ? clock(Date.parse(f.starts_at) / 1000) : '–'}</td>
      <td class="preset-name">${f.preset ?? '(inline)'}</td>
      <td>${f.colour && html`<span class="swatch" style=${{ background: f.colour }} aria-hidden="true"></span>`}
        ${f.kind ?? ''}${f.colour ? ` ${f.colour}` : ''}</td>
      <td>${(f.zones ?? []).join(', ')}</td>
      <td>${Object.entries(f.delivery ?? {}).map(([name, state]) => html`<span key=${name}
        class=${`badge ${stateClass(state)}`}>${name}: ${state}</span> `)}</td>
    </tr>`)}</tbody>
  </table></div>`;
}

/** The blackout asked twice: the confirming button takes the focus, so a keyboard confirms or cancels at once. */
function ConfirmBlackout({ confirm, cancel }) {
  const yes = useRef(null);
  useEffect(() => yes.current?.focus(), []);
  return html`<span class="confirm" role="group" aria-label="confirm blackout">Black out every zone and DMX?
    <button type="button" class="danger" ref=${yes} data-testid="blackout-confirm" onClick=${confirm}>
      Yes, blackout</button>
    <button type="button" data-testid="blackout-cancel" onClick=${cancel}>Cancel</button>
  </span>`;
}

function ShowView({ ctx }) {
  const twin = useTwin();
  const control = twin.assets.get('show_control')?.reported ?? {};
  const [show, setShow] = useState(null);
  const [zones, setZones] = useState([]); // chosen; none chosen: the preset's own zones, else all
  const [message, setMessage] = useState(null); // {text, error}
  const [confirming, setConfirming] = useState(false);
  const [tempo, setTempo] = useState('');
  const [preview, setPreview] = useState(null);
  const lastEffect = control.last_effect?.effect_id ?? '';

  const refresh = () => ctx.api.get('/show').then(setShow, (e) => setMessage({ text: failure(e), error: true }));
  useEffect(() => { refresh(); }, [lastEffect]);

  const presets = show?.presets ?? (ctx.layout?.presets ?? []).map((name) => ({ name }));
  const allZones = show?.zones ?? ctx.layout?.zones ?? []; // /show's say how late each starts (sound's travel)
  const tempoNow = control.tempo_bpm ?? show?.tempo_bpm;

  const act = (what, request) => request.then((answer) => {
    setMessage({ text: what(answer) });
    refresh();
  }, (e) => setMessage({ text: failure(e), error: true }));
  const body = (preset) => ({ preset, ...(zones.length ? { zones } : {}) });
  const fire = (name) => act((a) => `Fired ${name} in ${(a.zones ?? []).join(', ')}`,
    ctx.api.send('POST', '/effects', body(name)));
  const previewOf = (name) => ctx.api.send('POST', '/effects', { ...body(name), preview: true, duration_ms: PREVIEW_MS })
    .then((p) => { setPreview({ ...p, name }); setMessage(null); },
      (e) => setMessage({ text: failure(e), error: true }));
  const toggleZone = (z) => setZones(zones.includes(z) ? zones.filter((x) => x !== z) : [...zones, z]);
  const setBpm = (ev) => {
    ev.preventDefault();
    act((a) => `Tempo ${num(a.tempo_bpm)} BPM`, ctx.api.send('PUT', '/tempo', { bpm: Number(tempo) }));
  };

  return html`<div class="view view-show" data-testid="view-show">
    <h2>Show</h2>
    <p class=${message?.error ? 'message error' : 'message'} role=${message?.error ? 'alert' : 'status'}
      data-testid="show-message">${message?.text ?? ''}</p>
    <fieldset class="zones-choice">
      <legend>Zones (none ticked: the preset's own, else all)</legend>
      ${allZones.map(({ name, delay_ms: delay }) => html`<label key=${name} class="check">
        <input type="checkbox" checked=${zones.includes(name)} onChange=${() => toggleZone(name)}
          data-testid=${`zone-choice-${name}`} />${` ${name}${delay != null ? ` (+${delay} ms)` : ''}`}</label>`)}
    </fieldset>
    <div class="presets">
      ${presets.map((p) => html`<div class="preset" key=${p.name}>
        <button type="button" class="big" onClick=${() => fire(p.name)} data-testid=${`preset-${p.name}`}>
          ${p.colour && html`<span class="swatch" style=${{ background: p.colour }} aria-hidden="true"></span>`}
          <span class="preset-label">${p.name}</span>
          ${p.kind && html`<small>${p.kind}${p.flashing ? ` · flashes ${num(p.flash_hz)} Hz` : ''}</small>`}
        </button>
        <button type="button" class="small" onClick=${() => previewOf(p.name)} data-testid=${`preview-${p.name}`}
          aria-label=${`preview ${p.name}`}>Preview</button>
      </div>`)}
    </div>
    <div class="toolbar wrap">
      <button type="button" onClick=${() => act(() => 'Stopped every effect', ctx.api.send('DELETE', '/effects'))}
        data-testid="stop">Stop</button>
      ${confirming
        ? html`<${ConfirmBlackout} cancel=${() => setConfirming(false)} confirm=${() => {
            setConfirming(false);
            act(() => 'Blackout: effects stopped, DMX at 0', ctx.api.send('POST', '/blackout'));
          }} />`
        : html`<button type="button" class="danger" onClick=${() => setConfirming(true)}
            data-testid="blackout">Blackout…</button>`}
      <form class="tempo" onSubmit=${setBpm}>
        <label>Tempo (BPM) <input type="number" min="1" max="999" step="0.1" required value=${tempo}
          placeholder=${num(tempoNow)} onInput=${(e) => setTempo(e.currentTarget.value)}
          data-testid="tempo-input" /></label>
        <button type="submit" data-testid="tempo-set">Set</button>
      </form>
      <button type="button" onClick=${() => act((a) => `Tap: ${num(a.tempo_bpm)} BPM`,
        ctx.api.send('POST', '/tempo/tap'))} data-testid="tempo-tap">Tap</button>
      <span data-testid="tempo-now">Now ${num(tempoNow)} BPM</span>
    </div>
    <${Preview} preview=${preview} />
    <section data-testid="recent-effects">
      <h3>Recent effects</h3>
      <${Recent} effects=${show ? show.recent : null} />
    </section>
  </div>`;
}

export default { id: 'show', title: 'Show', role: 'operator', View: ShowView };
