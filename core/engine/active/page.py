"""The label page: one self-contained HTML document (inline CSS and JavaScript, no external
assets, so it works offline and leaks nothing to third parties).

Designed for an hour of clicking: the cutout is large and centred, every action has a key
shown on its button, the next cutouts are preloaded so an answer shows the next object at
once, keys pressed while an answer is being saved are ignored rather than applied to the
wrong object, and progress, per-class counts and the last answers (with undo) stay in view.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>astrotransfer · label</title>
<style>
:root { --bg:#14161a; --panel:#1d2026; --ink:#e6e6e6; --dim:#9aa0a6; --acc:#6cb4ff;
        --ok:#7bd88f; --warn:#ffb86c; --bad:#ff6b6b; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { display:flex; gap:1.5em; align-items:center; padding:.6em 1.2em;
         background:var(--panel); border-bottom:1px solid #2a2e35; }
header h1 { font-size:1.05em; margin:0; font-weight:600; }
header .meta { color:var(--dim); font-size:.9em; }
#progress { flex:1; display:flex; align-items:center; gap:.7em; }
#bar { flex:1; height:8px; background:#2a2e35; border-radius:4px; overflow:hidden; }
#bar div { height:100%; background:var(--acc); width:0; transition:width .2s; }
main { display:grid; grid-template-columns:minmax(320px, 1fr) 320px; gap:1.2em;
       padding:1.2em; max-width:1200px; margin:auto; }
#stage { display:flex; flex-direction:column; align-items:center; }
#cutout { width:min(62vh, 560px); height:min(62vh, 560px); background:#000;
          border-radius:6px; image-rendering:auto; box-shadow:0 2px 14px #0008; }
#cutout.pixelated { image-rendering:pixelated; }
#objinfo { margin-top:.5em; color:var(--dim); font-family:ui-monospace, monospace; }
#done { display:none; font-size:1.2em; margin:3em; text-align:center; }
aside { background:var(--panel); border-radius:6px; padding:1em; }
aside h2 { font-size:.8em; text-transform:uppercase; letter-spacing:.08em; color:var(--dim);
           margin:1em 0 .4em; }
aside h2:first-child { margin-top:0; }
button { font:inherit; color:var(--ink); background:#2a2e35; border:1px solid #3a3f48;
         border-radius:5px; padding:.55em .8em; cursor:pointer; width:100%; text-align:left;
         margin:.2em 0; display:flex; justify-content:space-between; }
button:hover { background:#343943; }
button:disabled { opacity:.4; cursor:default; }
button.cls { font-size:1.1em; padding:.75em .9em; border-left:4px solid var(--acc); }
kbd { font-family:ui-monospace, monospace; background:#14161a; border:1px solid #3a3f48;
      border-radius:3px; padding:0 .35em; color:var(--dim); }
.row { display:flex; gap:.4em; } .row button { flex:1; }
select, input[type=range] { width:100%; margin:.2em 0; }
select { font:inherit; background:#2a2e35; color:var(--ink); border:1px solid #3a3f48;
         border-radius:5px; padding:.35em; }
#counts { display:grid; grid-template-columns:1fr auto; gap:.1em .8em; font-size:.92em; }
#counts span:nth-child(even) { text-align:right; font-variant-numeric:tabular-nums; }
.strip { display:flex; gap:.4em; margin-top:.8em; flex-wrap:wrap; }
.strip figure { margin:0; text-align:center; font-size:.72em; color:var(--dim); width:72px; }
.strip img { width:72px; height:72px; border-radius:3px; background:#000; display:block; }
#msg { min-height:1.4em; margin-top:.6em; font-size:.9em; }
#msg.err { color:var(--bad); } #msg.ok { color:var(--ok); }
.hint { color:var(--dim); font-size:.82em; margin-top:1em; }
</style></head>
<body>
<header><h1>astrotransfer · label</h1><span class="meta" id="where"></span>
<div id="progress"><div id="bar"><div></div></div><span id="ptext">…</span></div></header>
<main>
<section id="stage">
  <img id="cutout" alt="cutout being labelled">
  <div id="objinfo"></div>
  <div id="done">Queue finished. <span id="donehint"></span></div>
  <div class="strip" id="upcoming" title="next in the queue"></div>
</section>
<aside>
  <h2>Answer</h2>
  <div id="classbtns"></div>
  <div class="row">
    <button id="skip" data-answer="skip">skip <kbd>space</kbd></button>
    <button id="unsure" data-answer="unsure">unsure <kbd>u</kbd></button>
  </div>
  <button id="undo">undo last <kbd>z</kbd></button>
  <button id="requeue">retrain head &amp; queue next <span id="batchn"></span> <kbd>r</kbd></button>
  <div id="msg"></div>
  <h2>Display</h2>
  <select id="view" title="band or RGB composite (b cycles)"></select>
  <label class="hint" for="soft">asinh softening (− / +)</label>
  <input type="range" id="soft" min="-3" max="0" step="0.25" value="-1">
  <button id="pix">pixels: smooth <kbd>p</kbd></button>
  <h2>Counts</h2><div id="counts"></div>
  <h2>Last answers</h2><div class="strip" id="recent"></div>
  <div class="hint">Keys: class keys as shown · space skip · u unsure · z or Backspace undo ·
  r retrain · b view · p pixels · −/+ stretch. Every answer is saved in the store before the
  next object appears.</div>
</aside>
</main>
<script>
"use strict";
let S = null, busy = false, view = "auto", soft = 0.1;
const $ = (id) => document.getElementById(id);
function imgUrl(row) { return `/img/${row}.png?view=${encodeURIComponent(view)}&a=${soft}`; }
function say(text, kind) { const m = $("msg"); m.textContent = text || ""; m.className = kind || ""; }
async function call(path, body) {
  const r = await fetch(path, body === undefined ? {} : {method: "POST",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || r.statusText);
  return j;
}
function figure(row, caption) {
  const f = document.createElement("figure"), i = document.createElement("img");
  i.src = imgUrl(row); i.alt = caption; f.appendChild(i);
  const c = document.createElement("figcaption"); c.textContent = caption; f.appendChild(c);
  return f;
}
function render() {
  $("where").textContent = `${S.store} · session ${S.session} (${S.who})`;
  $("ptext").textContent = `${S.done} of ${S.total}`;
  $("bar").firstElementChild.style.width = (S.total ? 100 * S.done / S.total : 0) + "%";
  const cb = $("classbtns");
  if (!cb.childElementCount) {
    S.classes.forEach((c, i) => {
      const b = document.createElement("button"); b.className = "cls"; b.dataset.answer = c;
      b.innerHTML = `<span></span><kbd></kbd>`;
      b.firstChild.textContent = c; b.lastChild.textContent = S.keys[i]; cb.appendChild(b);
    });
    const v = $("view"); v.innerHTML = "";
    ["auto", ...S.views].forEach((name) => { const o = document.createElement("option");
      o.value = name; o.textContent = name === "auto" ? "auto (RGB if 3+ bands)" : name;
      v.appendChild(o); });
    v.value = view;
  }
  $("batchn").textContent = S.batch;
  $("requeue").disabled = !S.can_retrain;
  const cur = S.current;
  $("cutout").style.display = cur ? "" : "none";
  $("done").style.display = cur ? "none" : "block";
  $("donehint").textContent = S.can_retrain ? "Press r to retrain the head and queue the next batch."
                                            : "All queued objects are answered.";
  document.querySelectorAll("[data-answer]").forEach((b) => b.disabled = !cur);
  if (cur) {
    $("cutout").src = imgUrl(cur.row);
    $("objinfo").textContent = `${cur.object_id}  ·  row ${cur.row}` + (cur.how ? `  ·  queued by ${cur.how}` : "");
  } else { $("objinfo").textContent = ""; }
  const up = $("upcoming"); up.innerHTML = "";
  S.upcoming.forEach((o) => up.appendChild(figure(o.row, o.object_id)));
  const rc = $("recent"); rc.innerHTML = "";
  S.recent.forEach((o) => rc.appendChild(figure(o.row, o.answer)));
  const ct = $("counts"); ct.innerHTML = "";
  Object.entries(S.counts).forEach(([k, n]) => { const a = document.createElement("span");
    a.textContent = k; const b = document.createElement("span"); b.textContent = n;
    ct.append(a, b); });
  document.body.dataset.ready = "1";
}
async function act(path, body, okText) {
  if (busy) return;
  busy = true;
  try { S = await call(path, body); render(); say(okText || "", "ok"); }
  catch (e) { say(e.message, "err"); try { S = await call("/api/state"); render(); } catch (_) {} }
  finally { busy = false; }
}
function answer(a) { if (S && S.current) act("/api/answer", {row: S.current.row, answer: a}); }
async function requeue() {
  if (!S || !S.can_retrain || busy) return;
  say("retraining the head and choosing the next batch…");
  await act("/api/requeue", {}, "queued the next batch");
}
function setView(v) { view = v; $("view").value = v; if (S) render(); }
function setSoft(v) { $("soft").value = v; soft = Math.pow(10, +v).toFixed(4); if (S) render(); }
document.addEventListener("click", (e) => {
  const b = e.target.closest("[data-answer]"); if (b) { answer(b.dataset.answer); return; }
  if (e.target.closest("#undo")) act("/api/undo", {}, "undone");
  if (e.target.closest("#requeue")) requeue();
  if (e.target.closest("#pix")) togglePix();
});
function togglePix() { const c = $("cutout"); c.classList.toggle("pixelated");
  $("pix").firstChild.textContent = c.classList.contains("pixelated") ? "pixels: sharp " : "pixels: smooth "; }
$("view").addEventListener("change", (e) => setView(e.target.value));
$("soft").addEventListener("input", (e) => setSoft(e.target.value));
document.addEventListener("keydown", (e) => {
  if (!S || e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === "SELECT") return;
  const k = e.key;
  const i = S.keys.findIndex((x) => x.toLowerCase() === k.toLowerCase());
  if (i >= 0) { e.preventDefault(); answer(S.classes[i]); return; }
  if (k === " ") { e.preventDefault(); answer("skip"); }
  else if (k === "u") answer("unsure");
  else if (k === "z" || k === "Backspace") { e.preventDefault(); act("/api/undo", {}, "undone"); }
  else if (k === "r") requeue();
  else if (k === "p") togglePix();
  else if (k === "b") { const o = ["auto", ...S.views]; setView(o[(o.indexOf(view) + 1) % o.length]); }
  else if (k === "-") setSoft(Math.max(-3, +$("soft").value - 0.25));
  else if (k === "+" || k === "=") setSoft(Math.min(0, +$("soft").value + 0.25));
});
(async function start() {
  for (let i = 0; i < 600; i++) {
    try { S = await call("/api/state"); render(); return; }
    catch (e) { say(e.message, "err"); await new Promise((r) => setTimeout(r, 500)); }
  }
})();
</script>
</body></html>
"""
