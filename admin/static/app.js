// bounded admin dashboard. Plain JavaScript, no dependencies.
// Every value from the server is put in the page as text (textContent or
// text nodes), never parsed as markup.
"use strict";

(function () {
  let session = null;
  const main = () => document.getElementById("main");

  // el builds an element; string and number children become text nodes.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "text") e.textContent = String(v);
      else e.setAttribute(k, String(v));
    }
    for (const k of kids.flat(Infinity)) {
      if (k === undefined || k === null || k === false) continue;
      e.append(typeof k === "string" || typeof k === "number" ? document.createTextNode(String(k)) : k);
    }
    return e;
  }

  function showError(msg) {
    const box = document.getElementById("error");
    box.textContent = msg || "";
    box.hidden = !msg;
  }

  // showNotice says what a mutation did; it stays until the next one.
  function showNotice(msg) {
    const box = document.getElementById("notice");
    box.textContent = msg || "";
    box.hidden = !msg;
  }

  async function api(path, params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== "") q.set(k, v);
    const url = "api/" + path + (q.toString() ? "?" + q : "");
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    return decode(res);
  }

  async function post(path, body) {
    const res = await fetch("api/" + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Bounded-CSRF": session.csrf_token },
      body: JSON.stringify(body),
    });
    return decode(res);
  }

  async function decode(res) {
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new Error((body && body.error) || ("HTTP " + res.status));
    return body;
  }

  const hash = (...parts) => "#/" + parts.map(encodeURIComponent).join("/");
  const link = (text, href) => el("a", { href }, String(text));
  const when = (t) => (t ? new Date(t).toLocaleString() : "");
  const num = (n) => el("td", { class: "num" }, n === undefined || n === null ? "" : String(n));

  function bytes(b) {
    if (!b) return "0 B";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return b.toFixed(i ? 1 : 0) + " " + u[i];
  }

  function table(head, rows) {
    return el("table", {},
      el("thead", {}, el("tr", {}, head.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }

  // confirmThen asks, runs fn, says what it did (done(answer)) and
  // renders the view again.
  function confirmThen(msg, fn, done) {
    return async () => {
      if (!window.confirm(msg)) return;
      try {
        const res = await fn();
        showError("");
        showNotice(done(res || {}));
        await route();
      } catch (e) { showError(e.message); }
    };
  }

  const ms = (ns) => {
    if (!ns) return "0";
    if (ns < 1e3) return ns.toFixed(0) + " ns";
    if (ns < 1e6) return (ns / 1e3).toFixed(0) + " µs";
    if (ns < 1e9) return (ns / 1e6).toFixed(ns < 1e7 ? 1 : 0) + " ms";
    return (ns / 1e9).toFixed(1) + " s";
  };
  const perSec = (v, win) => (win ? v.toFixed(v < 10 ? 1 : 0) + "/s" : "–");

  // --- queues -------------------------------------------------------------
  async function viewQueues(params) {
    const [page, wk, mem] = await Promise.all([
      api("queues", { cursor: params.get("cursor") || "", limit: session.default_limit }),
      session.workers ? api("workers") : Promise.resolve(null),
      session.memwatch ? api("memwatch") : Promise.resolve(null),
    ]);
    // This process's workers, summed by queue: rates add up, the start
    // delay shown is the worst p99 of them.
    const local = {};
    for (const w of (wk && wk.workers) || []) {
      const a = local[w.queue] || (local[w.queue] = { rate: 0, win: 0, p50: 0, p99: 0, n: 0 });
      a.rate += w.processed_per_s;
      a.win = Math.max(a.win, w.rate_window_ns);
      a.p50 = Math.max(a.p50, w.start_delay.p50_ns);
      a.p99 = Math.max(a.p99, w.start_delay.p99_ns);
      a.n += w.start_delay.count;
    }
    const rows = page.queues.map((q) => {
      const l = local[q.name];
      return el("tr", {},
        el("td", {}, link(q.name, hash("queue", q.name, "ready"))),
        num(q.ready), num(q.delayed), num(q.in_flight),
        el("td", { class: "num" }, link(q.dead, hash("queue", q.name, "dead"))),
        num(q.consumers), el("td", {}, when(q.last_seen)),
        el("td", { class: q.paused ? "alert" : undefined }, q.paused ? "paused" : "active"),
        wk ? num(l ? perSec(l.rate, l.win) : "") : null,
        wk ? num(l && l.n ? ms(l.p50) + " / " + ms(l.p99) : "") : null,
        session.mutations ? el("td", {}, pauseButton(q)) : null);
    });
    const head = ["queue", "ready", "delayed", "in flight", "dead", "consumers", "last seen", "state"];
    if (wk) head.push("processed (this process)", "enqueue→start p50 / p99 (this process)");
    if (session.mutations) head.push("");
    const out = [el("h2", {}, "Queues ", el("span", { class: "muted" }, "namespace " + session.namespace)), alertsBox(mem), searchBox(),
      rows.length ? table(head, rows) : el("p", { class: "muted" }, "No queues registered in this namespace yet."),
      pager(params, page.next, "#/queues")];
    if (wk && wk.workers.length) out.push(workersTable(wk));
    return out;
  }

  // pauseButton pauses or resumes a queue for the whole fleet.
  function pauseButton(q) {
    const name = q.name;
    if (q.paused) {
      return el("button", { onclick: confirmThen("Resume " + name + "? Every worker of the fleet takes its jobs again.",
        () => post("resume", { queue: name }), () => "Resumed " + name + ".") }, "resume");
    }
    return el("button", { class: "danger", onclick: confirmThen("Pause " + name + "? No worker of the fleet takes its jobs until it is resumed; running jobs finish.",
      () => post("pause", { queue: name }), () => "Paused " + name + ".") }, "pause");
  }

  function alertsBox(mem) {
    if (!mem || !mem.alerts.length) return null;
    return el("div", { class: "alerts", role: "alert" }, el("strong", {}, "Memory alerts: "),
      el("ul", {}, mem.alerts.map((a) => el("li", { class: "alert" }, when(a.time) + " " + a.kind + ": " + a.message))),
      link("memory history", "#/memory"));
  }

  function workersTable(wk) {
    const rows = wk.workers.map((w) => el("tr", {},
      el("td", {}, link(w.queue, hash("queue", w.queue, "running"))),
      num(w.busy + " / " + w.concurrency), num(w.processed), num(w.failed), num(w.retried), num(w.dead),
      num(perSec(w.processed_per_s, w.rate_window_ns)), num(perSec(w.failed_per_s, w.rate_window_ns)),
      num(w.start_delay.count ? ms(w.start_delay.p50_ns) + " / " + ms(w.start_delay.p99_ns) + (w.start_delay.p99_over_last_bound ? "+" : "") : ""),
      num(w.run.count ? ms(w.run.p50_ns) + " / " + ms(w.run.p99_ns) : ""),
      el("td", {}, w.fetcher_state)));
    const win = Math.max(0, ...wk.workers.map((w) => w.rate_window_ns));
    return [el("h3", {}, "Workers in " + wk.scope + " ", el("span", { class: "muted" },
      win ? "rates over the last " + (win / 1e9).toFixed(0) + " s" : "rates from the next refresh")),
    table(["queue", "busy", "processed", "failed", "retried", "dead", "processed/s", "failed/s", "enqueue→start p50 / p99", "run p50 / p99", "fetcher"], rows)];
  }

  function searchBox() {
    const qIn = el("input", { placeholder: "queue", size: 16, "aria-label": "queue" });
    const idIn = el("input", { placeholder: "job ID", size: 32, "aria-label": "job ID" });
    const form = el("form", {
      onsubmit: (ev) => {
        ev.preventDefault();
        if (qIn.value && idIn.value) location.hash = hash("job", qIn.value, idIn.value);
      },
    }, "Find a job: ", qIn, " ", idIn, " ", el("button", { type: "submit" }, "Show"));
    return form;
  }

  // pager keeps the cursors seen in the hash's "prev" parameter.
  function pager(params, next, base) {
    const cur = params.get("cursor") || "";
    const prev = params.get("prev") ? params.get("prev").split(" ") : [];
    const box = el("p", {});
    if (cur) {
      const back = prev.slice(0, -1);
      const q = new URLSearchParams();
      if (prev.length && prev[prev.length - 1] !== "-") q.set("cursor", prev[prev.length - 1]);
      if (back.length) q.set("prev", back.join(" "));
      box.append(link("← first", base), " ", link("← previous", base + (q.toString() ? "?" + q : "")), " ");
    }
    if (next) {
      const q = new URLSearchParams({ cursor: next, prev: prev.concat([cur || "-"]).join(" ") });
      box.append(link("next →", base + "?" + q));
    }
    return box;
  }

  // --- jobs ---------------------------------------------------------------
  const STATES = ["ready", "delayed", "running", "dead"];

  async function viewJobs(queue, state, params) {
    const page = await api("jobs", { queue, state, cursor: params.get("cursor") || "", limit: session.default_limit });
    const tabs = el("p", { class: "tabs" }, STATES.map((s) =>
      el("a", { href: hash("queue", queue, s), class: s === state ? "on" : undefined }, s)));
    const out = [el("h2", {}, "Queue ", el("code", {}, queue)), tabs];
    if (state === "dead" && session.mutations) {
      out.push(el("p", {}, el("button", {
        class: "danger",
        onclick: confirmThen("Delete ALL dead letters of " + queue + "?", () => post("purge", { queue }),
          (r) => "Purged " + r.purged + " dead letters of " + queue + "."),
      }, "Purge dead letters")));
    }
    const rows = page.jobs.map((j) => el("tr", {},
      el("td", {}, link(j.id, hash("job", queue, j.id))),
      num(j.attempt + "/" + j.max_attempts),
      el("td", {}, when(j.enqueued_at)),
      el("td", {}, when(j.due || j.died_at)),
      el("td", {}, j.consumer || ""),
      el("td", {}, el("pre", {}, j.last_error || j.error || "")),
      el("td", {}, payloadBlock(j)),
      el("td", {}, actions(queue, j))));
    out.push(rows.length ? table(["id", "attempt", "enqueued", state === "dead" ? "died" : "due", "consumer", "error", "payload", ""], rows)
      : el("p", { class: "muted" }, "No " + state + " jobs."));
    out.push(pager(params, page.next, hash("queue", queue, state)));
    return out;
  }

  function payloadBlock(j) {
    const note = [];
    if (j.payload_truncated) note.push("first " + bytes(session.preview_bytes) + " of " + bytes(j.payload_size));
    if (j.payload_apart) note.push("kept apart, " + bytes(j.payload_size) + ", not read");
    if (j.malformed) note.push("malformed");
    return [el("pre", {}, j.payload || ""), note.length ? el("div", { class: "muted" }, note.join("; ")) : null];
  }

  function actions(queue, j) {
    if (!session.mutations) return [];
    const out = [];
    if (j.state === "dead") {
      out.push(el("button", { onclick: confirmThen("Requeue " + j.id + "?", () => post("requeue", { queue, ids: [j.id] }),
        (r) => "Requeued " + r.requeued + " job (" + j.id + ")" + (r.error ? ": " + r.error : ".")) }, "requeue"));
    }
    if (j.handle) {
      out.push(el("button", { class: "danger", onclick: confirmThen("Delete " + j.id + "?", () => post("delete", { queue, handle: j.handle }),
        () => "Deleted " + j.id + ".") }, "delete"));
    }
    if (j.state === "ready" || j.state === "delayed" || j.state === "running") {
      out.push(el("button", { class: "danger", onclick: confirmThen("Cancel " + j.id + "?", () => post("cancel", { queue, id: j.id }),
        () => "Cancelled " + j.id + ".") }, "cancel"));
    }
    return out;
  }

  async function viewJob(queue, id) {
    const j = await api("job", { queue, id });
    const dl = el("dl", {});
    const add = (k, v) => { if (v !== undefined && v !== "" && v !== null) dl.append(el("dt", {}, k), el("dd", {}, v)); };
    add("queue", link(queue, hash("queue", queue, j.state === "dead" ? "dead" : "ready")));
    add("state", j.state);
    add("attempt", j.attempt + " of " + j.max_attempts);
    add("deliveries", String(j.deliveries));
    add("enqueued", when(j.enqueued_at));
    add("due", when(j.due));
    add("died", when(j.died_at));
    add("consumer", j.consumer);
    add("last error", j.last_error ? el("pre", {}, j.last_error) : "");
    add("payload", payloadBlock(j));
    add("progress", j.progress ? el("pre", {}, j.progress + (j.progress_truncated ? "\n…" : "")) : "");
    add("result", j.result ? el("pre", {}, j.result + (j.result_truncated ? "\n…" : "")) : "");
    return [el("h2", {}, "Job ", el("code", {}, j.id)), dl, el("p", {}, actions(queue, j))];
  }

  // --- consumers ----------------------------------------------------------
  async function viewConsumers() {
    const r = await api("consumers");
    const rows = r.consumers.map((c) => el("tr", {},
      el("td", {}, c.id), el("td", {}, when(c.deadline)),
      el("td", {}, (c.queues || []).map((q) => [link(q, hash("queue", q, "running")), " "])),
      el("td", {}, Object.entries(c.in_flight || {}).map(([q, n]) => q + ": " + n).join(", "))));
    return [el("h2", {}, "Consumers"),
      rows.length ? table(["consumer", "deadline", "queues", "in flight"], rows) : el("p", { class: "muted" }, "No live consumers.")];
  }

  // --- pools, caches, limiters -------------------------------------------
  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? prefix + "." + k : k;
      if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, key, out);
      else out.push([key, Array.isArray(v) ? JSON.stringify(v) : String(v)]);
    }
    return out;
  }

  // statsTables shows components of one kind side by side: a row per
  // counter, a column per component.
  function statsTables(title, m) {
    const names = Object.keys(m || {}).sort();
    if (!names.length) return [];
    const cols = names.map((n) => new Map(flatten(m[n], "", [])));
    const keys = [...new Set(cols.flatMap((c) => [...c.keys()]))];
    return [el("h2", {}, title), table(["counter"].concat(names), keys.map((k) => el("tr", {},
      el("td", {}, k), cols.map((c) => el("td", { class: "num" }, c.has(k) ? c.get(k) : ""))))) ];
  }

  // poolLanes shows a pool's three lanes side by side.
  function poolLanes(pools) {
    const names = Object.keys(pools || {}).sort();
    if (!names.length) return [];
    const cols = [["size", "size"], ["in use", "in_use"], ["open", "open"], ["idle", "idle"], ["waiting", "waiting"],
      ["waits", "waits"], ["timeouts", "timeouts"], ["rejections", "rejections"], ["dials", "dials"], ["dial errors", "dial_errors"]];
    return [el("h2", {}, "Pool lanes"), names.map((n) => {
      const p = pools[n];
      const lanes = [["request", p.request], ["background", p.background], ["blocking", p.blocking]];
      return [el("h3", {}, n + " ", el("span", { class: p.healthy ? "muted" : "alert" },
        (p.healthy ? "healthy" : "UNHEALTHY") + ", " + p.open + " of " + p.total_size + " sockets open")),
      table(["lane"].concat(cols.map(([h]) => h), ["wait p50", "wait p99", "reserved"]), lanes.map(([name, l]) => el("tr", {},
        el("td", {}, name), cols.map(([, k]) => num(l[k])), num(ms(l.wait_p50_ns)), num(ms(l.wait_p99_ns)),
        num(name === "blocking" ? l.reserved + " (" + (l.reservations || []).map((r) => r.owner + ": " + r.size).join(", ") + ")" : ""))))];
    })];
  }

  async function viewComponents() {
    const s = await api("stats");
    const out = [poolLanes(s.pools), statsTables("Caches", s.caches), statsTables("Limiters", s.limiters)].flat();
    return out.length ? out : [el("p", { class: "muted" }, "No pools, caches or limiters registered (admin.Config).")];
  }

  // --- memory -------------------------------------------------------------
  const SERIES = [
    ["heap_live_bytes", "heap live", "#1f5fbf"],
    ["heap_objects_bytes", "heap objects", "#7a9cc6"],
    ["memory_used_bytes", "memory used", "#b54708"],
    ["memory_limit_bytes", "memory limit", "#b42318"],
  ];

  function chart(history) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 800, H = 240, L = 70, B = 20;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    if (history.length < 2) return svg;
    const t0 = Date.parse(history[0].time), t1 = Date.parse(history[history.length - 1].time);
    let max = 1;
    for (const s of history) for (const [k] of SERIES) if (s[k] > max) max = s[k];
    const x = (t) => L + ((Date.parse(t) - t0) / Math.max(1, t1 - t0)) * (W - L - 10);
    const y = (v) => H - B - (v / max) * (H - B - 10);
    for (const [k, , color] of SERIES) {
      const pts = history.filter((s) => s[k] > 0).map((s) => x(s.time).toFixed(1) + "," + y(s[k]).toFixed(1));
      if (!pts.length) continue;
      const line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", color);
      line.setAttribute("stroke-width", "1.5");
      svg.append(line);
    }
    const label = (tx, ty, s) => { const t = document.createElementNS(NS, "text"); t.setAttribute("x", tx); t.setAttribute("y", ty); t.textContent = s; svg.append(t); };
    label(2, 14, bytes(max));
    label(2, H - B, "0");
    label(L, H - 4, new Date(t0).toLocaleTimeString());
    label(W - 80, H - 4, new Date(t1).toLocaleTimeString());
    return svg;
  }

  async function viewMemory() {
    const m = await api("memwatch");
    const out = [el("h2", {}, "Memory"), chart(m.history),
      el("p", { class: "legend" }, SERIES.map(([, name], i) => el("span", { class: "s" + i }, "— " + name)))];
    out.push(el("h3", {}, "Alerts"));
    out.push(m.alerts.length ? el("ul", {}, m.alerts.map((a) => el("li", { class: "alert" }, when(a.time) + " " + a.kind + ": " + a.message)))
      : el("p", { class: "muted" }, "No active alerts."));
    const l = m.latest || {};
    out.push(el("h3", {}, "Latest sample"), table(["", ""], [
      ["heap live", bytes(l.heap_live_bytes)], ["heap objects", bytes(l.heap_objects_bytes)],
      ["heap goal", bytes(l.heap_goal_bytes)], ["memory used", bytes(l.memory_used_bytes)],
      ["memory limit", l.memory_limit_bytes ? bytes(l.memory_limit_bytes) : "none"], ["GOGC", String(l.gogc_percent)],
    ].map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v)))));
    if (m.trend) out.push(el("h3", {}, "Trend"), el("pre", {}, JSON.stringify(m.trend, null, 2)));
    out.push(statsTables("Watcher", { counters: m.stats }));
    return out;
  }

  // --- routing ------------------------------------------------------------
  async function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
    const params = new URLSearchParams(query || "");
    let view;
    try {
      if (parts[0] === "queue" && parts.length === 3) view = await viewJobs(parts[1], parts[2], params);
      else if (parts[0] === "job" && parts.length === 3) view = await viewJob(parts[1], parts[2]);
      else if (parts[0] === "consumers") view = await viewConsumers();
      else if (parts[0] === "components") view = await viewComponents();
      else if (parts[0] === "memory") view = await viewMemory();
      else view = await viewQueues(params);
      showError("");
      main().replaceChildren(...[view].flat(Infinity).filter((n) => n));
    } catch (e) {
      // The view that was shown may be out of date (a job just requeued
      // and processed): it goes, the error says why.
      main().replaceChildren(el("p", { class: "muted" }, "This view could not be loaded."));
      showError(e.message);
    }
  }

  async function start() {
    try {
      session = await api("session");
    } catch (e) {
      showError(e.message);
      return;
    }
    const mode = document.getElementById("mode");
    mode.textContent = session.mutations ? "mutations allowed" : "read-only";
    if (session.mutations) mode.classList.add("rw");
    document.getElementById("nav-memory").hidden = !session.memwatch;
    window.addEventListener("hashchange", () => { showNotice(""); route(); });
    const refresh = document.getElementById("refresh");
    if (refresh) refresh.addEventListener("click", () => route());
    await route();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
