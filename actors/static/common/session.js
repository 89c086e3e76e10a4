// One signed-in session against one HTTP API: JSON in and out, the access token kept in memory
// only. The refresh token lives in an HttpOnly cookie the page never sees (sign-in with
// refresh_cookie); the session is resumed on load and refreshed silently before the access token
// expires. The trader terminal and the back office each make one (their own API base, auth
// routes and storage key); what differs between them is the options, never this code.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || { code: "HTTP_" + status, message: `HTTP ${status}`, details: {} };
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || {};
  }
}

// base: the API's prefix ("/api/v1"); authPath: the prefix of its signin/refresh/signout routes
// below base ("/auth", or "" for the back office's /api/v1/admin/signin); flag: the localStorage
// key that says a refresh cookie may be waiting, so a page that never signed in does not ask.
export function createSession({ base, authPath, flag }) {
  const listeners = new Set();
  let accessToken = null;
  let refreshTimer = null;
  let refreshing = null;

  async function send(method, path, body, { auth = true } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && accessToken) headers.Authorization = `Bearer ${accessToken}`;
    const response = await fetch(base + path, {
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
  async function call(method, path, body) {
    try {
      return await send(method, path, body);
    } catch (error) {
      if (error.status !== 401 || !accessToken) throw error;
      await refresh();
      return send(method, path, body);
    }
  }

  // A new token pair (or null: signed out) for the listeners; the next refresh is scheduled.
  function begin(pair) {
    accessToken = pair ? pair.access_token : null;
    clearTimeout(refreshTimer);
    if (pair) {
      localStorage.setItem(flag, "1");
      const lead = Math.max(5, Math.min(60, pair.expires_in / 5));
      refreshTimer = setTimeout(() => refresh().catch(() => {}), (pair.expires_in - lead) * 1000);
    } else {
      localStorage.removeItem(flag);
    }
    listeners.forEach((listener) => listener(pair));
  }

  // Spend the cookie for a new pair; concurrent callers share one refresh.
  function refresh() {
    if (!refreshing) {
      refreshing = send("POST", `${authPath}/refresh`, {}, { auth: false })
        .then(begin, (error) => {
          if (error.status === 401 || error.status === 400) begin(null);
          throw error;
        })
        .finally(() => {
          refreshing = null;
        });
    }
    return refreshing;
  }

  return {
    send,
    call,
    begin,
    refresh,
    get: (path) => call("GET", path),
    token: () => accessToken,
    onSession: (listener) => listeners.add(listener),
    async signIn(email, password) {
      begin(await send("POST", `${authPath}/signin`, { email, password, refresh_cookie: true }, { auth: false }));
    },
    // Resume a session from the cookie on load: true when signed in again.
    async resume() {
      if (!localStorage.getItem(flag)) return false;
      try {
        await refresh();
        return true;
      } catch {
        return false;
      }
    },
    async signOut() {
      try {
        await send("POST", `${authPath}/signout`, {}, { auth: false });
      } finally {
        begin(null);
      }
    },
  };
}
