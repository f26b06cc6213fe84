// The HTTP API from the page: every request carries the token (Authorization: Bearer), held by the caller in
// memory only. Paths are relative to /api/v1 (get('/compliance')). Answers resolve parsed: JSON as objects, text
// (CSV, logs) as strings, anything else (an image) as a Blob; errors reject with an ApiError whose `code` is the
// API's `error` field.

const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null, body = null) {
    super(message);
    this.body = body; // the answer's parsed body, if any
    this.name = 'ApiError';
    this.status = status; // 0: the gateway could not be reached
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After, or null
  }
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null) params.append(key, String(value));
  }
  const search = params.toString();
  return BASE + path + (search ? `?${search}` : '');
}

async function parse(response) {
  const type = (response.headers.get('Content-Type') || '').split(';')[0].trim();
  if (response.status === 204 || response.status === 304) return null;
  if (type === 'application/json') return response.json();
  if (type.startsWith('text/')) return response.text();
  return response.blob();
}

// `onUnauthorized` is called when an answer is 401: the token is no longer valid.
export function createApi(token, { onUnauthorized } = {}) {
  async function request(method, path, query, body) {
    const headers = { Authorization: `Bearer ${token}` };
    let payload;
    if (body !== undefined) {
      if (typeof body === 'string') {
        headers['Content-Type'] = 'application/toml';
        payload = body;
      } else {
        headers['Content-Type'] = 'application/json';
        payload = JSON.stringify(body);
      }
    }
    let response;
    try {
      response = await fetch(url(path, query), { method, headers, body: payload, cache: 'no-store',
                                                 credentials: 'omit', redirect: 'error' });
    } catch (err) {
      throw new ApiError(0, 'unreachable', `the gateway cannot be reached (${err.message})`);
    }
    if (!response.ok) {
      let doc = null;
      try {
        doc = await parse(response);
      } catch { /* a body that is not what its type says: the status alone */ }
      const retry = Number.parseFloat(response.headers.get('Retry-After'));
      const error = new ApiError(response.status, (doc && doc.error) || `http_${response.status}`,
                                 (doc && doc.message) || response.statusText || `HTTP ${response.status}`,
                                 Number.isFinite(retry) ? retry : null, doc);
      if (response.status === 401 && onUnauthorized) onUnauthorized(error);
      throw error;
    }
    return parse(response);
  }
  return {
    get: (path, query) => request('GET', path, query),
    send: (method, path, body) => request(method, path, undefined, body),
  };
}
