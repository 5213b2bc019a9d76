import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { allocArenaBlock, copyBytes, freeArenaBlock } from './shared-arena.js';

const KIB = 1024;

describe('shared arena', () => {
  it('hands out zeroed, page-aligned shared blocks that do not overlap', () => {
    const a = allocArenaBlock(300 * KIB);
    const b = allocArenaBlock(64 * KIB);
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.byteLength).toBe(300 * KIB);
    expect(a.byteOffset % 4096).toBe(0);
    expect(b.byteOffset % 4096).toBe(0);
    expect(a.every((x) => x === 0)).toBe(true);
    a.fill(0xaa);
    expect(b.every((x) => x === 0)).toBe(true);
    const aEnd = a.byteOffset + a.byteLength;
    expect(b.byteOffset >= aEnd || b.byteOffset + b.byteLength <= a.byteOffset).toBe(true);
    freeArenaBlock(a);
    freeArenaBlock(b);
  });

  it('reuses a freed block of the same size, zeroed again', () => {
    const a = allocArenaBlock(128 * KIB);
    a.fill(0x5c);
    const offset = a.byteOffset;
    freeArenaBlock(a);
    const again = allocArenaBlock(128 * KIB);
    expect(again.byteOffset).toBe(offset);
    expect(again.every((x) => x === 0)).toBe(true);
    freeArenaBlock(again);
  });

  it('copies exactly between arena blocks at any offsets and lengths (memory.copy)', () => {
    const src = allocArenaBlock(1024 * KIB);
    const dst = allocArenaBlock(1024 * KIB);
    src.set(randomBytes(src.byteLength));
    for (const [from, at, n] of [[0, 0, 1024 * KIB], [17, 3, 300_001], [4095, 8191, 256], [1, 0, 255], [999_000, 1000, 48_576]] as const) {
      dst.fill(0);
      copyBytes(dst, at, src.subarray(from, from + n));
      expect(Buffer.from(dst.subarray(at, at + n)).equals(Buffer.from(src.subarray(from, from + n)))).toBe(true);
      // Nothing outside the target range is touched.
      expect(dst.subarray(0, at).every((x) => x === 0)).toBe(true);
      expect(dst.subarray(at + n).every((x) => x === 0)).toBe(true);
    }
    // Overlapping ranges within one block behave like memmove.
    const expected = Buffer.from(src.subarray(0, 500_000));
    copyBytes(src, 1234, src.subarray(0, 500_000));
    expect(Buffer.from(src.subarray(1234, 501_234)).equals(expected)).toBe(true);
    freeArenaBlock(src);
    freeArenaBlock(dst);
  });

  it('falls back to a plain copy for memory outside the arena', () => {
    const arenaBlock = allocArenaBlock(64 * KIB);
    const plain = new Uint8Array(randomBytes(64 * KIB));
    const shared = new Uint8Array(new SharedArrayBuffer(64 * KIB));
    copyBytes(arenaBlock, 10, plain.subarray(0, 1000));
    expect(Buffer.from(arenaBlock.subarray(10, 1010)).equals(Buffer.from(plain.subarray(0, 1000)))).toBe(true);
    copyBytes(shared, 0, arenaBlock.subarray(10, 1010));
    expect(Buffer.from(shared.subarray(0, 1000)).equals(Buffer.from(plain.subarray(0, 1000)))).toBe(true);
    freeArenaBlock(shared); // not arena memory: ignored
    freeArenaBlock(arenaBlock);
  });

  it('refuses a double free and a free of part of a block (INTERNAL), so no block is handed out twice', () => {
    const a = allocArenaBlock(64 * KIB);
    expect(() => freeArenaBlock(a.subarray(4096))).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
    freeArenaBlock(a);
    expect(() => freeArenaBlock(a)).toThrow(expect.objectContaining({ code: 'INTERNAL' }));
    const b = allocArenaBlock(64 * KIB);
    const c = allocArenaBlock(64 * KIB);
    expect(b.byteOffset).not.toBe(c.byteOffset);
    freeArenaBlock(b);
    freeArenaBlock(c);
  });

  it('refuses a copy that does not fit instead of writing past the view', () => {
    const a = allocArenaBlock(64 * KIB);
    const b = allocArenaBlock(64 * KIB);
    expect(() => copyBytes(a.subarray(0, 1000), 500, b.subarray(0, 600))).toThrow(RangeError);
    expect(() => copyBytes(a, -1, b.subarray(0, 10))).toThrow(RangeError);
    freeArenaBlock(a);
    freeArenaBlock(b);
  });
});
