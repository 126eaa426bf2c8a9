// The live views: Queues (counts and the hour's chart), Running (per worker), Workers.
import { $, api, cell, link, linkCell, renderRows, since, span, text, when } from "./api.js";
import { DEPTH, FLOW, drawChart } from "./chart.js";

// A worker ticks once a second and its entry lapses after 5 ticks: older than 3 s is stuck.
export const STALE_AFTER_S = 3;

export const live = { queues: [], workers: [], registry: "available", samples: [], history: null };

export async function loadLive() {
  const [queues, workers] = await Promise.all([api("GET", "/queues"), api("GET", "/workers")]);
  live.queues = queues.queues;
  live.workers = workers.workers;
  live.registry = workers.registry;
  live.reason = workers.reason;
}

function runningByQueue() {
  if (live.registry !== "available") return null;
  const counts = {};
  for (const w of live.workers) for (const r of w.running) {
    if (r.queue) counts[r.queue] = (counts[r.queue] || 0) + 1;
  }
  return counts;
}

export async function loadHistory() {
  const last = live.samples.length ? live.samples[live.samples.length - 1].at : null;
  const page = await api("GET", "/queues/history", { after: last });
  live.history = page;
  live.samples.push(...page.samples);
  const oldest = Date.now() - page.window * 1000;
  while (live.samples.length && new Date(live.samples[0].at).getTime() < oldest) live.samples.shift();
}

function hourTotals() {
  const totals = {};
  for (const s of live.samples) for (const q of s.queues) {
    const t = totals[q.name] || (totals[q.name] = { processed: null, failed: null });
    if (q.processed !== null) t.processed = (t.processed || 0) + q.processed;
    if (q.failed !== null) t.failed = (t.failed || 0) + q.failed;
  }
  return totals;
}

export function renderQueues() {
  const running = runningByQueue();
  const totals = hourTotals();
  const rows = live.queues.map((q) => [
    q.name, q.paused ?? null, q.ready, q.scheduled, running ? running[q.name] || 0 : null,
    q.in_flight, q.dead, (totals[q.name] || {}).processed ?? null, (totals[q.name] || {}).failed ?? null,
  ]);
  renderRows($("#queues tbody"), JSON.stringify(rows), (body) => {
    for (const [name, paused, ...counts] of rows) {
      const row = body.insertRow();
      row.dataset.queue = name;
      if (paused) row.classList.add("paused");
      const a = document.createElement("a");
      a.href = "#queues"; a.textContent = name;
      a.addEventListener("click", (e) => { e.preventDefault(); selectChart(name); });
      row.insertCell().append(a);
      ["ready", "scheduled", "running", "in-flight", "dead", "processed", "failed"]
        .forEach((cls, i) => cell(row, counts[i], cls));
      pauseCell(row, name, paused);
    }
  });
  $("#queues-empty").hidden = rows.length > 0;
  const select = $("#chart-queue");
  const names = ["", ...live.queues.map((q) => q.name)];
  if (select.dataset.key !== names.join("\n")) {
    const chosen = select.value;
    select.dataset.key = names.join("\n");
    select.replaceChildren(...names.map((n) => new Option(n || "all queues", n)));
    select.value = names.includes(chosen) ? chosen : "";
  }
  const datalist = $("#queue-names");
  if (datalist.dataset.key !== names.join("\n")) {
    datalist.dataset.key = names.join("\n");
    datalist.replaceChildren(...names.slice(1).map((n) => new Option(n)));
  }
  renderChart();
}

// Pause/Resume per queue; none where no state store keeps pauses (paused is null).
function pauseCell(row, name, paused) {
  const td = row.insertCell();
  td.className = "pause";
  if (paused === null) { td.textContent = "—"; td.title = "needs a state store (results=)"; return; }
  const button = document.createElement("button");
  button.textContent = paused ? "Resume" : "Pause";
  button.title = paused
    ? "let this queue's jobs start again (within a second)"
    : "stop this queue's jobs starting on every worker (running ones finish; submits are kept)";
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api("POST", `/queues/${encodeURIComponent(name)}/${paused ? "resume" : "pause"}`);
      await loadLive();
    } catch (error) {
      td.title = error.message;
    }
    renderQueues();
  });
  td.append(button);
}

function selectChart(name) {
  $("#chart-queue").value = name;
  renderChart();
}

export function renderChart() {
  const chosen = $("#chart-queue").value;
  const points = [];
  let previous = null;
  for (const s of live.samples) {
    const t = new Date(s.at).getTime();
    const p = { t, span: previous ? (t - previous) / 1000 : null };
    for (const [key] of [...DEPTH, ...FLOW]) {
      const values = s.queues.filter((q) => !chosen || q.name === chosen).map((q) => q[key]);
      p[key] = values.some((v) => v !== null) ? values.reduce((a, v) => a + (v || 0), 0) : null;
    }
    points.push(p);
    previous = t;
  }
  const window = live.history ? live.history.window : 3600;
  drawChart($("#chart"), points, window, Date.now());
  const interval = live.history ? live.history.interval : 5;
  const started = live.history ? when(live.history.since) + " UTC" : "—";
  $("#chart-note").textContent = `sampled every ${interval} s by this server since ${started}` +
    ` (kept in memory, one hour at most) · ${points.length} samples`;
}

function registryNote(target) {
  const note = $(target);
  note.hidden = live.registry === "available";
  note.textContent = live.reason ? `No worker registry: ${live.reason}` : "";
}

export function renderRunning() {
  registryNote("#running-note");
  const busy = live.workers.filter((w) => w.running.length);
  const key = JSON.stringify(busy.map((w) => [w.worker_id, w.running, Math.floor(Date.now() / 1000)]));
  renderRows($("#running-groups"), key, (root) => {
    for (const w of busy) {
      const group = document.createElement("section");
      group.className = "group";
      group.dataset.worker = w.worker_id;
      const head = document.createElement("h3");
      head.append(link("workers", w.worker_id), ` ${w.name} · ${w.running_count}/${w.concurrency} running`);
      const table = document.createElement("table");
      table.createTHead().insertRow().append(...["Job", "Function", "Queue", "Attempt", "Started (UTC)",
        "Running for", "Progress"].map((h) => Object.assign(document.createElement("th"), { textContent: h })));
      const body = table.createTBody();
      for (const r of w.running) {
        const row = body.insertRow();
        row.dataset.jobId = r.job_id;
        row.dataset.worker = w.worker_id;
        linkCell(row, "jobs", r.job_id);
        cell(row, r.function); cell(row, r.queue); cell(row, r.attempt);
        cell(row, when(r.started_at));
        cell(row, r.started_at ? span(since(r.started_at)) : "waiting to start");
        cell(row, r.progress === null ? null : `${Math.round(r.progress * 100)} %`);
      }
      group.append(head, table);
      root.append(group);
    }
    if (!busy.length) root.append(Object.assign(document.createElement("p"), {
      className: "muted", textContent: "No job is running.",
    }));
  });
  const total = busy.reduce((n, w) => n + w.running_count, 0);
  $("#running-count").textContent = `${total} running on ${busy.length} of ${live.workers.length} workers`;
}

export function renderWorkers(selected) {
  registryNote("#workers-note");
  const key = JSON.stringify([live.workers.map((w) => [w.worker_id, w.running, w.finished,
    Math.round(w.heartbeat_age)]), selected]);
  renderRows($("#workers tbody"), key, (body) => {
    for (const w of live.workers) {
      const row = body.insertRow();
      row.dataset.worker = w.worker_id;
      const stale = w.heartbeat_age > STALE_AFTER_S;
      row.classList.toggle("stale", stale);
      row.classList.toggle("selected", w.worker_id === selected);
      const id = linkCell(row, "workers", w.worker_id);
      id.append(Object.assign(document.createElement("div"), { className: "muted", textContent: w.name }));
      cell(row, `${w.host}:${w.pid}`);
      cell(row, w.queues.join(", "));
      cell(row, `${w.running_count}/${w.concurrency}`, "busy");
      cell(row, `${w.heartbeat_age.toFixed(1)} s${stale ? " · stale" : ""}`, "heartbeat");
      cell(row, when(w.started_at));
      const done = Object.values(w.finished || {});
      cell(row, `${done.reduce((n, c) => n + c.processed, 0)} (${done.reduce((n, c) => n + c.failed, 0)} failed)`);
      const jobs = row.insertCell();
      jobs.className = "jobs";
      for (const r of w.running) jobs.append(link("jobs", r.job_id, `${r.function} ${r.job_id.slice(0, 8)}`), " ");
      if (!w.running.length) jobs.textContent = "idle";
    }
  });
  $("#workers-empty").hidden = live.workers.length > 0 || live.registry !== "available";
  if (selected) {
    const row = $(`#workers tr[data-worker="${CSS.escape(selected)}"]`);
    if (row && !row.dataset.seen) { row.dataset.seen = "1"; row.scrollIntoView({ block: "center" }); }
    $("#workers-missing").hidden = Boolean(row);
    $("#workers-missing").textContent = row ? "" : `Worker ${text(selected)} is not alive (stopped, or its entry lapsed).`;
  } else {
    $("#workers-missing").hidden = true;
  }
}
