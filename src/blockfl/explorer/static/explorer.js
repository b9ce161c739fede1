// BlockFL explorer: poll this page's JSON twin and redraw. Data goes into the DOM as text only.
"use strict";

const TOKEN_DECIMALS = 18n;
const app = document.getElementById("app");

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// a uint256 amount (decimal string) in whole tokens, exact
function tokens(amount) {
  const value = BigInt(amount);
  const unit = 10n ** TOKEN_DECIMALS;
  const fraction = (value % unit).toString().padStart(Number(TOKEN_DECIMALS), "0").replace(/0+$/, "");
  return (value / unit).toLocaleString("en-US") + (fraction ? "." + fraction : "");
}

function short(hash) {
  return hash ? `${hash.slice(0, 10)}…${hash.slice(-6)}` : "–";
}

function dash(value) {
  return value === null || value === undefined ? "–" : value;
}

function fixed(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

function hashCell(hash) {
  return el("td", { class: "mono", title: hash, "data-hash": hash }, short(hash));
}

// a table: columns are [header, numeric?]; rows are arrays of cells (td nodes or values)
function table(id, columns, rows, rowAttrs = () => ({})) {
  const head = el("tr", {}, ...columns.map(([name, num]) => el("th", { class: num ? "num" : "" }, name)));
  const body = rows.map((cells, i) => el("tr", rowAttrs(i),
    ...cells.map((cell, j) => cell instanceof Node ? cell
      : el("td", { class: columns[j][1] ? "num" : "" }, dash(cell)))));
  return el("table", { id }, el("thead", {}, head), el("tbody", {}, ...body));
}

function status(ok, yes = "match", no = "MISMATCH") {
  if (ok === null || ok === undefined) return el("td", { class: "unknown" }, "–");
  return el("td", { class: ok ? "ok" : "bad" }, ok ? yes : no);
}

function section(title, ...content) {
  return el("section", {}, el("h2", {}, title), ...content);
}

// ---------------------------------------------------------------- pages

let chart = null;

// `metrics`: the rounds the server kept of `rounds` evaluated (thinned past a few hundred)
function drawChart(metrics, names, rounds) {
  const canvas = document.getElementById("accuracy-chart");
  canvas.dataset.points = String(metrics.length);
  canvas.dataset.rounds = String(rounds);
  if (typeof Chart === "undefined") return;
  const colors = { accuracy: "#1f5fbf", loss: "#c2571a", mse: "#c2571a" };
  const dots = metrics.length > 60 ? 0 : 3;  // dots on a dense curve blur into a band
  const datasets = names.map((name) => ({
    label: name, data: metrics.filter((m) => typeof m[name] === "number").map((m) => ({ x: m.round, y: m[name] })),
    yAxisID: name === "accuracy" ? "y" : "y1", borderColor: colors[name] || "#555",
    backgroundColor: colors[name] || "#555", tension: 0, pointRadius: dots, borderWidth: 1.5,
  }));
  if (chart === null) {
    chart = new Chart(canvas, {
      type: "line",
      data: { datasets },
      options: {
        animation: false, maintainAspectRatio: false,
        scales: {
          x: { type: "linear", title: { display: true, text: "round" }, ticks: { precision: 0 } },
          y: { position: "left", title: { display: true, text: "test accuracy" } },
          y1: { position: "right", title: { display: true, text: "test loss" }, grid: { drawOnChartArea: false } },
        },
      },
    });
  } else {
    chart.data.datasets = datasets;
    chart.update("none");
  }
}

// links to the newer and the older page of the block table, and where this page is
function pager(data) {
  const link = (offset, text, id) => el("a", { id, href: `?offset=${offset}&limit=${data.limit}` }, text);
  const last = Math.min(data.offset + data.blocks.length, data.total);
  return el("p", { id: "pager" },
    data.offset > 0 ? link(Math.max(0, data.offset - data.limit), "← newer", "newer") : "",
    ` blocks ${data.total ? data.offset + 1 : 0}–${last} of ${data.total}, newest first `,
    last < data.total ? link(data.offset + data.limit, "older →", "older") : "");
}

const pages = {
  blocks(data) {
    const blocks = data.blocks;
    const rows = blocks.map((b) => [
      el("td", { class: "num" }, el("a", { href: `/rounds/${b.round}` }, b.round)),
      hashCell(b.block_hash), el("td", { class: "mono" }, b.miner),
      b.forks, b.num_updates, b.total_samples, b.gas, b.time,
      status(b.models_match),
    ]);
    const box = document.getElementById("chart-box") || el("div", { id: "chart-box" },
      el("canvas", { id: "accuracy-chart" }));
    const tableNode = table("blocks", [["round", 1], ["block hash"], ["miner"], ["forks seen", 1],
      ["updates", 1], ["samples", 1], ["gas", 1], ["time (UTC)"], ["models vs chain"]],
    rows, (i) => ({ "data-round": blocks[i].round }));
    app.replaceChildren(
      section("global model on the held-out test split", box),
      section(`blocks (head: round ${data.head})`, pager(data), tableNode),
    );
    drawChart(data.metrics, data.metric_names, data.metric_rounds);
  },

  round(data) {
    if (data.round === undefined) {
      app.replaceChildren(el("p", {}, data.error || "no such round"));
      return;
    }
    const b = data.block;
    const facts = table("block", [["field"], ["value"]], [
      ["round", b.round], ["block hash", b.block_hash], ["previous block", b.prev_hash],
      ["miner", b.miner], ["global model hash", b.global_model_hash], ["updates root", b.updates_root],
      ["time (UTC)", b.time], ["nonce", b.nonce],
    ]);
    const paid = table("updates", [["device"], ["update hash"], ["samples", 1], ["data reward (tokens)", 1]],
      data.updates.map((u) => [el("td", { class: "mono" }, u.device), hashCell(u.update_hash),
        u.samples, tokens(u.reward)]));
    const mining = table("mining", [["miner"], ["mining reward (tokens)", 1]],
      [[el("td", { class: "mono" }, data.mining.miner), tokens(data.mining.reward)]]);
    const excluded = !data.excluded_known
      ? el("p", { class: "muted" }, "unknown: the explorer was started without the network's event logs or miners")
      : data.excluded.length === 0 ? el("p", { id: "excluded", class: "muted" }, "none")
        : table("excluded", [["device"], ["update hash"], ["reason"], ["detail"]],
          data.excluded.map((x) => [el("td", { class: "mono" }, dash(x.device)),
            hashCell(x.update_hash), dash(x.reason), x.detail]));
    const nav = el("p", {}, b.round > 1 ? el("a", { href: `/rounds/${b.round - 1}` }, "← previous round") : "",
      " ", el("a", { href: `/rounds/${b.round + 1}` }, "next round →"));
    app.replaceChildren(nav, section(`block of round ${b.round}`, facts),
      section("accepted updates and their data rewards", paid),
      section("mining reward", mining),
      section("updates excluded by the aggregation rule", excluded));
  },

  rewards(data) {
    // with [privacy] on: each device's epsilon spent, charged by its updates on the chain
    const privacy = data.privacy;
    const spent = new Map((privacy ? privacy.devices : []).map((d) => [d.address, d.epsilon]));
    const epsilon = (r) => (privacy ? [spent.has(r.address) ? spent.get(r.address).toPrecision(4) : ""] : []);
    const rows = data.rows.map((r) => [el("td", { class: "mono" }, r.address), r.role,
      tokens(r.balance), tokens(r.event_total), status(r.agrees, "yes", "NO"), ...epsilon(r)]);
    rows.push([el("th", {}, "total"), "", tokens(data.total.balance), tokens(data.total.event_total),
      status(data.agrees, "yes", "NO"), ...(privacy ? [""] : [])]);
    const epsilonHead = privacy ? [[`ε spent (${privacy.mode}, δ ${privacy.delta})`, 1]] : [];
    const events = data.events.map((e) => [el("td", { class: "num" }, el("a", { href: `/rounds/${e.round}` }, e.round)),
      el("td", { class: "mono" }, e.address), e.kind, e.samples, tokens(e.reward)]);
    app.replaceChildren(
      section("token balances against reward events",
        table("balances", [["address"], ["role"], ["balance (tokens)", 1], ["reward events (tokens)", 1], ["agrees"], ...epsilonHead], rows)),
      section("every reward: who was paid how much for which round",
        table("reward-events", [["round", 1], ["address"], ["kind"], ["samples", 1], ["reward (tokens)", 1]], events)),
    );
  },

  models(data) {
    const miners = data.miners;
    const rows = data.rounds.slice().reverse().map((r) => [
      el("td", { class: "num" }, el("a", { href: `/rounds/${r.round}` }, r.round)), hashCell(r.chain_hash),
      ...r.checks.map((c) => el("td", {
        class: c.status === "match" ? "ok" : c.status === "mismatch" ? "bad" : "unknown",
        title: c.served_hash ? `served ${c.served_hash} ${c.detail}` : c.detail,
        "data-status": c.status,
      }, c.status === "mismatch" ? "MISMATCH" : c.status)),
      fixed(r.metrics && r.metrics.accuracy), fixed(r.metrics && (r.metrics.loss ?? r.metrics.mse), 4),
    ]);
    const verdict = data.all_match ? el("p", { class: "ok", id: "verdict" }, "every miner serves every global model the chain records")
      : el("p", { class: "bad", id: "verdict" }, "not every miner serves the global models the chain records");
    app.replaceChildren(section("global models served by miners against their on-chain hash", verdict,
      table("models", [["round", 1], ["on-chain hash"], ...miners.map((m) => [m]), ["accuracy", 1], ["loss", 1]], rows,
        (i) => ({ "data-round": data.rounds[data.rounds.length - 1 - i].round }))));
  },

  latency(data) {
    if (!data.available) {
      app.replaceChildren(el("p", { class: "muted" }, "no event logs: start the explorer with --logs DIR"));
      return;
    }
    const rows = data.rows.map((r) => [r.round, fixed(r.round_s), fixed(r.upload), fixed(r.attest), fixed(r.pow),
      fixed(r.propagate), r.adopted, fixed(r.seen), fixed(r.dev_model), fixed(r.train), r.upd, r.forks]);
    app.replaceChildren(section(`seconds per phase of each round (logs in ${data.logs})`,
      table("latency", [["round", 1], ["round time", 1], ["upload window", 1], ["attestation", 1],
        ["pow + commit", 1],
        ["propagation", 1], ["adopted"], ["seen by a device", 1], ["device model check", 1],
        ["device train + upload", 1], ["updates", 1], ["forks", 1]], rows)));
  },
};

function header(data) {
  const chain = document.getElementById("chain");
  if (data.chain_id !== undefined) {
    const updated = new Date(data.updated * 1000).toISOString().slice(11, 19);
    chain.textContent = `chain ${data.chain_id} · contract ${data.contract} · head round ${data.head} · updated ${updated} UTC`;
  }
  const error = document.getElementById("error");
  error.hidden = !data.error;
  error.textContent = data.error ? `last refresh failed: ${data.error}` : "";
  document.getElementById("notes").replaceChildren(...(data.notes || []).map((n) => el("li", {}, n)));
}

async function poll() {
  try {
    const started = performance.now();
    const response = await fetch(app.dataset.api + window.location.search, { cache: "no-store" });
    const data = await response.json();
    header(data);
    pages[app.dataset.page](data);
    app.dataset.updated = String(Date.now());
    app.dataset.redrawMs = String(performance.now() - started);  // fetch and redraw
  } catch (err) {
    const error = document.getElementById("error");
    error.hidden = false;
    error.textContent = `explorer unreachable: ${err}`;
  }
}

poll();
setInterval(poll, Number(app.dataset.pollMs) || 2000);
