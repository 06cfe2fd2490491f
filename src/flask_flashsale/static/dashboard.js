// Flask-FlashSale operator dashboard: polls status.json and draws each sale.
// Our own small script: no third-party code. Rates are derived here from the
// cumulative figures of two successive polls (see flask_flashsale.dashboard).
"use strict";
(function () {
  const root = document.getElementById("dashboard");
  const statusUrl = root.dataset.statusUrl;
  const requeueUrl = root.dataset.requeueUrl;
  const POLL_MS = 1000;
  const POINTS = 60;
  const COLORS = {
    "units admitted": "#2563eb", "dead-lettered": "#b91c1c", paid: "#15803d", expired: "#a16207",
    queued: "#0891b2", duplicate: "#7c3aed", sold_out: "#dc2626", limit_reached: "#ea580c",
    rate_limited: "#db2777", not_started: "#64748b", ended: "#475569",
  };
  const palette = ["#0d9488", "#9333ea", "#65a30d", "#c2410c", "#0369a1"];
  const history = {};   // sale id -> {prev: sample, series: {name: [rate...]}}
  const cards = {};     // sale id -> element
  const NS = "http://www.w3.org/2000/svg";

  function color(name, i) { return COLORS[name] || palette[i % palette.length]; }

  function counters(sale) {
    const c = {"units admitted": sale.units_admitted, "dead-lettered": sale.dead_letters};
    if (sale.payment_timeout !== null || sale.paid || sale.expired) {
      c.paid = sale.paid; c.expired = sale.expired;
    }
    for (const [result, n] of Object.entries(sale.answers || {})) c[result] = n;
    return c;
  }

  function record(sale, at) {
    const h = history[sale.id] || (history[sale.id] = {prev: null, series: {}});
    const now = counters(sale);
    if (h.prev) {
      const dt = Math.max(at - h.prev.at, 0.001);
      for (const [name, value] of Object.entries(now)) {
        const before = h.prev.values[name] ?? value;
        const s = h.series[name] || (h.series[name] = []);
        s.push(Math.max(value - before, 0) / dt);
        if (s.length > POINTS) s.shift();
      }
    }
    h.prev = {at: at, values: now};
    return h;
  }

  function drawChart(svg, series) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const names = Object.keys(series);
    let max = 1;
    for (const n of names) for (const v of series[n]) max = Math.max(max, v);
    const W = 400, H = 140, top = 14;
    for (const frac of [0.5, 1]) {
      const y = H - (H - top) * frac;
      const grid = document.createElementNS(NS, "line");
      grid.setAttribute("x1", 0); grid.setAttribute("x2", W);
      grid.setAttribute("y1", y); grid.setAttribute("y2", y);
      grid.setAttribute("stroke", "#e5e7eb");
      svg.appendChild(grid);
    }
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", 4); label.setAttribute("y", 11);
    label.setAttribute("font-size", "10"); label.setAttribute("fill", "#6b7280");
    label.textContent = max.toFixed(max < 10 ? 1 : 0) + "/s";
    svg.appendChild(label);
    names.forEach(function (name, i) {
      const values = series[name];
      if (!values.length) return;
      const step = W / (POINTS - 1);
      const x0 = W - step * (values.length - 1);
      const points = values.map(function (v, j) {
        return (x0 + j * step).toFixed(1) + "," + (H - (H - top) * v / max).toFixed(1);
      }).join(" ");
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", points);
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", color(name, i));
      line.setAttribute("stroke-width", "1.8");
      line.setAttribute("data-series", name);
      svg.appendChild(line);
    });
  }

  function legend(el, series) {
    el.textContent = "";
    Object.keys(series).forEach(function (name, i) {
      const values = series[name];
      const last = values.length ? values[values.length - 1] : 0;
      const span = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = color(name, i);
      span.appendChild(swatch);
      span.appendChild(document.createTextNode(name + " " + last.toFixed(1) + "/s"));
      el.appendChild(span);
    });
  }

  function card(sale) {
    if (cards[sale.id]) return cards[sale.id];
    const el = document.getElementById("sale-card").content.firstElementChild.cloneNode(true);
    el.dataset.sale = sale.id;
    document.getElementById("sales").appendChild(el);
    cards[sale.id] = el;
    return el;
  }

  async function requeue(button, saleId, entryId) {
    button.disabled = true;
    const url = requeueUrl.replace("SALE", encodeURIComponent(saleId))
                          .replace("ENTRY", encodeURIComponent(entryId));
    const r = await fetch(url, {method: "POST", cache: "no-store", credentials: "same-origin"});
    const body = await r.json();
    button.textContent = r.ok ? "requeued" : (body.outcome || body.code);
    poll();
  }

  function deadLetters(el, sale) {
    const box = el.querySelector("details.dead");
    box.hidden = !sale.dead_letter_entries.length;
    const body = box.querySelector("tbody");
    body.textContent = "";
    for (const d of sale.dead_letter_entries) {
      const tr = document.createElement("tr");
      for (const v of [d.entry_id, d.ticket_id, d.user_id, d.quantity, d.attempts, d.reason]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.textContent = "requeue";
      b.className = "requeue";
      b.addEventListener("click", function () { requeue(b, sale.id, d.entry_id); });
      td.appendChild(b); tr.appendChild(td); body.appendChild(tr);
    }
  }

  function renderSale(sale, at, source) {
    const el = card(sale);
    const h = record(sale, at);
    el.querySelector(".name").textContent = sale.name;
    el.querySelector(".sale-id").textContent = sale.id;
    const badge = el.querySelector(".status");
    badge.textContent = sale.status.replace("_", " ");
    badge.className = "badge status " + sale.status;
    const pct = sale.stock > 0 ? Math.max(0, Math.min(100, 100 * sale.remaining / sale.stock)) : 0;
    el.querySelector(".fill").style.width = pct + "%";
    el.querySelector(".bar").setAttribute("aria-valuenow", sale.remaining);
    el.querySelector(".left").textContent = sale.remaining + " / " + sale.stock + " left";
    for (const dd of el.querySelectorAll("dd[data-k]")) {
      const v = sale[dd.dataset.k];
      dd.textContent = v === null || v === undefined ? "" : v;
    }
    el.querySelector('dd[data-k="dead_letters"]').classList.toggle("warn", sale.dead_letters > 0);
    const pay = sale.payment_timeout !== null;
    for (const p of el.querySelectorAll(".pay")) p.hidden = !pay;
    const waiting = sale.waiting_room !== null && sale.waiting_room !== undefined;
    for (const w of el.querySelectorAll(".waiting")) w.hidden = !waiting;
    if (waiting) {
      for (const dd of el.querySelectorAll("dd[data-w]")) dd.textContent = sale.waiting_room[dd.dataset.w];
    }
    drawChart(el.querySelector("svg"), h.series);
    legend(el.querySelector(".legend"), h.series);
    el.querySelector(".source").textContent =
      "units admitted, dead-lettered, paid, expired: every process (from Redis)" +
      (source ? "; answers by result: " + source : "; answers by result: metrics are off");
    deadLetters(el, sale);
  }

  function renderWorkers(doc) {
    const body = document.querySelector("#workers tbody");
    body.textContent = "";
    for (const w of doc.workers) {
      const tr = document.createElement("tr");
      for (const v of [w.name, w.host, w.pid, w.concurrency, w.state, w.processed, w.confirmed,
                       w.failed, w.parent || ""]) {
        const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    document.getElementById("no-workers").hidden = doc.workers.length > 0;
    const sup = document.getElementById("supervisors");
    sup.textContent = "";
    for (const s of doc.supervisors) {
      const p = document.createElement("p");
      p.textContent = "Autoscale supervisor " + s.name + " on " + s.host + " (pid " + s.pid +
        "): " + s.children.length + " worker(s), min " + s.minimum + ", max " + s.maximum +
        ", lag " + (s.lag === null ? "?" : s.lag) + ", " + s.state;
      sup.appendChild(p);
    }
  }

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    const updated = document.getElementById("updated");
    try {
      const r = await fetch(statusUrl, {cache: "no-store", credentials: "same-origin"});
      if (!r.ok) throw new Error("HTTP " + r.status);
      const doc = await r.json();
      const seen = new Set();
      for (const sale of doc.sales) { renderSale(sale, doc.sampled_at, doc.answers_source); seen.add(sale.id); }
      for (const id of Object.keys(cards)) {
        if (!seen.has(id)) { cards[id].remove(); delete cards[id]; delete history[id]; }
      }
      renderWorkers(doc);
      updated.textContent = "updated " + new Date(doc.sampled_at * 1000).toLocaleTimeString();
    } catch (e) {
      updated.textContent = "cannot read the status (" + e.message + "); retrying";
    }
    timer = setTimeout(poll, POLL_MS);
  }
  poll();
})();
