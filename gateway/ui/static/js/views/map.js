// The venue map: each zone a tile on the plan with its crowd, its sound and its compliance, and what its wristbands
// show. Live from the twin; the LAeq windows come from /compliance, asked again when a zone's compliance changes
// (at most every REFRESH_MS), since the twin carries the limits' levels but not the 15 and 60 minute windows.
import { html, useEffect, useRef, useState } from '../lib.js';
import { useTwin } from '../live.js';
import { num, stateClass } from '../plot.js';

const REFRESH_MS = 15000;

/** /compliance's document, asked for when `version` (the compliance assets' versions, empty when the twin has
 * none: compliance is not configured) moves, at most every REFRESH_MS; null until the first answer, {error} when it
 * cannot be had. */
export function useComplianceDoc(api, version) {
  const [doc, setDoc] = useState(null);
  const state = useRef({ last: 0, timer: null, mounted: true });
  useEffect(() => () => { state.current.mounted = false; clearTimeout(state.current.timer); }, []);
  useEffect(() => {
    const s = state.current;
    if (!version || s.timer !== null) return; // nothing to ask, or a request is already due
    const load = () => {
      s.timer = null;
      s.last = Date.now();
      api.get('/compliance').then((d) => s.mounted && setDoc(d), (e) => s.mounted && setDoc({ error: e.message }));
    };
    const wait = s.last + REFRESH_MS - Date.now();
    if (wait <= 0) load();
    else s.timer = setTimeout(load, wait);
  }, [version]);
  return doc;
}

const TILE_PX = 300; // the least height a tile needs for its lines

/** Where each zone sits on the plan (the layout's x, y, w, h: plan units, 0-100 across and down), as percentages
 * of the plan's box, and the box's height in pixels so that the smallest tile still holds its lines. Without a
 * floor plan the box is cut to the band the zones cover (a row of zones is not drawn mid-way down an empty plan).
 * Null when a zone has no position. */
function placements(zones, whole) {
  if (zones.length === 0 || !zones.every((z) => [z.x, z.y, z.w, z.h].every((v) => typeof v === 'number'))) {
    return null;
  }
  const top = whole ? 0 : Math.min(...zones.map((z) => z.y));
  const extent = whole ? 100 : Math.max(...zones.map((z) => z.y + z.h)) - top;
  const least = Math.min(...zones.map((z) => z.h));
  return {
    height: `${Math.min(2400, Math.ceil((TILE_PX * extent) / least))}px`,
    tiles: Object.fromEntries(zones.map((z) => [z.name, { left: `${z.x}%`, top: `${((z.y - top) / extent) * 100}%`,
      width: `${z.w}%`, height: `${(z.h / extent) * 100}%` }])),
  };
}

function Line({ label, children, testid }) {
  return html`<div class="kv" data-testid=${testid}><span class="k">${label}</span><span class="v">${children}</span></div>`;
}

/** One zone's tile; `prefix` goes before its test ids (the replay's tiles are not the live map's). */
export function ZoneTile({ zone, assets, compliance, showEnd, style, prefix = '' }) {
  const name = zone.name;
  const get = (id) => assets.get(id)?.reported ?? {};
  const counted = get(`zone:${name}`);
  const estimate = assets.get(`occupancy:${name}`)?.reported;
  const mood = get(`mood:${name}`);
  const spl = get(`spl:${name}`);
  const comp = get(`compliance:${name}`);
  const bands = assets.get(`wristbands:${name}`)?.reported;
  const last = assets.get('show_control')?.reported?.last_effect; // the preset the bands' effect came from
  const preset = bands?.effect && last?.preset && (last.zones ?? []).includes(name)
    && last.effect?.kind === bands.effect ? last.preset : null;
  const capacity = zone.capacity ?? counted.capacity;
  const state = comp.state ?? 'unknown';
  const doc = compliance?.zones?.[name];
  const limits = comp.limits ?? doc?.limits ?? [];
  const people = counted.occupancy ?? estimate?.people;
  const fill = typeof people === 'number' && capacity ? (100 * people) / capacity : null;
  return html`<section class=${`zone-tile ${stateClass(state)}`} style=${style} data-testid=${`${prefix}zone-${name}`}
      aria-label=${`zone ${name}`}>
    <header class="zone-head">
      <h3>${name}</h3>
      <span class=${`badge ${stateClass(state)}`} data-testid=${`${prefix}compliance-state-${name}`}>${state}</span>
    </header>
    <${Line} label="People" testid=${`${prefix}zone-people-${name}`}>
      ${num(people, 0)} / ${num(capacity, 0)}${fill !== null ? ` (${num(fill, 0)}%)` : ''}
    <//>
    ${estimate && html`<${Line} label="BLE estimate">${num(estimate.people, 0)} (${num(estimate.devices, 0)} devices)<//>`}
    <${Line} label="Crowd energy" testid=${`${prefix}zone-energy-${name}`}>
      ${typeof mood.energy === 'number' ? num(mood.energy, 2) : '–'}${mood.class ? ` · ${mood.class}` : ''}
    <//>
    <${Line} label="Sound now" testid=${`${prefix}zone-sound-${name}`}>${num(spl.laeq_db)} dB(A)<//>
    <${Line} label="LAeq 15 / 60 min">${num(doc?.laeq_15min_db)} / ${num(doc?.laeq_60min_db)} dB<//>
    ${limits.map((l) => html`<${Line} label=${`${l.limit} limit`}>
      ${l.level_db == null ? 'limit' : `${l.partial ? 'at least ' : ''}${num(l.level_db)} of`} ${num(l.limit_db, 0)} dB, ${l.state}${
        l.partial ? ' (window still filling)' : ''}${
        compliance?.warn_margin_db != null
        ? ` (warns at ${num(l.limit_db - compliance.warn_margin_db)})` : ''}<//>
      <${Line} label="At show end">${l.projected_db == null ? 'no projection' : `${num(l.projected_db)} dB`}
        ${l.allowed_db != null ? ` (keep ≤ ${num(l.allowed_db)} dB)` : ''}<//>`)}
    ${showEnd && html`<${Line} label="Show ends">${showEnd}<//>`}
    <${Line} label="Wristbands" testid=${`${prefix}zone-wristbands-${name}`}>
      ${bands ? html`${bands.effect
        ? html`<span class="swatch" style=${{ background: bands.colour || 'transparent' }} aria-hidden="true"></span>
            ${`${preset ? `${preset}: ` : ''}${bands.effect}${bands.colour ? ` ${bands.colour}` : ''} · ${num(bands.started, 0)} of `
              + `${num(bands.bands, 0)} started, spread ${num(bands.start_spread_ms, 1)} ms`}`
        : `no effect (${num(bands.bands, 0)} bands)`}` : '–'}
    <//>
  </section>`;
}

/** The floor plan as a blob URL: its path is the API's, which an <img> could not send the token to. */
function usePlanImage(api, path) {
  const [src, setSrc] = useState(null);
  useEffect(() => {
    if (!path) return undefined;
    let live = true;
    let made = null;
    api.get(path.replace(/^\/api\/v1/, '')).then((blob) => {
      if (!live || !(blob instanceof Blob)) return;
      made = URL.createObjectURL(blob);
      setSrc(made);
    }, () => live && setSrc(null));
    return () => { live = false; if (made) URL.revokeObjectURL(made); };
  }, [path]);
  return src;
}

function MapView({ ctx }) {
  const twin = useTwin();
  const zones = ctx.layout?.zones ?? [];
  const versions = zones.map((z) => twin.assets.get(`compliance:${z.name}`)?.version).filter(Boolean).join(',');
  const compliance = useComplianceDoc(ctx.api, versions);
  const plan = usePlanImage(ctx.api, ctx.layout?.floor_plan);
  const placed = placements(zones, plan !== null);
  return html`<div class="view view-map" data-testid="view-map">
    <h2>Venue map</h2>
    ${compliance?.error && html`<p class="note" role="status">LAeq windows unavailable: ${compliance.error}</p>`}
    ${zones.length === 0 && html`<p class="note">No zones configured.</p>`}
    <div class=${placed ? 'plan placed' : 'plan'} style=${placed ? { height: placed.height } : undefined}>
      ${plan && placed && html`<img class="plan-image" src=${plan} alt="floor plan" />`}
      ${zones.map((z) => html`<${ZoneTile} key=${z.name} zone=${z} assets=${twin.assets} compliance=${compliance}
        showEnd=${compliance?.show_end} style=${placed ? placed.tiles[z.name] : undefined} />`)}
    </div>
  </div>`;
}

export default { id: 'map', title: 'Map', role: 'viewer', View: MapView };
