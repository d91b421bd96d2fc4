// A QR code encoder written from ISO/IEC 18004: alphanumeric mode, error correction level M,
// versions 1-40 (the smallest that holds the text), Reed-Solomon over GF(256), the mask with the
// lowest penalty, format and version information. What the wallet page draws its codes with.
//
//   QR.encode(text) -> {version, size, mask, modules}  (modules[row][col]: true = dark)
//   QR.draw(canvas, code, pixelsPerModule)              (a 4-module light quiet zone around it)
//
// Alphanumeric mode only (0-9 A-Z space $ % * + - . / :): the alphabet of Base45, which TK2 uses.
"use strict";

const QR = (() => {
  const ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";
  // Level M, versions 1-40 (ISO/IEC 18004 table 9): EC codewords per block, number of blocks.
  const EC_PER_BLOCK = [
    10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26,
    26, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28,
  ];
  const BLOCKS = [
    1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16,
    17, 17, 18, 20, 21, 23, 25, 26, 28, 29, 31, 33, 35, 37, 38, 40, 43, 45, 47, 49,
  ];
  const LEVEL_M_BITS = 0; // format information: L 01, M 00, Q 11, H 10

  // GF(256) with the primitive polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d).
  const EXP = new Uint8Array(512);
  const LOG = new Uint8Array(256);
  for (let i = 0, x = 1; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    x <<= 1;
    if (x & 0x100) x ^= 0x11d;
  }
  for (let i = 255; i < 512; i++) EXP[i] = EXP[i - 255];
  const mul = (a, b) => (a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]]);

  // The generator polynomial (x - a^0)(x - a^1)...(x - a^(n-1)), highest degree first.
  function generator(n) {
    let poly = [1];
    for (let i = 0; i < n; i++) {
      const next = new Array(poly.length + 1).fill(0);
      for (let j = 0; j < poly.length; j++) {
        next[j] ^= poly[j];
        next[j + 1] ^= mul(poly[j], EXP[i]);
      }
      poly = next;
    }
    return poly;
  }

  // The n error correction codewords of data: the remainder of data(x) * x^n divided by g(x).
  function ecCodewords(data, n) {
    const gen = generator(n);
    const rem = new Array(n).fill(0);
    for (const byte of data) {
      const factor = byte ^ rem[0];
      rem.shift();
      rem.push(0);
      for (let j = 0; j < n; j++) rem[j] ^= mul(gen[j + 1], factor);
    }
    return rem;
  }

  const sizeOf = (version) => 17 + 4 * version;

  function alignmentCenters(version) {
    if (version === 1) return [];
    const count = Math.floor(version / 7) + 2;
    const last = sizeOf(version) - 7;
    let step = version === 32 ? 26 : Math.ceil((last - 6) / (count - 1));
    if (step % 2) step += 1;
    const centers = [6];
    for (let i = count - 2; i >= 0; i--) centers.push(last - i * step);
    return centers;
  }

  // Modules that carry data: all but the function patterns and the reserved areas.
  function dataModuleCount(version) {
    const size = sizeOf(version);
    let n = size * size - 3 * 64 - 2 * (size - 16) - 31; // finders+separators+format, timing
    const centers = alignmentCenters(version).length;
    if (centers) n -= 25 * (centers * centers - 3) - 10 * (centers - 2);
    if (version >= 7) n -= 36;
    return n; // the dark module is one of the 31 (format information and it)
  }

  const totalCodewords = (version) => Math.floor(dataModuleCount(version) / 8);
  const dataCodewords = (version) =>
    totalCodewords(version) - EC_PER_BLOCK[version - 1] * BLOCKS[version - 1];
  const countBits = (version) => (version <= 9 ? 9 : version <= 26 ? 11 : 13);
  const payloadBits = (length) => 11 * Math.floor(length / 2) + 6 * (length % 2);

  function chooseVersion(length) {
    for (let v = 1; v <= 40; v++) {
      if (4 + countBits(v) + payloadBits(length) <= 8 * dataCodewords(v)) return v;
    }
    throw new RangeError(`${length} characters do not fit a QR code at level M`);
  }

  function dataBytes(text, version) {
    const bits = [];
    const put = (value, n) => {
      for (let i = n - 1; i >= 0; i--) bits.push((value >>> i) & 1);
    };
    put(0b0010, 4); // alphanumeric mode
    put(text.length, countBits(version));
    for (let i = 0; i + 1 < text.length; i += 2) {
      put(45 * ALNUM.indexOf(text[i]) + ALNUM.indexOf(text[i + 1]), 11);
    }
    if (text.length % 2) put(ALNUM.indexOf(text[text.length - 1]), 6);
    const capacity = 8 * dataCodewords(version);
    put(0, Math.min(4, capacity - bits.length)); // terminator
    while (bits.length % 8) bits.push(0);
    const bytes = [];
    for (let i = 0; i < bits.length; i += 8) {
      let b = 0;
      for (let j = 0; j < 8; j++) b = (b << 1) | bits[i + j];
      bytes.push(b);
    }
    for (let pad = 0xec; bytes.length < capacity / 8; pad ^= 0xec ^ 0x11) bytes.push(pad);
    return bytes;
  }

  // Split into blocks, add each block's EC codewords, interleave (section 7.6).
  function codewords(data, version) {
    const blocks = BLOCKS[version - 1];
    const ecLen = EC_PER_BLOCK[version - 1];
    const total = totalCodewords(version);
    const longBlocks = total % blocks;
    const shortLen = Math.floor(total / blocks) - ecLen;
    const dataBlocks = [];
    const ecBlocks = [];
    let at = 0;
    for (let b = 0; b < blocks; b++) {
      const len = shortLen + (b >= blocks - longBlocks ? 1 : 0);
      const block = data.slice(at, at + len);
      at += len;
      dataBlocks.push(block);
      ecBlocks.push(ecCodewords(block, ecLen));
    }
    const out = [];
    for (let i = 0; i <= shortLen; i++) {
      for (const block of dataBlocks) if (i < block.length) out.push(block[i]);
    }
    for (let i = 0; i < ecLen; i++) for (const block of ecBlocks) out.push(block[i]);
    return out;
  }

  // BCH remainder of value << (degree of poly) divided by poly.
  function bch(value, poly, polyDegree) {
    let rem = value << polyDegree;
    for (let bit = 31; bit >= polyDegree; bit--) {
      if ((rem >>> bit) & 1) rem ^= poly << (bit - polyDegree);
    }
    return (value << polyDegree) | rem;
  }

  const MASKS = [
    (r, c) => (r + c) % 2 === 0,
    (r) => r % 2 === 0,
    (r, c) => c % 3 === 0,
    (r, c) => (r + c) % 3 === 0,
    (r, c) => (Math.floor(r / 2) + Math.floor(c / 3)) % 2 === 0,
    (r, c) => ((r * c) % 2) + ((r * c) % 3) === 0,
    (r, c) => (((r * c) % 2) + ((r * c) % 3)) % 2 === 0,
    (r, c) => (((r + c) % 2) + ((r * c) % 3)) % 2 === 0,
  ];

  class Grid {
    constructor(version) {
      this.version = version;
      this.size = sizeOf(version);
      this.dark = [];
      this.fixed = [];
      for (let r = 0; r < this.size; r++) {
        this.dark.push(new Array(this.size).fill(false));
        this.fixed.push(new Array(this.size).fill(false));
      }
    }

    set(r, c, dark) {
      this.dark[r][c] = dark;
      this.fixed[r][c] = true;
    }

    functionPatterns() {
      const n = this.size;
      for (const [r0, c0] of [[0, 0], [0, n - 7], [n - 7, 0]]) {
        for (let dr = -1; dr <= 7; dr++) {
          for (let dc = -1; dc <= 7; dc++) {
            const r = r0 + dr;
            const c = c0 + dc;
            if (r < 0 || c < 0 || r >= n || c >= n) continue;
            const ring = Math.max(Math.abs(dr - 3), Math.abs(dc - 3));
            this.set(r, c, ring !== 2 && ring !== 4); // separator (ring 4) light
          }
        }
      }
      for (let i = 8; i < n - 8; i++) {
        this.set(6, i, i % 2 === 0);
        this.set(i, 6, i % 2 === 0);
      }
      const centers = alignmentCenters(this.version);
      for (const r of centers) {
        for (const c of centers) {
          const corner = (r === 6 || r === n - 7) && (c === 6 || c === n - 7);
          if (corner && !(r === n - 7 && c === n - 7)) continue; // where the finders are
          for (let dr = -2; dr <= 2; dr++) {
            for (let dc = -2; dc <= 2; dc++) {
              this.set(r + dr, c + dc, Math.max(Math.abs(dr), Math.abs(dc)) !== 1);
            }
          }
        }
      }
      this.formatBits(0); // reserve; written for real once the mask is chosen
      if (this.version >= 7) {
        const bits = bch(this.version, 0x1f25, 12);
        for (let i = 0; i < 18; i++) {
          const bit = ((bits >>> i) & 1) === 1;
          const a = n - 11 + (i % 3);
          const b = Math.floor(i / 3);
          this.set(b, a, bit); // top right
          this.set(a, b, bit); // bottom left
        }
      }
    }

    formatBits(mask) {
      const n = this.size;
      const bits = bch((LEVEL_M_BITS << 3) | mask, 0x537, 10) ^ 0x5412;
      const bit = (i) => ((bits >>> i) & 1) === 1;
      // Around the top left finder: bits 0-7 down column 8, bits 8-14 leftwards along row 8.
      for (let i = 0; i <= 5; i++) this.set(i, 8, bit(i));
      this.set(7, 8, bit(6));
      this.set(8, 8, bit(7));
      this.set(8, 7, bit(8));
      for (let i = 9; i < 15; i++) this.set(8, 14 - i, bit(i));
      // The copy: bits 0-7 along row 8 from the right edge, bits 8-14 up column 8 at the bottom.
      for (let i = 0; i < 8; i++) this.set(8, n - 1 - i, bit(i));
      for (let i = 8; i < 15; i++) this.set(n - 15 + i, 8, bit(i));
      this.set(n - 8, 8, true); // the dark module
    }

    placeData(bytes) {
      const n = this.size;
      let i = 0;
      const total = bytes.length * 8;
      for (let right = n - 1; right >= 1; right -= 2) {
        if (right === 6) right = 5; // skip the vertical timing pattern
        const upward = ((n - 1 - right) >> 1) % 2 === 0;
        for (let k = 0; k < n; k++) {
          const r = upward ? n - 1 - k : k;
          for (const c of [right, right - 1]) {
            if (this.fixed[r][c]) continue;
            this.dark[r][c] = i < total && ((bytes[i >> 3] >>> (7 - (i & 7))) & 1) === 1;
            i++;
          }
        }
      }
    }

    masked(mask) {
      const out = this.dark.map((row) => row.slice());
      const fn = MASKS[mask];
      for (let r = 0; r < this.size; r++) {
        for (let c = 0; c < this.size; c++) {
          if (!this.fixed[r][c] && fn(r, c)) out[r][c] = !out[r][c];
        }
      }
      return out;
    }
  }

  // Section 7.8.3: N1 = 3, N2 = 3, N3 = 40, N4 = 10.
  function penalty(m) {
    const n = m.length;
    let score = 0;
    const line = (get) => {
      let run = 1;
      for (let i = 1; i <= n; i++) {
        if (i < n && get(i) === get(i - 1)) {
          run++;
        } else {
          if (run >= 5) score += 3 + (run - 5);
          run = 1;
        }
      }
      // 1:1:3:1:1 finder-like with four light modules on one side (outside counts as light).
      const at = (i) => (i < 0 || i >= n ? false : get(i));
      for (let i = 0; i + 6 < n; i++) {
        if (at(i) && !at(i + 1) && at(i + 2) && at(i + 3) && at(i + 4) && !at(i + 5) && at(i + 6)) {
          const before = !at(i - 1) && !at(i - 2) && !at(i - 3) && !at(i - 4);
          const after = !at(i + 7) && !at(i + 8) && !at(i + 9) && !at(i + 10);
          if (before || after) score += 40;
        }
      }
    };
    for (let r = 0; r < n; r++) line((i) => m[r][i]);
    for (let c = 0; c < n; c++) line((i) => m[i][c]);
    let dark = 0;
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        if (m[r][c]) dark++;
        if (r + 1 < n && c + 1 < n) {
          const v = m[r][c];
          if (m[r][c + 1] === v && m[r + 1][c] === v && m[r + 1][c + 1] === v) score += 3;
        }
      }
    }
    score += 10 * Math.floor(Math.abs(dark * 20 - n * n * 10) / (n * n));
    return score;
  }

  function encode(text, forceMask) {
    if (typeof text !== "string" || text.length === 0) {
      throw new TypeError("QR.encode needs a non-empty string");
    }
    for (const ch of text) {
      if (!ALNUM.includes(ch)) throw new RangeError("not in the QR alphanumeric alphabet");
    }
    const version = chooseVersion(text.length);
    const grid = new Grid(version);
    grid.functionPatterns();
    grid.placeData(codewords(dataBytes(text, version), version));
    let best = null;
    for (let mask = 0; mask < 8; mask++) {
      if (forceMask !== undefined && mask !== forceMask) continue;
      grid.formatBits(mask);
      const modules = grid.masked(mask);
      const score = penalty(modules);
      if (best === null || score < best.score) best = { score, mask, modules };
    }
    return { version, size: grid.size, mask: best.mask, modules: best.modules };
  }

  function draw(canvas, code, pixelsPerModule) {
    const quiet = 4;
    const side = (code.size + 2 * quiet) * pixelsPerModule;
    canvas.width = side;
    canvas.height = side;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, side, side);
    ctx.fillStyle = "#000";
    for (let r = 0; r < code.size; r++) {
      for (let c = 0; c < code.size; c++) {
        if (code.modules[r][c]) {
          ctx.fillRect(
            (c + quiet) * pixelsPerModule,
            (r + quiet) * pixelsPerModule,
            pixelsPerModule,
            pixelsPerModule,
          );
        }
      }
    }
  }

  return { encode, draw, ALPHABET: ALNUM };
})();
