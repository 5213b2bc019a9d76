import { describe, expect, it } from 'vitest';
import { CdcCutter, cdcParams } from './cdc.js';
import { estimateTotal } from './sampling.js';

const P = cdcParams(64 * 1024); // min 16K, avg 64K, max 256K

function cands(list: [number, 0 | 1][]) {
  return { positions: Uint32Array.from(list.map((c) => c[0])), strict: Uint8Array.from(list.map((c) => c[1])) };
}

function pairs(r: Uint32Array): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < r.length; i += 2) out.push([r[i]!, r[i + 1]!]);
  return out;
}

describe('CdcCutter', () => {
  it('uses strict candidates below the average, loose ones above, and never cuts below min', () => {
    const c = new CdcCutter(P);
    // 1000: below min (ignored); 20000 loose below avg (ignored); 30000 strict (cut);
    // then from 30000: 40000 below min; 70000 loose below avg (30000+64K=95536); 100000 loose above avg (cut).
    const u = c.push(new Uint8Array(400_000), cands([[1000, 1], [20000, 0], [30000, 1], [40000, 1], [70000, 0], [100000, 0]]));
    expect(pairs(u.ranges).slice(0, 2)).toEqual([[0, 30000], [30000, 70000]]);
    // No more candidates: cut at max while enough bytes are known.
    expect(pairs(u.ranges)[2]).toEqual([100000, 262144]);
    const f = c.finish();
    expect(pairs(f.ranges)).toEqual([[0, 400_000 - 362144]]);
  });

  it('keeps an undecided tail across pushes and ends it with finish', () => {
    const c = new CdcCutter(P);
    expect(pairs(c.push(new Uint8Array(100_000), cands([])).ranges)).toEqual([]);
    const u = c.push(new Uint8Array(100_000), cands([[50_000, 0]]));
    expect(pairs(u.ranges)).toEqual([[0, 150_000]]);
    expect(pairs(c.finish().ranges)).toEqual([[0, 50_000]]);
  });

  it('rejects average sizes that are not powers of two', () => {
    expect(() => cdcParams(100_000)).toThrow(/power of two/);
  });
});

describe('estimateTotal', () => {
  it('scales a ratio and narrows to a point when everything was read', () => {
    expect(estimateTotal([1, 3], [4, 4], 8, 2)).toEqual({ estimate: 4, low: 4, high: 4 });
    const iv = estimateTotal([1, 3, 2], [4, 4, 4], 40, 10);
    expect(iv.estimate).toBeCloseTo(20, 10);
    expect(iv.low).toBeLessThan(20);
    expect(iv.high).toBeGreaterThan(20);
  });
});
