// The explain page's drawing: token chips, next-token bars, the attention heatmap (a canvas), the logit-lens table
// and the loss colouring. Loaded before explain.js, whose helpers ($, el, pct, show) and state these functions use.
"use strict";

// ---- drawing -----------------------------------------------------------------------------------------------------
const columns = () => [...document.querySelectorAll("#columns .model-col")];

function clearViews() {
  $("#tokens").replaceChildren();
  for (const col of columns()) col.classList.add("stale");
  for (const c of document.querySelectorAll("#columns .bars, #columns .lens-table")) c.replaceChildren();
}

function noteFor(col, note) {
  const n = $(".note", col);
  n.hidden = !note;
  n.textContent = note || "";
}

function drawTokens(tokens, dropped) {
  const box = $("#tokens");
  box.replaceChildren();
  tokens.forEach((t, i) => {
    const chip = el("span", "tok");
    if (i < dropped) chip.classList.add("dropped");
    if (i >= tokens.length - state.nNew) chip.classList.add("new");
    chip.dataset.id = t.id;
    chip.dataset.bytes = t.bytes;
    chip.title = `position ${i} · id ${t.id} · bytes ${t.bytes}`;
    chip.append(el("span", "piece", show(t.piece)), el("span", "tid", t.id), el("span", "bytes", t.bytes));
    box.append(chip);
  });
}

function drawNext(col, next) {
  const bars = $(".bars", col);
  bars.replaceChildren();
  const scale = Math.max(...next.probs, ...next.filtered) || 1;
  next.ids.forEach((id, i) => {
    const raw = next.probs[i], p = next.filtered[i];
    const row = el("div", "bar" + (p === 0 ? " cut" : ""));
    Object.assign(row.dataset, {id, prob: p, raw});
    const label = el("span", "label", show(state.pieces[id] ?? "?"));
    label.title = `id ${id}`;
    const track = el("span", "track"), ghost = el("span", "raw"), fill = el("span", "fill");
    ghost.style.width = (100 * raw / scale) + "%";
    fill.style.width = (100 * p / scale) + "%";
    track.append(ghost, fill);
    const prob = el("span", "prob", pct(p));
    if (Math.abs(p - raw) > 5e-5) prob.append(el("small", "", pct(raw)));
    row.append(label, track, prob);
    bars.append(row);
  });
  const V = state.info.models[+col.dataset.model].vocab_size;
  $(".meta", col).textContent = `entropy ${next.entropy.toFixed(2)} bits → ${next.filtered_entropy.toFixed(2)} bits ` +
    `with these settings · ${next.kept.toLocaleString("en")} of ${V.toLocaleString("en")} tokens can be drawn`;
}

function attentionLayout(col, T) {
  const avail = Math.max(200, $(".attn-wrap", col).clientWidth - 8);
  const labels = T <= 48;
  const left = labels ? 84 : 8, top = labels ? 64 : 8;
  const fit = Math.min(avail - left, 520 - top);  // the whole map in view up to ~500 px, else the smallest cells
  const cell = Math.max(1, Math.min(36, Math.floor(fit / T)));
  return {left, top, cell, labels, width: left + cell * T + 4, height: top + cell * T + 4};
}

function drawAttention(col, m) {
  const att = state.views[m].attention, rows = att.rows, T = rows.length;
  const ids = state.ids.slice(state.views[m].dropped);
  const canvas = $("canvas.attn", col);
  const L = attentionLayout(col, T), dpr = window.devicePixelRatio || 1;
  canvas.width = L.width * dpr; canvas.height = L.height * dpr;
  canvas.style.width = L.width + "px"; canvas.style.height = L.height + "px";
  Object.assign(canvas.dataset, {x0: L.left, y0: L.top, cell: L.cell, n: T});
  const base = document.createElement("canvas");
  base.width = canvas.width; base.height = canvas.height;
  const g = base.getContext("2d");
  g.scale(dpr, dpr);
  const rgb = col.classList.contains("b") ? [234, 88, 12] : [37, 99, 235];
  for (let q = 0; q < T; q++) {
    for (let k = 0; k < T; k++) {
      if (k > q) { g.fillStyle = "#f3f4f6"; } else {
        const a = Math.sqrt(rows[q][k]);
        g.fillStyle = `rgb(${rgb.map((c) => Math.round(255 - a * (255 - c))).join(",")})`;
      }
      const size = L.cell > 6 ? L.cell - 1 : L.cell;  // a hairline gap between cells when they are big enough
      g.fillRect(L.left + k * L.cell, L.top + q * L.cell, size, size);
    }
  }
  if (L.labels) {
    g.fillStyle = "#374151";
    g.font = `${Math.min(12, L.cell)}px ui-monospace, monospace`;
    g.textBaseline = "middle";
    g.textAlign = "right";
    ids.forEach((id, q) => g.fillText(clip(show(state.pieces[id] ?? "?"), 10), L.left - 4, L.top + (q + 0.5) * L.cell));
    g.textAlign = "left";
    ids.forEach((id, k) => {
      g.save();
      g.translate(L.left + (k + 0.5) * L.cell, L.top - 4);
      g.rotate(-Math.PI / 3);
      g.fillText(clip(show(state.pieces[id] ?? "?"), 9), 0, 0);
      g.restore();
    });
  }
  canvas._base = base;
  canvas._layout = L;
  canvas._ids = ids;
  canvas._rows = rows;
  paintAttention(canvas, null);
  const readout = $(".attn-readout", col);
  delete readout.dataset.value;
  readout.textContent = "hover over a cell: how much the row's token reads the column's";
}

function clip(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

function paintAttention(canvas, hover) {
  const g = canvas.getContext("2d"), L = canvas._layout, dpr = window.devicePixelRatio || 1;
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(canvas._base, 0, 0);
  if (!hover) return;
  g.scale(dpr, dpr);
  g.strokeStyle = "#111827";
  g.lineWidth = 1.5;
  g.strokeRect(L.left + hover.k * L.cell - 0.5, L.top + hover.q * L.cell - 0.5, L.cell + 1, L.cell + 1);
}

function onAttentionHover(ev) {
  const canvas = ev.currentTarget, L = canvas._layout;
  if (!L) return;
  const r = canvas.getBoundingClientRect();
  const k = Math.floor((ev.clientX - r.left - L.left) / L.cell), q = Math.floor((ev.clientY - r.top - L.top) / L.cell);
  const T = canvas._rows.length, readout = $(".attn-readout", canvas.closest(".model-col"));
  if (q < 0 || k < 0 || q >= T || k >= T || k > q) { paintAttention(canvas, null); return; }
  const v = canvas._rows[q][k], piece = (i) => `“${show(state.pieces[canvas._ids[i]] ?? "?")}”`;
  readout.textContent = `${piece(q)} (${q}) reads ${piece(k)} (${k}): ${pct(v)}`;
  Object.assign(readout.dataset, {value: v, q, k});
  paintAttention(canvas, {q, k});
}

function drawLens(col, m) {
  const lens = state.views[m].lens, table = $(".lens-table", col);
  const ids = state.ids.slice(state.views[m].dropped), T = ids.length;
  table.replaceChildren();
  const head = el("thead"), hr = el("tr");
  hr.append(el("th", "", "input"));
  ids.forEach((id) => hr.append(el("th", "", show(state.pieces[id] ?? "?"))));
  head.append(hr);
  const body = el("tbody");
  const rgb = col.classList.contains("b") ? "234, 88, 12" : "37, 99, 235";
  for (let l = lens.layers.length - 1; l >= 0; l--) {  // output at the top, embeddings at the bottom
    const tr = el("tr");
    tr.append(el("th", "", lens.layers[l]));
    for (let t = 0; t < T; t++) {
      const id = lens.top_ids[l][t][0], p = lens.top_probs[l][t][0];
      const td = el("td", "", clip(show(state.pieces[id] ?? "?"), 9));
      td.append(el("small", "", pct(p)));
      td.style.background = `rgba(${rgb}, ${(0.08 + 0.6 * p).toFixed(3)})`;
      Object.assign(td.dataset, {layer: l, pos: t, id, prob: p});
      const lines = lens.top_ids[l][t].map((j, r) => `${show(state.pieces[j] ?? "?")}  ${pct(lens.top_probs[l][t][r])}`);
      if (t < T - 1) {
        if (id === ids[t + 1]) td.classList.add("hit");
        lines.push(`p(actual next “${show(state.pieces[ids[t + 1]] ?? "?")}”) = ${pct(lens.next_probs[l][t])}`);
      }
      td.title = `${lens.layers[l]}, position ${t}\n` + lines.join("\n");
      tr.append(td);
    }
    body.append(tr);
  }
  const foot = el("tfoot"), fr = el("tr");
  fr.append(el("th", "", "next"));
  ids.forEach((_, t) => fr.append(el("th", "", t < T - 1 ? show(state.pieces[ids[t + 1]] ?? "?") : "?")));
  foot.append(fr);
  table.append(head, body, foot);
  const wrap = $(".lens-wrap", col);
  wrap.scrollLeft = wrap.scrollWidth;  // the newest positions matter most
}

function lossColumn(tokens, v, m) {
  const col = el("div", "model-col" + (m ? " b" : ""));
  col.dataset.model = m;
  col.append(modelTitle(m));
  if (v.note) col.append(el("div", "note", v.note));
  col.append(el("div", "meta", `mean loss ${v.mean.toFixed(3)} nats over ${v.losses.length} predictions · ` +
    `perplexity ${Math.exp(v.mean).toFixed(2)}`));
  const text = el("div", "loss-text");
  tokens.slice(0, v.scored).forEach((t, i) => {
    const span = el("span", "loss-tok" + (i === 0 ? " first" : ""), t.piece);
    if (i > 0) {
      const loss = v.losses[i - 1], a = Math.min(1, loss / 10);
      span.style.background = `rgba(220, 38, 38, ${a.toFixed(3)})`;
      if (a > 0.55) span.style.color = "#fff";
      span.dataset.loss = loss;
      span.title = `loss ${loss.toFixed(3)} nats · p = ${pct(Math.exp(-loss))}`;
    } else span.title = "the first token has no loss: nothing comes before it";
    text.append(span);
  });
  col.append(text);
  return col;
}

function modelTitle(m) {
  const info = state.info.models[m], h = el("h2", "model-name");
  h.append(el("span", "badge" + (m ? " b" : ""), m ? "B" : "A"), info.name);
  h.title = info.name;
  return h;
}
