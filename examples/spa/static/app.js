// A browser client of user-service in cookie mode (REFRESH_TOKEN_COOKIE=true): the access token lives only in
// memory, the refresh token only in an HttpOnly cookie scripts cannot read. Tabs refresh one at a time (Web Locks
// API), so two tabs never spend the same refresh token; a BroadcastChannel tells the other tabs about log-outs.
"use strict";

const API = document.documentElement.dataset.api || "";
const REFRESH_EARLY_MS = 30_000;
const channel = new BroadcastChannel("user-service-auth");
const state = { accessToken: null, expiresAt: 0, timer: null, refreshes: 0 };

function show(status, who) {
  document.getElementById("status").textContent = status;
  if (who !== undefined) document.getElementById("who").textContent = who;
}

async function call(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.json !== undefined) headers["Content-Type"] = "application/json";
  if (options.auth && state.accessToken) headers.Authorization = `Bearer ${state.accessToken}`;
  const response = await fetch(API + path, {
    method: options.method || "GET",
    headers,
    body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
    credentials: "include", // the refresh-token cookie
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

function remember(pair) {
  state.accessToken = pair.access_token;
  state.expiresAt = Date.parse(pair.expires_at);
  clearTimeout(state.timer);
  // Refresh shortly before the access token expires.
  state.timer = setTimeout(() => refresh(), Math.max(0, state.expiresAt - Date.now() - REFRESH_EARLY_MS));
}

function forget(status) {
  state.accessToken = null;
  clearTimeout(state.timer);
  show(status, "");
}

async function login(namespace, username, password) {
  const { status, body } = await call("/auth/login", { method: "POST", json: { namespace, username, password } });
  if (status !== 200) return show(`login failed: ${body.code}`);
  remember(body);
  await me();
  channel.postMessage({ type: "login" });
}

async function refresh() {
  // One tab at a time: the cookie a tab sends is always the newest, rotated by the tab before it.
  return navigator.locks.request("user-service-refresh", async () => {
    const { status, body } = await call("/auth/refresh", { method: "POST" });
    if (status !== 200) {
      // session_revoked / token_expired / invalid_token: the session is over; say why.
      forget(`logged out (${body.code})`);
      return false;
    }
    state.refreshes += 1;
    remember(body);
    show(`refreshed ${state.refreshes}`);
    return true;
  });
}

async function me() {
  let { status, body } = await call("/users/me", { auth: true });
  if (status === 401 && body.code === "token_expired" && (await refresh())) {
    ({ status, body } = await call("/users/me", { auth: true }));
  }
  if (status !== 200) return show(`not logged in (${body.code})`, "");
  show("logged in", `${body.namespace}/${body.username}`);
  return body;
}

async function logout() {
  await call("/auth/logout", { method: "POST" });
  forget("logged out");
  channel.postMessage({ type: "logout" });
}

channel.onmessage = (event) => {
  if (event.data.type === "logout") forget("logged out");
  if (event.data.type === "login" && !state.accessToken) refresh().then((ok) => ok && me());
};

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const field = (id) => document.getElementById(id).value;
  login(field("namespace"), field("username"), field("password"));
});
document.getElementById("me").addEventListener("click", () => me());
document.getElementById("refresh").addEventListener("click", () => refresh());
document.getElementById("logout").addEventListener("click", () => logout());

// A new tab of a logged-in browser: the cookie gets it an access token without a password.
refresh().then((ok) => (ok ? me() : show("logged out", "")));

// For tests and the console: refresh at an absolute time (two tabs at the same moment).
window.userService = { state, login, refresh, me, logout, refreshAt: (when) => setTimeout(refresh, when - Date.now()) };
