// bench/twin/common.mjs — what the two threads of bench/twin share: the
// latency histogram, the monotonic clock, /proc readers and a flat-JSON
// field reader.
//
// Clock: process.hrtime.bigint() is CLOCK_MONOTONIC, the same in every
// thread and process of the machine, so a window set by one thread is
// comparable with stamps taken in another.
import fs from 'node:fs';

export const nowNs = () => Number(process.hrtime.bigint());
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const log = (...a) => process.stderr.write(`${a.join(' ')}\n`);

// Latency histogram: 1 µs buckets below 100 ms, 100 µs buckets from there
// to 100.1 s (a command waits up to 10 s), one overflow bucket; the maximum
// is exact.  Fixed size (4.4 MB): adding never allocates.
export class Hist {
  constructor() {
    this.fine = new Uint32Array(100_000);
    this.coarse = new Uint32Array(1_000_001);
    this.n = 0;
    this.max = 0;
  }

  add(ns) {
    const us = Math.floor(ns / 1000);
    if (us < 100_000) this.fine[us < 0 ? 0 : us]++;
    else this.coarse[Math.min(1_000_000, Math.floor((us - 100_000) / 100))]++;
    this.n++;
    if (ns > this.max) this.max = ns;
  }

  // The value (µs) at quantile q: the upper edge of its bucket, at most the maximum.
  q(q) {
    if (this.n === 0) return null;
    const want = Math.max(1, Math.ceil(q * this.n));
    const maxUs = this.max / 1000;
    let c = 0;
    for (let i = 0; i < this.fine.length; i++) {
      c += this.fine[i];
      if (c >= want) return Math.min(i + 1, maxUs);
    }
    for (let i = 0; i < this.coarse.length; i++) {
      c += this.coarse[i];
      if (c >= want) return Math.min(100_000 + (i + 1) * 100, maxUs);
    }
    return maxUs;
  }

  summary() {
    return { n: this.n, p50: this.q(0.5), p90: this.q(0.9), p99: this.q(0.99), max: this.n ? this.max / 1000 : null };
  }
}

// Index of the value of "name" in flat JSON text s, or -1.  Used on the
// answers whose shape the bench knows (one occurrence of the name).
function field(s, name) {
  let i = s.indexOf(`"${name}"`);
  if (i < 0) return -1;
  i += name.length + 2;
  while (s.charCodeAt(i) === 32) i++;
  if (s.charCodeAt(i) !== 58) return -1; // ':'
  i++;
  while (s.charCodeAt(i) === 32) i++;
  return i;
}

export function strField(s, name) {
  const i = field(s, name);
  if (i < 0 || s.charCodeAt(i) !== 34) return null;
  const j = s.indexOf('"', i + 1);
  return j < 0 ? null : s.slice(i + 1, j);
}

export function numField(s, name) {
  const i = field(s, name);
  return i < 0 ? NaN : parseFloat(s.slice(i, i + 32));
}

// -- /proc ----------------------------------------------------------------------

const CLK_TCK = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64 and arm64

// CPU time (ns) of a process from its stat file; null if unreadable.
export function cpuNs(statPath) {
  try {
    const s = fs.readFileSync(statPath, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1e9) / CLK_TCK; // utime, stime
  } catch {
    return null;
  }
}

// Machine-wide CPU time (ns) that was not idle.
export function machineBusyNs() {
  try {
    const f = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return ((total - f[3] - f[4]) * 1e9) / CLK_TCK;
  } catch {
    return null;
  }
}

// CPU time (ns) of the kernel's own threads (children of kthreadd: the
// journal, writeback and block-layer workers an fsync keeps busy).
export function kthreadsNs() {
  let sum = 0;
  try {
    for (const d of fs.readdirSync('/proc')) {
      if (d.charCodeAt(0) < 48 || d.charCodeAt(0) > 57) continue;
      try {
        const s = fs.readFileSync(`/proc/${d}/stat`, 'latin1');
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        if (f[1] === '2') sum += ((Number(f[11]) + Number(f[12])) * 1e9) / CLK_TCK; // ppid kthreadd
      } catch {
        // gone meanwhile
      }
    }
  } catch {
    return null;
  }
  return sum;
}

export function cpuCount() {
  try {
    return (fs.readFileSync('/proc/stat', 'latin1').match(/^cpu\d+ /gm) || [1]).length;
  } catch {
    return 1;
  }
}

// Wait up to `seconds` for the machine to be under 10 % busy over a second;
// the last busy percentage seen (of all CPUs).
export async function waitQuiet(seconds) {
  const deadline = Date.now() + seconds * 1000;
  const cpus = cpuCount();
  let busy = null;
  do {
    const a = machineBusyNs();
    await sleep(1000);
    const b = machineBusyNs();
    if (a === null || b === null) return null;
    busy = (100 * (b - a)) / 1e9 / cpus;
    if (busy <= 10) break;
  } while (Date.now() < deadline);
  return busy;
}
