// The explain page: asks scripts/explain.py for JSON views of the prompt and draws them. No libraries, no network
// beyond the page's own server. Every number shown is computed in Python (gpt/introspect.py); draw.js draws them.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
// Percentages with two decimals; below 0.01% two significant digits, so small odds do not all read "0.00%".
const pct = (p) => (p === 0 ? "0" : p >= 1e-4 ? (p * 100).toFixed(2) : (p * 100).toPrecision(2)) + "%";
// Whitespace made visible: a token's leading space is part of the token.
const show = (s) => s.replace(/ /g, "␣").replace(/\n/g, "↵").replace(/\t/g, "⇥").replace(/\r/g, "␍");

const state = {
  info: null,
  ids: null,         // the prompt's token ids once the server has tokenized it (or a token was appended)
  text: "",          // the prompt text those ids came from
  nNew: 0,           // tokens appended by sample/greedy since the last edit (highlighted)
  seed: 0,
  picks: [],         // per model: {layer, head} (head null = average of heads)
  pieces: {},        // token id → text piece
  views: [],         // per model: the last view JSON
  seq: {},           // request kind → last sequence number sent (older answers are dropped)
};

async function api(path, body) {
  let res;
  try {
    res = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error("the server does not answer: is scripts/explain.py still running?");
  }
  const data = await res.json().catch(() => ({error: `HTTP ${res.status}`}));
  if (!res.ok) throw Object.assign(new Error(data.error || `HTTP ${res.status}`), {status: res.status});
  return data;
}

function showError(msg) {
  const box = $("#error");
  box.hidden = !msg;
  box.textContent = msg || "";
}

function sampling() {
  const k = +$("#top-k").value, p = +$("#top-p").value;
  return {temperature: +$("#temperature").value, top_k: k === 0 ? null : k, top_p: p >= 1 ? null : p};
}

// ---- requests ----------------------------------------------------------------------------------------------------
// One view request; draws what comes back and returns true, or shows the error and returns false. Answers that are
// no longer wanted are dropped: an older request of the same kind, or (for partial views) another prompt by now.
async function refresh(parts, kind = parts.join(",")) {
  const body = {parts, ...sampling(), attention: state.picks};
  if (state.ids) body.ids = state.ids; else body.text = $("#prompt").value;
  const seq = (state.seq[kind] = (state.seq[kind] || 0) + 1);
  const t0 = performance.now();
  let data;
  try {
    data = await api("/api/view", body);
  } catch (e) {
    if (seq !== state.seq[kind]) return false;
    if (e.status === 400 && parts.includes("tokens")) {  // the prompt itself is the problem: say so by the prompt
      setStatus(e.message, true);
      clearViews();
      showError("");
    } else showError(e.message);
    return false;
  }
  if (seq !== state.seq[kind]) return false;
  if (!parts.includes("tokens") && String(state.ids) !== String(data.ids)) return false;
  showError("");
  state.ids = data.ids;
  Object.assign(state.pieces, data.pieces);
  data.models.forEach((v, m) => {
    state.views[m] = Object.assign(state.views[m] || {}, v);
    const col = columns()[m];
    col.classList.remove("stale");
    noteFor(col, v.note);
    if (v.next) drawNext(col, v.next);
    if (v.attention) drawAttention(col, m);
    if (v.lens) drawLens(col, m);
  });
  if (data.tokens) drawTokens(data.tokens, data.models[0].dropped);
  if (kind !== "all") setStatus(`${data.ids.length} tokens · updated in ${(performance.now() - t0).toFixed(0)} ms`);
  return true;
}

// A new prompt: tokens, next token and attention first, then the logit lens (L + 1 passes through the head: on
// 124M several times a forward pass), so the first views do not wait for it.
async function refreshPrompt() {
  const t0 = performance.now();
  if (!(await refresh(["tokens", "next", "attention"], "all"))) return;
  const n = state.ids.length, first = performance.now() - t0;
  setStatus(`${n} tokens · updated in ${first.toFixed(0)} ms · computing the logit lens…`);
  $("#prompt-status").dataset.firstMs = first.toFixed(1);
  if (!(await refresh(["lens"], "lens"))) return;
  const ms = performance.now() - t0;
  setStatus(`${n} tokens · updated in ${first.toFixed(0)} ms, the logit lens in ${ms.toFixed(0)} ms`, false, ms);
  document.body.dataset.updated = String(+(document.body.dataset.updated || 0) + 1);  // benchmarks count these
}

function setStatus(text, bad, ms) {
  const s = $("#prompt-status");
  s.textContent = text;
  s.classList.toggle("bad", !!bad);
  if (ms !== undefined) s.dataset.ms = ms.toFixed(1);
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

const refreshAll = debounce(refreshPrompt, 200);
const refreshNext = debounce(() => refresh(["next"]), 40);

async function step(greedy) {
  if (!state.ids) return;
  const m = +($("#step-model").value || 0);
  const seed = greedy ? 0 : state.seed++;  // sample k of a session uses seed k: the same clicks, the same text
  try {
    const data = await api("/api/step", {ids: state.ids, ...sampling(), greedy, seed, model: m});
    state.ids = data.ids;
    state.text = data.text;
    state.nNew += 1;
    $("#prompt").value = data.text;
    $("#seed").textContent = greedy ? "" : `seed ${seed}`;
    await refreshPrompt();
  } catch (e) { showError(e.message); }
}

async function scoreLoss() {
  const out = $("#loss-out");
  out.replaceChildren();
  try {
    const data = await api("/api/loss", {text: $("#loss-text").value});
    showError("");
    data.models.forEach((v, m) => out.append(lossColumn(data.tokens, v, m)));
  } catch (e) {
    out.append(el("div", "note", e.message));
  }
}

// ---- set-up ------------------------------------------------------------------------------------------------------
function buildColumns() {
  const box = $("#columns"), tpl = $("#model-column");
  box.classList.toggle("two", state.info.models.length > 1);
  state.info.models.forEach((info, m) => {
    const col = tpl.content.firstElementChild.cloneNode(true);
    col.dataset.model = m;
    if (m) col.classList.add("b");
    $(".model-name", col).replaceWith(modelTitle(m));
    const layer = $("select.layer", col), head = $("select.head", col);
    for (let l = 0; l < info.n_layer; l++) layer.append(new Option(String(l + 1), l));
    head.append(new Option("average", ""));
    for (let h = 0; h < info.n_head; h++) head.append(new Option(String(h + 1), h));
    head.value = "0";
    state.picks[m] = {layer: 0, head: 0};
    const pick = () => {
      state.picks[m] = {layer: +layer.value, head: head.value === "" ? null : +head.value};
      refresh(["attention"], `attention${m}`);
    };
    layer.addEventListener("change", pick);
    head.addEventListener("change", pick);
    const canvas = $("canvas.attn", col);
    canvas.addEventListener("mousemove", onAttentionHover);
    canvas.addEventListener("mouseleave", () => canvas._layout && paintAttention(canvas, null));
    box.append(col);
    const chip = el("span", "model-chip");
    chip.append(el("span", "badge" + (m ? " b" : ""), m ? "B" : "A"),
      `${info.name} · ${(info.params / 1e6).toFixed(1)}M parameters · ${info.n_layer} layers × ${info.n_head} heads · ` +
      `context ${info.context_length}`);
    $("#models").append(chip);
    $("#step-model").append(new Option(`with ${m ? "B" : "A"}`, m));
  });
  $("#step-model").hidden = state.info.models.length < 2;
}

function syncOutputs() {
  $("#temperature-value").textContent = (+$("#temperature").value).toFixed(2);
  const k = +$("#top-k").value;
  $("#top-k-value").textContent = k === 0 ? "off" : String(k);
  $("#top-p-value").textContent = (+$("#top-p").value).toFixed(2);
}

async function main() {
  try {
    state.info = await api("/api/info");
  } catch (e) { showError(e.message); return; }
  buildColumns();
  $("#prompt").addEventListener("input", () => {
    state.ids = null;
    state.nNew = 0;
    refreshAll();
  });
  for (const id of ["temperature", "top-k", "top-p"]) {
    $("#" + id).addEventListener("input", () => { syncOutputs(); if (state.ids) refreshNext(); });
  }
  $("#sample").addEventListener("click", () => step(false));
  $("#greedy").addEventListener("click", () => step(true));
  $("#loss-button").addEventListener("click", scoreLoss);
  syncOutputs();
  if ($("#prompt").value) refreshAll(); else setStatus("type a prompt to see what the model does with it");
  window.addEventListener("resize", debounce(() => {
    columns().forEach((col, m) => state.views[m] && state.views[m].attention && drawAttention(col, m));
  }, 150));
}

main();
