/**
 * Deterministic benchmark inputs. Two kinds:
 *
 * - synthetic VM-like data: 4 KiB pages in runs of one class each (text-like,
 *   executable-like, incompressible, zero), from a seeded PRNG, so every run and
 *   every library sees the same bytes;
 * - "real files": regular files from /usr/lib, /usr/share (and /usr/bin), picked in
 *   a seeded order and laid out at 4 KiB alignment like a filesystem would. This is
 *   the most honest stand-in for a guest disk; it depends on the host's files, so
 *   RESULTS.md records the machine.
 */
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const KIB = 1024;
export const MIB = 1024 * KIB;
export const GIB = 1024 * MIB;
const PAGE = 4 * KIB;

/** xorshift128 seeded by splitmix32: fast, deterministic, not cryptographic. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next() | 1;
    this.b = next();
    this.c = next();
    this.d = next();
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const t = this.a ^ (this.a << 11);
    this.a = this.b;
    this.b = this.c;
    this.c = this.d;
    this.d = (this.d ^ (this.d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return this.d;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** Skewed (roughly Zipf-like) integer in [0, n): small values are common. */
  skewed(n: number): number {
    const u = this.u32() / 0x1_0000_0000;
    return Math.min(n - 1, Math.floor(n * u * u * u));
  }

  /** Fills `out` with PRNG bytes (incompressible). */
  fill(out: Uint8Array): void {
    const words = Math.floor(out.length / 4);
    const view = new Uint32Array(out.buffer, out.byteOffset, words);
    for (let i = 0; i < words; i++) view[i] = this.u32();
    for (let i = words * 4; i < out.length; i++) out[i] = this.u32() & 0xff;
  }

  /** Fisher-Yates shuffle in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i] as T;
      items[i] = items[j] as T;
      items[j] = tmp;
    }
    return items;
  }
}

type PageClass = 'text' | 'exec' | 'random' | 'zero';

/** Page-class weights of the synthetic mix (a used, not freshly installed, guest). */
export const SYNTHETIC_MIX: Readonly<Record<PageClass, number>> = { text: 0.3, exec: 0.3, random: 0.2, zero: 0.2 };

const encoder = new TextEncoder();

function makeVocabulary(rng: Rng, size: number): Uint8Array[] {
  const letters = 'etaoinshrdlcumwfgypbvkjxqz_./-';
  const words: Uint8Array[] = [];
  for (let i = 0; i < size; i++) {
    let w = '';
    const len = 2 + rng.skewed(10);
    for (let j = 0; j < len; j++) w += letters[rng.skewed(letters.length)];
    words.push(encoder.encode(w));
  }
  return words;
}

/** Executable-like "instructions": short byte patterns reused with a skewed frequency. */
function makeOpcodes(rng: Rng, size: number): Uint8Array[] {
  const ops: Uint8Array[] = [];
  for (let i = 0; i < size; i++) {
    const op = new Uint8Array(1 + rng.skewed(7));
    rng.fill(op);
    ops.push(op);
  }
  return ops;
}

/** Generator state shared by all pages of one synthetic buffer. */
class PageWriter {
  private readonly words: Uint8Array[];
  private readonly ops: Uint8Array[];
  private readonly digits = encoder.encode('0123456789');

  constructor(private readonly rng: Rng) {
    this.words = makeVocabulary(rng, 4000);
    this.ops = makeOpcodes(rng, 600);
  }

  /** Log/config/source-like text: words, numbers, line breaks. */
  text(out: Uint8Array): void {
    const { rng } = this;
    let i = 0;
    while (i < out.length) {
      const r = rng.int(16);
      if (r === 0) out[i++] = 0x0a;
      else if (r === 1) out[i++] = this.digits[rng.int(10)] as number;
      else {
        const w = this.words[rng.skewed(this.words.length)] as Uint8Array;
        const n = Math.min(w.length, out.length - i);
        out.set(w.subarray(0, n), i);
        i += n;
        if (i < out.length) out[i++] = 0x20;
      }
    }
  }

  /** Code-like bytes: skewed opcode patterns, random 4-byte displacements, pointer tables. */
  exec(out: Uint8Array): void {
    const { rng } = this;
    const pointerTable = rng.int(8) === 0;
    let i = 0;
    while (i < out.length) {
      if (pointerTable && i + 8 <= out.length) {
        // 64-bit user-space pointers: shared high bytes, 8-aligned low bits.
        const low = (0x55a000 + rng.skewed(1 << 20)) << 3;
        out[i] = low & 0xff;
        out[i + 1] = (low >>> 8) & 0xff;
        out[i + 2] = (low >>> 16) & 0xff;
        out[i + 3] = (low >>> 24) & 0xff;
        out.set([0x56, 0x55, 0, 0], i + 4);
        i += 8;
        continue;
      }
      const op = this.ops[rng.skewed(this.ops.length)] as Uint8Array;
      const n = Math.min(op.length, out.length - i);
      out.set(op.subarray(0, n), i);
      i += n;
      if (rng.int(6) === 0 && i + 4 <= out.length) {
        const disp = rng.u32();
        out[i++] = disp & 0xff;
        out[i++] = (disp >>> 8) & 0xff;
        out[i++] = rng.int(4) === 0 ? 0xff : 0;
        out[i++] = out[i - 2] as number;
      }
    }
  }

  page(cls: PageClass, out: Uint8Array): void {
    if (cls === 'text') this.text(out);
    else if (cls === 'exec') this.exec(out);
    else if (cls === 'random') this.rng.fill(out);
    else out.fill(0);
  }
}

/** Freshly written guest data (new files): the mix without free space. */
export const WRITTEN_MIX: Readonly<Record<PageClass, number>> = { text: 0.4, exec: 0.35, random: 0.25, zero: 0 };

function pickClass(rng: Rng, mix: Readonly<Record<PageClass, number>>): PageClass {
  let u = rng.u32() / 0x1_0000_0000;
  for (const cls of Object.keys(mix) as PageClass[]) {
    u -= mix[cls];
    if (u < 0) return cls;
  }
  return 'zero';
}

/**
 * `size` bytes of synthetic VM-like data: runs of 1-64 pages of one class (zero
 * runs occasionally up to 2 MiB, like free space), classes weighted by `mix`.
 */
export function syntheticVmData(size: number, seed: number, mix = SYNTHETIC_MIX): Buffer {
  const rng = new Rng(seed);
  const writer = new PageWriter(rng);
  const out = Buffer.alloc(size);
  let off = 0;
  while (off < size) {
    const cls = pickClass(rng, mix);
    const maxRun = cls === 'zero' && rng.int(4) === 0 ? 512 : 64;
    const run = 1 + rng.skewed(maxRun);
    for (let p = 0; p < run && off < size; p++) {
      const len = Math.min(PAGE, size - off);
      writer.page(cls, out.subarray(off, off + len));
      off += len;
    }
  }
  return out;
}

/** Readable regular files under `roots`, sorted (so the list is reproducible). */
export function listFiles(roots: readonly string[]): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = [];
  const walk = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    entries.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        try {
          const size = statSync(p).size;
          if (size > 0) out.push({ path: p, size });
        } catch {
          // unreadable: skip
        }
      }
    }
  };
  for (const r of roots) walk(r);
  return out;
}

export const REAL_FILE_ROOTS = ['/usr/lib', '/usr/share'] as const;

/**
 * `size` bytes made of host files in a seeded order, each starting on a 4 KiB
 * boundary (tails zero-padded, as in a filesystem) and capped at `maxPerFile` so a
 * few large libraries do not dominate the sample.
 */
export function realFilesData(size: number, seed: number, maxPerFile = 4 * MIB): Buffer {
  const files = new Rng(seed).shuffle(listFiles(REAL_FILE_ROOTS));
  const out = Buffer.alloc(size);
  let off = 0;
  for (const f of files) {
    if (off >= size) break;
    let fd: number;
    try {
      fd = openSync(f.path, 'r');
    } catch {
      continue;
    }
    try {
      const want = Math.min(f.size, maxPerFile, size - off);
      const got = readSync(fd, out, off, want, 0);
      off += Math.ceil(got / PAGE) * PAGE;
    } catch {
      // unreadable: skip
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

/** Splits `data` into `chunkSize` views (no copy); the last may be shorter. */
export function chunksOf(data: Buffer, chunkSize: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunkSize) out.push(data.subarray(off, Math.min(off + chunkSize, data.length)));
  return out;
}

/** True when every byte of `buf` is zero (memcmp against a shared zero buffer). */
export function isZero(buf: Buffer, zeros: Buffer): boolean {
  return buf.length <= zeros.length && buf.equals(zeros.subarray(0, buf.length));
}
