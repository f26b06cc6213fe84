// The timecode cue list (everyone sees it; an operator arms, fires and skips): the timecode now, whether it runs,
// the next cue, and every cue with its state in this pass (next, armed, fired, skipped, disarmed, refused). The cues
// themselves come from GET /cues when the view opens and after each action; the timecode and the states are live
// from the twin asset `cue_list` (at most four updates a second).
import { html, useEffect, useState } from '../lib.js';
import { useAsset } from '../live.js';

const STATE_CLASS = { next: 'st-warn', fired: 'st-ok', refused: 'st-bad', armed: 'st-unknown' };

function what(cue) {
  if (cue.preset) return cue.preset;
  const e = cue.effect ?? {};
  return `${e.kind ?? 'effect'}${e.colour ? ` ${e.colour}` : ''}`;
}

function CuesView({ ctx }) {
  const live = useAsset('cue_list')?.reported;
  const [list, setList] = useState(null);
  const [message, setMessage] = useState(null); // {text, error}
  const operator = ctx.can('operator');

  const refresh = () => ctx.api.get('/cues').then(setList, (e) => setList({ missing: e.status === 404, error: e }));
  useEffect(() => { refresh(); }, []);

  if (!list) return html`<div class="view view-cues" data-testid="view-cues"><h2>Cues</h2>
    <p class="note" role="status">Loading…</p></div>`;
  if (list.error) {
    return html`<div class="view view-cues" data-testid="view-cues"><h2>Cues</h2>
      <p class="note" data-testid="cues-none">${list.missing
        ? 'No cue list is configured (show.cues.file in the configuration).' : list.error.message}</p></div>`;
  }
  const state = live?.state ?? list.state;
  const timecode = live?.timecode ?? list.timecode;
  const next = live ? live.next : list.next;
  const problem = live ? live.problem : list.problem;
  const rate = live ? live.rate : list.rate;
  const act = (verb, id) => ctx.api.send('POST', `/cues/${encodeURIComponent(id)}/${verb}`).then((answer) => {
    setMessage({ text: verb === 'fire' ? `Fired ${id} in ${(answer.zones ?? []).join(', ')}` : `${verb === 'arm'
      ? 'Armed' : 'Skipped'} ${id}` });
    refresh();
  }, (e) => setMessage({ text: `${e.message || e.code}${e.retryAfter != null ? ` (retry after ${e.retryAfter} s)`
    : ''}`, error: true }));

  return html`<div class="view view-cues" data-testid="view-cues">
    <h2>Cues</h2>
    <div class="toolbar wrap cue-status">
      <span class="timecode" data-testid="cue-timecode" aria-label="timecode now">${timecode ?? '--:--:--:--'}</span>
      <span class=${`badge ${state === 'running' ? 'st-ok' : state === 'stopped' ? 'st-warn' : 'st-unknown'}`}
        data-testid="cue-running">${state}</span>
      <span data-testid="cue-rate">${rate ? `${rate} fps` : 'rate: the timecode\u2019s'}</span>
      <span data-testid="cue-next">Next: ${next ?? 'none'}</span>
      <span class="note">fired ${list.lead_ms} ms ahead of its timecode</span>
    </div>
    ${problem && html`<p class="message error" role="alert" data-testid="cue-problem">${problem}</p>`}
    <p class=${message?.error ? 'message error' : 'message'} role=${message?.error ? 'alert' : 'status'}
      data-testid="cue-message">${message?.text ?? ''}</p>
    <div class="table-wrap"><table class="data">
      <thead><tr><th scope="col">Timecode</th><th scope="col">Cue</th><th scope="col">Look</th>
        <th scope="col">Zones</th><th scope="col">State</th>${operator && html`<th scope="col">Actions</th>`}</tr></thead>
      <tbody>${list.cues.map((cue) => {
        const shown = cue.id === next && (live?.cues?.[cue.id] ?? cue.state) !== 'fired' ? 'next'
          : (live?.cues?.[cue.id] ?? cue.state);
        return html`<tr key=${cue.id} data-testid=${`cue-${cue.id}`}>
          <td class="nowrap">${cue.timecode}</td>
          <th scope="row">${cue.id}</th>
          <td>${cue.effect?.colour && html`<span class="swatch" style=${{ background: cue.effect.colour }}
            aria-hidden="true"></span>`}${what(cue)}</td>
          <td>${cue.zones.length ? cue.zones.join(', ') : 'default'}</td>
          <td><span class=${`badge ${STATE_CLASS[shown] ?? 'st-unknown'}`} title=${cue.why}
            data-testid=${`cue-state-${cue.id}`}>${shown}</span></td>
          ${operator && html`<td class="nowrap">
            <button type="button" onClick=${() => act('arm', cue.id)} data-testid=${`cue-arm-${cue.id}`}
              aria-label=${`arm ${cue.id}`}>Arm</button>
            <button type="button" onClick=${() => act('fire', cue.id)} data-testid=${`cue-fire-${cue.id}`}
              aria-label=${`fire ${cue.id} now`}>Fire</button>
            <button type="button" onClick=${() => act('skip', cue.id)} data-testid=${`cue-skip-${cue.id}`}
              aria-label=${`skip ${cue.id}`}>Skip</button>
          </td>`}
        </tr>`;
      })}</tbody>
    </table></div>
  </div>`;
}

export default { id: 'cues', title: 'Cues', role: 'viewer', View: CuesView };
