// upnext dashboard: plain JS modules against /api/v1, no build step, no CDN.
// Views are tabs chosen by the URL hash (#queues, #running, #workers, #jobs, #dlq);
// #jobs/<id>, #workers/<id> and #dlq/<entry id> open one item, so every id is a link.
import { $, api } from "./api.js";
import { loadEntries, openEntry, wireDlq } from "./dlq.js";
import { loadJobs, openJob, wireJobs } from "./jobs.js";
import { live, loadHistory, loadLive, renderChart, renderQueues, renderRunning, renderWorkers } from "./live.js";

const REFRESH_MS = 2000;
const VIEWS = ["queues", "running", "workers", "jobs", "dlq"];
const route = { view: "queues", id: null };
const clock = { ok: null, error: null, polls: 0, scan: false };

function parse(hash) {
  const [view, ...rest] = hash.replace(/^#/, "").split("/");
  const id = rest.length ? decodeURIComponent(rest.join("/")) : null;
  return VIEWS.includes(view) ? { view, id } : { view: "queues", id: null };
}

function go(hash) { location.hash = hash; }

function closeDialogs(except) {
  for (const dialog of document.querySelectorAll("dialog[open]")) {
    if (dialog.id !== except && dialog.id !== "confirm") dialog.close();
  }
}

async function show() {
  const next = parse(location.hash);
  const entered = next.view !== route.view;
  Object.assign(route, next);
  for (const view of VIEWS) {
    $(`#view-${view}`).hidden = view !== route.view;
    const tab = $(`nav a[data-view=${view}]`);
    tab.classList.toggle("active", view === route.view);
    if (view === route.view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (route.view === "jobs" && route.id) { closeDialogs("job"); await openJob(route.id); }
  else if (route.view === "dlq" && route.id) { closeDialogs("entry"); await openEntry(route.id); }
  else closeDialogs(null);
  // A view drawn from the live data (queues, running, workers) shows what is known at
  // once; the refresh then brings it up to date (a slow API no longer leaves it blank).
  if (entered) render();
  if (entered || !clock.ok) await refresh(true);
  else render();
}

function render() {
  renderQueues();
  if (route.view === "running") renderRunning();
  if (route.view === "workers") renderWorkers(route.id);
  const running = live.workers.reduce((n, w) => n + w.running_count, 0);
  const dead = live.queues.reduce((n, q) => n + (q.dead || 0), 0);
  $("#tab-running").textContent = live.registry === "available" ? String(running) : "";
  $("#tab-workers").textContent = live.registry === "available" ? String(live.workers.length) : "";
  $("#tab-dlq").textContent = String(dead);
}

// One refresh of what the open view shows; `full` on entering a view (or a click).
async function refresh(full = false) {
  const work = [loadLive()];
  if (route.view === "queues") work.push(loadHistory());
  // On a scan-type DLQ (RabbitMQ) a listing is an exclusive scan: every 5th poll only.
  const dlqDue = full || !clock.scan || clock.polls % 5 === 0;
  if (route.view === "dlq" && dlqDue) work.push(loadEntries());
  if (route.view === "jobs" && !$("#job").open) work.push(loadJobs());
  try {
    await Promise.all(work);
    clock.ok = Date.now();
    clock.error = null;
    render();
  } catch (error) {
    clock.error = error.message;
  }
  ticker();
}

function ticker() {
  const ago = clock.ok ? Math.round((Date.now() - clock.ok) / 1000) : null;
  const last = ago === null ? "never updated" : `updated ${ago} s ago`;
  $("#updated").textContent = clock.error ? `refresh failed: ${clock.error} (${last})` : last;
  $("#updated").classList.toggle("failing", Boolean(clock.error));
}

async function poll() {
  clock.polls += 1;
  await refresh();
  setTimeout(poll, REFRESH_MS);
}

async function start() {
  wireDlq(() => refresh(true));
  wireJobs(go);
  $("#chart-queue").addEventListener("change", renderChart);
  // Closing an item's dialog goes back to its view's URL, unless a link already went elsewhere.
  for (const [id, owner] of [["entry", "dlq"], ["job", "jobs"]]) {
    $(`#${id}`).addEventListener("close", () => {
      const now = parse(location.hash);
      if (now.view !== owner || !now.id) return;
      history.replaceState(null, "", `#${owner}`);
      route.id = null;
    });
  }
  window.addEventListener("hashchange", show);
  try {
    const health = await api("GET", "/health");
    clock.scan = health.dlq_access === "scan";
    $("#health").textContent = `${health.scheme}:// · dead letters: ${health.dlq_access || "none"}`;
  } catch (error) {
    $("#health").textContent = "broker unreachable: " + error.message;
  }
  await show();
  setInterval(ticker, 1000);
  setTimeout(poll, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
