import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type BlockStatusExtent, NbdClient, maxRequestFor, mergeExtents, splitRange } from './client.js';

async function* from(extents: BlockStatusExtent[]): AsyncGenerator<BlockStatusExtent> {
  yield* extents;
}

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

describe('splitRange', () => {
  it('covers the range exactly with pieces that never cross a multiple of max', () => {
    fc.assert(
      fc.property(fc.nat({ max: 1 << 30 }), fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 1, max: 64 }), (offset, max, count) => {
        const length = 1 + ((max * count) >> 1);
        const pieces = splitRange(offset, length, max);
        let at = offset;
        for (const piece of pieces) {
          expect(piece.offset).toBe(at);
          expect(piece.length).toBeGreaterThan(0);
          expect(piece.length).toBeLessThanOrEqual(max);
          expect(Math.floor(piece.offset / max)).toBe(Math.floor((piece.offset + piece.length - 1) / max));
          at += piece.length;
        }
        expect(at).toBe(offset + length);
      }),
    );
  });
});

describe('maxRequestFor', () => {
  it('caps by the server maximum and keeps alignment', () => {
    expect(maxRequestFor({ minimum: 1, preferred: 4096, maximum: 0xffffffff }, 32 << 20)).toBe(32 << 20);
    expect(maxRequestFor({ minimum: 512, preferred: 4096, maximum: 65536 }, 32 << 20)).toBe(65536);
    expect(maxRequestFor({ minimum: 512, preferred: 65536, maximum: 100_000 }, 32 << 20)).toBe(65536);
    expect(maxRequestFor({ minimum: 512, preferred: 4096, maximum: 1 << 20 }, 1000)).toBe(512);
    expect(maxRequestFor({ minimum: 1, preferred: 4096, maximum: 3000 }, 1 << 20)).toBe(3000);
  });
});

describe('mergeExtents', () => {
  it('merges adjacent kept extents and splits at dropped ones', async () => {
    const merged = await collect(
      mergeExtents(
        from([
          { offset: 0, length: 10, flags: 0 },
          { offset: 10, length: 5, flags: 0 },
          { offset: 15, length: 5, flags: 3 },
          { offset: 20, length: 5, flags: 0 },
          { offset: 25, length: 1, flags: 2 },
          { offset: 26, length: 4, flags: 0 },
        ]),
        (flags) => (flags & 3) === 0,
      ),
    );
    expect(merged).toEqual([
      { offset: 0, length: 15 },
      { offset: 20, length: 5 },
      { offset: 26, length: 4 },
    ]);
  });

  it('keeps the total length of kept extents', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.record({ length: fc.integer({ min: 1, max: 100 }), flags: fc.integer({ min: 0, max: 3 }) })), async (items) => {
        let at = 0;
        const extents = items.map(({ length, flags }) => {
          const extent = { offset: at, length, flags };
          at += length;
          return extent;
        });
        const merged = await collect(mergeExtents(from(extents), (flags) => flags === 0));
        const total = (list: Array<{ length: number }>): number => list.reduce((sum, e) => sum + e.length, 0);
        expect(total(merged)).toBe(total(extents.filter((e) => e.flags === 0)));
        for (let i = 1; i < merged.length; i++) {
          const previous = merged[i - 1] as { offset: number; length: number };
          expect((merged[i] as { offset: number }).offset).toBeGreaterThan(previous.offset + previous.length);
        }
      }),
    );
  });
});

describe('NbdClient.connect', () => {
  it.each([
    [{ uri: 'nbd://h/x', connections: 0 }],
    [{ uri: 'nbd://h/x', maxInFlight: 1.5 }],
    [{ uri: 'nbd://h/x', retries: -1 }],
    [{ uri: 'ftp://h/x' }],
  ])('rejects bad options with INVALID_ARGUMENT: %j', async (options) => {
    await expect(NbdClient.connect(options)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
