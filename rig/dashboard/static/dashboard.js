"use strict";
// The live page: one EventSource brings the session's state as JSON whenever it changes; everything is drawn
// here (inline SVG, <img> from the viewer's own /api/image), so the page needs no network and no build step.
const params = new URLSearchParams(location.hash.slice(1));
const TOKEN = params.get("token") || new URLSearchParams(location.search).get("token") || "";
// Viewing needs the token only off loopback, where the address carries it in its query.
const VIEW = new URLSearchParams(location.search).get("token") ? "?token=" + encodeURIComponent(TOKEN) : "";
const NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text = "") {
  const node = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== "") node.textContent = text;
  return node;
}

function fmt(v, digits = 3) { return v === null || v === undefined ? "–" : Number(v).toPrecision(digits); }

// A line plot: series of {values, color, label}; band: [[lo, hi], ...] drawn behind as a grey area.
function plot(series, band, width = 360, height = 180) {
  const svg = el("svg:svg", {width, height, viewBox: `0 0 ${width} ${height}`});
  const all = series.flatMap((s) => s.values).concat(band.flat()).filter((v) => v !== null);
  const n = Math.max(...series.map((s) => s.values.length), 2);
  if (!all.length) return svg;
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) { hi += 1; lo -= 1; }
  const pad = 28;
  const x = (i) => pad + (i * (width - pad - 8)) / (n - 1);
  const y = (v) => height - 16 - ((v - lo) * (height - 28)) / (hi - lo);
  const upper = band.map((b, i) => b[1] === null ? null : `${x(i)},${y(b[1])}`).filter(Boolean);
  const lower = band.map((b, i) => b[0] === null ? null : `${x(i)},${y(b[0])}`).filter(Boolean).reverse();
  if (upper.length) svg.append(el("svg:polygon", {points: upper.concat(lower).join(" "), fill: "#ddd", class: "band"}));
  for (const s of series) {
    const pts = s.values.map((v, i) => v === null ? null : `${x(i)},${y(v)}`).filter(Boolean).join(" ");
    svg.append(el("svg:polyline", {points: pts, fill: "none", stroke: s.color, "stroke-width": 2, class: s.label}));
  }
  svg.append(el("svg:text", {x: 2, y: 10}, fmt(hi)), el("svg:text", {x: 2, y: height - 18}, fmt(lo)),
             el("svg:text", {x: width - 80, y: height - 2}, `generation ${n}`));
  return svg;
}

function bars(all, width = 360, height = 100) {
  const svg = el("svg:svg", {width, height, id: "trials-plot"});
  // The latest blocks that fit (bars 2 px wide at least): past ~90 blocks the newest would fall off the right edge.
  const rows = all.slice(-Math.floor((width - 10) / 4));
  const top = Math.max(1, ...rows.map((r) => r.completed + r.broken));
  const w = Math.max(2, (width - 10) / Math.max(rows.length, 1) - 2);
  rows.forEach((r, i) => {
    const hc = (r.completed / top) * (height - 14), hb = (r.broken / top) * (height - 14);
    // Each bar names its count on hover: the heights alone do not say how many trials.
    const completed = el("svg:rect", {x: 5 + i * (w + 2), y: height - 12 - hc, width: w, height: hc, fill: "#2a7d3b",
                                      class: "completed"});
    const broken = el("svg:rect", {x: 5 + i * (w + 2), y: height - 12 - hc - hb, width: w, height: hb, fill: "#b04a10",
                                   class: "broken"});
    // A block the operator stopped keeps its own bar: its trials ran and their rewards were given.
    const name = `block ${r.block + 1}${r.unfinished ? " (stopped)" : ""}`;
    completed.append(el("svg:title", {}, `${name}: ${r.completed} completed`));
    broken.append(el("svg:title", {}, `${name}: ${r.broken} broken`));
    if (r.unfinished) { completed.setAttribute("opacity", "0.5"); broken.setAttribute("opacity", "0.5"); }
    svg.append(completed, broken);
  });
  svg.append(el("svg:text", {x: 5, y: height - 1}, "trials per block: completed (green), broken (orange)"));
  return svg;
}

function gaze(trace, fixation, size = 180) {
  const svg = el("svg:svg", {width: size, height: size, id: "gaze-plot"});
  const range = Math.max(5, fixation ? fixation.window_deg * 3 : 5);
  const s = (v) => size / 2 + (v / range) * (size / 2);
  if (fixation) {
    svg.append(el("svg:circle", {cx: s(fixation.point[0]), cy: size - s(fixation.point[1]), r: (fixation.window_deg / range) * (size / 2),
                                 fill: "none", stroke: "#246", "stroke-dasharray": "4 2"}));
  }
  if (trace) {
    const pts = trace.x.map((xv, i) => xv === null || trace.y[i] === null ? null : `${s(xv)},${size - s(trace.y[i])}`);
    svg.append(el("svg:polyline", {points: pts.filter(Boolean).join(" "), fill: "none", stroke: "#a22"}),
               el("svg:text", {x: 2, y: 10}, `gaze, trial ${trace.trial}`));
  }
  return svg;
}

function image(block, thread, code) { return `/api/image/${block}/${thread}/${code}.png${VIEW}`; }

function drawThread(t) {
  let box = $(`thread-${t.thread}`);
  if (!box) {
    box = el("section", {class: "panel thread", id: `thread-${t.thread}`});
    box.append(el("div", {class: "trajectory"}), el("div", {class: "best"}), el("div", {class: "latest", id: `latest-${t.thread}`}));
    $("threads").append(box);
  }
  const [trajectory, best, latest] = box.children;
  trajectory.replaceChildren(
    el("h2", {}, `thread ${t.thread} (${t.channel}): mean (blue), max (red), references (grey)`),
    plot([{values: t.mean, color: "#246", label: "mean"}, {values: t.max, color: "#a22", label: "max"}], t.reference_band));
  // Images change only when a block lands: leave them (decoded, on screen) otherwise.
  const bestKey = t.best ? `${t.best.block}/${t.best.code}` : "";
  if (best.dataset.key !== bestKey) {
    best.dataset.key = bestKey;
    best.replaceChildren();
    if (t.best) {
      best.append(el("h2", {}, `best: ${fmt(t.best.score)} (generation ${t.best.block + 1})`),
                  el("img", {id: `best-${t.thread}`, src: image(t.best.block, t.thread, t.best.code),
                             "data-block": t.best.block, alt: "best image"}));
    }
  }
  if (latest.dataset.block !== String(t.latest.block)) {
    latest.dataset.block = t.latest.block;
    latest.replaceChildren(el("h2", {style: "width:100%"}, `generation ${t.latest.block + 1}`));
    t.latest.scores.forEach((score, code) => {
      const fig = el("figure");
      fig.append(el("img", {src: image(t.latest.block, t.thread, code), alt: `code ${code}`}), el("figcaption", {}, fmt(score)));
      latest.append(fig);
    });
  }
}

function drawHealth(rows) {
  const table = $("health");
  table.replaceChildren();
  const head = el("tr");
  for (const h of ["block", "re-shows", "dropped frames", "messages", "msgs/s", "gaps", "restarts", "TTL residual ms"]) {
    head.append(el("th", {}, h));
  }
  table.append(head);
  for (const r of rows.slice(-8)) {
    const tr = el("tr");
    for (const v of [r.block + 1, r.reshows, r.dropped_frames, r.messages ?? "–", fmt(r.messages_per_s), r.gaps ?? "–",
                     r.restarts ?? "–", fmt(r.residual_ms)]) tr.append(el("td", {}, String(v)));
    table.append(tr);
  }
}

function draw(state) {
  $("problem").textContent = state.problem || "";
  if (!state.path) return;
  $("name").textContent = state.name;
  $("status").textContent = state.status;
  $("status").className = `status ${state.status}`;
  $("generation").textContent = state.generation;
  $("generations").textContent = state.generations ?? "?";
  const secs = state.seconds_per_generation;
  $("seconds").textContent = secs.length ? fmt(secs[secs.length - 1]) : "–";
  state.threads.forEach(drawThread);
  drawHealth(state.health);
  const b = state.behavior;
  $("behavior-panel").hidden = !b;
  $("reward").hidden = !b;  // a manual reward needs a trial machine and its reward output
  if (b) {
    $("reward-total").textContent = b.reward_pulses;
    $("trials").replaceChildren(bars(b.trials));
    $("gaze").replaceChildren(gaze(b.gaze, b.fixation));
  }
  const log = $("control-log");
  log.replaceChildren();
  for (const c of state.controls) {
    log.append(el("li", {class: "control"}, `${c.recorded_utc} after generation ${c.after_block + 1}: ${c.kind}` +
                                          `${c.value === null || c.value === undefined ? "" : " " + c.value} — ${c.outcome}`));
  }
  for (const p of state.pending) log.append(el("li", {class: "pending"}, `${p.requested_utc} ${p.kind}: waiting for the run`));
  document.body.dataset.revision = state.revision;
}

async function send(kind) {
  const value = kind === "extend" ? Number($("extend-n").value) : kind === "note" ? $("note-text").value : null;
  const reply = await fetch("/api/control", {method: "POST", headers: {"Content-Type": "application/json", "X-Rig-Token": TOKEN},
                                             body: JSON.stringify({kind, value})});
  const body = await reply.json();
  $("control-reply").textContent = reply.ok ? `${kind} sent` : `refused: ${body.error}`;
  if (reply.ok && kind === "note") $("note-text").value = "";
}

for (const button of document.querySelectorAll("#controls button")) button.addEventListener("click", () => send(button.dataset.kind));

const events = new EventSource("/api/events" + VIEW);
events.onmessage = (e) => draw(JSON.parse(e.data));
events.onerror = () => { $("status").textContent = "viewer disconnected; retrying"; };
