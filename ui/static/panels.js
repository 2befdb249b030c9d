/* The panels around the grid: controls, history strip, lineage, full size, keys, export.
 *
 * Built by imagery.js with the pieces of state and the helpers they share (see mount()).
 */
(() => {
  "use strict";

  window.ImageryPanels = ({ ui, h, obj, call, reach, query, flash, open, evolve, undo, fork, outbox, agent }) => {
    function renderControls() {
      const st = ui.st;
      const value = h("span", { class: "im-strength-value" }, ui.strength.toFixed(2));
      const slider = h("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(ui.strength), class: "im-strength", "aria-label": "mutation strength",
        oninput: (e) => { ui.strength = Number(e.target.value); value.textContent = ui.strength.toFixed(2); },
        onchange: () => ui.els.grid.focus({ preventScroll: true }) });
      const locks = st.lockable.map((name) => h("label", { class: "im-lock" },
        h("input", { type: "checkbox", value: name, checked: st.settings.locks.includes(name), onchange: () => ui.els.grid.focus({ preventScroll: true }) }), ` ${name}`));
      const button = (label, key, fn) => h("button", { class: "im-btn", tabindex: "-1", onclick: () => { fn(); ui.els.grid.focus({ preventScroll: true }); } }, label, h("kbd", {}, key));
      ui.els.controls.replaceChildren(
        h("label", { class: "im-slider", title: "mutation strength: how far children stray from their parents" }, "mutation ", slider, value),
        h("span", { class: "im-locks" }, locks.length ? "lock " : "", ...locks),
        ...agent.controls(() => ui.els.grid.focus({ preventScroll: true })),
        h("span", { class: "im-spacer" }),
        button("evolve", "⏎", () => evolve(performance.now())), button("back", "u", undo), button("fork", "f", fork),
        button("full size", "v", fullSize), button("lineage", "l", lineage), button("export", "e", exportPicks));
    }
    const checkedLocks = () => Array.from(ui.els.controls.querySelectorAll(".im-lock input:checked"), (el) => el.value);

    async function loadHistory() {
      const st = ui.st;
      if (!st) return;
      try {
        const gens = await call("GET", `/api/history?${query({ run: st.run.id, branch: st.branch })}`);
        if (ui.st !== st) return;
        ui.els.history.replaceChildren(...gens.map((g) => h("button", {
          class: "im-gen-tile" + (g.generation === st.snapshot.generation ? " im-current" : ""), tabindex: "-1", "data-gen": g.generation,
          title: `generation ${g.generation}: ${g.ratings} rating(s)`, onclick: () => open(st.run.id, st.branch, g.generation),
        }, h("span", {}, `g${g.generation}`), ...g.picks.slice(0, 4).map((sha) => h("img", { src: obj(sha), alt: "" })))));
        const current = ui.els.history.querySelector(".im-current");
        if (current) current.scrollIntoView({ block: "nearest", inline: "nearest" });
      } catch (err) { flash(err.message, true); }
    }

    async function lineage() {
      const st = ui.st;
      if (!st || ui.rendering) return;
      try {
        const data = await call("GET", `/api/lineage?${query({ snapshot: st.snapshot.id, position: ui.focus })}`);
        const thumb = (a) => (a.thumb ? h("img", { src: obj(a.thumb), title: `generation ${a.generation}` }) : h("span", { class: "im-noimg" }, a.id.slice(0, 8)));
        // At most four ancestors a generation keep the strip to one line; the title counts the rest.
        const levels = data.levels.flatMap((level, i) => [
          h("span", { class: "im-arrow", title: `${level.length} ancestor(s) ${i + 1} generation(s) back` }, `← ${i + 1}`),
          ...level.slice(0, 4).map(thumb),
          level.length > 4 ? h("span", {}, `+${level.length - 4}`) : null,
        ]).filter(Boolean);
        ui.els.lineage.replaceChildren(h("span", {}, `lineage of #${ui.focus + 1}`), h("img", { src: obj(data.thumb) }),
          ...(levels.length ? levels : [h("span", {}, "no ancestors: a first-generation or newcomer genome")]),
          h("button", { class: "im-btn", tabindex: "-1", title: "close (Esc)", onclick: () => ui.els.lineage.replaceChildren() }, "×"));
      } catch (err) { flash(err.message, true); }
    }

    function fullSize() {
      const st = ui.st;
      if (!st || ui.rendering) return;
      if (ui.els.overlay.classList.contains("im-show")) return closeOverlay();
      const sha = st.snapshot.images[ui.focus];
      const name = `${st.run.name}-${st.branch}-g${st.snapshot.generation}-${ui.focus}.png`;
      ui.els.overlay.replaceChildren(h("img", { src: obj(sha), alt: "full size" }),
        h("a", { href: `${obj(sha)}?download=${encodeURIComponent(name)}`, onclick: (e) => e.stopPropagation() }, "download PNG"));
      ui.els.overlay.classList.add("im-show");
    }

    function help() {
      const keys = [["← ↑ → ↓", "move"], ["1–5", "score"], ["0", "clear score"], ["space", "pick"], ["Enter", "evolve"], ["Backspace / u", "back one generation"],
        ["f", "fork from the shown generation"], ["[ ]", "older / newer generation"], ["h", "back to the head"], ["v", "full size"], ["l", "lineage"],
        ["- =", "mutation strength"], ["e", "export picks"], ["p", "agent's predicted scores"], ["m", "pairwise mode: ← → better one, ↓ both bad"],
        ["a", "autopilot: the agent evolves N generations"], ["k", "agent first pass: off / k=2 / 4 / 8"], ["Esc", "close"]];
      ui.els.overlay.replaceChildren(h("div", { class: "im-help" }, ...keys.map(([k, what]) => h("div", {}, h("kbd", {}, k), ` ${what}`))));
      ui.els.overlay.classList.add("im-show");
    }
    const closeOverlay = () => ui.els.overlay.classList.remove("im-show");

    async function exportPicks() {
      const st = ui.st;
      if (!st) return;
      try {
        await outbox.idle();
        const response = await reach(`/api/export?${query({ run: st.run.id, branch: st.branch })}`);
        if (!response.ok) return flash((await response.json().catch(() => ({}))).error || "export failed", true);
        const url = URL.createObjectURL(await response.blob());
        h("a", { href: url, download: `${st.run.name}-${st.branch}-picks.zip` }).click();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (err) {
        flash(`export failed: ${err.message}`, true);
      }
    }

    return { renderControls, checkedLocks, loadHistory, lineage, fullSize, help, closeOverlay, exportPicks };
  };
})();
