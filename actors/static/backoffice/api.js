// The back office's HTTP API: /api/v1/admin, the operator's access token in memory only. The
// refresh token lives in an HttpOnly cookie scoped to /api/v1/admin (sign-in with
// refresh_cookie); the session is resumed on load and refreshed before the token expires.

const API = "/api/v1/admin";
const listeners = new Set();
let accessToken = null;
let refreshTimer = null;
let refreshing = null;

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || { code: "HTTP_" + status, message: `HTTP ${status}`, details: {} };
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

export const onSession = (listener) => listeners.add(listener);

async function send(method, path, body, { auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth && accessToken) headers.Authorization = `Bearer ${accessToken}`;
  const response = await fetch(API + path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// An authenticated call; an expired access token is refreshed once and the call repeated.
export async function call(method, path, body) {
  try {
    return await send(method, path, body);
  } catch (error) {
    if (error.status !== 401 || !accessToken) throw error;
    await refresh();
    return send(method, path, body);
  }
}

export const get = (path) => call("GET", path);

function setSession(pair) {
  accessToken = pair ? pair.access_token : null;
  clearTimeout(refreshTimer);
  if (pair) {
    const lead = Math.max(5, Math.min(60, pair.expires_in / 5));
    refreshTimer = setTimeout(() => refresh().catch(() => {}), (pair.expires_in - lead) * 1000);
  }
  listeners.forEach((listener) => listener(pair));
}

export async function signIn(email, password) {
  setSession(await send("POST", "/signin", { email, password, refresh_cookie: true }, { auth: false }));
}

// Spend the cookie for a new pair; concurrent callers share one refresh.
export function refresh() {
  if (!refreshing) {
    refreshing = send("POST", "/refresh", {}, { auth: false })
      .then(setSession, (error) => {
        if (error.status === 401 || error.status === 400) setSession(null);
        throw error;
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

export async function resume() {
  try {
    await refresh();
    return true;
  } catch {
    return false;
  }
}

export async function signOut() {
  try {
    await send("POST", "/signout", {}, { auth: false });
  } finally {
    setSession(null);
  }
}
