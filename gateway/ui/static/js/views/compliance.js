// Compliance: each zone's LAeq against its limits, the margin left and the projection to the show's end (the twin's
// compliance:<zone> live, the windows from /compliance), and the per-minute log as CSV: fetched with the token and
// saved through a blob URL, since a plain link cannot carry the Authorization header.
import { html, useState } from '../lib.js';
import { useTwin } from '../live.js';
import { num, stateClass } from '../plot.js';
import { useComplianceDoc } from './map.js';

function isoLocal(d) {
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function Download({ api, zones, venue }) {
  const [zone, setZone] = useState('');
  const [hours, setHours] = useState('24');
  const [status, setStatus] = useState(null);
  const download = async () => {
    setStatus({ text: 'Downloading…' });
    const to = new Date();
    const from = new Date(to.getTime() - Number(hours) * 3600 * 1000);
    const query = new URLSearchParams({ from: from.toISOString().replace(/\.\d+Z$/, 'Z'),
      to: to.toISOString().replace(/\.\d+Z$/, 'Z') });
    if (zone) query.set('zone', zone);
    try {
      const text = await api.get(`/compliance/history.csv?${query}`);
      const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = `${venue}-sound-levels-${zone || 'all'}-from-${isoLocal(from).replace('T', '_').replace(':', '')}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      const rows = Math.max(0, text.split('\r\n').filter(Boolean).length - 1);
      setStatus({ text: `Saved ${rows} rows (${a.download}).` });
    } catch (e) {
      setStatus({ text: `Export failed: ${e.message}`, error: true });
    }
  };
  return html`<div class="toolbar wrap">
    <label>Zone <select value=${zone} onChange=${(e) => setZone(e.currentTarget.value)} data-testid="csv-zone">
      <option value="">All zones</option>
      ${zones.map((z) => html`<option key=${z} value=${z}>${z}</option>`)}
    </select></label>
    <label>Last <select value=${hours} onChange=${(e) => setHours(e.currentTarget.value)} data-testid="csv-hours">
      ${['1', '6', '24', '72', '168'].map((h) => html`<option key=${h} value=${h}>${h} h</option>`)}
    </select></label>
    <button type="button" onClick=${download} data-testid="compliance-csv">Download CSV</button>
    <span class=${status?.error ? 'error' : 'note'} role="status" data-testid="compliance-csv-status">
      ${status?.text ?? ''}</span>
  </div>`;
}

function ComplianceView({ ctx }) {
  const twin = useTwin();
  const reported = [...twin.assets.values()].filter((a) => a.kind === 'sound_compliance');
  const versions = reported.map((a) => a.version).join(',');
  const doc = useComplianceDoc(ctx.api, versions);
  const margin = doc?.warn_margin_db;
  const names = [...new Set([...reported.map((a) => a.zone), ...Object.keys(doc?.zones ?? {})])]
    .filter(Boolean).sort();
  return html`<div class="view view-compliance" data-testid="view-compliance">
    <h2>Sound-level compliance</h2>
    <p class="note" data-testid="compliance-profile">Profile ${doc?.profile ?? '–'}${doc?.show_end
      ? ` · show ends ${doc.show_end}` : ''}${margin != null ? ` · warning from ${num(margin)} dB under a limit` : ''}.
      Margin: the limit less the level so far.</p>
    ${doc?.error && html`<p class="error" role="alert">${doc.error}</p>`}
    ${names.length === 0 && html`<p class="note">No zone is judged (no [compliance] section, or no meter yet).</p>`}
    <div class="table-wrap"><table class="data">
      <thead><tr><th scope="col">Zone</th><th scope="col">State</th><th scope="col" class="n">LAeq 1 min</th>
        <th scope="col" class="n">LAeq 15 min</th><th scope="col" class="n">LAeq 60 min</th>
        <th scope="col" class="n">Lmax</th><th scope="col">Limit</th><th scope="col" class="n">Warn at</th>
        <th scope="col" class="n">Level</th>
        <th scope="col" class="n">Margin</th><th scope="col" class="n">At show end</th>
        <th scope="col" class="n">Keep ≤</th><th scope="col" class="n">Measured of 60 min</th></tr></thead>
      <tbody>${names.flatMap((zone) => {
        const live = twin.assets.get(`compliance:${zone}`)?.reported ?? {};
        const z = doc?.zones?.[zone] ?? {};
        const limits = live.limits ?? z.limits ?? [];
        const state = live.state ?? 'unknown';
        return (limits.length ? limits : [{}]).map((l, i) => html`<tr key=${`${zone}-${i}`}
            class=${stateClass(l.state ?? state)} data-testid=${`compliance-row-${zone}${i ? `-${i}` : ''}`}>
          ${i === 0 && html`<th scope="row" rowspan=${limits.length || 1}>${zone}</th>
            <td rowspan=${limits.length || 1}><span class=${`badge ${stateClass(state)}`}
              data-testid=${`compliance-zone-state-${zone}`}>${state}</span></td>
            <td class="n" rowspan=${limits.length || 1}>${num(z.laeq_1min_db)}</td>
            <td class="n" rowspan=${limits.length || 1}>${num(z.laeq_15min_db)}</td>
            <td class="n" rowspan=${limits.length || 1}>${num(z.laeq_60min_db)}</td>
            <td class="n" rowspan=${limits.length || 1}>${num(z.lmax_db)}</td>`}
          <td class="nowrap">${l.limit ?? '–'}${l.limit_db != null ? ` ≤ ${num(l.limit_db, 0)} dB` : ''}
            ${limits.length > 1 && l.state && html` <span class=${`badge ${stateClass(l.state)}`}>${l.state}</span>`}</td>
          <td class="n">${l.limit_db != null && margin != null ? num(l.limit_db - margin) : '–'}</td>
          <td class="n">${l.partial ? html`<abbr title="the window is still filling: only the level already certain">≥ ${num(l.level_db)}</abbr>` : num(l.level_db)}</td>
          <td class="n">${l.level_db != null && l.limit_db != null ? num(l.limit_db - l.level_db) : '–'}</td>
          <td class="n">${num(l.projected_db)}</td>
          <td class="n">${num(l.allowed_db)}</td>
          ${i === 0 && html`<td class="n" rowspan=${limits.length || 1}>${live.coverage_60min != null
            ? `${num(live.coverage_60min * 100, 0)}%` : '–'}</td>`}
        </tr>`);
      })}</tbody>
    </table></div>
    <h3>Export</h3>
    <${Download} api=${ctx.api} zones=${names} venue=${ctx.layout?.venue ?? 'venue'} />
  </div>`;
}

export default { id: 'compliance', title: 'Compliance', role: 'viewer', View: ComplianceView };
