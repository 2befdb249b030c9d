/* The agent in the grid: predicted scores (p), the agreement figure, pairwise mode (m), autopilot (a).
 *
 * Built by imagery.js with the state and helpers it shares (see mount()). Each tab keeps its
 * choices (the agent's k, badges on or off, pairwise mode, the autopilot's N) in sessionStorage.
 * Pairwise decisions go through the same outbox as scores, so none is lost; the next pair is
 * already known when a key is pressed (the server sends the agent's next dozen suggestions and
 * is asked again, in the background, after every decision).
 */
(() => {
  "use strict";
  const S = sessionStorage;
  const K_CHOICES = [0, 2, 4, 8];

  window.ImageryAgent = ({ ui, h, obj, call, postStream, query, flash, outbox, show, progress, renderGrid, refresh, session, evolveSettings }) => {
    const stored = S.getItem("imagery.agentK");
    ui.agentK = stored == null ? 4 : Number(stored);
    ui.predict = S.getItem("imagery.predict") === "1";
    ui.pairMode = S.getItem("imagery.pairMode") === "1";
    ui.autopilotN = S.getItem("imagery.autopilotN") || "5";
    let info = null; // the agent's view of the shown snapshot (/api/agent)
    let pair = null; // {snapshot, current: [a, b] | null, queue, decided, judged, seq, last}
    let infoTimer = null;
    const els = {};

    // --- header: what the agent chose, and the agreement ---------------------------------
    function headerParts() {
      els.chose = h("span", { class: "im-agentline" });
      els.agree = h("span", { class: "im-agree", title: "agreement: how often your picks (or pair winners, or top scores) were in the agent's top half of what it showed; 50% is chance" });
      paintHeader();
      return [els.chose, els.agree];
    }

    function paintHeader() {
      const st = ui.st;
      if (!st || !els.chose) return;
      const sc = st.agent;
      els.chose.textContent = !sc
        ? (st.snapshot.generation === 0 ? "" : "· not screened by the agent")
        : sc.chosen ? `· agent chose ${sc.chosen} of ${sc.bred} (k=${sc.k})` : `· agent on, no screening (k=${sc.k})`;
      els.chose.title = sc ? `the engine bred ${sc.k} children per place; the agent showed the ones it predicts you like best, ${Math.round(100 * sc.explore)}% of places for the ones it is least sure about, never near-duplicates. It had learned from ${sc.comparisons} comparisons.` : "";
      const a = info && info.snapshot === st.snapshot.id ? info.agreement : undefined;
      els.agree.textContent = `agreement ${a == null ? "—" : `${Math.round(100 * a)}%`}`;
    }

    // --- predicted scores --------------------------------------------------------------
    async function loadInfo() {
      const st = ui.st;
      if (!st || ui.rendering) return;
      clearTimeout(infoTimer);
      try {
        const params = { run: st.run.id, branch: st.branch, snapshot: st.snapshot.id };
        const data = await call("GET", `/api/agent?${query(params)}`);
        if (ui.st !== st) return;
        info = data;
        paintHeader();
        paintAll();
      } catch (err) { flash(err.message, true); }
    }
    const later = () => { clearTimeout(infoTimer); infoTimer = setTimeout(loadInfo, 600); };
    /* A render starts: the shown predictions belong to the generation going away. */
    const cancel = () => {
      clearTimeout(infoTimer);
      info = null;
    };

    function badge(el, i) {
      if (!el) return;
      const current = info && ui.st && info.snapshot === ui.st.snapshot.id;
      if (!current) { el.replaceChildren(); el.title = ""; return; }
      const score = info.predicted[i];
      const band = info.bands && info.bands[i];
      const role = info.screening ? info.screening.roles[i] : null;
      el.dataset.role = role || "";
      if (!info.comparisons) {
        el.replaceChildren(h("b", {}, "?"));
        el.title = "the agent has nothing to go on yet: rate or compare a few";
        return;
      }
      if (!band) {
        el.replaceChildren(h("b", {}, `≈${score.toFixed(1)}`));
        el.title = `agent predicts ${score.toFixed(1)} from ${info.comparisons} comparisons (how sure it is cannot be put on the 0–5 scale here)`;
        return;
      }
      const bar = h("i", { class: "im-band" }, h("i", { style: `left:${band[0] * 20}%;width:${Math.max(2, (band[1] - band[0]) * 20)}%` }));
      el.replaceChildren(h("b", {}, `≈${score.toFixed(1)}`), ` ±${((band[1] - band[0]) / 2).toFixed(1)}`, bar);
      const why = { elite: "a parent kept from the last generation", chosen: "chosen by the agent", newcomer: "a random newcomer", child: "a child" }[role] || "";
      el.title = `agent predicts ${score.toFixed(1)} (likely ${band[0].toFixed(1)}–${band[1].toFixed(1)}), from ${info.comparisons} comparisons${why ? `; ${why}` : ""}`;
    }
    const paintCell = (cell, i) => badge(cell.querySelector(".im-pred"), i);

    function paintAll() {
      Array.from(ui.els.grid.children).forEach((cell, i) => paintCell(cell, i));
      if (pair && pair.current) pair.current.forEach((p, side) => badge(els.sides && els.sides[side].querySelector(".im-pred"), p));
    }

    function togglePredict() {
      ui.predict = !ui.predict;
      S.setItem("imagery.predict", ui.predict ? "1" : "0");
      ui.els.root.classList.toggle("im-predict", ui.predict);
      if (ui.predict && !info) loadInfo();
      flash(ui.predict ? "predicted scores shown (p hides them)" : "predicted scores hidden");
    }

    // --- pairwise mode -----------------------------------------------------------------
    function buildPair() {
      const side = (name, key, label) => h("figure", { class: "im-side", "data-side": name, onclick: () => decide(name) },
        h("img", { alt: `${name} candidate`, draggable: "false" }), h("span", { class: "im-pred" }),
        h("figcaption", {}, h("kbd", {}, key), ` ${label}`));
      els.sides = [side("left", "←", "this one"), side("right", "→", "this one")];
      els.foot = h("div", { class: "im-pairfoot" });
      return h("div", { class: "im-pairview" }, h("div", { class: "im-pair" }, ...els.sides), els.foot);
    }

    function togglePairs() {
      ui.pairMode = !ui.pairMode;
      S.setItem("imagery.pairMode", ui.pairMode ? "1" : "0");
      ui.els.root.classList.toggle("im-pairing", ui.pairMode);
      if (ui.pairMode) { pair = null; loadPairs(); } else ui.els.grid.focus({ preventScroll: true });
      flash(ui.pairMode ? "pairwise: ← or → picks the better one, ↓ both bad; m: back to scoring" : "scoring mode");
    }

    async function loadPairs() {
      const st = ui.st;
      if (!st || !ui.pairMode) return;
      if (!pair || pair.snapshot !== st.snapshot.id) pair = { snapshot: st.snapshot.id, current: null, queue: [], decided: [], judged: 0, seq: 0, last: "" };
      const p = pair;
      const seq = ++p.seq;
      try {
        const data = await call("POST", "/api/pairs", { run: st.run.id, branch: st.branch, snapshot: p.snapshot, pending: p.decided, showing: p.current, count: 12 });
        if (pair !== p || seq !== p.seq) return; // a newer request answers for a newer state
        if (!p.current) p.current = data.pairs.shift() || null;
        p.queue = data.pairs;
        p.judged = data.judged;
        renderPair();
      } catch (err) { flash(err.message, true); }
    }

    function renderPair() {
      const st = ui.st;
      if (!pair || !st || !els.sides) return;
      const cur = pair.current;
      els.sides.forEach((el, side) => {
        const img = el.querySelector("img");
        const pos = cur ? cur[side] : null;
        el.dataset.pos = pos == null ? "" : String(pos);
        if (pos == null) img.removeAttribute("src");
        else img.src = obj(st.snapshot.thumbs[pos]);
        el.querySelector("figcaption").lastChild.textContent = pos == null ? " …" : ` #${pos + 1} is better`;
        badge(el.querySelector(".im-pred"), pos);
      });
      els.foot.replaceChildren(h("button", { class: "im-btn", tabindex: "-1", onclick: () => decide("down") }, "both bad", h("kbd", {}, "↓")),
        h("span", { class: "im-judged" }, `${pair.judged} pair(s) judged in generation ${st.snapshot.generation}`),
        h("span", { class: "im-last" }, pair.last), h("span", { class: "im-spacer" }),
        h("span", {}, h("kbd", {}, "m"), " back to scoring · ", h("kbd", {}, "⏎"), " evolve"));
    }

    function decide(dir) {
      const st = ui.st;
      if (!pair || !pair.current || !st || ui.rendering) return flash("the next pair is on its way");
      const [a, b] = pair.current;
      const item = dir === "down"
        ? { position: a, other: b, value: 0 }
        : dir === "left" ? { position: a, other: b, value: 1 } : { position: b, other: a, value: 1 };
      outbox.push({ ...item, kind: "pair", snapshot: st.snapshot.id, t: Date.now() });
      pair.decided.push([a, b]);
      pair.judged += 1;
      pair.last = dir === "down" ? `last: #${a + 1} and #${b + 1} both bad` : `last: #${item.position + 1} beat #${item.other + 1}`;
      pair.current = pair.queue.shift() || null;
      renderPair();
      loadPairs();
    }

    /* The keys of pairwise mode while the pair is on screen; true when the key was one. */
    function pairKey(k) {
      if (!ui.pairMode || ui.rendering || !ui.st) return false;
      if (k === "ArrowLeft") decide("left");
      else if (k === "ArrowRight") decide("right");
      else if (k === "ArrowDown") decide("down");
      else if (k === "ArrowUp") { /* nothing: ↑ would be a tie, not offered */ }
      else if (/^[0-5 vl]$/.test(k)) flash("pairwise mode: ← or → picks, ↓ both bad; m returns to scoring");
      else return false;
      return true;
    }

    // --- autopilot ---------------------------------------------------------------------
    async function autopilot() {
      const st = ui.st;
      if (!st) return;
      if (ui.rendering) return flash("still rendering: the autopilot can start once the generation is in");
      if (!st.is_head) return flash(`you are viewing generation ${st.snapshot.generation}: the autopilot evolves from the head (h)`, true);
      const input = ui.els.controls.querySelector(".im-autopilot-n");
      const raw = (input ? input.value : ui.autopilotN).trim();
      ui.autopilotN = raw;
      S.setItem("imagery.autopilotN", raw);
      const n = /^\d+$/.test(raw) ? Number(raw) : raw;
      const render = { autopilot: true, parent: st.snapshot.id, images: 0, visible: null };
      ui.rendering = render;
      cancel();
      progress(0, Number(n) || 0, "autopilot: saving ratings…");
      await outbox.idle();
      try {
        const body = { session, run: st.run.id, branch: st.branch, parent: st.snapshot.id, generations: n, ...evolveSettings(), agent: ui.agentK };
        await postStream("/api/autopilot", body, "autopilot", (ev) => onEvent(ev, render));
        if (!render.done) throw new Error("the connection closed before the autopilot handed back; reloading");
      } catch (err) {
        ui.rendering = null;
        progress(null);
        flash(err.message, true);
        refresh();
      }
    }

    function onEvent(ev, render) {
      if (ev.type === "start") {
        render.total = ev.generations;
        progress(0, ev.generations, `autopilot from generation ${ev.generation}`);
      } else if (ev.type === "generation") {
        info = null;
        ui.scores = {};
        ui.picks = new Set();
        renderGrid(ev.thumbs.length, ev.thumbs);
        progress(ev.done, ev.total, `autopilot: made generation ${ev.generation}`);
      } else if (ev.type === "done") {
        render.done = true;
        ui.rendering = null;
        progress(null);
        show(ev.state);
        flash(`the autopilot made ${render.total} generation(s): your turn (generation ${ev.state.snapshot.generation})`);
      } else if (ev.type === "error") {
        throw new Error(ev.message);
      }
    }

    // --- controls and life cycle -------------------------------------------------------
    function controls(focusGrid) {
      const choices = K_CHOICES.includes(ui.agentK) ? K_CHOICES : [...K_CHOICES, ui.agentK].sort((x, y) => x - y);
      const select = h("select", { class: "im-agent-k", "aria-label": "agent first pass", title: "agent first pass (k): breed k children per place and let the agent choose which you see",
        onchange: (e) => { setK(Number(e.target.value)); focusGrid(); } },
        ...choices.map((k) => h("option", { value: String(k), selected: k === ui.agentK }, k ? `k=${k}` : "off")));
      const n = h("input", { class: "im-autopilot-n", type: "text", inputmode: "numeric", size: "3", value: ui.autopilotN, "aria-label": "autopilot generations", title: "how many generations the autopilot makes (1–100)",
        // Kept as typed: the controls are rebuilt when other settings change (the slider).
        oninput: (e) => { ui.autopilotN = e.target.value; S.setItem("imagery.autopilotN", e.target.value); },
        onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); e.stopPropagation(); focusGrid(); autopilot(); } } });
      return [h("label", { class: "im-agentctl" }, "agent first pass ", select),
        h("span", { class: "im-agentctl" }, n, h("button", { class: "im-btn", tabindex: "-1", onclick: () => { autopilot(); focusGrid(); } }, "autopilot", h("kbd", {}, "a")))];
    }

    function setK(k) {
      ui.agentK = k;
      S.setItem("imagery.agentK", String(k));
      const select = ui.els.controls.querySelector(".im-agent-k");
      if (select) select.value = String(k);
    }
    const cycleK = () => {
      setK(K_CHOICES[(K_CHOICES.indexOf(ui.agentK) + 1) % K_CHOICES.length]);
      flash(ui.agentK ? `agent first pass: k=${ui.agentK} (applies from the next Enter)` : "agent first pass off");
    };

    /* A generation is on screen (a new one, or the same one refreshed). */
    function onShow(st, sameSnapshot) {
      ui.els.root.classList.toggle("im-predict", ui.predict);
      ui.els.root.classList.toggle("im-pairing", ui.pairMode);
      if (!sameSnapshot) { info = null; paintAll(); }
      paintHeader();
      loadInfo();
      if (ui.pairMode && (!pair || pair.snapshot !== st.snapshot.id)) { pair = null; loadPairs(); } else renderPair();
    }

    const debug = () => ({ k: ui.agentK, predict: ui.predict, pairMode: ui.pairMode, info, pair: pair && { current: pair.current, judged: pair.judged, last: pair.last } });

    return { headerParts, buildPair, controls, onShow, paintCell, later, cancel, togglePredict, togglePairs, pairKey, autopilot, cycleK, debug };
  };
})();
