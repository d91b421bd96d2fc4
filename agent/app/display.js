// Staff display: the latest decision, big, from the gate's server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);

function show(outcome) {
  const panel = $("panel");
  const state = outcome.admitted ? "admit" : "deny";
  panel.className = state;
  panel.dataset.state = state;
  panel.dataset.reason = outcome.reason;
  $("verdict").textContent = outcome.admitted ? "GO" : "STOP";
  $("message").textContent = outcome.message;
  $("ticket").textContent = outcome.ticket ? "ticket " + outcome.ticket : "";
  $("lane").textContent = "lane " + outcome.lane;
}

function count(counts) {
  $("admitted").textContent = String(counts.admitted);
  $("denied").textContent = String(counts.denied);
}

let retryMs = 1000;

function connect() {
  const source = new EventSource("/display/events");
  source.onopen = () => {
    retryMs = 1000;
    $("link").textContent = "live";
    $("link").className = "up";
  };
  source.onerror = () => {
    $("link").textContent = "reconnecting";
    $("link").className = "down";
    if (source.readyState === EventSource.CLOSED) {
      // refused (503 when the gate's streams are all taken): the browser gives up; try again
      // later, backing off up to 30 s with jitter so refused displays do not come back together
      window.setTimeout(connect, retryMs / 2 + Math.random() * retryMs / 2);
      retryMs = Math.min(retryMs * 2, 30000);
    }
  };
  source.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.last && data.last.length) {
      show(data.last[data.last.length - 1]);
    }
    if (data.outcome) {
      show(data.outcome);
    }
    if (data.counts) {
      count(data.counts);
    }
  };
}

connect();
