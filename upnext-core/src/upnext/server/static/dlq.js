// The Dead letters view: filter (queue, function, job id), page, open, replay, delete, purge.
import { $, API, api, cell, hashId, link, renderRows, request, when } from "./api.js";

const dlq = { cursors: [null], next: null, entry: null };

// A status line: text, or text and nodes (a link to the job a replay made).
export function say(...parts) { $("#status").replaceChildren(...parts); }

export function filters() {
  return {
    queue: $("#filter-queue").value.trim(),
    function: $("#filter-function").value.trim(),
    job_id: $("#filter-job").value.trim(),
    limit: $("#filter-limit").value,
  };
}

export async function loadEntries() {
  const cursor = dlq.cursors[dlq.cursors.length - 1];
  let page;
  try {
    page = await api("GET", "/dlq", { ...filters(), cursor });
  } catch (error) {
    say("could not load entries: " + error.message);
    return;
  }
  renderRows($("#entries tbody"), JSON.stringify(page.items.map((e) => e.id)), (body) => {
    for (const entry of page.items) {
      const row = body.insertRow();
      row.dataset.id = entry.id;
      cell(row, when(entry.failed_at));
      cell(row, entry.queue);
      cell(row, entry.function);
      const error = entry.error ? `${entry.error.type}: ${entry.error.message}` : entry.reason;
      cell(row, error, "error").title = error;
      cell(row, entry.attempts.length);
      const job = row.insertCell();
      job.append(link("jobs", entry.job_id, entry.job_id.slice(0, 12)));
      row.addEventListener("click", (event) => {
        if (event.target.closest("a")) return;  // the job link goes to the job
        location.hash = `#dlq/${hashId(entry.id)}`;
      });
    }
  });
  $("#empty").hidden = page.items.length > 0;
  dlq.next = page.next_cursor;
  $("#next-page").disabled = !page.next_cursor;
  $("#first-page").disabled = dlq.cursors.length === 1;
  $("#page-info").textContent = `page ${dlq.cursors.length}: ${page.items.length} entries`;
}

function meta(entry) {
  const list = $("#entry-meta");
  list.replaceChildren();
  const rows = [
    ["Entry", entry.id], ["Job", link("jobs", entry.job_id)], ["Queue", entry.queue],
    ["Reason", entry.reason], ["Failed at", when(entry.failed_at) + " UTC"],
  ];
  if (entry.replay_of) rows.push(["Replay of", link("jobs", entry.replay_of)]);
  if (entry.parent_id) rows.push(["Parent", link("jobs", entry.parent_id)]);
  for (const [term, value] of rows) {
    const dt = document.createElement("dt"); dt.textContent = term;
    const dd = document.createElement("dd"); dd.append(value);
    list.append(dt, dd);
  }
}

function attempts(entry) {
  const list = $("#entry-attempts");
  list.replaceChildren();
  for (const a of entry.attempts) {
    const item = document.createElement("li");
    item.className = a.outcome;
    const took = a.started && a.finished ? ` (${(a.finished - a.started).toFixed(3)} s)` : "";
    item.append(`#${a.number} ${a.outcome} on `, a.worker ? link("workers", a.worker) : "?",
      ` at ${when(a.started)}${took}` + (a.error ? ` — ${a.error}` : ""));
    list.append(item);
  }
  if (!entry.attempts.length) list.textContent = "no attempt ran";
}

export async function openEntry(id) {
  try {
    const entry = await api("GET", `/dlq/${encodeURIComponent(id)}`);
    dlq.entry = entry;
    $("#entry-function").textContent = entry.function;
    meta(entry);
    $("#entry-payload").textContent = entry.payload
      ? JSON.stringify(entry.payload, null, 2) : `(undecodable bytes, base64) ${entry.raw || ""}`;
    $("#entry-error").textContent = entry.error ? `${entry.error.type}: ${entry.error.message}` : "—";
    $("#entry-traceback").textContent = (entry.error && entry.error.traceback) || "";
    attempts(entry);
    $("#entry-replay").disabled = !entry.payload;
    if (!$("#entry").open) $("#entry").showModal();
  } catch (error) {
    say(error.message);
    history.replaceState(null, "", "#dlq");
    await loadEntries();
  }
}

function confirmed(question) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = question;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function act(question, work, after) {
  if (!(await confirmed(question))) return;
  try {
    say(...[].concat(await work()));
  } catch (error) {
    say(error.message);
  }
  await loadEntries();
  await after();
}

export function wireDlq(refreshCounts) {
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    dlq.cursors = [null];
    loadEntries();
  });
  $("#next-page").addEventListener("click", () => { dlq.cursors.push(dlq.next); loadEntries(); });
  $("#first-page").addEventListener("click", () => { dlq.cursors = [null]; loadEntries(); });
  $("#entry-close").addEventListener("click", () => $("#entry").close());
  $("#entry-replay").addEventListener("click", () => {
    const entry = dlq.entry;
    $("#entry").close();
    act(`Replay ${entry.function} (entry ${entry.id}) as a new job?`, async () => {
      const { job_id } = await api("POST", `/dlq/${encodeURIComponent(entry.id)}/replay`);
      return [`replayed ${entry.id} as job `, link("jobs", job_id)];
    }, refreshCounts);
  });
  $("#entry-delete").addEventListener("click", () => {
    const entry = dlq.entry;
    $("#entry").close();
    act(`Delete entry ${entry.id} for good?`, async () => {
      await api("DELETE", `/dlq/${encodeURIComponent(entry.id)}`);
      return `deleted ${entry.id}`;
    }, refreshCounts);
  });
  $("#purge").addEventListener("click", () => {
    const queue = filters().queue;
    act(`Delete every dead-letter entry of ${queue ? "queue " + queue : "every queue"}?`, async () => {
      const { purged } = await api("DELETE", "/dlq", { queue });
      return `purged ${purged} entries`;
    }, refreshCounts);
  });
  $("#replay-all").addEventListener("click", () => {
    const f = filters();
    act("Replay every entry matching the filters (up to 500)?", async () => {
      const body = await request("POST", API + "/dlq/replay", {
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify({ queue: f.queue || null, function: f.function || null, limit: 500 }),
      });
      return `replayed ${body.replayed.length}, skipped ${Object.keys(body.skipped).length}`;
    }, refreshCounts);
  });
}
