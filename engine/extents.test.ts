import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { extentsToSlots, normalizeExtents, parseExtentsJson, unionSlots, validateExtents } from './extents.js';
import { isChunkvaultError } from './errors.js';

const extent = fc.record({ offset: fc.integer({ min: 0, max: 1 << 24 }), length: fc.integer({ min: 0, max: 1 << 20 }) });

const small = fc.record({ offset: fc.integer({ min: 0, max: 2000 }), length: fc.integer({ min: 0, max: 300 }) });

function covered(extents: { offset: number; length: number }[]): Set<number> {
  const s = new Set<number>();
  for (const e of extents) for (let i = e.offset; i < e.offset + e.length; i++) s.add(i);
  return s;
}

describe('extent normalisation', () => {
  it('sorts, merges and keeps exactly the covered bytes', () => {
    fc.assert(
      fc.property(fc.array(small, { maxLength: 40 }), (scaled) => {
        const n = normalizeExtents(scaled);
        for (let i = 1; i < n.length; i++) expect(n[i]!.offset).toBeGreaterThan(n[i - 1]!.offset + n[i - 1]!.length);
        expect(n.every((e) => e.length > 0)).toBe(true);
        expect(covered(n)).toEqual(covered(scaled));
      }),
    );
  });

  it('aligns outward to slots, clipped to the disk', () => {
    fc.assert(
      fc.property(fc.array(extent, { maxLength: 40 }), fc.constantFrom(65536, 1 << 20), (list, chunk) => {
        const slotCount = Math.ceil(((1 << 24) + (1 << 20)) / chunk);
        const ranges = extentsToSlots(list, chunk, slotCount);
        for (const e of list.filter((x) => x.length > 0)) {
          const first = Math.floor(e.offset / chunk);
          const last = Math.floor((e.offset + e.length - 1) / chunk);
          expect(ranges.some((r) => r.first <= first && r.end > Math.min(last, slotCount - 1))).toBe(true);
        }
        for (let i = 1; i < ranges.length; i++) expect(ranges[i]!.first).toBeGreaterThan(ranges[i - 1]!.end);
        expect(unionSlots(ranges, ranges)).toEqual(ranges);
      }),
    );
  });

  it('accepts overlapping and unsorted extents', () => {
    expect(validateExtents([{ offset: 100, length: 10 }, { offset: 0, length: 200 }], 1000)).toHaveLength(2);
    expect(normalizeExtents([{ offset: 100, length: 10 }, { offset: 0, length: 200 }])).toEqual([{ offset: 0, length: 200 }]);
  });

  it.each([
    ['{', 'not JSON'],
    ['{"offset":0}', 'not an array'],
    ['[{"offset":-1,"length":1}]', 'negative'],
    ['[{"offset":"0","length":1}]', 'non-numeric'],
    ['[{"offset":0.5,"length":1}]', 'fractional'],
    ['[{"offset":900,"length":200}]', 'beyond the end'],
    ['[null]', 'null item'],
    ['[{"offset":0}]', 'missing length'],
  ])('rejects %s (%s) with EXTENTS_INVALID', (text) => {
    try {
      parseExtentsJson(text, 1000);
      throw new Error('accepted');
    } catch (err) {
      expect(isChunkvaultError(err, 'EXTENTS_INVALID')).toBe(true);
    }
  });
});
