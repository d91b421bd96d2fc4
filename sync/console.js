// The hub's security console: live alerts and gate health, polled every second; ticket search;
// the alert workflow (acknowledge, assign, notes); the open alerts in the page title.
// Alerts: the newest page first, then each poll follows the ones raised since; older alerts are
// fetched a page at a time on request, so a flood never has to be loaded (or shown) whole.
// The token and the helpers (api, el, times) are console_lib.js's (window.GateConsole).
// Everything shown is set as text (never as HTML): gate names come from the gates.
"use strict";

(() => {
  const POLL_MS = 1000;
  const PAGE = 100;
  const MAX_SHOWN = 1000;
  const NOTIFY_KEY = "gate-agent-console-notify";
  const TITLE = document.title;
  const KIND_WORDS = {
    double_admission: "Double admission",
    repeated_denials: "Repeated denied attempts",
    integrity: "Integrity",
    alert_storm: "Alert storm",
  };

  const { ApiError, api, el, clock, timeEl, ago, age } = window.GateConsole;
  const token = window.GateConsole.token();
  const alerts = new Map(); // alert_id -> alert
  let alertCursor = null; // newest alert_id seen: follow from here; null until the first page
  let olderCursor = null; // oldest alert_id loaded: "older" pages come from below it
  let moreOlder = false;
  let pagedBack = false; // the user asked for older pages: keep them, whatever the count
  let polls = 0;
  let alertsChanged = false;
  let selectedId = null; // the alert shown in the detail panel
  let refused = false;
  // The gate filter's choices: a gate id -> its name now; an alert raised before hubs kept gate
  // ids, by "by name " + the name it was raised with (a name may since be another gate's; a
  // gate id has no space).
  const knownGates = new Map();

  function gateKeys(alert) {
    const ids = alert.gate_ids || [];
    return alert.gates.map((name, i) => (ids[i] ? ids[i] : "by name " + name));
  }

  // --- alerts ---------------------------------------------------------------------------------

  function keep(list, fresh) {
    let arrived = 0;
    for (const alert of list) {
      if (fresh && !alerts.has(alert.alert_id)) arrived++;
      alerts.set(alert.alert_id, alert);
      gateKeys(alert).forEach((key, i) => {
        if (!knownGates.has(key)) knownGates.set(key, (alert.gates_now || [])[i] || alert.gates[i]);
      });
      alertsChanged = true;
    }
    if (arrived) signal(arrived);
  }

  async function pollAlerts() {
    if (alertCursor === null) {
      const page = await api("/v1/alerts?limit=" + PAGE); // newest first
      keep(page.alerts, false);
      alertCursor = page.alerts.length ? page.alerts[0].alert_id : 0;
      olderCursor = page.alerts.length ? page.next : null;
      moreOlder = page.alerts.length === PAGE;
      return;
    }
    if (++polls % 10 === 0) {
      // an alert storm's count and other consoles' actions change alerts in place
      keep((await api("/v1/alerts?limit=" + PAGE)).alerts, false);
    }
    for (let round = 0; round < 10; round++) {
      const page = await api("/v1/alerts?after=" + alertCursor + "&limit=" + PAGE);
      keep(page.alerts, true);
      alertCursor = page.next;
      if (page.alerts.length < PAGE) return;
    }
  }

  async function loadOlder() {
    if (olderCursor === null) return;
    const page = await api("/v1/alerts?before=" + olderCursor + "&limit=" + PAGE);
    keep(page.alerts, false);
    olderCursor = page.next;
    moreOlder = page.alerts.length === PAGE;
    pagedBack = true;
    alertsChanged = true;
    renderAlerts();
  }

  function entryItem(c, alertTicket) {
    const gate = el("li", "alert-gate");
    gate.append(el("span", "gate-name", c.gate));
    if (c.gate_now) gate.append(el("span", "gate-now", "now " + c.gate_now));
    gate.append(timeEl(c.time, "gate-time"));
    gate.append(el("span", "lane", "lane " + (c.lane || "?")));  // a claim's is not known
    const verdict = c.verdict === "admit" ? "admitted" : "denied";
    gate.append(el("span", "decision decision-" + c.verdict, c.kind + " " + verdict + (c.reason === "ok" ? "" : ": " + c.reason)));
    if (c.offline) gate.append(el("span", "offline-badge", "decided offline"));
    if (c.ticket && c.ticket !== alertTicket) gate.append(el("span", "entry-ticket", "ticket " + c.ticket));
    if (c.set_apart) gate.append(el("span", "set-apart-badge", "set apart by a quarantine"));
    if (c.claimed) gate.append(el("span", "claimed-badge", "claimed: an admission of a refused upload"));
    if (c.annulled) gate.append(el("span", "annulled-badge", "annulled since: nobody passed"));
    return gate;
  }

  function workflowText(flow) {
    const parts = [flow.open ? "Open" : "Acknowledged by " + flow.acked_by + " at " + clock(flow.acked_at)];
    if (flow.assignee) parts.push("assigned to " + flow.assignee);
    if (flow.notes.length) parts.push(flow.notes.length === 1 ? "1 note" : flow.notes.length + " notes");
    return parts.join(", ");
  }

  function alertItem(alert) {
    const flow = alert.workflow;
    const item = el("li", "alert alert-" + alert.kind + (flow && !flow.open ? " acked" : " open"));
    item.dataset.kind = alert.kind;
    item.dataset.alertId = String(alert.alert_id);
    item.tabIndex = 0;
    if (alert.alert_id === selectedId) item.classList.add("selected");
    const head = el("div", "alert-head");
    head.append(el("span", "kind", KIND_WORDS[alert.kind] || alert.kind));
    if (alert.ticket) {
      const ticket = el("button", "ticket", "ticket " + alert.ticket);
      ticket.type = "button";
      ticket.dataset.ticket = alert.ticket;
      ticket.title = "Search this ticket's history";
      head.append(ticket);
    }
    head.append(timeEl(alert.raised_at, "raised"));
    item.append(head);
    const context = alert.context || [];
    if (context.length) {
      const list = el("ul", "alert-gates");
      list.append(...context.map((c) => entryItem(c, alert.ticket)));
      item.append(list);
    } else if (alert.gates.length) {
      const list = el("ul", "alert-gates");
      alert.gates.forEach((name, i) => {
        const gate = el("li", "alert-gate");
        gate.append(el("span", "gate-name", name));
        const now = (alert.gates_now || [])[i];
        if (now && now !== name) gate.append(el("span", "gate-now", "now " + now));
        if (alert.times[i] !== undefined) gate.append(timeEl(alert.times[i], "gate-time"));
        list.append(gate);
      });
      item.append(list);
    }
    if (alert.detail) item.append(el("p", "detail", alert.detail));
    if (flow) item.append(el("p", "workflow", workflowText(flow)));
    return item;
  }

  function shown(alert) {
    const kind = document.getElementById("filter-kind").value;
    const gate = document.getElementById("filter-gate").value;
    const openOnly = document.getElementById("filter-open").checked;
    if (kind && alert.kind !== kind) return false;
    if (gate && !gateKeys(alert).includes(gate)) return false;
    if (openOnly && alert.workflow && !alert.workflow.open) return false;
    return true;
  }

  function renderGateFilter() {
    const select = document.getElementById("filter-gate");
    const have = new Map([...select.options].map((o) => [o.value, o]));
    const fresh = [...knownGates].filter(([key]) => !have.has(key)).sort((a, b) => a[1].localeCompare(b[1]));
    const text = (key, label) => (key.startsWith("by name ") ? label + " (as named then)" : label);
    for (const [key, label] of knownGates) {
      const option = have.get(key);
      if (option && option.textContent !== text(key, label)) option.textContent = text(key, label); // renamed
    }
    for (const [key, label] of fresh) {
      const option = el("option", null, text(key, label));
      option.value = key;
      select.append(option);
    }
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
    const visible = newest.filter(shown);
    document.getElementById("alerts").replaceChildren(...visible.map(alertItem));
    document.getElementById("older").hidden = !moreOlder;
    const filtered = visible.length < newest.length ? visible.length + " of " : "";
    document.getElementById("alert-count").textContent = alerts.size ? "(" + filtered + alerts.size + ")" : "";
    const none = document.getElementById("no-alerts");
    none.textContent = alerts.size ? "No alerts match the filters." : "No alerts.";
    none.hidden = visible.length > 0;
    renderGateFilter();
    renderDetail();
  }

  async function pollOpen() {
    const { open } = await api("/v1/alerts/open");
    document.title = open ? "(" + open + ") " + TITLE : TITLE;
    document.getElementById("open-count").textContent = open ? open + " open" : "none open";
  }

  // --- the selected alert: acknowledge, assign, notes ------------------------------------------

  function select(alertId) {
    selectedId = alertId;
    document.getElementById("detail-error").hidden = true;
    alertsChanged = true;
    renderAlerts();
    document.getElementById("alert-detail").scrollIntoView({ block: "nearest" });
  }

  function renderDetail() {
    const panel = document.getElementById("alert-detail");
    const alert = selectedId === null ? undefined : alerts.get(selectedId);
    panel.hidden = alert === undefined;
    if (alert === undefined) return;
    const flow = alert.workflow;
    document.getElementById("detail-title").textContent =
      "Alert #" + alert.alert_id + ": " + (KIND_WORDS[alert.kind] || alert.kind) + (alert.ticket ? ", ticket " + alert.ticket : "");
    document.getElementById("detail-workflow").textContent = workflowText(flow);
    document.getElementById("ack").disabled = !flow.open;
    document.getElementById("notes").replaceChildren(
      ...flow.notes.map((n) => {
        const item = el("li", "note");
        item.append(el("span", "note-by", n.by), timeEl(n.at, "note-at"), el("span", "note-text", n.text));
        return item;
      }),
    );
  }

  async function act(path, body) {
    const error = document.getElementById("detail-error");
    try {
      const answer = await api("/v1/alerts/" + selectedId + "/" + path, true, body);
      alerts.set(answer.alert.alert_id, answer.alert);
      error.hidden = true;
      alertsChanged = true;
      renderAlerts();
      pollOpen().catch(() => {});
      return true;
    } catch (e) {
      error.textContent = e instanceof ApiError ? e.message : "hub unreachable";
      error.hidden = false;
      return false;
    }
  }

  async function refreshSelected() {
    if (selectedId === null) return;
    const answer = await api("/v1/alerts/" + selectedId);
    alerts.set(answer.alert.alert_id, answer.alert);
    alertsChanged = true;
  }

  // --- new alerts: sound and notification (off by default) -------------------------------------

  function notifyOn() {
    return document.getElementById("notify-toggle").checked;
  }

  function signal(count) {
    if (!notifyOn()) return;
    document.body.dataset.signalled = String(Number(document.body.dataset.signalled || 0) + count);
    try {
      const audio = new AudioContext();
      const tone = audio.createOscillator();
      tone.frequency.value = 880;
      tone.connect(audio.destination);
      tone.start();
      tone.stop(audio.currentTime + 0.25);
      tone.onended = () => audio.close();
    } catch (_) {
      // no audio output: the notification (if allowed) still shows
    }
    if ("Notification" in window && Notification.permission === "granted") {
      new Notification(count === 1 ? "New security alert" : count + " new security alerts", { tag: "gate-agent-alerts" });
    }
  }

  function setupNotify() {
    const toggle = document.getElementById("notify-toggle");
    try {
      toggle.checked = window.sessionStorage.getItem(NOTIFY_KEY) === "on";
    } catch (_) {
      toggle.checked = false;
    }
    toggle.addEventListener("change", () => {
      try {
        window.sessionStorage.setItem(NOTIFY_KEY, toggle.checked ? "on" : "off");
      } catch (_) {
        // not kept across reloads
      }
      if (toggle.checked && "Notification" in window && Notification.permission === "default") {
        Notification.requestPermission().catch(() => {});
      }
    });
  }

  // --- ticket search ---------------------------------------------------------------------------

  async function searchTicket(query) {
    const message = document.getElementById("ticket-message");
    const table = document.getElementById("ticket-history");
    const short = query.trim().toLowerCase();
    table.hidden = true;
    message.hidden = false;
    if (!/^[0-9a-f]{8}$/.test(short)) {
      message.textContent = "Enter a ticket's 8-character short id (0-9, a-f), as alerts and gates show it.";
      return;
    }
    message.textContent = "Searching\u2026";
    let found;
    try {
      found = await api("/v1/tickets/" + short);
    } catch (e) {
      message.textContent = e instanceof ApiError && (e.status === 401 || e.status === 403) ? "Not authorised." : "Search failed: " + e.message;
      return;
    }
    if (!found.events.length) {
      message.textContent = "Ticket " + found.ticket + ": nothing recorded at this venue.";
      return;
    }
    const gates = new Set(found.events.map((e) => e.gate));
    const rows = found.more ? found.rows : found.events.length; // all of them, shown or not
    const at = " at " + gates.size + (gates.size === 1 ? " gate" : " gates");
    let text = "Ticket " + found.ticket + ": " + rows + (rows === 1 ? " row" : " rows");
    text += found.more ? "; the newest " + found.events.length + " are shown," + at : at;
    if (found.tickets > 1) text += " (" + found.tickets + " different tickets share this short id)";
    message.textContent = text + ".";
    document.querySelector("#ticket-history tbody").replaceChildren(...found.events.map(historyRow));
    table.hidden = false;
  }

  function historyRow(e) {
    const row = el("tr", "event event-" + e.kind + " verdict-" + e.verdict);
    const gate = el("td", "gate");
    gate.append(el("span", "gate-name", e.gate));
    const flags = [...e.flags];
    if (e.annuls) flags.push("annuls an entry");
    if (e.set_apart) {
      flags.push("set apart by a quarantine");
      row.classList.add("set-apart");
    }
    if (e.claimed) flags.push("claimed: an admission of a refused upload");
    const when = el("td", "time");
    when.append(timeEl(e.time));
    row.append(
      when,
      gate,
      el("td", "lane", e.lane),
      el("td", "kind", e.kind),
      el("td", "verdict", e.verdict === "admit" ? "admitted" : "denied"),
      el("td", "reason", e.reason + (e.detail ? " (" + e.detail + ")" : "")),
      el("td", "offline", e.offline ? "offline" : "online"),
      el("td", "flags", flags.join(", ")),
    );
    return row;
  }

  // --- gates ------------------------------------------------------------------------------------

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
    for (const g of gates) knownGates.set(g.gate_id, g.gate_name || g.gate_id);
    renderGateFilter();
  }

  // --- the page -----------------------------------------------------------------------------

  function setStatus(text, kind) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.className = "status status-" + kind;
  }

  function notAuthorised(message) {
    // A refused token is never "No alerts": nothing can be known about the alerts.
    refused = true;
    setStatus("not authorised: " + message, "bad");
    alerts.clear();
    document.getElementById("alerts").replaceChildren();
    document.getElementById("alert-count").textContent = "";
    const none = document.getElementById("no-alerts");
    none.textContent = "Not authorised: the hub refused this console token (" + message + ").";
    none.hidden = false;
    document.getElementById("token-help").hidden = false;
    document.title = TITLE;
    window.GateConsole.forgetToken();
  }

  async function tick() {
    try {
      await Promise.all([
        pollAlerts().then(refreshSelected).then(renderAlerts),
        api("/v1/gates").then(renderGates),
        pollOpen(),
      ]);
      setStatus("live, updated " + new Date().toLocaleTimeString([], { hour12: false }), "ok");
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        notAuthorised(error.message);
        return; // a refused token stays refused: reload with another one
      }
      setStatus("hub unreachable, retrying", "bad");
    }
    if (!refused) window.setTimeout(tick, POLL_MS);
  }

  function wire() {
    document.getElementById("older").addEventListener("click", () => {
      loadOlder().catch(() => setStatus("hub unreachable, retrying", "bad"));
    });
    for (const id of ["filter-kind", "filter-gate", "filter-open"]) {
      document.getElementById(id).addEventListener("change", () => {
        alertsChanged = true;
        renderAlerts();
      });
    }
    const list = document.getElementById("alerts");
    list.addEventListener("click", (event) => {
      const ticket = event.target.closest("button.ticket");
      if (ticket) {
        document.getElementById("ticket-query").value = ticket.dataset.ticket;
        searchTicket(ticket.dataset.ticket);
        return;
      }
      const item = event.target.closest("li.alert");
      if (item) select(Number(item.dataset.alertId));
    });
    list.addEventListener("keydown", (event) => {
      const item = event.target.closest("li.alert");
      if (item && event.key === "Enter") select(Number(item.dataset.alertId));
    });
    document.getElementById("ticket-form").addEventListener("submit", (event) => {
      event.preventDefault();
      searchTicket(document.getElementById("ticket-query").value);
    });
    document.getElementById("ack").addEventListener("click", () => act("ack", {}));
    document.getElementById("assign-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = document.getElementById("assign-name");
      if (await act("assign", { assignee: input.value })) input.value = "";
    });
    document.getElementById("note-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const input = document.getElementById("note-text");
      if (await act("notes", { text: input.value })) input.value = "";
    });
    document.getElementById("detail-close").addEventListener("click", () => {
      selectedId = null;
      alertsChanged = true;
      renderAlerts();
    });
    setupNotify();
  }

  async function start() {
    try {
      const health = await api("/v1/health", false);
      document.getElementById("venue").textContent = "venue " + health.venue;
    } catch (_) {
      // shown by the status line once polling fails too
    }
    wire();
    if (!token) {
      setStatus("no console token", "bad");
      document.getElementById("token-help").hidden = false;
      return;
    }
    tick();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
