// The terminal's HTTP API: /api/v1, its session (common/session.js) with the trader's auth routes
// under /auth, and the two calls only a trader makes (sign-up, switching account).

import { createSession } from "./common/session.js";

const session = createSession({ base: "/api/v1", authPath: "/auth", flag: "exness-session" });

export const { call, get, onSession, refresh, resume, signIn, signOut, token } = session;
export const publicGet = (path) => session.send("GET", path, undefined, { auth: false });

// Tokens for another account of the signed-in user; the cookie moves to that account too.
export async function switchAccount(accountId) {
  session.begin(await call("POST", "/auth/switch", { account_id: String(accountId), refresh_cookie: true }));
}

export async function signUp(email, password) {
  await session.send("POST", "/auth/signup", { email, password }, { auth: false });
  await signIn(email, password);
}
