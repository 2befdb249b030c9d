/* The rating outbox: every decision is kept in sessionStorage and sent to the server in order.
 *
 * Keys can be pressed far faster than the server answers: each decision is appended here at
 * once (so a reload does not lose it), and one sender posts them in order, one request at a
 * time, coalescing whatever queued up meanwhile for the same snapshot into one all-or-nothing
 * batch. Network failures and server errors (5xx) are retried with backoff; a request the
 * server refuses (4xx) is dropped with its message shown, since sending it again cannot help.
 * Decisions made on a generation that is still rendering wait (snapshot null, parent set)
 * until its commit names the snapshot.
 */
(() => {
  "use strict";
  const KEY = "imagery.outbox";
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  class Outbox {
    constructor(session, hooks) {
      this.session = session;
      this.hooks = hooks; // {change(n), stats(stats), error(message)}
      this.items = this.load();
      this.busy = false;
      this.waiters = [];
    }

    load() {
      try {
        const items = JSON.parse(sessionStorage.getItem(KEY) || "[]");
        return Array.isArray(items) ? items : [];
      } catch (err) {
        return [];
      }
    }

    save() {
      sessionStorage.setItem(KEY, JSON.stringify(this.items));
      this.hooks.change(this.items.length);
    }

    push(event) {
      this.items.push(event);
      this.save();
      this.pump();
    }

    unsent(snapshot) {
      return this.items.filter((item) => item.snapshot === snapshot);
    }

    unresolved() {
      return this.items.filter((item) => !item.snapshot);
    }

    /* The render that started from `parent` committed as `snapshot`. */
    resolve(parent, snapshot) {
      for (const item of this.items) if (!item.snapshot && item.parent === parent) item.snapshot = snapshot;
      this.save();
      this.pump();
    }

    dropUnresolved(parent) {
      const before = this.items.length;
      this.items = this.items.filter((item) => item.snapshot || item.parent !== parent);
      this.save();
      return before - this.items.length;
    }

    sendable() {
      return this.items.length > 0 && Boolean(this.items[0].snapshot);
    }

    /* Resolves once everything that can be sent has been answered. */
    idle() {
      if (!this.sendable() && !this.busy) return Promise.resolve();
      return new Promise((resolve) => this.waiters.push(resolve));
    }

    async pump() {
      if (this.busy) return;
      this.busy = true;
      let backoff = 200;
      try {
        while (this.sendable()) {
          const snapshot = this.items[0].snapshot;
          let count = 0;
          while (count < this.items.length && count < 500 && this.items[count].snapshot === snapshot) count += 1;
          const batch = this.items.slice(0, count);
          const body = JSON.stringify({
            session: this.session,
            snapshot,
            events: batch.map(({ position, kind, value, other }) => (other == null ? { position, kind, value } : { position, kind, value, other })),
          });
          let response;
          try {
            response = await fetch("/api/ratings", {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body,
              keepalive: body.length < 60000,
            });
          } catch (err) {
            this.hooks.error("cannot reach the server: your ratings are kept and will be sent", false);
            await sleep(backoff);
            backoff = Math.min(backoff * 2, 4000);
            continue;
          }
          if (response.status >= 500) {
            await sleep(backoff);
            backoff = Math.min(backoff * 2, 4000);
            continue;
          }
          const data = await response.json().catch(() => ({}));
          this.items.splice(0, count);
          this.save();
          backoff = 200;
          if (response.ok) this.hooks.stats(data.stats, batch);
          else this.hooks.error(data.error || `rating refused (${response.status})`, true, batch);
        }
      } finally {
        this.busy = false;
        if (!this.sendable()) this.waiters.splice(0).forEach((resolve) => resolve());
      }
      if (this.sendable()) this.pump();
    }
  }

  window.ImageryOutbox = Outbox;
})();
