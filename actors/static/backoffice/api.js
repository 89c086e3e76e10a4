// The back office's HTTP API: /api/v1/admin, the operator's session (common/session.js). Its
// refresh cookie is scoped to /api/v1/admin, apart from a trader's on the same origin.

import { createSession } from "./common/session.js";

export const { call, get, onSession, resume, signIn, signOut } = createSession({
  base: "/api/v1/admin",
  authPath: "",
  flag: "exness-admin-session",
});
