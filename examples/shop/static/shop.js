// The product page: live stock, countdown, Buy, ticket status, your orders, payment.
// Everything comes from the Flask-FlashSale JSON API (see docs/http.rst).
"use strict";
(function () {
  const page = document.getElementById("product");
  if (!page) return;
  const api = page.dataset.api;
  const saleId = page.dataset.sale;
  const user = page.dataset.user;
  const payUrl = page.dataset.payUrl;
  const $ = (id) => document.getElementById(id);
  const button = $("buy");

  // A sentence for every problem code the order, ticket and queue endpoints send
  // (docs/problems.rst); clients branch on `code`, never on `detail`.
  const MESSAGES = {
    identity_required: "Please sign in to buy.",
    cross_origin: "This request came from another site and was refused.",
    pass_required: "Join the queue first: this sale lets buyers in turn by turn.",
    pass_invalid: "Your turn in the queue has expired. Join again.",
    sale_not_found: "This sale does not exist (any more).",
    invalid_sale_id: "This sale does not exist.",
    ticket_not_found: "We cannot find that order.",
    not_in_queue: "You are not in the queue yet.",
    not_found: "Not found.",
    method_not_allowed: "That is not something this page can do.",
    sold_out: "Sorry, sold out! Every unit has found a buyer.",
    limit_reached: "You already have the most this sale allows per buyer.",
    not_started: "The sale has not started yet. Hang on!",
    no_queue: "This sale has no queue: just buy.",
    queue_not_open: "The queue is not open yet.",
    payment_refused: "This order can no longer be paid.",
    payment_too_late: "Too late: the time to pay has passed and the item went back on sale.",
    ended: "The sale has ended.",
    payload_too_large: "The request was too large.",
    unsupported_media_type: "The shop refused the request's format.",
    invalid_request: "The request was not understood.",
    idempotency_mismatch: "That click was already used for another order. Try again.",
    rate_limited: "Too many tries at once. Wait a moment and try again.",
    backend_unavailable: "The sale is very busy right now. Try again in a second.",
    bad_request: "The request was not understood.",
  };
  const STATUS_TEXT = {
    queued: "received, confirming…", confirmed: "confirmed", awaiting_payment: "reserved, awaiting payment",
    paid: "paid", expired: "expired (not paid in time)", failed: "failed", cancelled: "cancelled",
  };
  const LIVE = new Set(["queued", "confirmed", "awaiting_payment", "paid"]);

  let sale = null;
  let tickets = [];
  let offset = 0;       // server clock - local clock (ms), from the Date header
  let busy = false;
  let queue = null;     // the waiting room's last answer, if the sale has one

  function say(text, kind) {
    const m = $("message");
    m.textContent = text;
    m.className = "message " + (kind || "");
  }

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function clock(r) {
    const d = r.headers.get("Date");
    if (d) offset = Date.parse(d) - Date.now();
  }

  async function json(r) {
    try { return await r.json(); } catch (e) { return {}; }
  }

  async function fetchSale() {
    // cache: "no-store": sale answers carry Cache-Control max-age, and a
    // cached copy would show stock that is already gone.
    const r = await fetch(api + "/" + encodeURIComponent(saleId), {cache: "no-store"});
    clock(r);
    if (r.ok) sale = await r.json();
    render();
  }

  async function fetchTickets() {
    if (!user) return;
    const r = await fetch(api + "/" + encodeURIComponent(saleId) + "/orders", {cache: "no-store"});
    if (r.ok) { tickets = (await r.json()).tickets; renderTickets(); render(); }
  }

  function held() {
    return tickets.filter((t) => LIVE.has(t.status)).reduce((n, t) => n + t.quantity, 0);
  }

  function hasQueue() { return sale && sale.fairness && sale.fairness !== "none"; }

  function countdown() {
    const el = $("countdown");
    if (!sale || sale.status !== "upcoming" || !sale.starts_at) { el.hidden = true; return null; }
    const left = Math.max(0, Math.ceil((Date.parse(sale.starts_at) - (Date.now() + offset)) / 1000));
    el.hidden = false;
    const mm = String(Math.floor(left / 60)).padStart(2, "0");
    const ss = String(left % 60).padStart(2, "0");
    el.textContent = "Starts in " + mm + ":" + ss;
    if (left === 0) fetchSale();
    return mm + ":" + ss;
  }

  function render() {
    if (!sale) return;
    $("stock").textContent = sale.remaining;
    $("stock-total").textContent = sale.stock;
    $("stock-fill").style.width = (sale.stock ? 100 * sale.remaining / sale.stock : 0) + "%";
    const starts = countdown();
    let label = "Buy now", enabled = true;
    if (!user) { label = "Sign in to buy"; enabled = false; }
    else if (sale.status === "sold_out") { label = "Sold out"; enabled = false; }
    else if (sale.status === "ended") { label = "Sale ended"; enabled = false; }
    else if (held() >= sale.per_user_limit) { label = "Limit reached"; enabled = false; }
    else if (sale.status === "upcoming" && !hasQueue()) { label = "Starts in " + starts; enabled = false; }
    else if (hasQueue() && !(queue && queue.status === "ready")) {
      label = queue ? "In the queue…" : "Join the queue"; enabled = !queue;
    }
    if (busy) enabled = false;
    button.textContent = label;
    button.disabled = !enabled;
    button.dataset.state = enabled ? "enabled" : label.toLowerCase().replace(/[^a-z]+/g, "-");
  }

  function renderTickets() {
    const list = $("tickets");
    list.textContent = "";
    if (!tickets.length) {
      const li = document.createElement("li");
      li.className = "muted"; li.textContent = list.dataset.empty; list.appendChild(li);
    }
    for (const t of tickets) {
      const li = document.createElement("li");
      li.dataset.ticket = t.ticket_id;
      const s = document.createElement("span");
      s.className = "status " + t.status;
      s.textContent = STATUS_TEXT[t.status] || t.status;
      li.appendChild(s);
      li.appendChild(document.createTextNode(" ×" + t.quantity + " "));
      const code = document.createElement("code"); code.textContent = t.ticket_id; li.appendChild(code);
      if (t.status === "awaiting_payment") {
        if (t.pay_by) li.appendChild(document.createTextNode(" pay by " + new Date(t.pay_by).toLocaleTimeString()));
        const b = document.createElement("button");
        b.className = "pay"; b.textContent = "Pay";
        b.addEventListener("click", () => pay(t.ticket_id, b));
        li.appendChild(b);
      }
      list.appendChild(li);
    }
  }

  async function waitForTicket(location) {
    for (let i = 0; i < 120; i++) {
      const r = await fetch(location, {cache: "no-store"});
      if (r.ok) {
        const t = await r.json();
        if (t.status !== "queued") return t;
      }
      await new Promise((ok) => setTimeout(ok, 250));
    }
    return null;
  }

  async function buy() {
    if (hasQueue() && !(queue && queue.status === "ready")) return joinQueue();
    busy = true; render();
    say("Sending your order…");
    const headers = {"Content-Type": "application/json", "Idempotency-Key": uuid()};
    if (queue && queue.pass) headers["FlashSale-Pass"] = queue.pass;
    let r;
    try {
      r = await fetch(api + "/" + encodeURIComponent(saleId) + "/order",
                      {method: "POST", headers: headers, body: JSON.stringify({quantity: 1}), cache: "no-store"});
    } catch (e) {
      say("No answer from the shop. Checking your orders…", "error");
      busy = false; await fetchTickets(); return fetchSale();
    }
    const body = await json(r);
    if (typeof body.remaining === "number" && sale) { sale.remaining = body.remaining; }
    if (r.status !== 202) {
      if (body.code === "sold_out" && sale) sale.status = "sold_out";
      say(MESSAGES[body.code] || body.detail || ("Error " + r.status), "error");
      busy = false; render(); fetchTickets(); return fetchSale();
    }
    say("Order received! Confirming…");
    tickets.push({ticket_id: body.ticket_id, status: "queued", quantity: 1, sale_id: saleId});
    renderTickets(); render();
    const t = await waitForTicket(r.headers.get("Location"));
    busy = false;
    if (t === null) say("Still confirming: your order is safe, check back in a moment.");
    else if (t.status === "confirmed") say("Confirmed: it's yours!", "ok");
    else if (t.status === "awaiting_payment") say("Reserved! Pay before " + new Date(t.pay_by).toLocaleTimeString() + ".", "ok");
    else if (t.status === "paid") say("Paid: it's yours!", "ok");
    else say("Your order " + (STATUS_TEXT[t.status] || t.status) + (t.reason ? ": " + t.reason : "") + ".", "error");
    await fetchTickets();
    fetchSale();
  }

  async function pay(ticketId, b) {
    b.disabled = true;
    const r = await fetch(payUrl.replace("TICKET", encodeURIComponent(ticketId)),
                          {method: "POST", cache: "no-store"});
    const body = await json(r);
    say(r.ok ? "Paid: thank you!" : (MESSAGES[body.code] || body.detail || "Payment failed"), r.ok ? "ok" : "error");
    fetchTickets(); fetchSale();
  }

  // The waiting room (a sale created with fairness="fifo" or "lottery"; see docs/fairness.rst).
  function renderQueue() {
    const box = $("waiting-room");
    box.hidden = !queue;
    if (!queue) return;
    if (queue.status === "ready") box.textContent = "Your turn! Buy now.";
    else if (queue.status === "waiting") {
      box.textContent = (queue.position ? "You are number " + queue.position + " in the queue" : "You are in the queue (places are drawn at the start)") +
        (queue.ahead !== null && queue.ahead !== undefined ? ", " + queue.ahead + " ahead of you" : "") +
        (queue.eta_seconds ? ", about " + Math.ceil(queue.eta_seconds) + " s." : ".");
    } else if (queue.status === "expired") { box.textContent = "Your turn expired. Join again."; queue = null; }
    else box.textContent = MESSAGES[queue.status] || queue.status;
  }

  async function joinQueue() {
    const r = await fetch(api + "/" + encodeURIComponent(saleId) + "/queue",
                          {method: "POST", cache: "no-store"});
    const body = await json(r);
    if (!r.ok) { say(MESSAGES[body.code] || body.detail, "error"); return; }
    queue = body; renderQueue(); render(); pollQueue();
  }

  async function pollQueue() {
    if (!queue || queue.status === "ready") return;
    await new Promise((ok) => setTimeout(ok, 1000 * (queue.poll_after || 2)));
    const r = await fetch(api + "/" + encodeURIComponent(saleId) + "/queue", {cache: "no-store"});
    if (r.ok) queue = await r.json();
    renderQueue(); render(); pollQueue();
  }

  button.addEventListener("click", buy);
  fetchSale(); fetchTickets();
  setInterval(fetchSale, 1000);
  setInterval(fetchTickets, 2000);
  setInterval(countdown, 250);
})();
