// Entry point of the Chorus page: tabs, server status, shared settings, the three panels.

import { requestJson, settings } from "./api.js";
import { FilePanel } from "./files.js";
import { HistoryPanel } from "./history.js";
import { fillLanguageSelect, languageChoices } from "./languages.js";
import { LivePanel } from "./live.js";

const $ = (id) => document.getElementById(id);

function setupTabs(onShow) {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab, focus) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    const name = tab.id.replace("tab-", "");
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    onShow(name);
  };
  for (const tab of tabs) {
    tab.addEventListener("click", () => select(tab, false));
    tab.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(tab);
      const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 };
      if (!(event.key in moves)) return;
      event.preventDefault();
      select(tabs[(moves[event.key] + tabs.length) % tabs.length], true);
    });
  }
  const fromHash = () => {
    const tab = tabs.find((candidate) => candidate.id === `tab-${location.hash.slice(1)}`);
    if (tab && tab.getAttribute("aria-selected") !== "true") select(tab, false);
  };
  window.addEventListener("hashchange", fromHash);
  fromHash();
}

function showServer(tone, text) {
  const status = $("server-status");
  status.dataset.tone = tone;
  status.querySelector(".status-text").textContent = text;
}

async function checkServer() {
  try {
    const health = await requestJson("/health");
    const sessions = Number(health?.sessions);
    const ready = health?.status === "ok";
    showServer(ready ? "ok" : "warn", `${health?.model ?? "Server"} · ${ready ? "ready" : "starting"}`);
    $("server-status").title = Number.isFinite(sessions) ? `${sessions} live session(s)` : "";
    $("footer-model").textContent = health?.model ? `Model: ${health.model}` : "";
    return health;
  } catch (error) {
    if (error?.status === 503) showServer("warn", "Server starting or busy");
    else showServer("error", error?.status ? `Server: HTTP ${error.status}` : "Server unreachable");
    return null;
  }
}

function showLanguages(health) {
  const choices = languageChoices(health);
  const preferred = settings.load().language;
  for (const select of document.querySelectorAll(".language-select")) {
    fillLanguageSelect(select, choices, preferred);
  }
}

function setupLanguages() {
  for (const select of document.querySelectorAll(".language-select")) {
    select.addEventListener("change", () => {
      settings.save({ language: select.value });
      for (const other of document.querySelectorAll(".language-select")) {
        if (other !== select) other.value = select.value;
      }
    });
  }
}

function setupKeyDialog() {
  const dialog = $("key-dialog");
  const input = $("key-input");
  const button = $("key-button");
  const label = () => {
    button.dataset.set = String(Boolean(settings.apiKey));
    button.setAttribute("aria-label", settings.apiKey ? "API key (set)" : "API key");
  };
  button.addEventListener("click", () => {
    input.value = settings.apiKey;
    dialog.showModal();
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "save") settings.apiKey = input.value.trim();
    else if (dialog.returnValue === "clear") settings.apiKey = "";
    input.value = "";
    label();
    checkServer();
  });
  label();
}

async function main() {
  setupKeyDialog();
  const live = new LivePanel();
  new FilePanel();
  const historyPanel = new HistoryPanel();
  setupTabs((name) => {
    if (name === "history") historyPanel.shown();
  });
  // Languages: from the server when it says, else a built-in list (see languages.js).
  setupLanguages();
  showLanguages(null);
  const health = await checkServer();
  if (health) showLanguages(health);
  setInterval(() => {
    if (document.visibilityState === "visible") checkServer();
  }, 15_000);
  document.documentElement.dataset.ready = "true";
  window.chorus = { live };
}

main();
