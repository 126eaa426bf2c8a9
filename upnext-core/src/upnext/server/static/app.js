// upnext dashboard: plain JS against /api/v1, no build step, no CDN.
// Data is only ever put in the page with textContent, never as HTML.
"use strict";

const API = "/api/v1";
const REFRESH_MS = 3000;
const $ = (sel) => document.querySelector(sel);

const state = { cursors: [null], current: null, entry: null };

// A scan-type dead-letter queue (RabbitMQ) serves one admin at a time; another
// process (a CLI, a second server) may hold it. The server has already waited
// its dlq_busy_wait: ask again a few times before showing the user an error.
// Safe for every call: a "busy" request did nothing.
const BUSY_RETRIES_MS = [250, 500, 1000, 2000, 4000];

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function request(method, url, init) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, { method, ...init });
    if (response.status === 401) { location.reload(); throw new Error("signed out"); }
    const body = response.status === 204 ? null : await response.json();
    if (response.ok) return body;
    if (response.status === 409 && body && body.error === "busy" && attempt < BUSY_RETRIES_MS.length) {
      await pause(BUSY_RETRIES_MS[attempt]);
      continue;
    }
    throw new Error(body && body.message ? body.message : response.statusText);
  }
}

async function api(method, path, params) {
  const url = new URL(API + path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  return request(method, url, { headers: { accept: "application/json" } });
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
  return td;
}

function when(value) {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return date.toISOString().replace("T", " ").slice(0, 19);
}

function say(text) { $("#status").textContent = text; }

function filters() {
  return {
    queue: $("#filter-queue").value.trim(),
    function: $("#filter-function").value.trim(),
    limit: $("#filter-limit").value,
  };
}

async function loadQueues() {
  try {
    const { queues } = await api("GET", "/queues");
    const body = $("#queues tbody");
    body.replaceChildren();
    const names = $("#queue-names");
    names.replaceChildren();
    for (const q of queues) {
      const row = body.insertRow();
      row.dataset.queue = q.name;
      cell(row, q.name);
      cell(row, q.ready); cell(row, q.scheduled); cell(row, q.in_flight);
      cell(row, q.dead, "dead");
      const option = document.createElement("option");
      option.value = q.name;
      names.append(option);
    }
    $("#queues-updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    $("#queues-updated").textContent = "refresh failed: " + error.message;
  }
}

async function loadEntries() {
  const cursor = state.cursors[state.cursors.length - 1];
  try {
    const page = await api("GET", "/dlq", { ...filters(), cursor });
    const body = $("#entries tbody");
    body.replaceChildren();
    for (const entry of page.items) {
      const row = body.insertRow();
      row.dataset.id = entry.id;
      cell(row, when(entry.failed_at));
      cell(row, entry.queue);
      cell(row, entry.function);
      const error = entry.error ? `${entry.error.type}: ${entry.error.message}` : entry.reason;
      cell(row, error, "error").title = error;
      cell(row, entry.attempts.length);
      row.addEventListener("click", () => openEntry(entry.id));
    }
    $("#empty").hidden = page.items.length > 0;
    state.next = page.next_cursor;
    $("#next-page").disabled = !page.next_cursor;
    $("#first-page").disabled = state.cursors.length === 1;
    $("#page-info").textContent = `page ${state.cursors.length}: ${page.items.length} entries`;
  } catch (error) {
    say("could not load entries: " + error.message);
  }
}

function meta(entry) {
  const list = $("#entry-meta");
  list.replaceChildren();
  const rows = [
    ["Entry", entry.id], ["Job", entry.job_id], ["Queue", entry.queue],
    ["Reason", entry.reason], ["Failed at", when(entry.failed_at) + " UTC"],
  ];
  if (entry.replay_of) rows.push(["Replay of", entry.replay_of]);
  if (entry.parent_id) rows.push(["Parent", entry.parent_id]);
  for (const [term, value] of rows) {
    const dt = document.createElement("dt"); dt.textContent = term;
    const dd = document.createElement("dd"); dd.textContent = value;
    list.append(dt, dd);
  }
}

function attempts(entry) {
  const list = $("#entry-attempts");
  list.replaceChildren();
  for (const a of entry.attempts) {
    const item = document.createElement("li");
    item.className = a.outcome;
    const span = a.started && a.finished ? ` (${(a.finished - a.started).toFixed(3)} s)` : "";
    item.textContent = `#${a.number} ${a.outcome} on ${a.worker || "?"} at ${when(a.started)}${span}` +
      (a.error ? ` — ${a.error}` : "");
    list.append(item);
  }
  if (!entry.attempts.length) list.textContent = "no attempt ran";
}

async function openEntry(id) {
  try {
    const entry = await api("GET", `/dlq/${encodeURIComponent(id)}`);
    state.entry = entry;
    $("#entry-function").textContent = entry.function;
    meta(entry);
    $("#entry-payload").textContent = entry.payload
      ? JSON.stringify(entry.payload, null, 2) : `(undecodable bytes, base64) ${entry.raw || ""}`;
    $("#entry-error").textContent = entry.error ? `${entry.error.type}: ${entry.error.message}` : "—";
    $("#entry-traceback").textContent = (entry.error && entry.error.traceback) || "";
    attempts(entry);
    $("#entry-replay").disabled = !entry.payload;
    $("#entry").showModal();
  } catch (error) {
    say(error.message);
    await refresh();
  }
}

function confirmed(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function act(question, work) {
  if (!(await confirmed(question))) return;
  try {
    say(await work());
  } catch (error) {
    say(error.message);
  }
  await refresh();
}

async function refresh() {
  await Promise.all([loadEntries(), loadQueues()]);
}

function wire() {
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.cursors = [null];
    loadEntries();
  });
  $("#next-page").addEventListener("click", () => { state.cursors.push(state.next); loadEntries(); });
  $("#first-page").addEventListener("click", () => { state.cursors = [null]; loadEntries(); });
  $("#entry-close").addEventListener("click", () => $("#entry").close());
  $("#entry-replay").addEventListener("click", () => {
    const entry = state.entry;
    $("#entry").close();
    act(`Replay ${entry.function} (entry ${entry.id}) as a new job?`, async () => {
      const { job_id } = await api("POST", `/dlq/${encodeURIComponent(entry.id)}/replay`);
      return `replayed ${entry.id} as job ${job_id}`;
    });
  });
  $("#entry-delete").addEventListener("click", () => {
    const entry = state.entry;
    $("#entry").close();
    act(`Delete entry ${entry.id} for good?`, async () => {
      await api("DELETE", `/dlq/${encodeURIComponent(entry.id)}`);
      return `deleted ${entry.id}`;
    });
  });
  $("#purge").addEventListener("click", () => {
    const queue = filters().queue;
    act(`Delete every dead-letter entry of ${queue ? "queue " + queue : "every queue"}?`, async () => {
      const { purged } = await api("DELETE", "/dlq", { queue });
      return `purged ${purged} entries`;
    });
  });
  $("#replay-all").addEventListener("click", () => {
    const f = filters();
    act("Replay every entry matching the filters (up to 500)?", async () => {
      const body = await request("POST", API + "/dlq/replay", {
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ queue: f.queue || null, function: f.function || null, limit: 500 }),
      });
      return `replayed ${body.replayed.length}, skipped ${Object.keys(body.skipped).length}`;
    });
  });
}

async function start() {
  wire();
  try {
    const health = await api("GET", "/health");
    $("#health").textContent = `${health.scheme}:// · dead letters: ${health.dlq_access || "none"}`;
  } catch (error) {
    $("#health").textContent = "broker unreachable: " + error.message;
  }
  await refresh();
  setInterval(loadQueues, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
