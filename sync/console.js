// The hub's security console: live alerts and gate health, polled every second.
// Alerts: the newest page first, then each poll follows the ones raised since; older alerts are
// fetched a page at a time on request, so a flood never has to be loaded (or shown) whole.
// The console token comes from the page's fragment (#token=...), which browsers never send to
// a server; it is then removed from the address bar and history and kept in this tab's memory
// only. Everything shown is set as text (never as HTML): gate names come from the gates.
"use strict";

(() => {
  const POLL_MS = 1000;
  const PAGE = 100;
  const MAX_SHOWN = 1000;
  const KIND_WORDS = {
    double_admission: "Double admission",
    repeated_denials: "Repeated denied attempts",
    integrity: "Integrity",
    alert_storm: "Alert storm",
  };

  const token = takeToken();
  const alerts = new Map(); // alert_id -> alert
  let alertCursor = null; // newest alert_id seen: follow from here; null until the first page
  let olderCursor = null; // oldest alert_id loaded: "older" pages come from below it
  let moreOlder = false;
  let pagedBack = false; // the user asked for older pages: keep them, whatever the count
  let polls = 0;
  let alertsChanged = false;

  function takeToken() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const value = params.get("token") || "";
    if (value) {
      window.history.replaceState(null, "", window.location.pathname);
    }
    return value;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, auth = true) {
    const headers = auth ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(path, {
      headers,
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    if (!response.ok) {
      let message = "HTTP " + response.status;
      try {
        message = (await response.json()).message || message;
      } catch (_) {
        // not an ErrorBody: keep the status line
      }
      throw new ApiError(response.status, message);
    }
    return response.json();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const time = d.toLocaleTimeString([], { hour12: false });
    const today = new Date().toDateString() === d.toDateString();
    return today ? time : d.toLocaleDateString() + " " + time;
  }

  function timeEl(seconds, className) {
    const node = el("time", className, clock(seconds));
    node.dateTime = new Date(seconds * 1000).toISOString();
    return node;
  }

  function ago(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return s + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }

  function age(seconds) {
    return seconds === null || seconds === undefined ? "never fetched" : ago(seconds).replace(" ago", " old");
  }

  function keep(list) {
    for (const alert of list) {
      alerts.set(alert.alert_id, alert);
      alertsChanged = true;
    }
  }

  async function pollAlerts() {
    if (alertCursor === null) {
      const page = await api("/v1/alerts?limit=" + PAGE); // newest first
      keep(page.alerts);
      alertCursor = page.alerts.length ? page.alerts[0].alert_id : 0;
      olderCursor = page.alerts.length ? page.next : null;
      moreOlder = page.alerts.length === PAGE;
      return;
    }
    if (++polls % 10 === 0) {
      // an alert storm's count grows in place: re-read the newest page now and then
      keep((await api("/v1/alerts?limit=" + PAGE)).alerts);
    }
    for (let round = 0; round < 10; round++) {
      const page = await api("/v1/alerts?after=" + alertCursor + "&limit=" + PAGE);
      keep(page.alerts);
      alertCursor = page.next;
      if (page.alerts.length < PAGE) return;
    }
  }

  async function loadOlder() {
    if (olderCursor === null) return;
    const page = await api("/v1/alerts?before=" + olderCursor + "&limit=" + PAGE);
    keep(page.alerts);
    olderCursor = page.next;
    moreOlder = page.alerts.length === PAGE;
    pagedBack = true;
    alertsChanged = true;
    renderAlerts();
  }

  function alertItem(alert) {
    const item = el("li", "alert alert-" + alert.kind);
    item.dataset.kind = alert.kind;
    item.dataset.alertId = String(alert.alert_id);
    const head = el("div", "alert-head");
    head.append(el("span", "kind", KIND_WORDS[alert.kind] || alert.kind));
    if (alert.ticket) head.append(el("span", "ticket", "ticket " + alert.ticket));
    head.append(timeEl(alert.raised_at, "raised"));
    item.append(head);
    if (alert.gates.length) {
      const list = el("ul", "alert-gates");
      alert.gates.forEach((name, i) => {
        const gate = el("li", "alert-gate");
        gate.append(el("span", "gate-name", name));
        if (alert.times[i] !== undefined) gate.append(timeEl(alert.times[i], "gate-time"));
        list.append(gate);
      });
      item.append(list);
    }
    if (alert.detail) item.append(el("p", "detail", alert.detail));
    return item;
  }

  function renderAlerts() {
    if (!alertsChanged) return;
    alertsChanged = false;
    const sorted = [...alerts.values()].sort((a, b) => b.alert_id - a.alert_id);
    const newest = pagedBack ? sorted : sorted.slice(0, MAX_SHOWN);
    if (newest.length < sorted.length) {
      // keep memory bounded: drop what is not shown; "older" pages bring it back
      for (const alert of sorted.slice(MAX_SHOWN)) alerts.delete(alert.alert_id);
      olderCursor = newest[newest.length - 1].alert_id;
      moreOlder = true;
    }
    document.getElementById("alerts").replaceChildren(...newest.map(alertItem));
    document.getElementById("older").hidden = !moreOlder;
    document.getElementById("alert-count").textContent = alerts.size ? "(" + alerts.size + ")" : "";
    document.getElementById("no-alerts").hidden = alerts.size > 0;
  }

  function gateRow(gate, now) {
    const row = el("tr", gate.online ? "gate online" : "gate offline");
    row.dataset.gate = gate.gate_id;
    const name = el("td", "name");
    name.append(el("span", "gate-name", gate.gate_name || gate.gate_id));
    if (gate.gate_name && gate.gate_name !== gate.gate_id) name.append(el("span", "gate-id", gate.gate_id));
    const heard = gate.last_seen !== null;
    const unknown = "\u2014"; // never heard from: nothing to report yet
    const revocation = "v" + gate.revocation_version + ", " + age(gate.revocation_age_s);
    const synced = gate.clock_synced ? "yes" : "no";
    const faults = gate.faults.length ? gate.faults.join(", ") : "none";
    row.append(
      name,
      el("td", "online", gate.online ? "online" : "offline"),
      el("td", "last-seen", ago(heard ? now - gate.last_seen : null)),
      el("td", "outbox", heard ? gate.outbox_depth : unknown),
      el("td", "revocation", heard ? revocation : unknown),
      el("td", "clock " + (heard ? synced : "unknown"), heard ? synced : unknown),
      el("td", "faults" + (gate.faults.length ? " has-faults" : ""), heard ? faults : unknown),
    );
    return row;
  }

  function renderGates(page) {
    const now = Date.now() / 1000;
    const gates = [...page.gates].sort((a, b) => (a.gate_name || a.gate_id).localeCompare(b.gate_name || b.gate_id));
    document.querySelector("#gates tbody").replaceChildren(...gates.map((g) => gateRow(g, now)));
    const online = gates.filter((g) => g.online).length;
    document.getElementById("gate-count").textContent = gates.length ? "(" + online + " of " + gates.length + " online)" : "";
    document.getElementById("no-gates").hidden = gates.length > 0;
  }

  function setStatus(text, kind) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.className = "status status-" + kind;
  }

  async function tick() {
    try {
      await Promise.all([pollAlerts().then(renderAlerts), api("/v1/gates").then(renderGates)]);
      setStatus("live, updated " + new Date().toLocaleTimeString([], { hour12: false }), "ok");
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        setStatus("token refused: " + error.message, "bad");
      } else {
        setStatus("hub unreachable, retrying", "bad");
      }
    } finally {
      window.setTimeout(tick, POLL_MS);
    }
  }

  async function start() {
    try {
      const health = await api("/v1/health", false);
      document.getElementById("venue").textContent = "venue " + health.venue;
    } catch (_) {
      // shown by the status line once polling fails too
    }
    document.getElementById("older").addEventListener("click", () => {
      loadOlder().catch(() => setStatus("hub unreachable, retrying", "bad"));
    });
    if (!token) {
      setStatus("no console token", "bad");
      document.getElementById("token-help").hidden = false;
      return;
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
