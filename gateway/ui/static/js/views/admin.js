// For the venue tech (admin): the running configuration with its secrets redacted, a configuration file checked
// with exactly check-config's messages (checking only: nothing is applied), and the box's recent events and log.
import { html, useEffect, useState } from '../lib.js';

const MAX_FILE_BYTES = 4 * 1024 * 1024; // what check-config reads of a file

function pretty(value) {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

/** One GET, asked when the view opens and again on `reload`: {doc, error, loading}. */
function useFetched(api, path, reload) {
  const [state, setState] = useState({ doc: null, error: null, loading: true });
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    api.get(path).then((doc) => live && setState({ doc, error: null, loading: false }),
                       (err) => live && setState({ doc: null, error: err, loading: false }));
    return () => { live = false; };
  }, [api, path, reload]);
  return state;
}

function Unavailable({ error, what }) {
  if (error.status === 404) return html`<p class="note">This gateway does not give ${what}.</p>`;
  return html`<p class="error" role="alert">${what} cannot be read: ${error.message}</p>`;
}

function RunningConfig({ api }) {
  const { doc, error, loading } = useFetched(api, '/config', 0);
  return html`
    <section class="card wide" data-testid="admin-config" aria-labelledby="config-title">
      <h2 id="config-title">Running configuration</h2>
      <p class="note">As the gateway runs it, secrets redacted.</p>
      ${loading ? html`<p class="note">Loading…</p>` : error ? html`<${Unavailable} error=${error}
        what="its running configuration" />` : html`<pre class="code" tabindex="0" data-testid="admin-config-text"
        >${pretty(doc)}</pre>`}
    </section>`;
}

/** The check's lines, each exactly as check-config prints it (`FILE: key.path: what is wrong (what is allowed)`). */
export function problemLines(answer) {
  return answer && Array.isArray(answer.problems) ? answer.problems.map(String) : null;
}

function ConfigCheck({ api }) {
  const [text, setText] = useState('');
  const [result, setResult] = useState(null);
  const [busy, setBusy] = useState(false);
  const [offline, setOffline] = useState(false);

  async function chooseFile(event) {
    const file = event.currentTarget.files && event.currentTarget.files[0];
    if (!file) return;
    if (file.size > MAX_FILE_BYTES) {
      setResult({ error: `${file.name} is larger than 4 MB: not a configuration file` });
      return;
    }
    setText(await file.text());
    setResult(null);
  }

  async function check(event) {
    event.preventDefault();
    setBusy(true);
    try {
      const answer = await api.send('POST', `/config/check?offline=${offline}`, text);
      setResult({ answer, lines: problemLines(answer) });
    } catch (err) {
      setResult({ error: `The check was refused (${err.status || 'unreachable'}): ${err.message}` });
    } finally {
      setBusy(false);
    }
  }

  const lines = result && result.lines;
  return html`
    <section class="card wide" data-testid="admin-check" aria-labelledby="check-title">
      <h2 id="check-title">Check a configuration</h2>
      <p class="note">Checked exactly as <code>venue-gateway check-config</code> checks it, on this box. Nothing is
        applied.</p>
      <form onSubmit=${check}>
        <div class="field">
          <label for="check-file">A file</label>
          <input id="check-file" type="file" accept=".toml,text/plain,application/toml" onChange=${chooseFile}
            data-testid="admin-check-file" />
        </div>
        <div class="field">
          <label for="check-text">or the text (TOML)</label>
          <textarea id="check-text" rows="12" spellcheck="false" value=${text}
            onInput=${(e) => setText(e.currentTarget.value)} data-testid="admin-check-text"></textarea>
        </div>
        <div class="toolbar wrap">
          <label class="inline"><input type="checkbox" checked=${offline}
            onChange=${(e) => setOffline(e.currentTarget.checked)} data-testid="admin-check-offline" />
            the file alone (--offline: not what it needs from this box)</label>
          <button type="submit" class="primary" disabled=${busy || !text.trim()} data-testid="admin-check-submit">
            ${busy ? 'Checking…' : 'Check'}</button>
        </div>
      </form>
      <div aria-live="polite" data-testid="admin-check-result">
        ${result && result.error && html`<p class="error" role="alert">${result.error}</p>`}
        ${lines && lines.length === 0 && html`<p class="ok-text" data-testid="admin-check-ok">✔ No problem found.</p>`}
        ${lines && lines.length > 0 && html`
          <p class="error">✖ ${lines.length} problem${lines.length > 1 ? 's' : ''}:</p>
          <ul class="problems" data-testid="admin-check-problems">${lines.map((l, i) => html`
            <li key=${i}><code>${l}</code></li>`)}</ul>`}
        ${result && result.answer !== undefined && lines === null && html`<pre class="code">${
          pretty(result.answer)}</pre>`}
      </div>
    </section>`;
}

const KEPT_LOG = 500; // what the gateway keeps, and so what is shown here

function stamp(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString([], { hour12: false });
}

/** The log: what the gateway keeps when the view opens, then what came after, on Reload. */
function Log({ api }) {
  const [records, setRecords] = useState([]);
  const [last, setLast] = useState(0);
  const [error, setError] = useState(null);
  const [loading, setLoading] = useState(true);

  async function load(after) {
    setLoading(true);
    try {
      const doc = await api.get('/log', { after });
      setRecords((held) => (after === 0 || doc.oldest === null || after < doc.oldest - 1 ? doc.records
        : [...held, ...doc.records]).slice(-KEPT_LOG));
      setLast(doc.last);
      setError(null);
    } catch (err) {
      setError(err);
    } finally {
      setLoading(false);
    }
  }
  useEffect(() => { load(0); }, [api]);

  return html`
    <section class="card wide" data-testid="admin-log" aria-labelledby="log-title">
      <h2 id="log-title">Recent log</h2>
      <div class="toolbar">
        <button type="button" onClick=${() => load(last)} disabled=${loading} data-testid="admin-log-reload">
          Reload</button>
        <span class="note">${records.length} records, newest last</span>
      </div>
      ${error ? html`<${Unavailable} error=${error} what="its log" />` : html`
        <pre class="code log" tabindex="0" data-testid="admin-log-text">${records.length === 0
          ? (loading ? 'Loading…' : 'Nothing logged yet.')
          : records.map((r) => `${stamp(r.time)} ${r.level.padEnd(7)} ${r.logger}: ${r.message}`).join('\n')}</pre>`}
    </section>`;
}

/** The events: the alerts raised and cleared and the box's events, newest first. */
function Events({ api }) {
  const [reload, setReload] = useState(0);
  const { doc, error, loading } = useFetched(api, '/alerts', reload);
  const recent = (doc && doc.recent) || [];
  return html`
    <section class="card wide" data-testid="admin-events" aria-labelledby="events-title">
      <h2 id="events-title">Events</h2>
      <div class="toolbar">
        <button type="button" onClick=${() => setReload((n) => n + 1)} data-testid="admin-events-reload">
          Reload</button>
      </div>
      ${error ? html`<${Unavailable} error=${error} what="its events" />` : loading && !doc
        ? html`<p class="note">Loading…</p>` : recent.length === 0 ? html`<p class="note">No event yet.</p>` : html`
        <div class="table-wrap"><table>
          <thead><tr><th scope="col">time</th><th scope="col">state</th><th scope="col">kind</th>
            <th scope="col">what</th></tr></thead>
          <tbody>${recent.map((e, i) => html`<tr key=${i}><td class="n">${stamp(e.time)}</td><td>${e.state}</td>
            <td>${e.kind}</td><td>${e.text}</td></tr>`)}</tbody>
        </table></div>`}
    </section>`;
}

function View({ ctx }) {
  return html`
    <div class="view view-admin" data-testid="view-admin">
      <h1 class="view-title">Admin</h1>
      <div class="grid">
        <${RunningConfig} api=${ctx.api} />
        <${ConfigCheck} api=${ctx.api} />
        <${Events} api=${ctx.api} />
        <${Log} api=${ctx.api} />
      </div>
    </div>`;
}

export default { id: 'admin', title: 'Admin', role: 'admin', View };
