// Shared by the console's scripts (console.js): the console token and the helpers that talk to
// the hub and build text-only nodes. The token comes from the page's fragment (#token=...), which
// browsers never send to a server; it is then removed from the address bar and history and kept
// in this tab's sessionStorage (TOKEN_KEY), so a reload keeps it and closing the tab forgets it
// (never localStorage). Everything shown is set as text, never as HTML.
"use strict";

window.GateConsole = (() => {
  const TOKEN_KEY = "gate-agent-console-token";
  let token = takeToken();

  function takeToken() {
    const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    const value = params.get("token") || "";
    if (value) {
      window.history.replaceState(null, "", window.location.pathname);
      try {
        window.sessionStorage.setItem(TOKEN_KEY, value);
      } catch (_) {
        // storage off: the token lives in this page only
      }
      return value;
    }
    try {
      return window.sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, auth = true, body = undefined) {
    const headers = auth ? { Authorization: "Bearer " + token } : {};
    const init = { headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      init.method = "POST";
      init.body = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, init);
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

  // One formatter each, made once: toLocaleTimeString and toLocaleDateString build one per call
  // (0.2-0.4 ms each), which was most of the script time of a 100-alert page's first render.
  const TIME = new Intl.DateTimeFormat([], { hour12: false, hour: "numeric", minute: "numeric", second: "numeric" });
  const DATE = new Intl.DateTimeFormat([], { year: "numeric", month: "numeric", day: "numeric" });

  function clock(seconds) {
    const d = new Date(seconds * 1000);
    const time = TIME.format(d);
    const today = new Date().toDateString() === d.toDateString();
    return today ? time : DATE.format(d) + " " + time;
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

  function forgetToken() {
    token = "";
    try {
      window.sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // nothing kept
    }
  }

  return Object.freeze({
    token: () => token, forgetToken, ApiError, api, el, clock, timeEl, ago, age,
  });
})();
