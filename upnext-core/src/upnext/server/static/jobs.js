// The Jobs view (GET /api/v1/jobs: filter by task and status, paged) and a job's detail dialog.
import { $, ApiError, api, cell, hashId, link, linkCell, renderRows, text, when } from "./api.js";

const jobs = { cursors: [null], next: null, searched: false };

// Fields of a job that name another item, and the view that shows it.
const LINKS = {
  job_id: "jobs", parent_id: "jobs", replay_of: "jobs", root_id: "jobs", replayed_as: "jobs",
  worker_id: "workers", dlq_entry_id: "dlq",
};

export function jobFilters() {
  return {
    task: $("#jobs-task").value.trim(),
    status: $("#jobs-status").value,
    queue: $("#jobs-queue").value.trim(),
    limit: $("#jobs-limit").value,
  };
}

function explain(error) {
  if (error instanceof ApiError && error.status === 404) {
    return "This server cannot list jobs (GET /api/v1/jobs is missing): look one up by id above.";
  }
  return "Jobs cannot be listed: " + error.message;
}

export async function loadJobs() {
  const cursor = jobs.cursors[jobs.cursors.length - 1];
  let page;
  try {
    page = await api("GET", "/jobs", { ...jobFilters(), cursor });
  } catch (error) {
    $("#jobs-message").textContent = explain(error);
    $("#jobs-message").hidden = false;
    renderRows($("#jobs tbody"), "error", () => {});
    $("#jobs-next").disabled = true;
    return;
  }
  $("#jobs-message").hidden = true;
  renderRows($("#jobs tbody"), JSON.stringify(page.items), (body) => {
    for (const job of page.items) {
      const row = body.insertRow();
      row.dataset.jobId = job.job_id;
      row.dataset.status = job.status;
      linkCell(row, "jobs", job.job_id);
      cell(row, job.function); cell(row, job.queue);
      cell(row, job.status, `status ${job.status}`);
      cell(row, job.attempt);
      linkCell(row, "workers", job.worker_id);
      cell(row, when(job.enqueued_at));
      cell(row, when(job.started_at));
      cell(row, when(job.finished_at));
      cell(row, job.duration_ms === null || job.duration_ms === undefined ? null : `${job.duration_ms} ms`);
      const error = job.error ? (job.error.type ? `${job.error.type}: ${job.error.message}` : String(job.error)) : null;
      cell(row, error, "error").title = error || "";
      const extra = row.insertCell();
      if (job.parent_id) extra.append("parent ", link("jobs", job.parent_id, job.parent_id.slice(0, 8)), " ");
      if (job.dlq_entry_id) extra.append(link("dlq", job.dlq_entry_id, "dead letter"));
    }
  });
  jobs.next = page.next_cursor;
  $("#jobs-next").disabled = !page.next_cursor;
  $("#jobs-first").disabled = jobs.cursors.length === 1;
  const exact = page.exact === false ? " (estimate: this broker cannot list every job exactly)" : "";
  $("#jobs-info").textContent = `page ${jobs.cursors.length}: ${page.items.length} jobs` +
    (page.source ? ` · from ${page.source}` : "") + exact;
}

function row(list, term, value) {
  const dt = document.createElement("dt"); dt.textContent = term;
  const dd = document.createElement("dd");
  if (LINKS[term] && value) dd.append(link(LINKS[term], value));
  else if (Array.isArray(value) && term === "children") {
    for (const child of value) {
      const id = typeof child === "string" ? child : child.job_id;
      dd.append(link("jobs", id), " ");
    }
    if (!value.length) dd.textContent = "none";
  } else if (value !== null && typeof value === "object") {
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(value, null, 2);
    dd.append(pre);
  } else if (term.endsWith("_at")) dd.textContent = when(value) + (value ? " UTC" : "");
  else dd.textContent = text(value);
  list.append(dt, dd);
}

export async function openJob(id) {
  $("#job-title").textContent = `Job ${id}`;
  const list = $("#job-meta");
  list.replaceChildren();
  $("#job-traceback").textContent = "";
  if (!$("#job").open) $("#job").showModal();
  try {
    const job = await api("GET", `/jobs/${encodeURIComponent(id)}`);
    const error = job.error;
    for (const [term, value] of Object.entries(job)) {
      if (term === "error" && value && value.traceback) {
        row(list, term, `${value.type}: ${value.message}`);
      } else row(list, term, value);
    }
    $("#job-traceback").textContent = (error && error.traceback) || "";
    $("#job-unknown").hidden = job.status !== "unknown";
  } catch (error) {
    row(list, "error", error.message);
  }
}

export function wireJobs(go) {
  $("#jobs-search").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#jobs-id").value.trim();
    if (id) go(`#jobs/${hashId(id)}`);
  });
  $("#jobs-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    jobs.cursors = [null];
    loadJobs();
  });
  $("#jobs-next").addEventListener("click", () => { jobs.cursors.push(jobs.next); loadJobs(); });
  $("#jobs-first").addEventListener("click", () => { jobs.cursors = [null]; loadJobs(); });
  $("#job-close").addEventListener("click", () => $("#job").close());
}
