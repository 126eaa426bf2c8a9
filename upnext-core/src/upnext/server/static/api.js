// Shared helpers: the API client, table cells, links, times.
// Data is only ever put in the page with textContent, never as HTML.

export const API = "/api/v1";
export const $ = (sel, root = document) => root.querySelector(sel);

// A scan-type dead-letter queue (RabbitMQ) serves one admin at a time; another
// process (a CLI, a second server) may hold it. The server has already waited
// its dlq_busy_wait: ask again a few times before showing the user an error.
// Safe for every call: a "busy" request did nothing.
const BUSY_RETRIES_MS = [250, 500, 1000, 2000, 4000];

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An error answer: its HTTP status and the server's one-line message.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function messageOf(body, response) {
  if (body && body.message) return body.message;
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail) && body.detail.length) return body.detail[0].msg;
  return `${response.status} ${response.statusText}`;
}

export async function request(method, url, init) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(url, { method, ...init });
    if (response.status === 401) { location.reload(); throw new ApiError(401, "signed out"); }
    let body = null;
    if (response.status !== 204) {
      try { body = await response.json(); } catch { body = null; }
    }
    if (response.ok) return body;
    if (response.status === 409 && body && body.error === "busy" && attempt < BUSY_RETRIES_MS.length) {
      await pause(BUSY_RETRIES_MS[attempt]);
      continue;
    }
    throw new ApiError(response.status, messageOf(body, response));
  }
}

export async function api(method, path, params) {
  const url = new URL(API + path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  return request(method, url, { headers: { accept: "application/json" } });
}

export function text(value) {
  return value === null || value === undefined ? "—" : String(value);
}

export function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (cls) td.className = cls;
  return td;
}

// An id in a URL hash, readable: worker ids ("host:pid:hex") keep their colons.
export const hashId = (id) => encodeURIComponent(id).replace(/%3A/gi, ":");

// A link to a view's item: #jobs/<id>, #workers/<id>, #dlq/<id>.
export function link(view, id, label) {
  const a = document.createElement("a");
  a.href = `#${view}/${hashId(id)}`;
  a.textContent = label === undefined ? id : label;
  a.className = "id";
  return a;
}

export function linkCell(row, view, id, cls) {
  const td = row.insertCell();
  if (id === null || id === undefined || id === "") td.textContent = "—";
  else td.append(link(view, id));
  if (cls) td.className = cls;
  return td;
}

export function when(value) {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return date.toISOString().replace("T", " ").slice(0, 19);
}

// Seconds as "4 s", "3 min 20 s", "2 h 5 min".
export function span(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function since(iso) {
  return iso ? (Date.now() - new Date(iso).getTime()) / 1000 : null;
}

// Replace `body`'s rows only when what they show changed: no flicker, no lost hover.
export function renderRows(body, key, fill) {
  if (body.dataset.key === key) return false;
  body.dataset.key = key;
  body.replaceChildren();
  fill(body);
  return true;
}
