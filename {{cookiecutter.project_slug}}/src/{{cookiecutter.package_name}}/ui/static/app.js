// The app's only script: JSON POSTs with the CSRF header, fragments refreshed in place, live validation,
// and Plotly charts (plotly.min.js from the plotly wheel). No framework, nothing fetched from outside.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;

async function post(url, data) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": CSRF},
    body: JSON.stringify(data || {}),
  });
  let body = {};
  try { body = await response.json(); } catch (e) { body = {error: await response.text()}; }
  return {ok: response.ok, status: response.status, body};
}

async function getJSON(url) {
  const response = await fetch(url, {credentials: "same-origin"});
  return response.ok ? response.json() : {error: await response.text()};
}

function toast(message, isError) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = isError ? "error" : "ok";
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, isError ? 12000 : 5000);
}

function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

function formatSeconds(s) {
  if (s === null || s === undefined) return "–";
  s = Math.round(s);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
  return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
}

// ------------------------------------------------------------------------------------------------------------
// fragments refreshed in place, pages that wait for a background answer

function refreshFragment(el) {
  fetch(el.dataset.src, {credentials: "same-origin"})
    .then(r => r.ok ? r.text() : Promise.reject(r.status))
    .then(html => { el.innerHTML = html; })
    .catch(() => {});
}

function startFragments() {
  document.querySelectorAll("[data-src]").forEach(el => {
    refreshFragment(el);
    const every = parseInt(el.dataset.every || "0", 10);
    if (every) setInterval(() => refreshFragment(el), every);
  });
  document.querySelectorAll("[data-reload-when-ready]").forEach(el => {
    if (el.closest("[data-src]")) return;  // a fragment refreshes itself
    const timer = setInterval(async () => {
      const state = await getJSON(el.dataset.reloadWhenReady);
      if (state.ready && !state.refreshing) { clearInterval(timer); location.reload(); }
    }, 1000);
  });
}

// ------------------------------------------------------------------------------------------------------------
// Configure

function formValues() {
  const values = {};
  document.querySelectorAll("#params-form [name]").forEach(el => { values[el.name] = el.value; });
  return values;
}

function showErrors(fields, other, changed) {
  document.querySelectorAll("#params-form .field").forEach(div => {
    const lines = (fields || {})[div.dataset.key] || [];
    const box = div.querySelector(".message");
    box.replaceChildren(...lines.map(line => Object.assign(document.createElement("div"), {textContent: line})));
    div.classList.toggle("invalid", lines.length > 0);
    div.classList.toggle("changed", (changed || []).includes(div.dataset.key));
  });
  const box = document.getElementById("form-errors");
  box.replaceChildren(...(other || []).map(line => Object.assign(document.createElement("div"), {textContent: line})));
  box.hidden = !(other || []).length;
  if (changed) {
    document.getElementById("changed").textContent = changed.length ? "Changed: " + changed.join(", ") : "No changes.";
  }
}

const validateForm = debounce(async () => {
  const result = await post("/api/validate", {values: formValues()});
  if (result.ok) showErrors(result.body.fields, result.body.other, result.body.changed);
  document.getElementById("params-form").dataset.validated = String(Date.now());
}, 250);

async function saveForm() {
  const form = document.getElementById("params-form");
  const result = await post("/api/params", {values: formValues(), sha256: form.dataset.sha256});
  if (!result.ok) {
    showErrors(result.body.fields || {}, result.body.other || [result.body.error]);
    toast("Not saved: params.yaml is unchanged. " + (result.body.error || ""), true);
    return;
  }
  form.dataset.sha256 = result.body.sha256;
  showErrors({}, [], []);
  toast(result.body.saved ? "Saved params.yaml: " + result.body.changed.join(", ") : "Nothing to save.");
  form.dataset.saved = String(Date.now());
}

async function queueForm() {
  const result = await post("/api/queue", {values: formValues()});
  if (!result.ok) {
    showErrors(result.body.fields || {}, result.body.other || [result.body.error]);
    toast("Not queued. " + (result.body.error || ""), true);
    return;
  }
  toast("Queued " + result.body.queued.join(", ") + " — start it on the Launch page.");
}

// ------------------------------------------------------------------------------------------------------------
// Launch

async function queueSweep() {
  const sweep = {};
  document.querySelectorAll("#sweep .sweep-row").forEach(row => {
    const key = row.querySelector(".sweep-key").value.trim();
    if (key) sweep[key] = row.querySelector(".sweep-values").value;
  });
  const message = document.getElementById("sweep-message");
  if (!Object.keys(sweep).length) { message.textContent = "Enter a key and its values."; return; }
  const result = await post("/api/queue", {sweep});
  message.textContent = result.ok ? "Queued: " + result.body.queued.join(", ") : result.body.error;
  message.className = result.ok ? "message ok" : "message error";
  refreshFragment(document.getElementById("queue-table"));
}

let logTimer = null;

async function showLog(params) {
  const view = document.getElementById("log-view");
  const load = async () => {
    const data = await getJSON("/api/log?" + new URLSearchParams(params));
    document.getElementById("log-title").textContent = data.title || "";
    const pre = document.getElementById("log-text");
    pre.textContent = data.text || data.error || "";
    pre.scrollTop = pre.scrollHeight;
    if (!data.running && logTimer) { clearInterval(logTimer); logTimer = null; }
  };
  clearInterval(logTimer);
  view.hidden = false;
  await load();
  logTimer = setInterval(load, 2000);
  view.scrollIntoView();
}

async function act(url, data, done) {
  const result = await post(url, data);
  toast(result.ok ? (done || "Done.") + (result.body.output ? " " + result.body.output.slice(-300) : "")
                  : result.body.error, !result.ok);
  document.querySelectorAll("[data-src]").forEach(refreshFragment);
  return result;
}

// ------------------------------------------------------------------------------------------------------------
// Watch

const CHART_CONFIG = {displaylogo: false, responsive: true};

async function pollWatch(box) {
  const data = await getJSON("/api/watch?run=" + encodeURIComponent(box.dataset.run));
  if (data.error) { toast(data.error, true); return; }
  const t = data.training;
  const set = (id, text) => { document.getElementById(id).textContent = text; };
  document.getElementById("w-none").hidden = t.exists;
  if (t.step.length) {
    set("w-step", t.last_step + (t.max_steps ? " / " + t.max_steps : ""));
    set("w-loss", t.loss[t.loss.length - 1].toPrecision(4));
    set("w-speed", t.samples_per_s === null ? "–" : t.samples_per_s.toFixed(1));
    set("w-wait", t.data_wait === null ? "–" : (100 * t.data_wait).toFixed(0) + " %");
    set("w-eta", t.last_step >= t.max_steps ? "done" : formatSeconds(t.eta_s));
  }
  if (t.exists) set("w-updated", formatSeconds(t.updated_s_ago) + " ago");
  if (window.Plotly) {
    Plotly.react("loss-chart", [{x: t.step, y: t.loss, mode: "lines+markers", name: "loss"}],
      {title: {text: "Training loss", x: 0.02, xanchor: "left"}, xaxis: {title: {text: "step"}}, yaxis: {title: {text: "loss"}},
       margin: {t: 40, r: 20}, height: 360}, CHART_CONFIG);
  }
  const rows = data.snakemake.map(s => {
    const tr = document.createElement("tr");
    const cells = [s.command || s.file, s.total ? s.progress + " of " + s.total : "–", s.done.join(", "),
      s.running.join(", ") + (s.incomplete.length ? " (stopped: " + s.incomplete.join(", ") + ")" : ""),
      s.failed.join(", "), formatSeconds(s.updated_s_ago) + " ago"];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 4 && s.failed.length) td.className = "error";
      tr.appendChild(td);
    });
    return tr;
  });
  const body = document.getElementById("w-snakemake");
  if (rows.length) body.replaceChildren(...rows);
  else body.innerHTML = '<tr><td colspan="6" class="muted">No Snakemake run in this folder yet.</td></tr>';
}

// ------------------------------------------------------------------------------------------------------------
// Compare

function drawCompare() {
  const data = JSON.parse(document.getElementById("chart-data").textContent);
  document.querySelectorAll("#charts .chart").forEach(div => {
    const metric = div.dataset.metric, channel = div.dataset.channel;
    const byRun = ((data.curves || {})[metric] || {})[channel] || {};
    const traces = data.runs.filter(id => byRun[id]).map(id => (
      {x: byRun[id].lead_hours, y: byRun[id].model, mode: "lines+markers", name: id}));
    const first = data.runs.find(id => byRun[id]);
    if (first) {
      for (const ref of ["persistence", "climatology"]) {
        if (byRun[first][ref]) {
          traces.push({x: byRun[first].lead_hours, y: byRun[first][ref], mode: "lines", name: ref + " (" + first + ")",
                       line: {dash: ref === "persistence" ? "dash" : "dot", color: "#888"}});
        }
      }
    }
    Plotly.newPlot(div, traces, {title: {text: metric.toUpperCase() + " " + channel, x: 0.02, xanchor: "left"},
      xaxis: {title: {text: "lead (h)"}}, yaxis: {title: {text: metric.toUpperCase()}},
      margin: {t: 40, r: 10, b: 100}, height: 380, legend: {orientation: "h", y: -0.3}}, CHART_CONFIG);
  });
}

function compareUrl(changes) {
  const params = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(changes)) params.set(k, v);
  return "/compare?" + params;
}

// ------------------------------------------------------------------------------------------------------------
// wiring

const ACTIONS = {
  "save": () => saveForm(),
  "queue-form": () => queueForm(),
  "add-sweep-row": () => {
    const rows = document.getElementById("sweep");
    const row = rows.querySelector(".sweep-row").cloneNode(true);
    row.querySelectorAll("input").forEach(i => { i.value = ""; });
    rows.appendChild(row);
  },
  "queue-sweep": () => queueSweep(),
  "queue-start": () => act("/api/queue/start", {
    workers: parseInt(document.getElementById("workers").value, 10),
    profile: document.getElementById("queue-profile").value || null}, "Queue started."),
  "cancel-exp": el => act("/api/queue/cancel", {name: el.dataset.name}, "Cancelled " + el.dataset.name + "."),
  "run": el => act("/api/run", {profile: el.dataset.profile || null}, "Started."),
  "cancel-job": el => act("/api/jobs/cancel", {job: el.dataset.job}, "Stopping."),
  "log": el => showLog(el.dataset.job ? {job: el.dataset.job} : {exp: el.dataset.exp}),
  "close-log": () => { clearInterval(logTimer); document.getElementById("log-view").hidden = true; },
  "plot-selected": () => {
    const picked = [...document.querySelectorAll("#compare-table .pick:checked")].map(c => c.value);
    location.href = compareUrl({runs: picked.join(",")});
  },
  "apply": async el => {
    if (!confirm("Apply " + el.dataset.name + " to the workspace and commit it?")) return;
    const result = await act("/api/exp/apply", {name: el.dataset.name}, "Applied and committed.");
    if (result.ok) setTimeout(() => location.reload(), 1500);
  },
  "branch": el => {
    const branch = prompt("Name of the new git branch for " + el.dataset.name + ":", el.dataset.name);
    if (branch) act("/api/exp/branch", {name: el.dataset.name, branch: branch.trim()}, "Branch " + branch + " made.");
  },
};

document.addEventListener("click", event => {
  const el = event.target.closest("[data-action]");
  if (el && ACTIONS[el.dataset.action]) { event.preventDefault(); ACTIONS[el.dataset.action](el); }
});

document.addEventListener("DOMContentLoaded", () => {
  startFragments();
  const form = document.getElementById("params-form");
  if (form) {
    form.addEventListener("input", validateForm);
    form.addEventListener("change", validateForm);
    form.addEventListener("submit", e => e.preventDefault());
  }
  const watchBox = document.getElementById("watch");
  if (watchBox) { pollWatch(watchBox); setInterval(() => pollWatch(watchBox), 1500); }
  if (document.getElementById("chart-data")) drawCompare();
  const lead = document.getElementById("lead");
  if (lead) lead.addEventListener("change", () => { location.href = compareUrl({lead: lead.value}); });
});
