import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/errors.js';
import type { Extent } from '../../engine/source.js';
import { bitmapToExtents, blocksToBitmap, CBT_BLOCK_SIZE, cbtBlockCount, decodeChangedBlocks } from './bitmap.js';

const B = CBT_BLOCK_SIZE;

/** The straightforward reference: test every block, one 64 KiB extent each, then merge. */
function reference(bitmap: Uint8Array, size: number): Extent[] {
  const out: Extent[] = [];
  for (let i = 0; i * B < size; i++) {
    if (((bitmap[i >> 3] ?? 0) & (0x80 >> (i & 7))) === 0) continue;
    const offset = i * B;
    const length = Math.min(B, size - offset);
    const last = out[out.length - 1];
    if (last && last.offset + last.length === offset) out[out.length - 1] = { offset: last.offset, length: last.length + length };
    else out.push({ offset, length });
  }
  return out;
}

/** A disk size (often not a multiple of 64 KiB) and a bitmap at least long enough, with random padding bits. */
const sizeAndBitmap = fc
  .tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: B - 1 }), fc.integer({ min: 0, max: 3 }))
  .chain(([blocks, extra, spareBytes]) => {
    const size = blocks * B + extra;
    const bytes = Math.ceil(cbtBlockCount(size) / 8) + spareBytes;
    return fc.tuple(fc.constant(size), fc.uint8Array({ minLength: bytes, maxLength: bytes }));
  });

describe('changed-block bitmap decoding', () => {
  it('matches the reference decoder, ignoring bits past the disk end', () => {
    fc.assert(
      fc.property(sizeAndBitmap, ([size, bitmap]) => {
        expect(bitmapToExtents(bitmap, size)).toEqual(reference(bitmap, size));
      }),
      { numRuns: 2000 },
    );
  });

  it('round-trips a block set through base64 (sparse and dense)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 5000 }).chain((n) => fc.tuple(fc.constant(n * 4096 + 17), fc.uniqueArray(fc.nat({ max: Math.ceil((n * 4096 + 17) / B) - 1 })))), ([size, blocks]) => {
        const text = blocksToBitmap(blocks, size).toString('base64');
        const extents = decodeChangedBlocks(text, size);
        const covered = new Set<number>();
        for (const e of extents) for (let o = e.offset; o < e.offset + e.length; o += B) covered.add(o / B);
        expect([...covered].sort((a, b) => a - b)).toEqual([...new Set(blocks)].sort((a, b) => a - b));
        for (let i = 1; i < extents.length; i++) expect(extents[i]!.offset).toBeGreaterThan(extents[i - 1]!.offset + extents[i - 1]!.length);
      }),
    );
  });

  it('reads bits most significant first and clips the last partial block', () => {
    const size = 10 * B + 100; // 11 blocks, the last one 100 bytes
    // 0b10000000 0b00110000: blocks 0, 10 (the partial one) and 11 (past the end: ignored)
    expect(bitmapToExtents(Uint8Array.of(0x80, 0x30), size)).toEqual([
      { offset: 0, length: B },
      { offset: 10 * B, length: 100 },
    ]);
    expect(bitmapToExtents(Uint8Array.of(0xff, 0xff), size)).toEqual([{ offset: 0, length: size }]);
    expect(bitmapToExtents(Uint8Array.of(), 0)).toEqual([]);
  });

  it('refuses a bitmap too short for the disk, and text that is not base64', () => {
    const short = (() => {
      try {
        bitmapToExtents(Uint8Array.of(0xff), 9 * B);
      } catch (err) {
        return err;
      }
      return null;
    })();
    expect(isChunkvaultError(short, 'PROTOCOL_ERROR')).toBe(true);
    expect(() => decodeChangedBlocks('<html>', B)).toThrow(/not base64/);
  });
});
