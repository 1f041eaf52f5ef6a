"use strict";
// The page: pick or upload an image, set the occlusion, see estimates, run a job and watch its heat map
// fill in (server-sent events), drag a region, brush pixels away. Plain JavaScript, no build step.

const $ = (id) => document.getElementById(id);
const STAGE = 448;
const SMALL = 260;
const params = new URLSearchParams(location.search);
const state = { demos: [], picture: null, img: null, scale: 1, region: null, mask: null, job: null, source: null,
                estimateSeq: 0, pictureSeq: 0, first: true, results: {}, log: [], busy: false, uploaded: null };
window.krypton = state;  // for tests and curious users

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { detail: text }; }
  if (!response.ok) throw new Error((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}
const post = (path, body) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify(body) });
const showError = (error) => { $("error").textContent = error ? String(error.message || error) : ""; };
const mode = () => document.querySelector("input[name=mode]:checked").value;
const tool = () => document.querySelector("input[name=tool]:checked").value;
const seconds = (s) => (s == null ? "–" : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(1)} s`);
const hex = (rgb) => "#" + rgb.map((v) => v.toString(16).padStart(2, "0")).join("");
const rgb = () => [1, 3, 5].map((i) => parseInt($("fill").value.slice(i, i + 2), 16));

function bars(list, items, reference) {
  list.replaceChildren(...items.map((c) => {
    const li = document.createElement("li");
    const [label, bar, fill, p] = ["span", "span", "i", "span"].map((tag) => document.createElement(tag));
    label.className = "label";
    label.textContent = c.label;
    bar.className = "bar";
    fill.style.width = `${(100 * c.probability).toFixed(1)}%`;
    bar.append(fill);
    p.className = "p";
    p.textContent = c.probability.toFixed(3) + (reference ? ` (was ${reference[c.index].toFixed(3)})` : "");
    li.append(label, bar, p);
    return li;
  }));
}

// --- choosing an image -------------------------------------------------------------------------------------
async function init() {
  const data = await api("/api/demos");
  state.demos = data.demos;
  $("demo").replaceChildren(...data.demos.map((d) => new Option(d.name + (d.available ? "" : " (not installed)"),
                                                                d.name, false, false)));
  [...$("demo").options].forEach((o, i) => { o.disabled = !data.demos[i].available; o.title = data.demos[i].title; });
  const wanted = data.demos.find((d) => d.name === params.get("demo") && d.available)
    || data.demos.find((d) => d.available);
  if (!wanted) { $("status").textContent = "No demo model is installed."; return; }
  $("demo").value = wanted.name;
  if (params.has("tau")) $("tau").value = params.get("tau");
  const asked = document.querySelector(`input[name=mode][value="${CSS.escape(params.get("mode") || "")}"]`);
  if (asked) asked.checked = true;
  syncMode();
  await chooseDemo(params.has("image") ? Number(params.get("image")) : null);
}

function imageOptions(demo) {
  return demo.images.map((im) => new Option(im.name + (im.label ? ` [${im.label}]` : ""), im.index));
}

// Menus always name the picture on screen: after a refused or superseded request they are put back.
function syncMenus() {
  const picture = state.picture;
  if (!picture) return;
  const demo = state.demos.find((d) => d.name === picture.demo);
  $("demo").value = picture.demo;
  const options = imageOptions(demo);
  if (picture.uploaded) options.push(new Option(`uploaded: ${picture.name}`, "uploaded"));
  $("image").replaceChildren(...options);
  const bundled = demo.images.find((im) => im.name === picture.name);
  $("image").value = picture.uploaded ? "uploaded" : String(bundled ? bundled.index : demo.default_image);
}

async function chooseDemo(index) {
  const demo = state.demos.find((d) => d.name === $("demo").value);
  $("image").replaceChildren(...imageOptions(demo));
  $("image").value = String(index != null && index < demo.images.length ? index : demo.default_image);
  $("model-info").textContent = demo.title;
  $("patch").value = state.first && params.has("patch") ? params.get("patch") : demo.patch;
  $("stride").value = state.first && params.has("stride") ? params.get("stride") : demo.stride;
  const chosen = Number($("image").value);
  await loadPicture(() => post("/api/images/demo", { demo: demo.name, index: chosen }), undefined,
                    `/api/demos/${encodeURIComponent(demo.name)}/images/${chosen}/original.png`);
}

async function upload(file) {
  const headers = { "Content-Type": file.type || "application/octet-stream" };
  await loadPicture(async () => {
    const picture = await api(`/api/images/upload?demo=${encodeURIComponent($("demo").value)}`,
                              { method: "POST", headers, body: file });
    return { ...picture, name: file.name || picture.name, uploaded: true };
  }, "Upload refused", URL.createObjectURL(file));
}

// While the model loads (seconds for a large one), the chosen image is shown as stored; the model's own
// view of it (resized, cropped) and its prediction replace it when they arrive.
async function showPreview(seq, url) {
  const img = new Image();
  img.src = url;
  try { await img.decode(); } catch { return; }  // no preview (e.g. a DICOM upload): the page just waits
  if (seq !== state.pictureSeq || state.shownSeq === seq) return;  // superseded, or the real picture is in
  state.previewing = true;
  const scale = STAGE / Math.max(img.width, img.height);
  for (const id of ["image-canvas", "heat", "draw"]) Draw.size($(id), img.width, img.height, scale);
  Draw.image($("image-canvas"), img);
  $("heat-label").textContent = "";
  $("status").textContent = "Loading the model… (the image as stored; the model's view and prediction follow)";
  document.body.dataset.preview = url;
}

function drawPicture() {  // the current picture at the model's input size, and its overlays
  const picture = state.picture;
  state.scale = STAGE / Math.max(picture.width, picture.height);
  for (const id of ["image-canvas", "heat", "draw"]) Draw.size($(id), picture.width, picture.height, state.scale);
  Draw.image($("image-canvas"), state.img);
  state.previewing = false;
  redrawOverlay();
}

async function loadPicture(request, failure = "Could not load the image", preview = null) {
  const seq = ++state.pictureSeq;  // only the newest choice may change the page
  showError(null);
  $("status").textContent = "Loading the model and image…";
  $("run").disabled = true;
  if (preview) showPreview(seq, preview);
  let picture;
  try { picture = await request(); } catch (error) {
    if (seq !== state.pictureSeq) return;
    state.shownSeq = seq;
    if (state.previewing && state.picture) {  // back to the picture still explained, with its map
      drawPicture();
      if (state.heatArgs) Draw.heat($("heat"), ...state.heatArgs);
    }
    state.previewing = false;
    syncMenus();  // the menus go back to the picture still shown
    $("run").disabled = !state.picture || state.busy;
    $("status").textContent = state.picture ? `${failure}; still showing ${state.picture.name}.` : `${failure}.`;
    showError(error);
    return;
  }
  if (seq !== state.pictureSeq) return;  // a newer choice was made meanwhile: this reply is stale
  const img = new Image();
  img.src = `/api/images/${picture.id}/image.png`;
  try { await img.decode(); } catch (error) { if (seq === state.pictureSeq) showError(error); return; }
  if (seq !== state.pictureSeq) return;
  state.shownSeq = seq;
  state.picture = picture;
  state.first = false;
  state.region = null;
  showRegion();
  state.mask = new Uint8Array(picture.width * picture.height);
  state.results = {};
  $("fill").value = hex(picture.default_fill);
  $("model-info").textContent = `${picture.model}; input ${picture.preprocess}`;
  bars($("prediction"), picture.top);
  const order = picture.probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  $("target").replaceChildren(new Option(`top class (${picture.top[0].label})`, ""),
    ...order.map(([p, i]) => new Option(`${picture.classes[i]} — ${p.toFixed(3)}`, i)));
  syncMenus();
  state.img = img;
  drawPicture();
  const small = SMALL / Math.max(picture.width, picture.height);
  for (const id of ["cmp-image-a", "cmp-heat-a", "cmp-image-b", "cmp-heat-b"]) Draw.size($(id), picture.width, picture.height, small);
  Draw.image($("cmp-image-a"), img);
  Draw.image($("cmp-image-b"), img);
  for (const id of ["heat", "cmp-heat-a", "cmp-heat-b"]) Draw.clear($(id));
  $("brush-result").hidden = true;
  $("compare-panel").hidden = true;
  $("downloads").hidden = true;
  clearResults();
  $("legend-range").textContent = "";
  redrawOverlay();
  $("run").disabled = state.busy;
  $("status").textContent = "Ready: set the occlusion and press Explain.";
  document.body.dataset.image = picture.id;
  estimate();
}

// --- settings and estimates --------------------------------------------------------------------------------
function settings() {
  const m = mode();
  const body = { image_id: state.picture.id, patch: Number($("patch").value), stride: Number($("stride").value),
                 region: state.region };
  if (m === "approximate") {
    body.tau = Number($("tau").value);
    if ($("drill").checked) {
      const rule = $("drill-rule").value, speedup = Number($("speedup").value);
      body.drilldown = rule === "refine" ? { rule, speedup } : { rule, fraction: Number($("fraction").value), speedup };
    }
  }
  return body;
}

// Results that belong to other settings or another picture must not stay on screen.
// The occlusion sweep replayed: the patch (drawn on the overlay) moves row by row, the cells fill in.
function playSweep() {
  const snap = state.lastSnap;
  if (!snap || state.playing) return;
  const map = snap.maps[snap.phase];
  const info = snap.info;
  const [, w] = map.grid;
  const total = map.heat.length;
  const steps = Math.min(total, 120);
  const range = Draw.limit([map], info.probability);
  state.playing = true;
  $("play").disabled = true;
  let frame = 0;
  const tick = () => {
    if (!state.lastSnap || state.lastSnap.id !== snap.id) { state.playing = false; $("play").disabled = false; return; }
    const k = Math.max(1, Math.round(((frame + 1) / steps) * total));
    const partial = { ...map, heat: map.heat.map((v, i) => (i < k ? v : info.probability)), computed: "1".repeat(total) };
    Draw.heat($("heat"), partial, info.probability, state.scale, info.patch, info.stride, range);
    const i = Math.floor((k - 1) / w), j = (k - 1) % w;
    redrawOverlay({ x: map.origin[1] + j * info.stride, y: map.origin[0] + i * info.stride,
                    width: info.patch, height: info.patch });
    frame += 1;
    if (frame < steps) { setTimeout(tick, 50); return; }
    state.playing = false;
    $("play").disabled = false;
    redrawOverlay();
    document.body.dataset.played = snap.id;
  };
  tick();
}

function clearResults() {
  state.lastSnap = null;
  state.heatArgs = null;
  $("play").hidden = true;
  for (const td of document.querySelectorAll("#estimates .act, #estimates .spd")) td.textContent = "–";
  $("downloads").hidden = true;
  $("ssim").textContent = "";
  $("compare-panel").hidden = true;
}

let estimateTimer = null;
function estimate() {
  clearTimeout(estimateTimer);
  for (const td of document.querySelectorAll("#estimates .act, #estimates .spd")) td.textContent = "–";
  estimateTimer = setTimeout(runEstimate, 250);
}

async function runEstimate() {
  if (!state.picture) return;
  const seq = ++state.estimateSeq;
  const body = settings();
  if (body.tau == null) body.tau = Number($("tau").value);
  for (const td of document.querySelectorAll("#estimates .est")) td.textContent = "estimating…";
  try {
    const result = await post("/api/estimate", body);
    if (seq !== state.estimateSeq) return;
    showError(null);
    for (const row of document.querySelectorAll("#estimates tbody tr")) {
      const m = result.modes[row.dataset.mode];
      const cell = row.querySelector(".est");
      cell.textContent = `${seconds(m.seconds)} · ${m.positions} pos.` + (m.path === "naive" ? " (runs naive: faster here)" : "");
      cell.title = `${(m.macs / 1e9).toFixed(3)} GMACs` + (m.theoretical_speedup ? `, ${m.theoretical_speedup.toFixed(2)}x fewer than naive` : "")
        + (m.runs ? `; corrected by ${m.runs} finished run(s) (x${m.correction})` : "");
    }
    const speed = result.gmacs_per_s ? `, ${result.gmacs_per_s} GMAC/s` : "";
    $("calibration").textContent = `(1 forward pass ${seconds(result.forward_ms / 1000)}${speed})`;
    if (result.note) $("status").textContent = result.note;
    document.body.dataset.estimated = String(seq);
  } catch (error) {
    if (seq !== state.estimateSeq) return;
    for (const td of document.querySelectorAll("#estimates .est")) td.textContent = "–";
    showError(error);
  }
}

function syncMode() {
  const approx = mode() === "approximate";
  $("approx-settings").classList.toggle("off", !approx);
  for (const el of $("approx-settings").querySelectorAll("input")) el.disabled = !approx;
  $("drill-settings").classList.toggle("off", !approx || !$("drill").checked);
  $("fraction-label").classList.toggle("off", $("drill-rule").value === "refine");  // refine has no share
  $("tau-value").textContent = Number($("tau").value).toFixed(2);
  $("run").textContent = state.region ? "Explain region" : "Explain";
}

// --- running a job -----------------------------------------------------------------------------------------
function setBusy(busy) {
  state.busy = busy;
  $("run").disabled = busy || !state.picture;
}

async function run() {
  if (state.busy || !state.picture) return;  // one job per click: Explain is off while this tab's job runs
  setBusy(true);
  showError(null);
  clearResults();
  const m = mode();
  const body = { ...settings(), mode: m, fill: rgb(), target: $("target").value === "" ? null : Number($("target").value) };
  if (m === "approximate" && $("compare").checked) body.compare = true;
  let snap;
  try { snap = await post("/api/jobs", body); } catch (error) { showError(error); setBusy(false); return; }
  const item = document.createElement("li");
  item.id = `job-${snap.id}`;
  item.dataset.id = snap.id;
  const pictureId = state.picture.id;
  item.addEventListener("click", () => {
    if (!state.picture || state.picture.id !== pictureId) { showError("That job explained another image."); return; }
    api(`/api/jobs/${snap.id}`).then(show).catch(showError);
  });
  $("jobs").prepend(item);
  follow(snap);
}

function follow(snap) {
  if (state.source) state.source.close();
  state.job = { id: snap.id, patch: snap.info.patch, stride: snap.info.stride, p: snap.info.probability };
  show(snap);
  const source = new EventSource(`/api/jobs/${snap.id}/events`);
  state.source = source;
  const handle = (event) => { const s = JSON.parse(event.data); state.log.push([s.state, s.phase, Date.now()]); show(s); };
  source.addEventListener("update", handle);
  source.addEventListener("end", (event) => { source.close(); handle(event); });
}

function show(snap) {
  const info = snap.info;
  const job = { patch: info.patch, stride: info.stride, p: info.probability };
  const maps = Object.values(snap.maps);
  const range = Draw.limit(maps, job.p);
  $("legend-range").textContent = `±${range.toFixed(3)} in P(${info.target_label})`;
  const main = snap.maps[snap.phase];
  if (main) state.heatArgs = [main, job.p, state.scale, job.patch, job.stride, range];
  if (main && !state.previewing) Draw.heat($("heat"), ...state.heatArgs);
  $("heat-label").textContent = main ? `Large view: the ${snap.phase} map (patch ${info.patch}, stride ${info.stride}).`
    + (snap.state === "running" ? " Pale cells are estimated from computed neighbours until their turn." : "") : "";
  const compare = info.phases.length > 1;
  $("compare-panel").hidden = !compare;
  if (compare) {
    const small = SMALL / Math.max(state.picture.width, state.picture.height);
    for (const [phase, suffix] of [["approximate", "a"], ["exact", "b"]]) {
      if (snap.maps[phase]) Draw.heat($(`cmp-heat-${suffix}`), snap.maps[phase], job.p, small, job.patch, job.stride, range);
      else Draw.clear($(`cmp-heat-${suffix}`));
    }
  }
  const running = snap.state === "running" || snap.state === "queued";
  const mine = state.job && snap.id === state.job.id;
  $("cancel").disabled = !(running && mine);
  if (mine && !running) setBusy(false);
  document.body.dataset.jobState = snap.state;
  document.body.dataset.jobId = snap.id;
  const item = $(`job-${snap.id}`);
  if (item) item.textContent = `${info.mode}${compare ? " + exact" : ""}, patch ${info.patch}, stride ${info.stride}: ${snap.state}`;
  if (snap.state === "queued") {
    $("status").textContent = snap.ahead ? `Queued: ${snap.ahead} job(s) run before this one (other tabs' included).`
      : "Queued: starting…";
    $("progress").value = 0;
  } else if (snap.state === "running" && main) {
    $("progress").value = main.total ? main.done / main.total : 0;
    const eta = main.eta_s == null ? "" : ` · about ${seconds(main.eta_s)} left`;
    $("status").textContent = `Running ${snap.phase}: ${main.done}/${main.total} positions · ${seconds(main.elapsed_s)}${eta}`;
  } else if (snap.state === "done") {
    finished(snap);
  } else {
    $("progress").value = 0;
    $("status").textContent = snap.state === "cancelled" ? "Cancelled." : "Failed.";
    if (snap.state === "error") showError(snap.message);
  }
}

function finished(snap) {
  const result = snap.result;
  state.lastSnap = snap;
  $("play").hidden = !snap.maps[snap.phase];
  $("progress").value = 1;
  const parts = [];
  for (const [phase, r] of Object.entries(result.phases)) {
    const row = document.querySelector(`#estimates tr[data-mode=${phase}]`);
    row.querySelector(".act").textContent = seconds(r.wall_time_s) + (r.mode !== phase ? ` (ran ${r.mode})` : "");
    row.querySelector(".spd").textContent = r.speedup_vs_naive == null ? "–"
      : `${r.speedup_vs_naive.toFixed(2)}x (${r.naive_basis} naive)`;
    row.querySelector(".spd").title = `theoretical (MACs): ${(r.stats.theoretical_speedup || 1).toFixed(2)}x`;
    parts.push(`${phase} ${seconds(r.wall_time_s)}`);
  }
  const info = snap.info;
  let text = `Done: ${parts.join(", ")} for ${result.target_label} (patch ${info.patch}, stride ${info.stride}).`;
  if (result.ssim != null) {
    const ratio = result.approximate_speedup_vs_exact;
    const speed = ratio >= 1 ? `${ratio.toFixed(2)}x faster` : `${(1 / ratio).toFixed(2)}x slower`;
    $("ssim").textContent = `SSIM ${result.ssim.toFixed(3)} · approximate ${speed} than exact`;
    text += ` SSIM ${result.ssim.toFixed(3)}.`;
  } else if (result.phases.approximate) {
    // an approximate map nobody compared with exact: say so, it must not pass for an exact one
    text += " Approximate map: quality not verified (tick the comparison with exact to measure it).";
  }
  $("status").textContent = text;
  const phases = Object.keys(result.phases);
  $("downloads").replaceChildren("Download: ", ...phases.flatMap((phase, i) => {
    const links = ["png", "json", "npz"].map((ext) => {
      const a = document.createElement("a");
      a.id = phases.length > 1 ? `dl-${ext}-${phase}` : `dl-${ext}`;
      a.href = `/api/jobs/${snap.id}/result.${ext}?phase=${phase}`;
      a.download = "";
      a.textContent = ext === "npz" ? "raw NPZ" : ext === "json" ? "raw JSON" : "PNG";
      return a;
    });
    const label = phases.length > 1 ? [`${i ? " · " : ""}${phase}: `] : [];
    return [...label, ...links.flatMap((a, k) => (k ? [" · ", a] : [a]))];
  }));
  $("downloads").hidden = false;
}

async function cancel() {
  if (!state.job) return;
  try { show(await post(`/api/jobs/${state.job.id}/cancel`, {})); } catch (error) { showError(error); }
}

// --- mouse: region and brush -------------------------------------------------------------------------------
function point(event) {
  const canvas = $("draw");
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) * canvas.width) / box.width / state.scale;
  const y = ((event.clientY - box.top) * canvas.height) / box.height / state.scale;
  return { x: Math.max(0, Math.min(state.picture.width, x)), y: Math.max(0, Math.min(state.picture.height, y)) };
}

let drag = null;
let predictTimer = null;
function redrawOverlay(extra) {
  const canvas = $("draw");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (state.mask && state.mask.some((v) => v)) {
    const { width, height } = state.picture;
    const layer = new ImageData(width, height);
    const [r, g, b] = rgb();
    for (let i = 0; i < state.mask.length; i++) if (state.mask[i]) layer.data.set([r, g, b, 235], 4 * i);
    const off = document.createElement("canvas");
    off.width = width;
    off.height = height;
    off.getContext("2d").putImageData(layer, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  }
  const r = extra || state.region;
  if (r) Draw.rect(ctx, r, state.scale);
}

function paint(p) {
  const radius = Number($("brush-size").value) / 2;
  const { width, height } = state.picture;
  for (let y = Math.max(0, Math.floor(p.y - radius)); y < Math.min(height, Math.ceil(p.y + radius)); y++) {
    for (let x = Math.max(0, Math.floor(p.x - radius)); x < Math.min(width, Math.ceil(p.x + radius)); x++) {
      if ((x + 0.5 - p.x) ** 2 + (y + 0.5 - p.y) ** 2 <= radius * radius) state.mask[y * width + x] = 1;
    }
  }
  redrawOverlay();
  if (!predictTimer) predictTimer = setTimeout(predictBrush, 150);
}

async function predictBrush() {
  predictTimer = null;
  if (!state.picture) return;
  const id = state.picture.id;
  try {
    const result = await post(`/api/images/${id}/predict`, { mask: Draw.packMask(state.mask), fill: rgb() });
    if (!state.picture || state.picture.id !== id) return;
    bars($("brush-prediction"), result.top, state.picture.probabilities);
    $("brush-result").hidden = result.occluded_pixels === 0;
    document.body.dataset.brushPixels = String(result.occluded_pixels);
  } catch (error) { showError(error); }
}

function pointerDown(event) {
  if (!state.picture || state.previewing) return;
  $("draw").setPointerCapture(event.pointerId);
  const p = point(event);
  drag = { start: p };
  if (tool() === "brush") paint(p);
}

function pointerMove(event) {
  if (!drag) return;
  const p = point(event);
  if (tool() === "brush") { paint(p); return; }
  const s = drag.start;
  drag.rect = { x: Math.min(s.x, p.x), y: Math.min(s.y, p.y), width: Math.abs(p.x - s.x), height: Math.abs(p.y - s.y) };
  redrawOverlay(drag.rect);
}

function pointerUp(event) {
  if (!drag) return;
  const rect = drag.rect;
  drag = null;
  if (tool() === "brush") { predictBrush(); return; }
  if (rect && rect.width >= 2 && rect.height >= 2) {
    const x = Math.floor(rect.x), y = Math.floor(rect.y);
    setRegion({ x, y, width: Math.ceil(rect.width), height: Math.ceil(rect.height) });
  } else redrawOverlay();
}

// --- keyboard and number fields: the same region ------------------------------------------------------------
const REGION_FIELDS = { x: "region-x", y: "region-y", width: "region-w", height: "region-h" };

function showRegion() {
  for (const [key, id] of Object.entries(REGION_FIELDS)) $(id).value = state.region ? String(state.region[key]) : "";
}

function fitRegion(r) {  // whole pixels, at least 2 x 2, inside the picture
  const { width: W, height: H } = state.picture;
  const width = Math.max(2, Math.min(W, Math.round(r.width))), height = Math.max(2, Math.min(H, Math.round(r.height)));
  return { x: Math.max(0, Math.min(W - width, Math.round(r.x))), y: Math.max(0, Math.min(H - height, Math.round(r.y))),
           width, height };
}

function setRegion(r) {  // every way of choosing a region (mouse, keys, fields, clear) ends here
  const had = state.region != null;
  state.region = r && state.picture ? fitRegion(r) : null;
  if (had && !state.region) { Draw.clear($("heat")); clearResults(); }  // a region's map does not describe the whole image
  showRegion(); redrawOverlay(); syncMode(); estimate();
}

function regionFromFields() {
  const text = Object.fromEntries(Object.entries(REGION_FIELDS).map(([key, id]) => [key, $(id).value.trim()]));
  if (Object.values(text).every((t) => t === "")) { if (state.region) setRegion(null); return; }
  if (Object.values(text).some((t) => t === "" || !Number.isFinite(Number(t)))) return;  // still being typed
  setRegion({ x: Number(text.x), y: Number(text.y), width: Number(text.width), height: Number(text.height) });
}

function regionKey(event) {
  if (!state.picture || state.previewing) return;
  if (event.key === "Escape") { if (state.region) setRegion(null); event.preventDefault(); return; }
  const move = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
  if (!move) return;
  event.preventDefault();
  const { width, height } = state.picture;
  const r = state.region;
  if (!r) { setRegion({ x: width / 4, y: height / 4, width: width / 2, height: height / 2 }); return; }
  const step = Math.max(1, Math.round(Math.min(width, height) / 32));
  if (event.shiftKey) setRegion({ ...r, width: r.width + move[0] * step, height: r.height + move[1] * step });
  else setRegion({ ...r, x: r.x + move[0] * step, y: r.y + move[1] * step });
}

// --- wiring ------------------------------------------------------------------------------------------------
function wire() {
  $("demo").addEventListener("change", () => chooseDemo(null));
  $("image").addEventListener("change", () => loadPicture(() => post("/api/images/demo",
    { demo: $("demo").value, index: Number($("image").value) })));
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); e.target.value = ""; });
  for (const id of ["patch", "stride", "tau", "fraction", "speedup", "drill", "drill-rule"]) $(id).addEventListener("input", () => { syncMode(); estimate(); });
  for (const el of document.querySelectorAll("input[name=mode]")) el.addEventListener("change", () => { syncMode(); estimate(); });
  $("fill").addEventListener("input", () => { redrawOverlay(); if (state.mask && state.mask.some((v) => v)) predictBrush(); });
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", cancel);
  $("play").addEventListener("click", playSweep);
  $("opacity").addEventListener("input", () => {
    for (const id of ["heat", "cmp-heat-a", "cmp-heat-b"]) $(id).style.opacity = $("opacity").value;
  });
  $("clear-region").addEventListener("click", () => setRegion(null));
  for (const id of Object.values(REGION_FIELDS)) $(id).addEventListener("change", regionFromFields);
  $("clear-brush").addEventListener("click", () => {
    if (state.mask) state.mask.fill(0);
    $("brush-result").hidden = true;
    redrawOverlay();
  });
  const draw = $("draw");
  draw.addEventListener("pointerdown", pointerDown);
  draw.addEventListener("pointermove", pointerMove);
  draw.addEventListener("pointerup", pointerUp);
  draw.addEventListener("pointercancel", pointerUp);
  draw.addEventListener("keydown", regionKey);
  $("opacity").dispatchEvent(new Event("input"));
  syncMode();
}

async function pollQueue() {
  try {
    const q = await api("/api/queue");
    $("queue").textContent = `server queue: ${q.running} running, ${q.waiting} waiting (at most ${q.workers} at once)`;
  } catch { $("queue").textContent = "server unreachable"; }
}

wire();
pollQueue();
setInterval(pollQueue, 4000);
init().catch((error) => { showError(error); $("status").textContent = ""; });
