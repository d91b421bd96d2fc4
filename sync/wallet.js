// The holder's wallet: a non-extractable P-256 key made here (WebCrypto, kept in IndexedDB), a
// rotating ticket's static part (TK2S: text, kept in IndexedDB too) and, every few seconds, a
// fresh code signed by the key and drawn as a QR code (qr.js). Works offline once it has both.
//
// Code text: "TK2:" + base45(static 124 bytes + code_time u32 big-endian + signature 64 bytes),
// the signature (ECDSA P-256, SHA-256, r || s with low S) over
// "gate-agent/TK2/code\0" + static + code_time: what agent/tickets/tk2.py make_code does.
// Query parameter refresh=S: seconds between codes (1-60, default 5).
"use strict";

const DB_NAME = "gate-agent-wallet";
const STORE = "wallet";
const STATIC_PREFIX = "TK2S:";
const CODE_PREFIX = "TK2:";
const STATIC_LEN = 124;
const KEY_AT = 27; // the device key's offset in the static part (33 bytes, compressed)
const CODE_TAG = new TextEncoder().encode("gate-agent/TK2/code\0");
const B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

const el = (id) => document.getElementById(id);

function refreshSeconds() {
  const raw = new URLSearchParams(location.search).get("refresh");
  const n = raw === null ? 5 : Number(raw);
  return Number.isInteger(n) && n >= 1 && n <= 60 ? n : 5;
}

function say(text, bad) {
  const m = el("message");
  m.textContent = text;
  m.classList.toggle("bad", Boolean(bad));
}

// -- IndexedDB --------------------------------------------------------------------------------

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function dbCall(db, mode, action) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const req = action(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
  });
}

const dbGet = (db, key) => dbCall(db, "readonly", (s) => s.get(key));
const dbPut = (db, key, value) => dbCall(db, "readwrite", (s) => s.put(value, key));

// -- bytes ------------------------------------------------------------------------------------

function base45Encode(bytes) {
  let out = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let n = bytes[i] * 256 + bytes[i + 1];
    const c = n % 45;
    n = (n - c) / 45;
    out += B45[c] + B45[n % 45] + B45[Math.floor(n / 45)];
  }
  if (bytes.length % 2) {
    const n = bytes[bytes.length - 1];
    out += B45[n % 45] + B45[Math.floor(n / 45)];
  }
  return out;
}

function base45Decode(text) {
  if (text.length % 3 === 1) return null;
  const out = [];
  for (let i = 0; i < text.length; i += 3) {
    const digits = [...text.slice(i, i + 3)].map((ch) => B45.indexOf(ch));
    if (digits.includes(-1)) return null;
    const n = digits.reduce((acc, d, k) => acc + d * 45 ** k, 0);
    if (digits.length === 3) {
      if (n > 0xffff) return null;
      out.push(n >> 8, n & 0xff);
    } else {
      if (n > 0xff) return null;
      out.push(n);
    }
  }
  return new Uint8Array(out);
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

const base64url = (bytes) =>
  btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

function toBig(bytes) {
  return BigInt("0x" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(""));
}

function fromBig(n, length) {
  const hex = n.toString(16).padStart(length * 2, "0");
  return Uint8Array.from({ length }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

// -- the device key ---------------------------------------------------------------------------

async function deviceKeys(db) {
  let pair = await dbGet(db, "device");
  if (!pair) {
    pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, [
      "sign",
      "verify",
    ]);
    await dbPut(db, "device", pair);
  }
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)); // 65 bytes
  const compressed = concat(Uint8Array.of(2 + (raw[64] & 1)), raw.slice(1, 33));
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const b64 = btoa(String.fromCharCode(...spki));
  const lines = b64.match(/.{1,64}/g).join("\n");
  const pem = `-----BEGIN PUBLIC KEY-----\n${lines}\n-----END PUBLIC KEY-----\n`;
  return { privateKey: pair.privateKey, raw, compressed, pem };
}

// The 124 static bytes of a TK2S: text bound to this device, or an error message.
function staticPart(text, device) {
  const t = text.trim();
  if (!t.startsWith(STATIC_PREFIX) || t.length !== STATIC_PREFIX.length + 186) {
    return { error: "That is not a rotating ticket (TK2S: and 186 more characters)." };
  }
  const bytes = base45Decode(t.slice(STATIC_PREFIX.length));
  if (bytes === null || bytes.length !== STATIC_LEN || bytes[0] !== 1) {
    return { error: "That ticket text is damaged." };
  }
  const bound = bytes.slice(KEY_AT, KEY_AT + 33);
  if (!bound.every((b, i) => b === device.compressed[i])) {
    return { error: "That ticket belongs to another device's key." };
  }
  return { bytes, text: t };
}

async function makeCode(device, staticBytes, codeTime) {
  const time = new Uint8Array(4);
  new DataView(time.buffer).setUint32(0, codeTime, false);
  const message = concat(CODE_TAG, staticBytes, time);
  const sig = new Uint8Array(
    await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, device.privateKey, message),
  );
  let s = toBig(sig.slice(32));
  if (s > P256_N / 2n) s = P256_N - s; // the gate accepts low S only; WebCrypto may give either
  const signature = concat(sig.slice(0, 32), fromBig(s, 32));
  return CODE_PREFIX + base45Encode(concat(staticBytes, time, signature));
}

// -- the page ---------------------------------------------------------------------------------

const wallet = { db: null, device: null, ticket: null, timer: null };

function describe(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const event = view.getUint32(13, false);
  const mask = view.getUint16(17, false);
  const zones = [];
  for (let z = 1; z <= 16; z++) if (mask & (1 << (z - 1))) zones.push(z);
  return `Event ${event}, ${zones.length === 16 ? "all zones" : "zones " + zones.join(", ")}`;
}

async function showCode() {
  const codeTime = Math.floor(Date.now() / 1000);
  const text = await makeCode(wallet.device, wallet.ticket.bytes, codeTime);
  const code = QR.encode(text);
  const canvas = el("qr");
  const room = Math.min(window.innerWidth - 40, 640);
  QR.draw(canvas, code, Math.max(4, Math.floor(room / (code.size + 8))));
  canvas.dataset.codeTime = String(codeTime);
  const shown = new Date(codeTime * 1000).toLocaleTimeString();
  el("code-info").textContent = `${describe(wallet.ticket.bytes)} - code of ${shown}`;
}

async function useTicket(text, store) {
  const part = staticPart(text, wallet.device);
  if (part.error) {
    say(part.error, true);
    return false;
  }
  if (store) await dbPut(wallet.db, "ticket", part.text);
  wallet.ticket = part;
  el("code-panel").hidden = false;
  clearInterval(wallet.timer);
  await showCode();
  wallet.timer = setInterval(() => {
    showCode().catch((err) => say(`Could not make a code: ${err.message}`, true));
  }, refreshSeconds() * 1000);
  return true;
}

function zonesOf(text) {
  const t = text.trim();
  if (t === "") return undefined;
  return t.split(/[\s,]+/).map(Number);
}

async function requestTicket(event) {
  event.preventDefault();
  const token = el("issue-token").value.trim();
  const eventNo = Number(el("issue-event").value.trim());
  if (!token) return say("Enter the issuing token.", true);
  if (!Number.isInteger(eventNo) || eventNo < 0) return say("The event is a number.", true);
  const body = { device_key: base64url(wallet.device.raw), event: eventNo };
  const zones = zonesOf(el("issue-zones").value);
  if (zones !== undefined) body.zones = zones;
  say("Asking for a ticket...");
  let reply;
  try {
    reply = await fetch("/v1/wallet/tickets", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
  } catch {
    return say("The issuer cannot be reached: try again when online.", true);
  }
  const answer = await reply.json().catch(() => ({}));
  if (reply.status === 404) return say("This server issues no tickets: paste one below.", true);
  if (!reply.ok || typeof answer.ticket !== "string") {
    return say(`Refused: ${answer.message || reply.status}`, true);
  }
  if (await useTicket(answer.ticket, true)) say("Ticket stored on this device: it works offline.");
}

async function pasteTicket(event) {
  event.preventDefault();
  if (await useTicket(el("paste-text").value, true)) {
    el("paste-text").value = "";
    say("Ticket stored on this device: it works offline.");
  }
}

async function start() {
  if (!window.isSecureContext || !crypto.subtle || !window.indexedDB) {
    say("This page needs a secure context (https or localhost) with WebCrypto and IndexedDB.", true);
    return;
  }
  wallet.db = await openDb();
  wallet.device = await deviceKeys(wallet.db);
  el("key-status").textContent = "This device has its key (it never leaves the browser).";
  el("public-pem").textContent = wallet.device.pem;
  const blob = new Blob([wallet.device.pem], { type: "application/x-pem-file" });
  el("pem-download").href = URL.createObjectURL(blob);
  el("issue-form").addEventListener("submit", (e) => requestTicket(e));
  el("paste-form").addEventListener("submit", (e) => pasteTicket(e));
  const stored = await dbGet(wallet.db, "ticket");
  if (typeof stored === "string") await useTicket(stored, false);
  document.body.dataset.ready = "1";
}

start().catch((err) => say(`The wallet could not start: ${err.message}`, true));
