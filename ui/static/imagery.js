/* The keyboard-first grid: one generation, marks shown at once, decisions sent through the outbox.
 *
 * Keys: arrows move the focus; 1-5 score, 0 clears; space picks; Enter evolves; Backspace or u
 * goes back one generation; f forks from the shown generation; v shows full size; l lineage;
 * [ and ] step through history, h returns to the head; e exports picks; - and = change the
 * mutation strength; ? lists the keys. The agent's keys (p predicted scores, m pairwise mode,
 * a autopilot, k its first pass) live in agent.js. Each tab keeps its session, run and branch
 * in sessionStorage, so a reload reopens the same place with every rating shown.
 */
(() => {
  "use strict";
  const S = sessionStorage;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const h = (tag, attrs, ...kids) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (v !== false && v != null) el.setAttribute(k, v === true ? "" : v);
    }
    el.append(...kids.filter((kid) => kid != null));
    return el;
  };
  const obj = (sha) => `/api/object/${sha}`;
  const randomId = () => "s-" + Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
  if (!S.getItem("imagery.session")) S.setItem("imagery.session", randomId());
  const session = S.getItem("imagery.session");

  const ui = { st: null, focus: 0, scores: {}, picks: new Set(), rendering: null, strength: null, perf: [], errors: [], els: {} };

  // fetch, with "the server is gone" said in words (the browser's own is "Failed to fetch").
  async function reach(path, init) {
    try {
      return await fetch(path, init);
    } catch (err) {
      throw new Error("cannot reach the imagery server: is it still running? (start it again, then reload)");
    }
  }

  async function call(method, path, body) {
    const init = { method, headers: { "Content-Type": "application/json" } };
    if (body !== undefined) init.body = JSON.stringify({ session, ...body });
    const response = await reach(path, init);
    const data = await response.json().catch(() => ({ error: `server answered ${response.status}` }));
    if (!response.ok) throw Object.assign(new Error(data.error || `server answered ${response.status}`), { status: response.status });
    return data;
  }
  const query = (params) => new URLSearchParams({ session, ...params }).toString();

  // POST a JSON body to a streaming route and hand each NDJSON event of the reply to onEvent
  // as it arrives; a refused request throws its one-line error, with the HTTP status.
  async function postStream(path, body, what, onEvent) {
    const response = await reach(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw Object.assign(new Error(data.error || `${what} failed (${response.status})`), { status: response.status });
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        onEvent(JSON.parse(buffer.slice(0, nl)));
        buffer = buffer.slice(nl + 1);
      }
    }
  }

  function flash(text, isError) {
    if (isError) ui.errors.push(text);
    const el = ui.els.message;
    if (!el) return;
    el.textContent = text;
    el.className = "im-message" + (isError ? " im-error" : "") + (text ? " im-show" : "");
    clearTimeout(flash.timer);
    if (text) flash.timer = setTimeout(() => el.classList.remove("im-show"), isError ? 8000 : 3500);
  }

  let outbox = null; // built in mount(): outbox.js may load after this file
  let panels = null; // likewise panels.js
  let agent = null; // and agent.js
  // The exploration slider and the gene locks, as evolve and the autopilot both send them.
  const evolveSettings = () => ({ strength: ui.strength, locks: panels.checkedLocks() });

  // --- layout ------------------------------------------------------------------------------
  function mount(element) {
    const root = $("#imagery-root", element) || element;
    outbox = new window.ImageryOutbox(session, {
      change: (n) => { if (ui.els.queue) ui.els.queue.textContent = n ? `${n} unsaved…` : "all saved"; },
      stats: (stats, batch) => {
        showStats(stats);
        agent.later(); // the agreement may have changed
        if (batch.some((item) => item.kind === "pick" || item.kind === "unpick")) {
          clearTimeout(ui.historyTimer);
          ui.historyTimer = setTimeout(panels.loadHistory, 300);
        }
      },
      error: (message, refused, batch) => {
        flash(message, refused);
        if (refused && batch && ui.st && batch[0].snapshot === ui.st.snapshot.id) refresh();
      },
    });
    agent = window.ImageryAgent({ ui, h, obj, call, postStream, query, flash, outbox, show, progress, renderGrid, refresh, session, evolveSettings });
    panels = window.ImageryPanels({ ui, h, obj, call, reach, query, flash, open, evolve, undo, fork, outbox, agent });
    root.replaceChildren();
    const els = ui.els;
    els.root = root;
    els.top = h("div", { class: "im-top" });
    els.progress = h("div", { class: "im-progress" }, h("div", { class: "im-bar" }), h("span", { class: "im-ptext" }));
    els.grid = h("div", { class: "im-grid", tabindex: "0", "aria-label": "candidates" });
    els.pair = agent.buildPair();
    els.controls = h("div", { class: "im-controls" });
    els.history = h("div", { class: "im-history" });
    els.lineage = h("div", { class: "im-lineage" });
    els.message = h("div", { class: "im-message", role: "status" });
    els.overlay = h("div", { class: "im-overlay", onclick: () => panels.closeOverlay() });
    root.append(els.top, els.progress, els.grid, els.pair, els.controls, els.history, els.lineage, els.message, els.overlay);
    if (!ui.listening) {
      ui.listening = true;
      window.addEventListener("keydown", onKey);
      // Re-fit the grid whenever its room changes (window resize, the runs column shown).
      new ResizeObserver(() => requestAnimationFrame(layoutGrid)).observe(root);
    }
    const run = S.getItem("imagery.run");
    if (run) open(run, S.getItem("imagery.branch") || "main");
    else showEmpty();
    if (outbox.sendable()) outbox.pump();
  }

  async function showEmpty() {
    document.body.classList.remove("im-open");
    ui.st = null;
    ui.latest = null;
    ui.els.top.replaceChildren(h("span", { class: "im-title" }, "No run open"));
    const empty = h("div", { class: "im-empty" },
      h("p", {}, "Press ", h("kbd", {}, "Enter"), " to start a new CPPN run (16 images, 256 px),"),
      h("p", {}, "or create or open one on the left."));
    ui.els.grid.replaceChildren(empty);
    ui.els.controls.replaceChildren();
    ui.els.history.replaceChildren();
    ui.els.grid.focus({ preventScroll: true });
    try {
      const runs = await call("GET", "/api/runs");
      if (!runs.length || ui.st) return;
      ui.latest = runs[runs.length - 1];
      empty.append(h("p", {}, "Press ", h("kbd", {}, "o"), ` to open the latest run, ${ui.latest.name}.`));
    } catch (err) { flash(err.message, true); }
  }

  async function open(run, branch, generation) {
    if (ui.rendering) return flash("a generation is rendering: wait for it to finish", true);
    try {
      const params = { run, branch };
      if (generation != null) params.generation = generation;
      const st = await call("GET", `/api/state?${query(params)}`);
      show(st);
      ui.els.grid.focus({ preventScroll: true });
      resolveAfterReload(st);
    } catch (err) {
      if (err.status === 400 && generation == null) { S.removeItem("imagery.run"); showEmpty(); }
      flash(err.message, true);
    }
  }

  /* Decisions made while a render was running survive a reload: once that render has
   * committed (the head's parent is where it started), they belong to the head. */
  async function resolveAfterReload(st) {
    for (let tries = 0; tries < 120 && outbox.unresolved().length; tries++) {
      const parents = new Set(outbox.unresolved().map((item) => item.parent));
      if (st.is_head && parents.has(st.snapshot.parent_id)) {
        outbox.resolve(st.snapshot.parent_id, st.snapshot.id);
        return refresh();
      }
      if (!st.is_head || !parents.has(st.head.id)) {
        parents.forEach((p) => outbox.dropUnresolved(p));
        return flash("ratings given during an unfinished render were dropped", true);
      }
      await new Promise((r) => setTimeout(r, 500));
      try {
        st = await call("GET", `/api/state?${query({ run: st.run.id, branch: st.branch })}`);
      } catch (err) {
        return flash(err.message, true);
      }
    }
  }

  function refresh() {
    if (ui.st) return open(ui.st.run.id, ui.st.branch, ui.st.is_head ? null : ui.st.snapshot.generation);
  }

  // --- one generation ----------------------------------------------------------------------
  function show(st) {
    const sameSnapshot = ui.st && ui.st.snapshot.id === st.snapshot.id;
    ui.st = st;
    S.setItem("imagery.run", st.run.id);
    S.setItem("imagery.branch", st.branch);
    document.body.classList.add("im-open");
    ui.scores = {};
    for (const [k, v] of Object.entries(st.marks.scores)) ui.scores[k] = v;
    ui.picks = new Set(st.marks.picks);
    for (const item of outbox.unsent(st.snapshot.id)) applyMark(item);
    if (!sameSnapshot) ui.focus = Math.min(ui.focus, st.snapshot.thumbs.length - 1);
    if (ui.strength == null || !sameSnapshot) ui.strength = st.settings.mutation_strength;
    renderTop();
    renderGrid(st.snapshot.thumbs.length, st.snapshot.thumbs);
    panels.renderControls();
    showStats(st.stats);
    panels.loadHistory();
    agent.onShow(st, sameSnapshot);
  }

  function applyMark(item) {
    const key = String(item.position);
    if (item.kind === "score") ui.scores[key] = item.value;
    else if (item.kind === "clear") delete ui.scores[key];
    else if (item.kind === "pick") ui.picks.add(item.position);
    else if (item.kind === "unpick") ui.picks.delete(item.position);
  }

  function renderTop() {
    const st = ui.st;
    const branches = h("select", { class: "im-branch", title: "switch branch", onchange: (e) => open(st.run.id, e.target.value) },
      ...st.branches.map((b) => h("option", { value: b, selected: b === st.branch }, b)));
    const where = st.is_head
      ? h("span", { class: "im-gen" }, `generation ${st.snapshot.generation}`)
      : h("span", { class: "im-gen im-old" }, `generation ${st.snapshot.generation} of ${st.head.generation} — h: back to head, f: fork here`);
    ui.els.stats = h("span", { class: "im-stats" });
    ui.els.queue = h("span", { class: "im-queue" }, outbox.items.length ? `${outbox.items.length} unsaved…` : "all saved");
    ui.els.top.replaceChildren(
      h("button", { class: "im-runs", title: "runs", onclick: () => document.body.classList.toggle("im-open") }, "☰"),
      h("span", { class: "im-title" }, st.run.name), branches, where, ...agent.headerParts(),
      h("span", { class: "im-spacer" }), ui.els.stats, ui.els.queue,
      h("button", { class: "im-runs", tabindex: "-1", title: "keys (?)", onclick: panels.help }, "?"));
  }

  function showStats(stats) {
    if (!stats || !ui.els.stats) return;
    const rate = stats.ratings_per_minute == null ? "–" : stats.ratings_per_minute;
    const median = stats.median_seconds == null ? "–" : `${stats.median_seconds} s`;
    ui.els.stats.textContent = `${stats.decisions} decisions · ${rate} ratings/min · median ${median} per decision`;
  }

  function gridShape(n) {
    const rect = ui.els.grid.getBoundingClientRect();
    const width = Math.max(200, rect.width || ui.els.root.clientWidth || 800);
    const height = Math.max(160, window.innerHeight - Math.max(0, rect.top) - 200);
    let best = { cols: 1, cell: 0 };
    for (let cols = 1; cols <= n; cols++) {
      const rows = Math.ceil(n / cols);
      const cell = Math.floor(Math.min((width - 8 * (cols - 1)) / cols, (height - 8 * (rows - 1)) / rows));
      if (cell > best.cell) best = { cols, cell };
    }
    return best;
  }

  function layoutGrid() {
    const cells = ui.els.grid.querySelectorAll(".im-cell");
    if (!cells.length) return;
    const { cols, cell } = gridShape(cells.length);
    ui.els.grid.style.gridTemplateColumns = `repeat(${cols}, ${Math.max(64, cell)}px)`;
    ui.cols = cols;
  }

  function renderGrid(n, thumbs) {
    const grid = ui.els.grid;
    let cells = Array.from(grid.querySelectorAll(".im-cell"));
    if (cells.length !== n) {
      cells = Array.from({ length: n }, (_, i) => makeCell(i));
      grid.replaceChildren(...cells);
      layoutGrid();
    }
    cells.forEach((cell, i) => {
      const sha = thumbs && thumbs[i];
      if (sha && cell.dataset.sha !== sha) setImage(cell, sha, obj(sha));
      if (!sha) {
        cell.querySelector("img").removeAttribute("src");
        cell.dataset.sha = "";
        cell.classList.add("im-wait");
      }
      paint(i);
      agent.paintCell(cell, i);
    });
  }

  function makeCell(i) {
    const rate = h("div", { class: "im-rate" },
      ...[1, 2, 3, 4, 5].map((s) => h("button", { tabindex: "-1", title: `score ${s}`, onclick: (e) => { e.stopPropagation(); setFocus(i); score(s); } }, String(s))),
      h("button", { tabindex: "-1", title: "pick (space)", class: "im-pickbtn", onclick: (e) => { e.stopPropagation(); setFocus(i); togglePick(); } }, "★"));
    return h("div", { class: "im-cell im-wait", "data-pos": i, onclick: () => setFocus(i), ondblclick: () => { setFocus(i); panels.fullSize(); } },
      h("img", { alt: `candidate ${i + 1}`, decoding: "async", draggable: "false" }),
      h("span", { class: "im-score" }), h("span", { class: "im-pick" }, "★"), h("span", { class: "im-pred" }), rate);
  }

  function setImage(cell, sha, src) {
    const img = cell.querySelector("img");
    cell.dataset.sha = sha;
    img.onload = () => img.decode().catch(() => {}).then(() => requestAnimationFrame((t) => {
      cell.classList.remove("im-wait");
      seen(t);
    }));
    img.src = src;
  }

  /* Bench hook: when every cell shows an image of the latest render, note the time since Enter. */
  function seen(t) {
    const r = ui.rendering || ui.lastRender;
    if (!r || r.visible != null) return;
    const cells = Array.from(ui.els.grid.querySelectorAll(".im-cell"));
    if (cells.every((c) => c.dataset.render === String(r.start) && !c.classList.contains("im-wait"))) {
      r.visible = t;
      ui.perf.push({ kind: "evolve", start: r.start, visible: t, n: cells.length, trace: r.trace });
    }
  }

  function paint(i) {
    const cell = ui.els.grid.children[i];
    if (!cell) return;
    const s = ui.scores[String(i)];
    cell.querySelector(".im-score").textContent = s == null ? "" : String(Math.round(s * 10) / 10);
    cell.dataset.score = s == null ? "" : String(Math.round(s));
    cell.classList.toggle("im-picked", ui.picks.has(i));
    cell.classList.toggle("im-focus", i === ui.focus);
  }

  function setFocus(i) {
    const n = ui.els.grid.children.length;
    if (!n || !ui.st) return;
    const old = ui.focus;
    ui.focus = Math.max(0, Math.min(n - 1, i));
    paint(old);
    paint(ui.focus);
    ui.els.grid.children[ui.focus].scrollIntoView({ block: "nearest" });
    if (ui.els.lineage.childElementCount) panels.lineage();
  }

  // --- decisions ---------------------------------------------------------------------------
  function decide(kind, value) {
    if (!ui.st) return;
    if (ui.rendering && ui.rendering.autopilot) return flash("the autopilot is evolving: it hands back when it is done");
    const item = { position: ui.focus, kind, value: value ?? null, t: Date.now() };
    if (ui.rendering && ui.rendering.started) {
      if (ui.rendering.failed) return;
      item.snapshot = null;
      item.parent = ui.rendering.parent;
    } else item.snapshot = ui.st.snapshot.id;
    applyMark(item);
    paint(ui.focus);
    outbox.push(item);
  }
  const score = (s) => decide(s == null ? "clear" : "score", s);
  const togglePick = () => decide(ui.picks.has(ui.focus) ? "unpick" : "pick");

  // --- evolve, undo, fork ------------------------------------------------------------------
  async function evolve(start) {
    const st = ui.st;
    if (!st) return;
    if (ui.rendering && ui.rendering.autopilot) return flash("the autopilot is evolving: it hands back when it is done");
    if (ui.rendering) {
      // Every image is in and the commit is a moment away: run this Enter right after it.
      if (ui.rendering.images >= st.snapshot.thumbs.length) ui.queuedEvolve = start;
      else flash("still rendering: Enter again once the images are in");
      return;
    }
    if (!st.is_head) return flash(`you are viewing generation ${st.snapshot.generation}: press f to fork from it, or h to go back to the head`, true);
    const render = { start, parent: st.snapshot.id, images: 0, visible: null };
    ui.rendering = render;
    clearTimeout(ui.historyTimer); // "done" reloads the history; nothing may compete with the render
    agent.cancel();
    progress(0, st.snapshot.thumbs.length, "saving ratings…");
    await outbox.idle();
    const body = { session, run: st.run.id, branch: st.branch, parent: st.snapshot.id, ...evolveSettings(), agent: ui.agentK };
    try {
      await postStream("/api/evolve", body, "evolve", (ev) => onEvolveEvent(ev, render));
      if (!render.done) throw new Error("the connection closed before the generation was stored; reloading");
    } catch (err) {
      render.failed = true;
      ui.queuedEvolve = null;
      const dropped = outbox.dropUnresolved(render.parent);
      flash(err.message + (dropped ? ` (${dropped} rating(s) on the unfinished generation dropped)` : ""), true);
      ui.rendering = null;
      progress(null);
      refresh();
    }
  }

  function onEvolveEvent(ev, render) {
    (render.trace = render.trace || []).push([ev.type, Math.round(performance.now() - render.start)]);
    if (ev.type === "start") {
      render.started = true;
      ui.scores = {};
      ui.picks = new Set();
      ui.els.lineage.replaceChildren();
      renderGrid(ev.n, null);
      progress(0, ev.n, `rendering generation ${ev.generation}`);
    } else if (ev.type === "progress") {
      progress(ev.done, ev.total, null);
    } else if (ev.type === "image") {
      render.images += 1;
      const cell = ui.els.grid.children[ev.position];
      if (cell) {
        cell.dataset.render = String(render.start);
        // A preview until "done" names the stored thumbnail; renderGrid then swaps it in.
        if (ev.thumb) setImage(cell, ev.thumb, obj(ev.thumb));
        else setImage(cell, "", ev.preview);
      }
    } else if (ev.type === "done") {
      render.done = true;
      ui.rendering = null;
      ui.lastRender = render;
      outbox.resolve(render.parent, ev.state.snapshot.id);
      progress(null);
      show(ev.state);
      requestAnimationFrame(seen);
      if (ui.queuedEvolve != null) {
        const queued = ui.queuedEvolve;
        ui.queuedEvolve = null;
        setTimeout(() => evolve(queued));
      }
    } else if (ev.type === "error") {
      throw new Error(ev.message);
    }
  }

  function progress(done, total, label) {
    const el = ui.els.progress;
    if (done == null) return el.classList.remove("im-active");
    el.classList.add("im-active");
    el.querySelector(".im-bar").style.width = `${total ? (100 * done) / total : 0}%`;
    if (label) el.dataset.label = label;
    el.querySelector(".im-ptext").textContent = `${el.dataset.label || ""} ${done}/${total}`;
  }

  async function undo() {
    const st = ui.st;
    if (!st || ui.rendering) return;
    try {
      await outbox.idle();
      show(await call("POST", "/api/undo", { run: st.run.id, branch: st.branch }));
      flash(`back to generation ${ui.st.snapshot.generation} (nothing was deleted)`);
    } catch (err) { flash(err.message, true); }
  }

  async function fork() {
    const st = ui.st;
    if (!st || ui.rendering) return;
    try {
      const next = await call("POST", "/api/fork", { run: st.run.id, branch: st.branch, generation: st.snapshot.generation });
      show(next);
      flash(`forked: now on branch ${next.branch}, from generation ${st.snapshot.generation}`);
    } catch (err) { flash(err.message, true); }
  }

  async function createDefault() {
    flash("rendering generation 0 of a new CPPN run…");
    try {
      const made = await call("POST", "/api/runs", { generator: "cppn" });
      await open(made.run, made.branch);
      flash(`created run ${made.name}`);
    } catch (err) { flash(err.message, true); }
  }

  // --- keys --------------------------------------------------------------------------------
  function onKey(e) {
    const t = e.target;
    const inOurs = ui.els.root && ui.els.root.contains(t);
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t && t !== document.body && !(inOurs && !/^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName))) return;
    const st = ui.st;
    const k = e.key;
    let handled = true;
    if (k === "?") panels.help();
    else if (!st) {
      if (k === "Enter") createDefault();
      else if (k === "o" && ui.latest) open(ui.latest.id, ui.latest.branches[0] || "main");
      else return;
    } else if (agent.pairKey(k)) { /* pairwise mode took it */ }
    else if (k === "ArrowLeft") setFocus(ui.focus - 1);
    else if (k === "ArrowRight") setFocus(ui.focus + 1);
    else if (k === "ArrowUp") setFocus(ui.focus - (ui.cols || 1));
    else if (k === "ArrowDown") setFocus(ui.focus + (ui.cols || 1));
    else if (k >= "1" && k <= "5" && k.length === 1) score(Number(k));
    else if (k === "0") score(null);
    else if (k === " ") togglePick();
    else if (k === "Enter") evolve(e.timeStamp);
    else if (k === "Backspace" || k === "u") undo();
    else if (k === "f") fork();
    else if (k === "v") panels.fullSize();
    else if (k === "l") panels.lineage();
    else if (k === "e") panels.exportPicks();
    else if (k === "p") agent.togglePredict();
    else if (k === "m") agent.togglePairs();
    else if (k === "a") agent.autopilot();
    else if (k === "k") agent.cycleK();
    else if (k === "Escape") { panels.closeOverlay(); ui.els.lineage.replaceChildren(); }
    else if (k === "h" && !st.is_head) open(st.run.id, st.branch);
    else if (k === "[" && st.snapshot.generation > 0) open(st.run.id, st.branch, st.snapshot.generation - 1);
    else if (k === "]" && !st.is_head) open(st.run.id, st.branch, st.snapshot.generation + 1);
    else if (k === "-" || k === "=") {
      ui.strength = Math.max(0, Math.min(1, Math.round((ui.strength + (k === "=" ? 0.05 : -0.05)) * 100) / 100));
      panels.renderControls();
    } else handled = false;
    if (handled) e.preventDefault();
  }

  window.Imagery = {
    mount,
    open: (run, branch) => { if (panels) panels.closeOverlay(); open(run, branch || "main"); },
    debug: () => ({ session, st: ui.st, focus: ui.focus, cols: ui.cols, errors: [...ui.errors], scores: { ...ui.scores }, picks: [...ui.picks], unsaved: outbox.items.length, rendering: Boolean(ui.rendering), strength: ui.strength, perf: ui.perf, agent: agent.debug() }),
  };
})();
