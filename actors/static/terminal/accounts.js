// The trading accounts: the switcher in the top bar, "open account" (type, demo or real), and
// the banner of a margin call or a stop-out (account channel events, or the summary's
// in_margin_call after a reload).

import * as api from "./api.js";
import { percent } from "./common/format.js";
import { state } from "./state.js";

const TYPE_NAMES = { standard: "Standard", raw_spread: "Raw Spread", isolated: "Isolated" };
let hooks;
let accountTypes = null;
let banner = null; // null | "margin_call" | "stop_out" (a stop-out stays until dismissed)
let dismissedCall = false;

export const typeName = (name) => TYPE_NAMES[name] || name;
export const isCross = () => Boolean(state.account && state.account.margin_mode === "cross");

function label(account) {
  return `#${account.account_id} ${typeName(account.account_type)} · ${account.demo ? "demo" : "real"}`;
}

// The user's accounts, listed in the switcher with the current one selected.
export async function loadAccounts() {
  const { accounts } = await api.get("/accounts");
  const select = document.getElementById("account-select");
  select.replaceChildren(
    ...accounts.map((account) => {
      const option = document.createElement("option");
      option.value = account.account_id;
      option.textContent = label(account);
      option.selected = account.account_id === state.accountId;
      return option;
    }),
  );
}

function describeType(type) {
  if (!type) return "";
  const costs =
    type.commission_bps !== "0.00" ? `commission ${type.commission_bps} bps a side` : "no commission";
  const swaps = type.swap_free ? "swap-free" : `swaps ${type.swap_long_bps}/${type.swap_short_bps} bps a day`;
  if (type.margin_mode === "isolated") return "Each position has its own margin and liquidation price.";
  return (
    `Cross margin: margin call at ${percent(type.margin_call_level)}, stop-out at ` +
    `${percent(type.stop_out_level)} · ${costs} · ${swaps}`
  );
}

async function openDialog() {
  const dialog = document.getElementById("account-dialog");
  const form = dialog.querySelector("form");
  const error = form.querySelector("[data-error]");
  error.textContent = "";
  if (!accountTypes) accountTypes = (await api.publicGet("/account-types")).account_types;
  form.elements.type.replaceChildren(
    ...accountTypes.map((type) => {
      const option = document.createElement("option");
      option.value = type.name;
      option.textContent = typeName(type.name);
      return option;
    }),
  );
  showInfo(form);
  dialog.showModal();
}

function showInfo(form) {
  const type = (accountTypes || []).find((candidate) => candidate.name === form.elements.type.value);
  form.querySelector("[data-type-info]").textContent = describeType(type);
  form.querySelector("[data-kind-info]").textContent =
    form.elements.demo.value === "true"
      ? "A demo account starts with the 5,000.00 USD demo deposit."
      : "A real account opens empty: the broker funds it.";
}

async function openAccount(form) {
  const error = form.querySelector("[data-error]");
  error.textContent = "";
  try {
    const opened = await api.call("POST", "/accounts", {
      type: form.elements.type.value,
      demo: form.elements.demo.value === "true",
    });
    form.closest("dialog").close();
    hooks.toast(`Opened ${label(opened)}`, "fill");
    await switchTo(opened.account_id);
  } catch (failure) {
    error.textContent = failure.message;
  }
}

async function switchTo(accountId) {
  try {
    await api.switchAccount(accountId); // the session listeners reload the page's account
  } catch (failure) {
    hooks.toast(`Could not switch: ${failure.message}`, "error");
    await loadAccounts().catch(() => {});
  }
}

export function mountAccounts(options) {
  hooks = options;
  const select = document.getElementById("account-select");
  select.addEventListener("change", () => switchTo(select.value));
  document.getElementById("open-account-button").addEventListener("click", () =>
    openDialog().catch((failure) => hooks.toast(failure.message, "error")),
  );
  const dialog = document.getElementById("account-dialog");
  const form = dialog.querySelector("form");
  form.addEventListener("change", () => showInfo(form));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    openAccount(form);
  });
  dialog.querySelector("[data-cancel]").addEventListener("click", () => dialog.close());
  document.querySelector("#margin-banner [data-dismiss]").addEventListener("click", () => {
    dismissedCall = banner === "margin_call";
    showBanner(null);
  });
}

// ---------------------------------------------------------------------------------- banner

function showBanner(kind, text) {
  banner = kind;
  const element = document.getElementById("margin-banner");
  element.hidden = !kind;
  if (kind) element.querySelector("[data-text]").textContent = text;
}

function callText(level) {
  const account = state.account || {};
  return (
    `Margin call: margin level ${percent(level)} is at or below ${percent(account.margin_call_level)}. ` +
    `Deposit or close positions — at ${percent(account.stop_out_level)} positions are closed (stop-out).`
  );
}

// The account channel's {"event": "margin_call", ...}.
export function marginCall(event) {
  dismissedCall = false;
  if (banner !== "stop_out") showBanner("margin_call", callText(event.margin_level));
}

// The account channel's {"event": "stop_out", ...}; its position_closed messages follow.
export function stopOut(event) {
  const account = state.account || {};
  showBanner(
    "stop_out",
    `Stop-out: margin level ${percent(event.margin_level)} reached the stop-out level ` +
      `${percent(account.stop_out_level)}; positions were closed, largest loss first.`,
  );
}

// The account summary changed (HTTP or the channel's account_summary): a call shows while the
// account is in it, and goes when it recovered.
export function syncBanner() {
  const account = state.account;
  if (!account || banner === "stop_out") return;
  if (account.in_margin_call && !dismissedCall) showBanner("margin_call", callText(account.margin_level));
  else if (!account.in_margin_call) {
    dismissedCall = false;
    if (banner === "margin_call") showBanner(null);
  }
}

export function reset() {
  dismissedCall = false;
  showBanner(null);
}
