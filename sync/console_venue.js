// The console's Venue section: how the venue is filling, from GET /v1/venue every 2 s.
// Occupancy per zone (entries minus exits, annulled admissions removed), each gate's admissions
// per minute over the last hour as a bar chart (SVG built node by node), its denials by reason
// and its revocation list's version and age, and the open alerts. Everything is set as text or
// as numeric attributes, never as HTML: gate names come from the hub's operator.
// The console token and the text-only helpers are console_lib.js's (window.GateConsole, loaded
// first): one token for the page, so a token the hub refused is forgotten here too.
"use strict";

(() => {
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";
  const BAR = 4; // px per minute, gap included
  const HEIGHT = 28;
  const { token, api, el, age } = window.GateConsole;

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  // One formatter for every label: toLocaleTimeString builds a new one per call (slow x 3000).
  const HHMM = new Intl.DateTimeFormat([], { hour12: false, hour: "2-digit", minute: "2-digit" });

  function minuteLabels(start, count) {
    return Array.from({ length: count }, (_, i) => HHMM.format(new Date((start + i * 60) * 1000)));
  }

  // One <path> per gate (a bar per minute as a closed subpath): 50 nodes for the whole table
  // where a <rect> per minute would be 3,000, which is what the first render's time went on.
  function chart(perMinute, labels, scale) {
    const width = perMinute.length * BAR;
    const root = svg("svg", { class: "minutes", width, height: HEIGHT, viewBox: "0 0 " + width + " " + HEIGHT, role: "img" });
    let total = 0;
    let peak = 0;
    let d = "";
    perMinute.forEach((count, i) => {
      total += count;
      if (count > perMinute[peak]) peak = i;
      if (count <= 0) return;
      const h = Math.max(1, Math.round((count / scale) * HEIGHT));
      d += "M" + i * BAR + " " + HEIGHT + "v" + -h + "h" + (BAR - 1) + "v" + h + "z";
    });
    const text = total
      ? total + " admissions in the last hour, most at " + labels[peak] + " (" + perMinute[peak] + ")"
      : "no admissions in the last hour";
    root.setAttribute("aria-label", text);
    const title = svg("title", {});
    title.textContent = text;
    root.append(title);
    if (d) root.append(svg("path", { d, class: "bars" }));
    root.dataset.bars = String(perMinute.filter((n) => n > 0).length);
    return root;
  }

  function reasons(denied) {
    if (!denied.length) return "none";
    const total = denied.reduce((a, d) => a + d.count, 0);
    return total + ": " + denied.map((d) => d.reason.replace(/_/g, " ") + " " + d.count).join(", ");
  }

  function gateRow(gate, labels, scale) {
    const row = el("tr", gate.online ? "venue-gate online" : "venue-gate offline");
    row.dataset.gate = gate.gate_id;
    const name = el("td", "name");
    name.append(el("span", "gate-name", gate.gate_name || gate.gate_id));
    if (gate.gate_name && gate.gate_name !== gate.gate_id) name.append(el("span", "gate-id", gate.gate_id));
    const minutes = el("td", "per-minute");
    minutes.append(chart(gate.per_minute, labels, scale));
    const list = gate.list_version === null ? "\u2014" : "v" + gate.list_version + ", " + age(gate.list_age_s);
    row.append(
      name,
      minutes,
      el("td", "this-minute", gate.per_minute[gate.per_minute.length - 1]),
      el("td", "last-hour", gate.per_minute.reduce((a, b) => a + b, 0)),
      el("td", "entries", gate.entries),
      el("td", "exits", gate.exits),
      el("td", "annulled", gate.annulled),
      el("td", "denied" + (gate.denied.length ? " has-denials" : ""), reasons(gate.denied)),
      el("td", "list", list),
    );
    return row;
  }

  function zoneRow(zone) {
    const row = el("tr", "venue-zone");
    row.dataset.zone = zone.zone === null ? "none" : String(zone.zone);
    row.append(
      el("td", "zone", zone.zone === null ? "no zone" : "zone " + zone.zone),
      el("td", "occupancy", zone.occupancy),
      el("td", "entries", zone.entries),
      el("td", "exits", zone.exits),
    );
    return row;
  }

  function render(venue) {
    const scale = Math.max(1, ...venue.gates.flatMap((g) => g.per_minute));
    const width = venue.gates.length ? venue.gates[0].per_minute.length : 60;
    const labels = minuteLabels(venue.minute_start, width);
    const byName = new Intl.Collator([], { numeric: true }).compare; // Gate 2 before Gate 10
    const gates = [...venue.gates].sort((a, b) => byName(a.gate_name || a.gate_id, b.gate_name || b.gate_id));
    document.querySelector("#venue-gates tbody").replaceChildren(...gates.map((g) => gateRow(g, labels, scale)));
    document.querySelector("#venue-zones tbody").replaceChildren(...venue.zones.map(zoneRow));
    document.getElementById("venue-occupancy").textContent = "(" + venue.occupancy + " inside)";
    document.getElementById("venue-alerts-open").textContent = String(venue.alerts_open);
    document.getElementById("venue-window").textContent = labels[0] + "\u2013" + labels[width - 1];
    const status = document.getElementById("venue-status");
    status.hidden = true;
    status.textContent = "";
  }

  function failed(text) {
    const status = document.getElementById("venue-status");
    status.hidden = false;
    status.textContent = text;
  }

  async function tick() {
    if (!token()) {
      failed("Not authorised: no console token."); // refused: console.js has forgotten it
      return;
    }
    try {
      render(await api("/v1/venue"));
    } catch (err) {
      const why = err instanceof window.GateConsole.ApiError ? err.message : "hub unreachable, retrying";
      failed("Venue figures unavailable: " + why);
    } finally {
      window.setTimeout(tick, POLL_MS);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!token()) {
      failed("No console token.");
      return;
    }
    tick();
  });
})();
