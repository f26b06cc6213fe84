// The box at a glance: who it is and how long it has run, every driver and service with its state (their details
// for admin), the store, the cloud link, the event loop's lag, and the alerts as they are raised and cleared.
// Unit states come live from the twin; the figures the twin does not carry from /health, asked every HEALTH_MS
// while the view is shown.
import { html, useEffect, useState } from '../lib.js';
import { useTwin } from '../live.js';

const HEALTH_MS = 5000;

const RUNNING = new Set(['running', 'ok', 'online', 'loaded']);

function tone(state) {
  const s = String(state ?? 'unknown').toLowerCase();
  if (RUNNING.has(s)) return 'ok';
  if (s === 'starting' || s === 'connecting' || s === 'warning' || s === 'backoff' || s === 'degraded') return 'warn';
  if (s === 'unknown') return 'unknown';
  return 'bad';
}

const ICON = { ok: '✔', warn: '▲', bad: '✖', unknown: '?' };

export function Badge({ state, testid }) {
  const t = tone(state);
  return html`<span class=${`pill ${t}`} data-testid=${testid}><span aria-hidden="true">${ICON[t]} </span>${
    state ?? 'unknown'}</span>`;
}

function bytes(n) {
  if (typeof n !== 'number') return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

function duration(s) {
  if (typeof s !== 'number' || !Number.isFinite(s)) return '–';
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const parts = d ? [`${d} d`, `${h} h`] : h ? [`${h} h`, `${m} min`] : m ? [`${m} min`, `${s % 60} s`] : [`${s} s`];
  return parts.join(' ');
}

function time(iso) {
  const d = iso instanceof Date ? iso : new Date(iso);
  return Number.isNaN(d.getTime()) ? '–' : d.toLocaleTimeString([], { hour12: false });
}

function KV({ label, children, testid }) {
  return html`<div class="kv" data-testid=${testid}><dt class="k">${label}</dt><dd class="v">${children}</dd></div>`;
}

/** /health while shown, every HEALTH_MS: {doc, at (Date), error}. */
function useHealth(api) {
  const [state, setState] = useState({ doc: null, at: null, error: null });
  useEffect(() => {
    let live = true;
    let timer = null;
    const load = async () => {
      try {
        const doc = await api.get('/health');
        if (live) setState({ doc, at: new Date(), error: null });
      } catch (err) {
        if (live) setState((s) => ({ ...s, error: err.message }));
      }
      if (live) timer = setTimeout(load, HEALTH_MS);
    };
    load();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, [api]);
  return state;
}

function useNow(ms = 1000) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}

// -- alerts -------------------------------------------------------------------------------------------------------

/** A key that moves when the twin shows a condition an alert may follow (a zone's sound state, an equipment
 * anomaly, a unit's state): the alerts are asked for again then, besides every HEALTH_MS. */
export function alertSignature(assets) {
  const parts = [];
  for (const [id, asset] of assets) {
    const r = asset.reported || {};
    if (asset.kind === 'sound_compliance') parts.push(`${id}=${r.state}`);
    else if (typeof r.anomaly === 'string') parts.push(`${id}=${r.anomaly}`);
    else if (asset.kind === 'driver' || asset.kind === 'service') parts.push(`${id}=${r.state}`);
  }
  return parts.join(',');
}

const SEVERITY = { raised: 'bad', cleared: 'ok', event: 'warn' };

function Alerts({ alerts, error }) {
  return html`
    <section class="card wide" data-testid="alerts" aria-labelledby="alerts-title">
      <h2 id="alerts-title">Alerts</h2>
      ${error && html`<p class="error" role="alert">The alerts cannot be read: ${error}</p>`}
      ${!alerts ? html`<p class="note">Loading…</p>` : alerts.standing.length === 0
        ? html`<p class="note" data-testid="alerts-none">✔ No alert standing.</p>`
        : html`<ul class="alerts">${alerts.standing.map((a) => html`
            <li key=${a.key} class="alert bad" data-testid="alert-standing">
              <span aria-hidden="true">✖ </span><strong>${a.kind}</strong>: ${a.text}
              <span class="muted"> (since ${time(a.since)})</span></li>`)}</ul>`}
      ${alerts && alerts.recent.length > 0 && html`
        <h3>Raised and cleared</h3>
        <ol class="alert-log" data-testid="alert-log">
          ${alerts.recent.map((e, i) => html`
            <li key=${i} class=${`alert ${SEVERITY[e.state] || 'warn'}`}><time>${time(e.time)}</time>
              ${' '}${e.state}: <strong>${e.kind}</strong> ${e.text}</li>`)}
        </ol>`}
    </section>`;
}

/** /alerts, asked when the view opens, every HEALTH_MS, and when `signature` moves. */
function useAlerts(api, signature) {
  const [state, setState] = useState({ alerts: null, error: null });
  useEffect(() => {
    let live = true;
    api.get('/alerts').then((alerts) => live && setState({ alerts, error: null }),
                            (err) => live && setState((s) => ({ ...s, error: err.message })));
    return () => { live = false; };
  }, [api, signature]);
  return state;
}

// -- the units ----------------------------------------------------------------------------------------------------

function Detail({ detail }) {
  if (!detail || typeof detail !== 'object') return null;
  return html`
    <details class="detail">
      <summary>details</summary>
      <dl>${Object.entries(detail).map(([k, v]) => html`
        <div class="kv" key=${k}><dt class="k">${k}</dt><dd class="v">${
          typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}</dd></div>`)}</dl>
    </details>`;
}

function Units({ title, kind, assets, health, admin }) {
  const rows = [...assets].filter(([, a]) => a.kind === kind)
    .map(([id, a]) => ({ name: id.slice(kind.length + 1), reported: a.reported || {} }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return html`
    <section class="card" data-testid=${`${kind}s`} aria-labelledby=${`${kind}s-title`}>
      <h2 id=${`${kind}s-title`}>${title}</h2>
      ${rows.length === 0 ? html`<p class="note">None.</p>` : html`
      <table class="units">
        <thead><tr><th scope="col">name</th><th scope="col">state</th><th scope="col">restarts</th></tr></thead>
        <tbody>${rows.map(({ name, reported }) => {
          const unit = health && (health[`${kind}s`] || {})[name];
          return html`
          <tr key=${name} data-testid=${`${kind}-${name}`}>
            <th scope="row">${name}</th>
            <td><${Badge} state=${reported.state} testid=${`${kind}-${name}-state`} />
              ${admin && unit && unit.error ? html`<div class="error small">${unit.error}</div>` : null}
              ${admin && unit ? html`<${Detail} detail=${unit.detail} />` : null}</td>
            <td class="n">${reported.restarts ?? 0}</td>
          </tr>`;
        })}</tbody>
      </table>`}
    </section>`;
}

// -- the view -----------------------------------------------------------------------------------------------------

function View({ ctx }) {
  const twin = useTwin();
  const { doc: health, at, error } = useHealth(ctx.api);
  const now = useNow();
  // (the health's time of answer moves every HEALTH_MS: the alerts are asked for with it)
  const { alerts, error: alertsError } = useAlerts(ctx.api, `${alertSignature(twin.assets)}@${at && at.getTime()}`);
  const layout = ctx.layout;
  const admin = ctx.can('admin');
  // The box's clock against this device's, from the login's answer (its time in transit counted against the box).
  const [offset] = useState(() => (Date.parse(layout.now) - Date.now()) / 1000);
  const uptime = health && at ? health.uptime_s + (now - at.getTime()) / 1000
    : (now - Date.parse(layout.started_at)) / 1000;
  const store = health && health.store;
  const lag = health && health.loop_lag;
  const cloud = health && health.services && health.services.cloud;
  const cloudDetail = (cloud && cloud.detail) || {};
  const outbox = cloudDetail.outbox;
  const backlog = health ? Math.max(0, health.readings_total - store.committed_rows - store.dropped_rows) : null;

  return html`
    <div class="view view-overview" data-testid="view-overview">
      <h1 class="view-title">Overview</h1>
      ${error && html`<p class="error" role="alert" data-testid="health-error">The gateway's health cannot be read:
        ${error}</p>`}
      <div class="grid">
        <section class="card" data-testid="box" aria-labelledby="box-title">
          <h2 id="box-title">The box</h2>
          <dl>
            <${KV} label="gateway" testid="box-gateway">${layout.gateway}<//>
            <${KV} label="venue" testid="box-venue">${layout.venue}<//>
            <${KV} label="version" testid="box-version">${layout.version}<//>
            <${KV} label="status" testid="box-status"><${Badge} state=${health ? health.status : 'unknown'} /><//>
            <${KV} label="uptime" testid="box-uptime">${duration(uptime)}<//>
            <${KV} label="clock" testid="box-clock">${Math.abs(offset) < 2
              ? html`<span class="pill ok">✔ in step with this device</span>`
              : html`<span class="pill warn">▲ ${offset > 0 ? '+' : ''}${offset.toFixed(1)} s against this
                  device</span>`}<//>
            <${KV} label="live view" testid="box-live">${twin.connected
              ? html`<span class="pill ok">✔ live, twin version ${twin.version}</span>`
              : html`<span class="pill warn">▲ not live</span>`}<//>
          </dl>
          ${health && health.problems && health.problems.length > 0 && html`
            <ul class="problems">${health.problems.map((p) => html`<li class="error">${p}</li>`)}</ul>`}
        </section>
        <section class="card" data-testid="store" aria-labelledby="store-title">
          <h2 id="store-title">The store</h2>
          ${store ? html`<dl>
            <${KV} label="state"><${Badge} state=${store.state} testid="store-state" /><//>
            <${KV} label="size" testid="store-size">${bytes(store.used_bytes)} of ${bytes(store.limit_bytes)} (${
              (100 * store.used_bytes / store.limit_bytes).toFixed(1)} %)<//>
            <${KV} label="waiting to be written" testid="store-backlog">${backlog} readings<//>
            <${KV} label="dropped / evicted">${store.dropped_rows} / ${store.evicted_rows}<//>
            <${KV} label="disk free">${bytes(store.disk_free_bytes)}<//>
            ${store.last_error && html`<${KV} label="last error"><span class="error">${store.last_error}</span><//>`}
          </dl>` : html`<p class="note">Loading…</p>`}
        </section>
        <section class="card" data-testid="cloud" aria-labelledby="cloud-title">
          <h2 id="cloud-title">The cloud link</h2>
          ${!health ? html`<p class="note">Loading…</p>` : !cloud ? html`<p class="note" data-testid="cloud-none">
            No [cloud] section: everything stays on the box.</p>` : html`<dl>
            <${KV} label="link"><${Badge} state=${cloudDetail.link === 'online' ? 'online'
              : `offline (${cloudDetail.link || cloud.state})`} testid="cloud-link" /><//>
            <${KV} label="since">${cloudDetail.since ? time(cloudDetail.since) : '–'}<//>
            <${KV} label="outbox backlog" testid="cloud-backlog">${outbox
              ? `${outbox.readings} readings, ${outbox.events} events (${bytes(outbox.bytes)})` : '–'}<//>
            <${KV} label="oldest waiting" testid="cloud-age">${outbox && outbox.oldest_age_s !== null
              ? duration(outbox.oldest_age_s) : 'nothing waiting'}<//>
            <${KV} label="delivered" testid="cloud-sent">${cloudDetail.sent
              ? `${cloudDetail.sent.readings} readings, ${cloudDetail.sent.events} events` : '–'}<//>
            ${cloudDetail.last_error && html`<${KV} label="last error"><span class="error">${
              cloudDetail.last_error}</span><//>`}
          </dl>`}
        </section>
        <section class="card" data-testid="loop" aria-labelledby="loop-title">
          <h2 id="loop-title">Event loop</h2>
          ${lag ? html`<dl>
            <${KV} label="lag p50" testid="loop-p50">${lag.p50_ms ?? '–'} ms<//>
            <${KV} label="lag p99" testid="loop-p99">${lag.p99_ms ?? '–'} ms<//>
            <${KV} label="lag max">${lag.max_ms ?? '–'} ms<//>
            <${KV} label="scheduling">${health.scheduling}<//>
          </dl>` : html`<p class="note">Loading…</p>`}
        </section>
        <${Alerts} alerts=${alerts} error=${alertsError} />
        <${Units} title="Drivers" kind="driver" assets=${twin.assets} health=${health} admin=${admin} />
        <${Units} title="Services" kind="service" assets=${twin.assets} health=${health} admin=${admin} />
      </div>
    </div>`;
}

export default { id: 'overview', title: 'Overview', role: 'viewer', View };
