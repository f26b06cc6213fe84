// The dashboard's shell: the login (a token, kept in this module's memory only: never in storage or a cookie, so
// a reload asks for it again and no other page can act with it), the navigation between the views the token's
// role allows (hash routes: #/overview, #/map, ...), and the banner that says when the live view is stale.
import { html, render, useState, useEffect, useRef, useErrorBoundary } from './lib.js';
import { createApi } from './api.js';
import { startLive, stopLive, useTwin } from './live.js';
import views from './views/index.js';

const ROLES = ['viewer', 'operator', 'admin'];

function can(role, needed) {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}

function loginMessage(err) {
  if (err.status === 401) return 'That token is not valid for this gateway. Check it and try again.';
  if (err.status === 0) {
    return 'The gateway cannot be reached. Check the network and that the gateway is running, then try again.';
  }
  return `The gateway refused the login (${err.status}): ${err.message}`;
}

function Login({ onLogin, notice }) {
  const [token, setToken] = useState('');
  const [message, setMessage] = useState(notice);
  const [busy, setBusy] = useState(false);
  const input = useRef(null);
  useEffect(() => input.current && input.current.focus(), []);

  async function submit(event) {
    event.preventDefault();
    const given = token.trim();
    if (!given) {
      setMessage('Enter the token you were given for this gateway.');
      return;
    }
    setBusy(true);
    setMessage(null);
    try {
      const layout = await createApi(given).get('/dashboard');
      onLogin(given, layout);
    } catch (err) {
      setMessage(loginMessage(err));
      setBusy(false);
      if (input.current) input.current.select();
    }
  }

  return html`
    <main id="main" class="login" data-testid="view-login">
      <form class="login-form" onSubmit=${submit} data-testid="login" novalidate>
        <h1>venue-gateway</h1>
        <p class="muted">Log in with the token for your role (viewer, operator or admin). It is kept in this page
          only: a reload asks for it again.</p>
        <label for="login-token">Token</label>
        <input id="login-token" ref=${input} type="password" autocomplete="off" autocapitalize="off"
          spellcheck="false" value=${token} onInput=${(e) => setToken(e.currentTarget.value)}
          aria-describedby=${message ? 'login-error' : undefined} data-testid="login-token" />
        <button type="submit" class="primary" disabled=${busy} data-testid="login-submit">
          ${busy ? 'Logging in…' : 'Log in'}</button>
        ${message && html`<p id="login-error" class="error" role="alert" data-testid="login-error">${message}</p>`}
      </form>
    </main>`;
}

function useRoute(allowed) {
  const read = () => location.hash.replace(/^#\/?/, '').split('/')[0];
  const [route, setRoute] = useState(read);
  useEffect(() => {
    const changed = () => setRoute(read());
    addEventListener('hashchange', changed);
    return () => removeEventListener('hashchange', changed);
  }, []);
  const view = allowed.find((v) => v.id === route) || allowed[0];
  useEffect(() => {
    if (view && route !== view.id) history.replaceState(null, '', `#/${view.id}`);
  }, [route, view]);
  return view;
}

function Banner() {
  const twin = useTwin();
  if (twin.connected) return null;
  if (!twin.everConnected && twin.staleSince === null) {
    return html`<div class="banner info" role="status" data-testid="connecting">⟳ Connecting to the live view…</div>`;
  }
  const since = twin.staleSince ? clock(twin.staleSince) : '';
  return html`
    <div class="banner stale" role="status" aria-live="polite" data-testid="stale">
      ⚠ Stale since ${since}, reconnecting: what is shown is not live.
    </div>`;
}

function Failed({ error, reset, title }) {
  return html`
    <section class="card error-card" role="alert" data-testid="view-error">
      <h2>The ${title} view failed</h2>
      <p>${String(error && error.message ? error.message : error)}</p>
      <button type="button" onClick=${reset}>Try again</button>
    </section>`;
}

function Guarded({ view, ctx }) {
  const [error, reset] = useErrorBoundary((err) => console.warn(`view ${view.id}:`, err));
  if (error) return html`<${Failed} error=${error} reset=${reset} title=${view.title} />`;
  return html`<${view.View} ctx=${ctx} />`;
}

function skipToMain(event) {
  event.preventDefault(); // the hash is the route: focus the content instead of following the link
  const main = document.getElementById('main');
  if (main) main.focus();
}

function Shell({ session, onLogout }) {
  const { role, layout, ctx } = session;
  const allowed = views.filter((v) => can(role, v.role));
  const view = useRoute(allowed);
  const main = useRef(null);
  const first = useRef(true);
  useEffect(() => {
    if (view) document.title = `${view.title} · ${layout.venue} · venue-gateway`;
    if (!first.current && main.current) main.current.focus({ preventScroll: true });
    first.current = false;
  }, [view]);

  return html`
    <a class="skip" href="#main" onClick=${skipToMain} data-testid="skip">Skip to content</a>
    <header class="top">
      <div class="brand">
        <span class="venue" data-testid="venue">${layout.venue}</span>
        <span class="muted">${layout.gateway}</span>
      </div>
      <nav aria-label="Views">
        <ul>
          ${allowed.map((v) => html`
            <li key=${v.id}><a href=${`#/${v.id}`} data-testid=${`nav-${v.id}`}
              aria-current=${v === view ? 'page' : undefined}>${v.title}</a></li>`)}
        </ul>
      </nav>
      <div class="who">
        <span class="role" data-testid="role" title="the token's role">${role}</span>
        <button type="button" onClick=${onLogout} data-testid="logout">Log out</button>
      </div>
    </header>
    <${Banner} />
    <main id="main" tabindex="-1" ref=${main}>
      ${view ? html`<${Guarded} key=${view.id} view=${view} ctx=${ctx} />`
             : html`<p>No view is open to the ${role} role.</p>`}
    </main>`;
}

function App() {
  const [session, setSession] = useState(null);
  const [notice, setNotice] = useState(null);

  function logout(message = null) {
    stopLive();
    setSession(null); // the token goes with the session: nothing else holds it
    setNotice(message);
  }

  function login(token, layout) {
    const expired = () => logout('The token is no longer valid for this gateway: log in again.');
    const api = createApi(token, { onUnauthorized: expired });
    const check = async () => {
      try {
        await createApi(token).get('/dashboard');
        return true;
      } catch (err) {
        if (err.status === 401) return false;
        throw err;
      }
    };
    startLive(token, { check, onUnauthorized: expired });
    const role = layout.role;
    setNotice(null);
    setSession({ role, layout, ctx: { api, role, can: (needed) => can(role, needed), layout } });
  }

  useEffect(() => () => stopLive(), []);
  return session
    ? html`<${Shell} session=${session} onLogout=${() => logout()} />`
    : html`<${Login} onLogin=${login} notice=${notice} />`;
}

render(html`<${App} />`, document.getElementById('app'));
