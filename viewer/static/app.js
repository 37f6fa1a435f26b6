// The viewer page: it uses only the JSON API of viewer/app.py.
"use strict";

const PX_PER_MM = 96 / 25.4;            // CSS pixels per millimetre (CSS fixes 96 px per inch)
const SENSITIVITIES = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 200, 500];  // µV/mm
const LABEL_W = 70;                     // left margin of the traces for channel names
const SCALE_W = 70;                     // right margin for the scale bar
const plotWidth = (width) => Math.max(10, width - LABEL_W - SCALE_W);
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#bab0ac"];
const SLEEP_ORDER = ["W", "R", "REM", "N1", "N2", "N3", "N4"];

const state = {
  recordings: [], tasks: [], recording: null, task: null, start: 0, pageLength: 10,
  sensitivity: 7, page: null, job: null, result: null, selected: null, pollTimer: null,
  duration: 0,
};

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return body;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

function fmtTime(s) {
  const m = Math.floor(s / 60), sec = s - 60 * m;
  return m > 0 ? `${m}:${sec.toFixed(1).padStart(4, "0")}` : `${sec.toFixed(1)} s`;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// ------------------------------------------------------------------ recordings, tasks, upload

async function loadRecordings(selectId) {
  state.recordings = await api("/api/recordings");
  const body = $("recordings").querySelector("tbody");
  body.replaceChildren();
  for (const rec of state.recordings) {
    const row = el("tr", null, {"data-id": rec.id, title: rec.error || rec.id});
    row.append(el("td", rec.id), el("td", rec.duration_s == null ? "?" : fmtTime(rec.duration_s)),
               el("td", rec.n_channels ?? "?"), el("td", rec.sfreq ?? "?"));
    if (rec.error) row.classList.add("unreadable");
    row.addEventListener("click", () => selectRecording(rec.id));
    body.append(row);
  }
  if (selectId) selectRecording(selectId);
}

async function loadTasks() {
  const status = await api("/api/status");
  $("model-info").textContent = `model ${status.model_path} on ${status.device}`;
  $("upload-hint").textContent =
    `EDF, BDF, GDF, FIF or CNT, up to ${Math.round(status.max_upload_bytes / 2 ** 20)} MiB`;
  state.tasks = status.tasks;
  const select = $("task");
  select.replaceChildren();
  for (const task of state.tasks) {
    select.append(el("option", `${task.name} (${task.source})`, {value: task.name}));
  }
  selectTask(select.value);
}

function selectTask(name) {
  state.task = state.tasks.find((t) => t.name === name) || null;
  $("task-question").textContent = state.task ? state.task.question : "";
  resetResult();
  refresh();
}

function selectRecording(id) {
  state.recording = state.recordings.find((r) => r.id === id) || null;
  for (const row of $("recordings").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  state.start = 0;
  state.duration = state.recording && state.recording.duration_s || 0;
  resetResult();
  refresh();
}

function resetResult() {
  clearInterval(state.pollTimer);
  state.job = null; state.result = null; state.selected = null;
  $("progress").value = 0;
  $("job-state").textContent = "";
  $("downloads").replaceChildren();
  $("summary-section").hidden = true;
  $("details").hidden = true;
  $("hypnogram-section").hidden = true;
}

function refresh() {
  $("analyse").disabled = !(state.recording && state.task && !state.recording.error);
  loadPage();
  showKept();
}

function analysisOptions() {
  const abstain = $("abstain").value === "" ? null : Number($("abstain").value);
  return {recording: state.recording.id, task: state.task.name, qc: $("qc").value, abstain};
}

async function showKept() {   // an analysis that already ran opens at once
  if (!state.recording || !state.task || state.recording.error) return;
  const options = analysisOptions();
  const query = new URLSearchParams({recording: options.recording, task: options.task,
                                     qc: options.qc});
  if (options.abstain !== null) query.set("abstain", options.abstain);
  try {
    const job = await api(`/api/analyses/kept?${query}`);
    if (state.recording && state.recording.id === options.recording && !state.job) followJob(job);
  } catch (e) { /* none kept: the Analyse button runs it */ }
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) { showMessage("choose a file to upload first"); return; }
  $("upload-button").disabled = true;
  try {
    const rec = await api(`/api/uploads?filename=${encodeURIComponent(file.name)}`,
                          {method: "POST", body: file,
                           headers: {"Content-Type": "application/octet-stream"}});
    showMessage("");
    await loadRecordings(rec.id);
  } catch (e) {
    showMessage(`upload refused (${e.status}): ${e.message}`);
  } finally {
    $("upload-button").disabled = false;
  }
}

// ------------------------------------------------------------------ analysis

async function analyse() {
  resetResult();
  try {
    const job = await api("/api/analyses", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(analysisOptions()),
    });
    showMessage("");
    followJob(job);
  } catch (e) {
    showMessage(`analysis refused (${e.status}): ${e.message}`);
  }
}

function followJob(job) {
  state.job = job;
  showJob(job);
  if (job.state === "done") { loadResults(); return; }
  state.pollTimer = setInterval(async () => {
    try {
      const now = await api(`/api/jobs/${job.id}`);
      state.job = now;
      showJob(now);
      if (now.state === "done") { clearInterval(state.pollTimer); loadResults(); }
      if (now.state === "failed" || now.state === "cancelled") clearInterval(state.pollTimer);
    } catch (e) {
      clearInterval(state.pollTimer);
      showMessage(`lost the job: ${e.message}`);
    }
  }, 400);
}

function showJob(job) {
  const progress = $("progress");
  progress.max = job.total || 1;
  progress.value = job.state === "done" ? progress.max : job.done;
  let text = job.state;
  if (job.total) text += ` — ${job.state === "done" ? job.total : job.done}/${job.total} windows`;
  if (job.cached) text += " (kept result)";
  if (job.error) text += `: ${job.error}`;
  $("job-state").textContent = text;
}

async function loadResults() {
  const result = await api(`/api/jobs/${state.job.id}/results`);
  state.result = result;
  const downloads = $("downloads");
  downloads.replaceChildren();
  for (const name of result.files) {
    const li = el("li");
    li.append(el("a", name, {href: `/api/jobs/${state.job.id}/files/${encodeURIComponent(name)}`,
                             download: name}));
    downloads.append(li);
  }
  const summary = $("summary");
  summary.replaceChildren();
  for (const [k, v] of Object.entries(result.summary || {})) {
    const row = el("tr");
    row.append(el("td", k), el("td", typeof v === "number" ? +v.toFixed(4) : String(v)));
    summary.append(row);
  }
  const warnings = $("warnings");
  warnings.replaceChildren(...(result.warnings || []).map((w) => el("li", w)));
  $("summary-section").hidden = false;
  drawLegend();
  drawSleep();
  loadPage();
}

// ------------------------------------------------------------------ signal pages

async function loadPage() {
  drawAnswers();
  if (!state.recording || !state.task || state.recording.error) {
    state.page = null; drawTraces(); return;
  }
  const width = Math.round(plotWidth($("traces").clientWidth));
  const query = new URLSearchParams({recording: state.recording.id, task: state.task.name,
                                     start_s: state.start, duration_s: state.pageLength, width});
  const asked = query.toString();
  state.asked = asked;
  try {
    const page = await api(`/api/signal?${asked}`);
    if (state.asked !== asked) return;          // a newer page was asked for meanwhile
    state.page = page;
    state.duration = page.duration_total_s;
    showMessage("");
  } catch (e) {
    state.page = null;
    showMessage(`signal (${e.status}): ${e.message}`);
  }
  drawTraces();
  drawAnswers();
}

function goTo(start) {
  const last = Math.max(0, state.duration - state.pageLength);
  state.start = Math.min(Math.max(0, start), last);
  loadPage();
}

function signalText() {
  const s = state.result && state.result.signal;
  if (!s) {
    return state.task ? `the signal as task ${state.task.name} preprocesses it; its reference ` +
                        "and filters are stated here once the analysis has run" : "";
  }
  const parts = [`montage: ${s.montage}`, `filters: ${s.filters}`];
  if (s.sfreq) parts.push(`${s.sfreq} Hz` + (s.source_sfreq && s.source_sfreq !== s.sfreq ?
                                             ` (recorded at ${s.source_sfreq} Hz)` : ""));
  if (s.window_seconds) parts.push(`windows of ${s.window_seconds} s every ${s.stride_seconds} s`);
  const left = (s.left_out || []).map((c) => (c.channel ? `${c.channel} (${c.reason})` : String(c)));
  if (left.length) parts.push(`left out: ${left.join(", ")}`);
  return parts.join(" · ");
}

function setupCanvas(canvas, cssHeight) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  canvas.style.height = `${cssHeight}px`;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, cssHeight);
  return [ctx, width];
}

function drawTraces() {
  const canvas = $("traces");
  const page = state.page;
  const nCh = page ? page.channels.length : 0;
  const spacing = 28;
  const height = Math.max(120, nCh * spacing + 40);
  const [ctx, width] = setupCanvas(canvas, height);
  const plotW = plotWidth(width);
  $("signal-info").textContent = signalText();
  if (!page) {
    $("page-time").textContent = "–";
    ctx.fillStyle = "#888";
    ctx.fillText("choose a recording and a task", LABEL_W, 30);
    return;
  }
  const span = state.pageLength;
  const xOf = (t) => LABEL_W + (t - state.start) / span * plotW;
  $("page-time").textContent =
    `${fmtTime(page.start_s)} – ${fmtTime(page.stop_s)} of ${fmtTime(page.duration_total_s)}`;
  // seconds grid
  ctx.strokeStyle = "#e4e4e4"; ctx.lineWidth = 1; ctx.fillStyle = "#777";
  ctx.font = "10px sans-serif";
  for (let t = Math.ceil(state.start); t <= state.start + span; t += 1) {
    const x = xOf(t);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, nCh * spacing + 10); ctx.stroke();
    ctx.fillText(fmtTime(t), x + 2, nCh * spacing + 22);
  }
  // the file's own annotations
  for (const a of page.annotations || []) {
    const x0 = xOf(Math.max(a.onset_s, state.start));
    const x1 = Math.max(x0 + 2, xOf(Math.min(a.onset_s + a.duration_s, state.start + span)));
    ctx.fillStyle = "rgba(255, 190, 60, 0.25)";
    ctx.fillRect(x0, 0, x1 - x0, nCh * spacing + 10);
    ctx.fillStyle = "#9a6200";
    ctx.fillText(a.description, x0 + 2, 10);
  }
  // traces: per pixel column a vertical line from min to max (an envelope cannot alias)
  const pxPerUv = PX_PER_MM / state.sensitivity;
  const colW = plotW * ((page.stop_s - page.start_s) / span) / page.width;
  ctx.save();
  ctx.beginPath(); ctx.rect(LABEL_W, 0, plotW, nCh * spacing + 10); ctx.clip();
  ctx.strokeStyle = "#1b2a3a"; ctx.lineWidth = 1;
  for (let c = 0; c < nCh; c++) {
    const base = 14 + c * spacing + spacing / 2;
    const mins = page.mins[c], maxs = page.maxs[c];
    ctx.beginPath();
    for (let i = 0; i < page.width; i++) {
      const x = LABEL_W + (page.start_s - state.start) / span * plotW + (i + 0.5) * colW;
      const y0 = base - maxs[i] * pxPerUv, y1 = base - mins[i] * pxPerUv;
      if (i === 0) ctx.moveTo(x, y0); else ctx.lineTo(x, y0);
      ctx.lineTo(x, Math.max(y1, y0 + 0.5));
    }
    ctx.stroke();
  }
  ctx.restore();
  ctx.fillStyle = "#222"; ctx.font = "11px sans-serif";
  page.channels.forEach((name, c) => ctx.fillText(name, 4, 14 + c * spacing + spacing / 2 + 4));
  // scale bar: a round µV value, drawn at its true length for this sensitivity
  const barUv = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000].find(
    (v) => v * pxPerUv >= spacing * 0.8) || 5000;
  const barPx = barUv * pxPerUv, xb = LABEL_W + plotW + 12, yb = nCh * spacing + 10;
  ctx.strokeStyle = "#c00"; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.moveTo(xb, yb); ctx.lineTo(xb, yb - barPx);
  ctx.moveTo(xb, yb); ctx.lineTo(xb + Math.min(SCALE_W - 14, plotW / span), yb); ctx.stroke();
  ctx.fillStyle = "#c00";
  ctx.fillText(`${barUv} µV`, xb + 4, yb - barPx + 10);
  ctx.fillText("1 s", xb + 16, yb - 4);
  ctx.fillStyle = "#555";
  ctx.fillText(`${state.sensitivity} µV/mm`, 4, nCh * spacing + 22);
}

// ------------------------------------------------------------------ answers

function classColor(i) { return i == null ? "#bbb" : PALETTE[i % PALETTE.length]; }

function flagsOf(w) {
  const f = w.qc_flags;
  if (f == null || f === "") return [];
  return Array.isArray(f) ? f : String(f).split(/[;,|]\s*/).filter(Boolean);
}

function windowAt(t) {
  const windows = state.result ? state.result.windows : [];
  let found = null;
  for (const w of windows) if (w.start_s <= t && t < w.start_s + w.duration_s) found = w;
  return found;
}

function paintWindows(ctx, x0, plotW, t0, span, top, h) {
  for (const w of state.result.windows) {
    const a = Math.max(w.start_s, t0), b = Math.min(w.start_s + w.duration_s, t0 + span);
    if (b <= a) continue;
    const x = x0 + (a - t0) / span * plotW, wpx = Math.max(1, (b - a) / span * plotW);
    ctx.fillStyle = classColor(w.label);
    ctx.globalAlpha = w.uncertain ? 0.35 : 1;
    ctx.fillRect(x, top, wpx, h);
    ctx.globalAlpha = 1;
    if (w.uncertain) {                     // hatched: the model abstained
      ctx.save();
      ctx.beginPath(); ctx.rect(x, top, wpx, h); ctx.clip();
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.beginPath();
      for (let k = -h; k < wpx; k += 5) { ctx.moveTo(x + k, top + h); ctx.lineTo(x + k + h, top); }
      ctx.stroke();
      ctx.restore();
    }
    if (flagsOf(w).length) {               // red band on top: quality control flagged it
      ctx.fillStyle = "#d00"; ctx.fillRect(x, top, wpx, 4);
    }
    if (state.selected && state.selected.window === w.window) {
      ctx.strokeStyle = "#000"; ctx.lineWidth = 2; ctx.strokeRect(x + 1, top + 1, wpx - 2, h - 2);
    }
  }
}

function drawAnswers() {
  const strip = $("window-strip");
  const [ctx, width] = setupCanvas(strip, 26);
  if (state.result) paintWindows(ctx, LABEL_W, plotWidth(width), state.start, state.pageLength, 2, 22);
  ctx.fillStyle = "#555"; ctx.font = "11px sans-serif";
  ctx.fillText(state.result ? "answers" : "no analysis yet", 4, 17);
  drawOverview();
}

function drawOverview() {
  const canvas = $("overview");
  const [ctx, width] = setupCanvas(canvas, 90);
  const total = state.duration || 1, plotW = plotWidth(width);
  ctx.fillStyle = "#555"; ctx.font = "11px sans-serif";
  ctx.fillText("answers", 4, 14); ctx.fillText("p(class)", 4, 56);
  if (state.result) {
    paintWindows(ctx, LABEL_W, plotW, 0, total, 2, 18);
    const cols = state.result.prob_columns;
    ctx.strokeStyle = "#ddd"; ctx.strokeRect(LABEL_W, 26, plotW, 60);
    cols.forEach((col, ci) => {
      ctx.strokeStyle = classColor(ci); ctx.lineWidth = 1.2; ctx.beginPath();
      let first = true;
      for (const w of state.result.windows) {
        const p = w[col];
        if (p == null) { first = true; continue; }
        const x = LABEL_W + (w.start_s + w.duration_s / 2) / total * plotW, y = 86 - p * 60;
        if (first) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        first = false;
      }
      ctx.stroke();
    });
  }
  // where the page is
  const x = LABEL_W + state.start / total * plotW;
  ctx.strokeStyle = "#000"; ctx.lineWidth = 1;
  ctx.strokeRect(x, 1, Math.max(2, state.pageLength / total * plotW), 87);
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  const classes = state.result ? state.result.task.classes : [];
  classes.forEach((name, i) => {
    const span = el("span", name); const sw = el("i");
    sw.style.background = classColor(i); span.prepend(sw); legend.append(span);
  });
  const unc = el("span", "hatched: uncertain"); const qc = el("span", "red top: QC flagged");
  legend.append(unc, qc, el("span", "amber: the file's own annotations"));
}

function stageLevel(name, classes) {
  const i = SLEEP_ORDER.indexOf(name);
  return i >= 0 ? i : SLEEP_ORDER.length + classes.indexOf(name);
}

function drawSleep() {
  const sleep = state.result && state.result.sleep;
  $("hypnogram-section").hidden = !sleep;
  if (!sleep) return;
  const classes = state.result.task.classes;
  const levels = [...classes].sort((a, b) => stageLevel(a, classes) - stageLevel(b, classes));
  const canvas = $("hypnogram");
  const [ctx, width] = setupCanvas(canvas, 120);
  const total = state.duration || 1, plotW = plotWidth(width), step = 100 / levels.length;
  ctx.font = "11px sans-serif"; ctx.fillStyle = "#555";
  levels.forEach((name, i) => ctx.fillText(name, 4, 12 + i * step + step / 2));
  ctx.strokeStyle = "#243447"; ctx.lineWidth = 1.5; ctx.beginPath();
  let first = true;
  for (const w of state.result.windows) {
    if (w.label_name == null || w.label == null) { first = true; continue; }
    const y = 8 + levels.indexOf(w.label_name) * step + step / 2;
    const x0 = LABEL_W + w.start_s / total * plotW;
    const x1 = LABEL_W + (w.start_s + w.duration_s) / total * plotW;
    if (first) ctx.moveTo(x0, y); else ctx.lineTo(x0, y);
    ctx.lineTo(x1, y); first = false;
  }
  ctx.stroke();
  const table = $("sleep-summary");
  table.replaceChildren();
  const rows = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj)) {
      const name = prefix ? `${prefix} ${k}` : k;
      if (typeof v === "object" && v !== null && !Array.isArray(v)) rows(v, name);
      else if (!Array.isArray(v)) {
        const row = el("tr");
        row.append(el("td", name.replace(/_/g, " ")), el("td", v == null ? "n/a" : fmtNumber(v)));
        table.append(row);
      }
    }
  };
  rows(sleep, "");
}

function fmtNumber(v) { return typeof v === "number" ? String(+v.toFixed(2)) : String(v); }

function selectWindow(w) {
  state.selected = w;
  drawAnswers();
  if (!w) { $("details").hidden = true; return; }
  const r = state.result;
  $("detail-title").textContent =
    `Window ${w.window}: ${fmtTime(w.start_s)} – ${fmtTime(w.start_s + w.duration_s)}`;
  $("detail-prompt").textContent = r.task.question;
  $("detail-text").textContent = w.generated_text == null ? "(not answered)" : w.generated_text;
  const probs = $("detail-probs");
  probs.replaceChildren();
  r.prob_columns.forEach((col, i) => {
    const p = w[col];
    const row = el("tr"); const bar = el("span", null, {class: "bar"});
    bar.style.width = `${Math.round((p || 0) * 200)}px`; bar.style.background = classColor(i);
    const cell = el("td"); cell.append(bar);
    row.append(el("td", col.replace(/^prob_/, "")), el("td", p == null ? "n/a" : p.toFixed(3)),
               cell);
    probs.append(row);
  });
  const notes = [];
  if (w.label_name != null) notes.push(`answer: ${w.label_name}`);
  if (w.uncertain) notes.push("uncertain: the top probability is below the abstention threshold");
  for (const f of flagsOf(w)) notes.push(`quality control: ${f}`);
  $("detail-warnings").replaceChildren(...notes.map((n) => el("li", n)));
  $("details").hidden = false;
}

function clickTime(event, canvas, t0, span) {
  const rect = canvas.getBoundingClientRect();
  const x = event.clientX - rect.left - LABEL_W;
  return t0 + x / plotWidth(rect.width) * span;
}

// ------------------------------------------------------------------ wiring

function changeSensitivity(direction) {
  const i = SENSITIVITIES.indexOf(state.sensitivity) + direction;
  if (i >= 0 && i < SENSITIVITIES.length) {
    state.sensitivity = SENSITIVITIES[i];
    $("sensitivity").value = String(state.sensitivity);
    drawTraces();
  }
}

function init() {
  const sens = $("sensitivity");
  for (const s of SENSITIVITIES) sens.append(el("option", `${s} µV/mm`, {value: s}));
  sens.value = String(state.sensitivity);
  sens.addEventListener("change", () => { state.sensitivity = Number(sens.value); drawTraces(); });
  $("page-length").addEventListener("change", (e) => {
    state.pageLength = Number(e.target.value); goTo(state.start);
  });
  $("prev-page").addEventListener("click", () => goTo(state.start - state.pageLength));
  $("next-page").addEventListener("click", () => goTo(state.start + state.pageLength));
  $("task").addEventListener("change", (e) => selectTask(e.target.value));
  $("analyse").addEventListener("click", analyse);
  $("upload-form").addEventListener("submit", upload);
  $("window-strip").addEventListener("click", (e) => {
    if (state.result) selectWindow(windowAt(clickTime(e, $("window-strip"), state.start, state.pageLength)));
  });
  $("traces").addEventListener("click", (e) => {
    if (state.result) selectWindow(windowAt(clickTime(e, $("traces"), state.start, state.pageLength)));
  });
  $("overview").addEventListener("click", (e) => {
    const t = clickTime(e, $("overview"), 0, state.duration || 1);
    goTo(Math.floor(t / state.pageLength) * state.pageLength);
  });
  document.addEventListener("keydown", (e) => {
    if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName)) return;
    if (e.key === "ArrowRight" || e.key === "PageDown") goTo(state.start + state.pageLength);
    else if (e.key === "ArrowLeft" || e.key === "PageUp") goTo(state.start - state.pageLength);
    else if (e.key === "+" || e.key === "=") changeSensitivity(-1);   // more gain
    else if (e.key === "-") changeSensitivity(1);
    else return;
    e.preventDefault();
  });
  window.addEventListener("resize", () => loadPage());
  loadTasks().then(() => loadRecordings()).catch((e) => showMessage(e.message));
}

init();
