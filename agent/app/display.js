// Staff display: the gate's verdict at decision time, big, from its server-sent events
// (agent/app/status_display.py describes the messages). Everything is set as text.
"use strict";

const $ = (id) => document.getElementById(id);

const ACTIONS = {
  redirect: "Redirect",
  box_office: "Box office",
  supervisor: "Call supervisor",
};
const AFTER = {
  passed: "passed",
  not_used: "not used - ticket still valid",
  unconfirmed: "passage not confirmed",
};
// Tones per verdict (Hz, and how many): one high for GO, more and lower as the action grows.
const TONES = {
  go: [880, 1],
  redirect: [523, 2],
  box_office: [392, 2],
  supervisor: [262, 3],
};

const wanted = new URLSearchParams(window.location.search).get("lane");
const conf = { clear: 5, stale: 6, hold: 10, sound: false };
let lane = wanted;
let live = false; // a stream is open and heard from within conf.stale seconds
let heardAt = 0;
let allLanes = {};
let health = { out: [], emergency: false };
let offline = null;
let verdict = null; // the decision on screen, with receivedAt and changedAt (ms, performance.now)
let source = null;
let retryMs = 1000;
let audio = null;

function screen(state, icon, big, action, message) {
  const panel = $("panel");
  panel.className = state;
  panel.dataset.state = state;
  panel.dataset.icon = icon;
  $("verdict").textContent = big;
  $("action").textContent = action;
  $("message").textContent = message;
}

function render() {
  const now = performance.now();
  const panel = $("panel");
  let banner = null;
  panel.dataset.reason = "";
  panel.dataset.action = "";
  panel.dataset.after = "";
  $("after").textContent = "";
  $("ticket").textContent = "";
  $("age").textContent = "";
  if (!live) {
    screen("out", "out", "OUT OF SERVICE", "", heardAt ? "Gate not answering" : "Connecting to the gate");
  } else if (lane === null || !Object.hasOwn(allLanes, lane)) {
    screen("out", "out", "OUT OF SERVICE", "", "No lane " + String(lane) + " at this gate");
  } else if (health.emergency) {
    verdict = null; // a verdict from before free passage is not shown after it (READY then)
    screen("emergency", "emergency", "FREE PASSAGE", "", "Emergency release - let everyone through");
  } else if (health.out.length) {
    verdict = null; // nor one from before the lane went out of service
    screen("out", "out", "OUT OF SERVICE", "", health.out.join(", "));
  } else {
    banner = offline;
    if (verdict !== null && shown(verdict, now)) {
      showVerdict(verdict, now);
    } else {
      verdict = null;
      screen("ready", "ready", "READY", "", "Scan the next ticket");
    }
  }
  const el = $("banner");
  el.hidden = banner === null;
  el.textContent = banner === null ? "" : "OFFLINE - decisions not shared with other gates (" + banner + ")";
}

// A verdict stays conf.clear seconds after its last change; an admission also while the gate is
// open (until passed or not used, at most conf.hold seconds).
function shown(v, now) {
  if (v.admitted && !v.result && now - v.receivedAt < conf.hold * 1000) {
    return true;
  }
  return now - v.changedAt < conf.clear * 1000;
}

function showVerdict(v, now) {
  const panel = $("panel");
  if (v.admitted) {
    screen("admit", "go", "GO", "", v.message);
  } else {
    const action = v.action || "supervisor";
    screen("deny", action, "STOP", ACTIONS[action] || ACTIONS.supervisor, v.message);
    panel.dataset.action = action;
  }
  panel.dataset.reason = v.reason;
  if (v.result) {
    panel.dataset.after = v.result;
    $("after").textContent = AFTER[v.result] || "";
  }
  $("ticket").textContent = v.ticket ? "ticket " + v.ticket : "";
  $("age").textContent = Math.floor((now - v.receivedAt) / 1000) + " s ago";
}

function beep(kind) {
  if (!conf.sound || !(kind in TONES)) {
    return;
  }
  document.body.dataset.sound = kind;
  try {
    audio = audio || new AudioContext();
    const [hz, times] = TONES[kind];
    for (let i = 0; i < times; i++) {
      const start = audio.currentTime + i * 0.22;
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = hz;
      gain.gain.value = 0.3;
      osc.connect(gain).connect(audio.destination);
      osc.start(start);
      osc.stop(start + 0.15);
    }
  } catch (err) {
    // no audio device: the screen says it all
  }
}

function onMessage(data) {
  heardAt = performance.now();
  if (data.hello) {
    const h = data.hello;
    conf.clear = h.clear_after_s;
    conf.stale = h.stale_after_s;
    conf.sound = h.sound;
    conf.hold = h.hold_s;
    lane = wanted !== null ? wanted : h.lanes[0];
    $("gate").textContent = h.gate;
    $("lane").textContent = "lane " + lane;
    verdict = null; // a display (re)opened now shows READY, never an old verdict
    live = true;
  }
  if (data.state) {
    allLanes = data.state.lanes;
    // own names only: ?lane=constructor is no lane, not Object's constructor
    health = lane !== null && Object.hasOwn(allLanes, lane) ? allLanes[lane] : { out: [], emergency: false };
    offline = data.state.offline;
  }
  if (data.decision && data.decision.lane === lane) {
    const now = performance.now();
    verdict = Object.assign({ receivedAt: now, changedAt: now }, data.decision);
    const tone = verdict.admitted ? "go" : verdict.action || "supervisor";
    render();
    beep(tone);
  }
  if (data.settled && verdict !== null && data.settled.id === verdict.id) {
    verdict.result = data.settled.result;
    verdict.changedAt = performance.now();
  }
  if (data.counts) {
    // this lane's own counts; the unit's from a gate that does not count per lane
    const lanes = data.counts.lanes;
    const c = lanes && lane !== null && Object.hasOwn(lanes, lane) ? lanes[lane] : data.counts;
    $("admitted").textContent = String(c.admitted);
    $("denied").textContent = String(c.denied);
  }
  render();
}

function link(up, text) {
  $("link").textContent = text;
  $("link").className = up ? "up" : "down";
}

function down() {
  live = false;
  link(false, "no connection");
  render();
}

function connect() {
  source = new EventSource("/display/events");
  const mine = source;
  source.onopen = () => {
    retryMs = 1000;
    link(true, "live");
  };
  source.onerror = () => {
    down();
    if (mine.readyState === EventSource.CLOSED) {
      // refused (503 when the gate's streams are all taken): the browser gives up; try again
      // later, backing off up to 30 s with jitter so refused displays do not come back together
      retry();
    }
  };
  source.onmessage = (event) => onMessage(JSON.parse(event.data));
}

function retry() {
  if (source !== null) {
    source.close();
    source = null;
  }
  window.setTimeout(connect, retryMs / 2 + (Math.random() * retryMs) / 2);
  retryMs = Math.min(retryMs * 2, 30000);
}

window.setInterval(() => {
  if (live && performance.now() - heardAt > conf.stale * 1000) {
    // nothing from the gate, not even a heartbeat: it is dead or cut off
    down();
    retry();
  }
  render();
}, 250);

render();
connect();
