// The twin mirrored from the change stream (/api/v1/twin/stream, docs/twin-stream.md): a snapshot, then changes
// folded in as RFC 7396 merge patches. When the stream drops, the mirror says since when it is stale and
// reconnects with backoff, resuming from the version it holds (the gateway sends a snapshot instead when that
// version is gone). Components read it with useTwin() and useAsset(id), re-rendered at most once per frame.
import { useEffect, useState } from './lib.js';

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;

// RFC 7396: null removes a key, an object merges into an object, anything else replaces.
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

class Mirror {
  // `check()` asks the API whether the token still holds: resolves true, false (401), or rejects (unreachable).
  constructor(token, { check, onUnauthorized }) {
    this.frameIsTimer = false;
    this.token = token;
    this.check = check;
    this.onUnauthorized = onUnauthorized;
    this.version = 0;
    this.assets = new Map();
    this.connected = false;
    this.staleSince = null; // a Date once a stream was lost, until the next one delivers
    this.everConnected = false;
    this.listeners = new Set();
    this.ws = null;
    this.timer = null;
    this.frame = null;
    this.backoff = BACKOFF_FIRST_MS;
    this.stopped = false;
    this.state = this.view();
  }

  view() {
    return { version: this.version, assets: new Map(this.assets), connected: this.connected, staleSince: this.staleSince,
             everConnected: this.everConnected };
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  // Listeners are told at most once per animation frame, however many frames the stream brings meanwhile.
  changed() {
    if (this.frame !== null || this.stopped) return;
    const tell = () => {
      this.frame = null;
      this.state = this.view();
      for (const listener of [...this.listeners]) listener(this.state);
    };
    this.frame = document.hidden ? setTimeout(tell, 250) : requestAnimationFrame(tell);
    this.frameIsTimer = document.hidden;
  }

  start() {
    this.open();
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.frame !== null) (this.frameIsTimer ? clearTimeout : cancelAnimationFrame)(this.frame);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.listeners.clear();
  }

  open() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/api/v1/twin/stream${this.version ? `?since=${this.version}` : ''}`;
    let ws;
    let firstMessage = false;
    try {
      ws = new WebSocket(url, ['venue-gateway', `bearer.${this.token}`]);
    } catch {
      // A token with characters a subprotocol cannot carry: sent as the first message instead.
      ws = new WebSocket(url, ['venue-gateway']);
      firstMessage = true;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (firstMessage) ws.send(JSON.stringify({ token: this.token }));
    };
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = (event) => this.lost(ws, event.code);
  }

  receive(ws, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === 'snapshot') {
      this.assets = new Map(Object.entries(frame.twin.assets || {}));
      this.version = frame.twin.version;
    } else if (frame.type === 'changes') {
      if (frame.from !== this.version) { // a gap: resume from what is held
        ws.close(1000);
        return;
      }
      for (const change of frame.changes) this.apply(change);
      this.version = frame.to;
    } else {
      return;
    }
    if (!this.connected) {
      this.connected = true;
      this.everConnected = true;
      this.staleSince = null;
      this.backoff = BACKOFF_FIRST_MS;
    }
    this.changed();
  }

  apply(change) {
    if (change.removed) {
      this.assets.delete(change.asset);
      return;
    }
    const was = this.assets.get(change.asset) || { reported: {}, desired: {} };
    this.assets.set(change.asset, {
      kind: change.kind, zone: change.zone, owner: change.owner,
      reported: change.reported === null ? was.reported : mergePatch(was.reported, change.reported),
      desired: change.desired === null ? was.desired : mergePatch(was.desired, change.desired),
      version: change.version, updated_at: change.at,
    });
  }

  lost(ws, code) {
    if (ws !== this.ws || this.stopped) return;
    this.ws = null;
    if (this.connected || this.staleSince === null) {
      this.connected = false;
      this.staleSince = new Date();
      this.changed();
    }
    if (code === 4401) {
      this.onUnauthorized();
      return;
    }
    this.later();
  }

  later() {
    this.timer = setTimeout(() => this.retry(), this.backoff * (0.75 + Math.random() / 2));
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
  }

  // A browser is not told why a WebSocket handshake failed: the API says whether the token still holds.
  async retry() {
    if (this.stopped) return;
    let valid;
    try {
      valid = await this.check();
    } catch {
      valid = null; // unreachable: try again later
    }
    if (this.stopped) return;
    if (valid === false) this.onUnauthorized();
    else if (valid === null) this.later();
    else this.open();
  }
}

let current = null;

// The mirror of the session that logs in; stopLive() ends it (logging out).
export function startLive(token, options) {
  stopLive();
  current = new Mirror(token, options).start();
  return current;
}

export function stopLive() {
  if (current) current.stop();
  current = null;
}

const EMPTY = { version: 0, assets: new Map(), connected: false, staleSince: null, everConnected: false };

// {version, assets: Map<id, asset>, connected, staleSince}: the component re-renders as the twin changes.
export function useTwin() {
  const mirror = current;
  const [state, setState] = useState(mirror ? mirror.state : EMPTY);
  useEffect(() => {
    if (!mirror) return undefined;
    setState(mirror.state);
    return mirror.subscribe(setState);
  }, [mirror]);
  return state;
}

// One asset (or undefined): the component re-renders when that asset changes, not when others do.
export function useAsset(id) {
  const mirror = current;
  const [asset, setAsset] = useState(mirror ? mirror.assets.get(id) : undefined);
  useEffect(() => {
    if (!mirror) return undefined;
    setAsset(mirror.assets.get(id));
    return mirror.subscribe((state) => setAsset(state.assets.get(id)));
  }, [mirror, id]);
  return asset;
}
