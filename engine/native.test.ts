import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { decompressInto } from './codecs.js';
import { CODEC_IDS } from './constants.js';
import { xxh64 } from './hashing.js';
import { PREPARE_HASH, PREPARE_LZ4, adviseHugePages, adviseWillNeed, readSlotsInto, lz4CompressPayload, lz4DecompressBlock, lz4PayloadBound, prepareSlots } from './native.js';
import { SlabPool, type SlabViews } from './_window-slab.js';
import { alignedShared } from './aligned-memory.js';

const CHUNK = 64 * 1024;
const SLOTS = 8;
const pool = new SlabPool(1, SLOTS, CHUNK);
afterAll(() => pool.dispose());

/** Slot contents: zero, text-like, random, a short last chunk, a chunk zero but for its last byte. */
function fill(slab: SlabViews): void {
  const words = Buffer.from('synthetic full restore point of a virtual disk ');
  for (let i = 0; i < SLOTS; i++) {
    const raw = slab.raw.subarray(i * CHUNK, (i + 1) * CHUNK);
    raw.fill(0);
    slab.length[i] = CHUNK;
    if (i === 1 || i === 5) for (let j = 0; j < CHUNK; j++) raw[j] = words[(j * 3 + i) % words.length]!;
    if (i === 2) raw.set(randomBytes(CHUNK));
    if (i === 3) raw[CHUNK - 1] = 1;
    if (i === 4) {
      slab.length[i] = 1000;
      raw.set(randomBytes(1000).fill(7, 0, 900));
    }
  }
}

function slotRaw(slab: SlabViews, i: number): Uint8Array {
  return slab.raw.subarray(i * CHUNK, i * CHUNK + slab.length[i]!);
}

function errorOf(fn: () => unknown): { name: string; code: unknown } | undefined {
  try {
    fn();
  } catch (err) {
    return { name: (err as Error).name, code: (err as { code?: unknown }).code };
  }
  return undefined;
}

describe('native prepareSlots', () => {
  it('gives the same zero flags, SHA-256, XXH64 and decodable payloads as the reference implementations', async () => {
    const slab = await pool.acquire();
    fill(slab);
    const slots = Uint32Array.from({ length: SLOTS }, (_, i) => i);
    prepareSlots(slab, slots, PREPARE_HASH | PREPARE_LZ4, 4);
    for (let i = 0; i < SLOTS; i++) {
      const raw = slotRaw(slab, i);
      const zero = raw.every((b) => b === 0);
      expect(slab.zero[i], `slot ${i}`).toBe(zero ? 1 : 0);
      if (zero) continue;
      expect(Buffer.from(slab.digest.subarray(i * 32, i * 32 + 32))).toEqual(createHash('sha256').update(raw).digest());
      expect(slab.check[i]).toBe(xxh64(raw));
      const payload = slab.out.subarray(i * slab.outStride, i * slab.outStride + slab.payloadLength[i]!);
      expect(slab.payloadHash[i]).toBe(xxh64(payload));
      // Random data is stored raw; text-like data compressed.
      expect(slab.codec[i]).toBe(i === 2 ? CODEC_IDS.none : CODEC_IDS.lz4);
      const back = new Uint8Array(raw.length);
      decompressInto(slab.codec[i] as 0 | 1, payload, back);
      expect(Buffer.compare(back, raw)).toBe(0);
    }
    pool.release(slab);
  });

  it('hashes and compresses in separate passes, touching only the listed slots', async () => {
    const slab = await pool.acquire();
    fill(slab);
    slab.payloadLength.fill(0xdead);
    prepareSlots(slab, Uint32Array.of(1, 2), PREPARE_HASH, 1);
    expect(slab.payloadLength[1]).toBe(0xdead);
    prepareSlots(slab, Uint32Array.of(1), PREPARE_LZ4, 1);
    expect(slab.payloadLength[1]).toBeLessThan(CHUNK / 2);
    expect(slab.payloadLength[2]).toBe(0xdead);
    expect(slab.payloadLength[5]).toBe(0xdead);
    pool.release(slab);
  });

  it('refuses slot indexes, lengths and views that do not fit the slab, before touching memory', async () => {
    const slab = await pool.acquire();
    fill(slab);
    const digestBefore = Buffer.from(slab.digest);
    expect(errorOf(() => prepareSlots(slab, Uint32Array.of(0, SLOTS), PREPARE_HASH, 1))).toEqual({ name: 'RangeError', code: 'INVALID_ARGUMENT' });
    slab.length[3] = CHUNK + 1;
    expect(errorOf(() => prepareSlots(slab, Uint32Array.of(3), PREPARE_HASH, 1))).toEqual({ name: 'RangeError', code: 'INVALID_ARGUMENT' });
    const short = { ...slab, digest: slab.digest.subarray(32) };
    expect(errorOf(() => prepareSlots(short, Uint32Array.of(0), PREPARE_HASH, 1))).toEqual({ name: 'RangeError', code: 'INVALID_ARGUMENT' });
    const smallRaw = { ...slab, raw: slab.raw.subarray(0, CHUNK) };
    expect(errorOf(() => prepareSlots(smallRaw, Uint32Array.of(0), PREPARE_HASH, 1))).toEqual({ name: 'RangeError', code: 'INVALID_ARGUMENT' });
    const wrongType = { ...slab, length: new Int32Array(SLOTS) as unknown as Uint32Array };
    expect(errorOf(() => prepareSlots(wrongType, Uint32Array.of(0), PREPARE_HASH, 1))).toEqual({ name: 'TypeError', code: 'INVALID_ARGUMENT' });
    expect(Buffer.from(slab.digest)).toEqual(digestBefore);
    pool.release(slab);
  });
});

describe('native LZ4', () => {
  const raw = new Uint8Array(CHUNK);
  for (let i = 0; i < CHUNK; i++) raw[i] = (i * 31) % 251 < 120 ? 65 + (i % 7) : (i * 17) & 0xff;

  it('round-trips at every acceleration, and a higher acceleration trades size for speed', () => {
    const sizes: number[] = [];
    for (const accel of [1, 4, 64, 65537]) {
      const out = new Uint8Array(lz4PayloadBound(CHUNK));
      const n = lz4CompressPayload(raw, out, accel);
      expect(n).toBeGreaterThan(4);
      expect(new DataView(out.buffer, 0, 4).getUint32(0, true)).toBe(CHUNK);
      const back = new Uint8Array(CHUNK);
      expect(lz4DecompressBlock(out.subarray(4, n), back)).toBe(CHUNK);
      expect(Buffer.compare(back, raw)).toBe(0);
      sizes.push(n);
    }
    expect(sizes[3]).toBeGreaterThanOrEqual(sizes[0]!);
  });

  it('reports an output too small as 0 and a malformed block as -1', () => {
    expect(lz4CompressPayload(raw, new Uint8Array(100), 1)).toBe(0);
    expect(lz4CompressPayload(raw, new Uint8Array(3), 1)).toBe(0);
    expect(lz4DecompressBlock(Uint8Array.of(0xf0, 1, 2), new Uint8Array(CHUNK))).toBe(-1);
  });
});

describe('adviseHugePages', () => {
  it('advises the whole 2 MiB pages inside a view (Linux), and leaves its bytes as they are', () => {
    const view = alignedShared(8 * 1024 * 1024 + 12345);
    view[0] = 1;
    view[view.length - 1] = 2;
    const advised = adviseHugePages(view);
    if (process.platform === 'linux') expect(advised).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(advised % (2 * 1024 * 1024)).toBe(0);
    expect(view[0]).toBe(1);
    expect(view[view.length - 1]).toBe(2);
    expect(view.subarray(1, view.length - 1).every((b) => b === 0)).toBe(true);
  });

  it('advises nothing for a view smaller than a huge page, and rejects what is not a Uint8Array', () => {
    expect(adviseHugePages(new Uint8Array(4096))).toBe(0);
    expect(errorOf(() => adviseHugePages(new Uint16Array(8) as unknown as Uint8Array))?.name).toBe('TypeError');
  });
});

describe('readSlotsInto', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cv-native-read-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = randomBytes(6 * CHUNK + 100);
  const path = join(dir, 'disk');
  writeFileSync(path, file);

  it('reads each listed slot from its disk offset, adjacent ones and a short last one included', async () => {
    const slab = await pool.acquire();
    const fd = openSync(path, 'r');
    try {
      // Slab positions 0-2 from disk slots 1-3 (one run), 3 from slot 0, 5 from the short slot 6.
      const slots = Uint32Array.of(0, 1, 2, 3, 5);
      const offsets = Float64Array.of(CHUNK, 2 * CHUNK, 3 * CHUNK, 0, 6 * CHUNK);
      for (const p of [0, 1, 2, 3]) slab.length[p] = CHUNK;
      slab.length[5] = 100;
      adviseWillNeed(fd, 0, file.length);
      expect(readSlotsInto(fd, slab, slots, offsets)).toBeUndefined();
      expect(Buffer.from(slab.raw.subarray(0, 3 * CHUNK)).equals(file.subarray(CHUNK, 4 * CHUNK))).toBe(true);
      expect(Buffer.from(slab.raw.subarray(3 * CHUNK, 4 * CHUNK)).equals(file.subarray(0, CHUNK))).toBe(true);
      expect(Buffer.from(slab.raw.subarray(5 * CHUNK, 5 * CHUNK + 100)).equals(file.subarray(6 * CHUNK))).toBe(true);
    } finally {
      closeSync(fd);
      pool.release(slab);
    }
  });

  it('reports where the file ended (errno 0) and a failed read (its errno), and rejects bad arguments', async () => {
    const slab = await pool.acquire();
    const fd = openSync(path, 'r');
    const dirFd = openSync(dir, 'r');
    try {
      slab.length[0] = CHUNK;
      slab.length[1] = CHUNK;
      expect(readSlotsInto(fd, slab, Uint32Array.of(0, 1), Float64Array.of(5 * CHUNK, 6 * CHUNK))).toEqual({ errno: 0, offset: 6 * CHUNK + 100 });
      expect(readSlotsInto(dirFd, slab, Uint32Array.of(0), Float64Array.of(0))).toEqual({ errno: 21, offset: 0 }); // EISDIR
      expect(errorOf(() => readSlotsInto(fd, slab, Uint32Array.of(0, 1), Float64Array.of(0)))?.name).toBe('RangeError');
      expect(errorOf(() => readSlotsInto(fd, slab, Uint32Array.of(SLOTS), Float64Array.of(0)))?.name).toBe('RangeError');
      expect(errorOf(() => readSlotsInto(fd, slab, Uint32Array.of(0), Float64Array.of(-1)))?.name).toBe('RangeError');
    } finally {
      closeSync(fd);
      closeSync(dirFd);
      pool.release(slab);
    }
  });
});
