// The HTTP API: JSON in and out, the access token kept in memory only. The refresh token lives
// in an HttpOnly cookie the page never sees (sign-in with refresh_cookie); the session is
// resumed on load and refreshed silently before the access token expires.

const API = "/api/v1";
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

export const token = () => accessToken;
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
export const publicGet = (path) => send("GET", path, undefined, { auth: false });

function setSession(pair) {
  accessToken = pair ? pair.access_token : null;
  clearTimeout(refreshTimer);
  if (pair) {
    const lead = Math.max(5, Math.min(60, pair.expires_in / 5));
    refreshTimer = setTimeout(() => refresh().catch(() => {}), (pair.expires_in - lead) * 1000);
  }
  listeners.forEach((listener) => listener(pair));
}

// Tokens for another account of the signed-in user; the cookie moves to that account too.
export async function switchAccount(accountId) {
  setSession(await call("POST", "/auth/switch", { account_id: String(accountId), refresh_cookie: true }));
}

export async function signIn(email, password) {
  setSession(await send("POST", "/auth/signin", { email, password, refresh_cookie: true }, { auth: false }));
}

export async function signUp(email, password) {
  await send("POST", "/auth/signup", { email, password }, { auth: false });
  await signIn(email, password);
}

// Spend the cookie for a new pair; concurrent callers share one refresh.
export function refresh() {
  if (!refreshing) {
    refreshing = send("POST", "/auth/refresh", {}, { auth: false })
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
    await send("POST", "/auth/signout", {}, { auth: false });
  } finally {
    setSession(null);
  }
}
