import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isChunkvaultError } from './errors.js';
import { applyRetention, formatDuration, isoWeek, parseDuration, parseKeepCount, validatePolicy, type RetentionPoint, type RetentionPolicy } from './retention.js';

const H = 3_600_000;
const D = 24 * H;
const NOW = Date.parse('2026-11-24T12:00:00.000Z');

function pt(id: string, time: string | number, vm = 'vm', disk = 'd0'): RetentionPoint {
  return { id, vm, disk, time: typeof time === 'number' ? new Date(time).toISOString() : time };
}

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (err) {
    expect(isChunkvaultError(err), String(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    return;
  }
  expect.fail(`expected ${code}`);
}

/** Points of a few (vm, disk) groups spread over about three years before NOW, ids unique. */
const pointsArb = fc
  .array(
    fc.record({ vm: fc.constantFrom('a', 'b'), disk: fc.constantFrom('x', 'y'), ago: fc.integer({ min: 0, max: 3 * 365 * D }) }),
    { maxLength: 60 },
  )
  .map((list) => list.map((p, i) => pt(`p${String(i).padStart(3, '0')}`, NOW - p.ago, p.vm, p.disk)));

const count = fc.option(fc.integer({ min: 1, max: 8 }), { nil: undefined });
const policyArb = fc
  .record({
    keepLast: count,
    keepHourly: count,
    keepDaily: count,
    keepWeekly: count,
    keepMonthly: count,
    keepYearly: count,
    keepWithin: fc.option(fc.integer({ min: 1, max: 400 * D }), { nil: undefined }),
  })
  .map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined)) as RetentionPolicy)
  .filter((p) => Object.keys(p).length > 0);

function groupKey(p: RetentionPoint): string {
  return `${p.vm}/${p.disk}`;
}

describe('applyRetention: examples', () => {
  it('keeps the newest point of each of the last N days, with every reason', () => {
    const points = [
      pt('a1', '2026-11-24T10:00:00.000Z'),
      pt('a2', '2026-11-24T08:00:00.000Z'),
      pt('b1', '2026-11-23T22:00:00.000Z'),
      pt('b2', '2026-11-23T01:00:00.000Z'),
      pt('c1', '2026-11-20T05:00:00.000Z'),
      pt('e1', '2026-10-02T05:00:00.000Z'),
    ];
    const [g] = applyRetention(points, { keepLast: 1, keepDaily: 3, keepMonthly: 2 }, NOW);
    expect(g!.keep.map((k) => [k.point.id, k.reasons])).toEqual([
      ['a1', ['last', 'daily 2026-11-24', 'monthly 2026-11']],
      ['b1', ['daily 2026-11-23']],
      ['c1', ['daily 2026-11-20']],
      ['e1', ['monthly 2026-10']],
    ]);
    expect(g!.remove.map((p) => p.id)).toEqual(['a2', 'b2']);
  });

  it('keeps points within a duration of now, and always the newest of a group', () => {
    const points = [pt('new', NOW - 2 * D), pt('mid', NOW - 10 * D), pt('old', NOW - 40 * D), pt('only', NOW - 90 * D, 'vm', 'd1')];
    const groups = applyRetention(points, { keepWithin: parseDuration('30d') }, NOW);
    expect(groups.map((g) => [g.disk, g.keep.map((k) => [k.point.id, k.reasons]), g.remove.map((p) => p.id)])).toEqual([
      ['d0', [['new', ['within 30d']], ['mid', ['within 30d']]], ['old']],
      ['d1', [['only', ['newest']]], []],
    ]);
  });

  it('buckets by ISO week and by hour, in UTC', () => {
    const points = [pt('sun', '2026-11-22T23:30:00.000Z'), pt('mon', '2026-11-23T00:30:00.000Z'), pt('mon2', '2026-11-23T00:10:00.000Z')];
    const [weekly] = applyRetention(points, { keepWeekly: 2 }, NOW);
    expect(weekly!.keep.map((k) => [k.point.id, k.reasons])).toEqual([
      ['mon', ['weekly 2026-W48']],
      ['sun', ['weekly 2026-W47']],
    ]);
    const [hourly] = applyRetention(points, { keepHourly: 5 }, NOW);
    expect(hourly!.keep.map((k) => k.reasons[0])).toEqual(['hourly 2026-11-23T00', 'hourly 2026-11-22T23']);
    expect(hourly!.remove.map((p) => p.id)).toEqual(['mon2']);
  });

  it('orders by time then id, groups by (vm, disk) sorted, and keeps unparseable times', () => {
    const points = [pt('b', NOW - D, 'z'), pt('a', NOW - D, 'z'), pt('q', 'yesterday', 'a'), pt('r', NOW - 5 * D, 'a')];
    const groups = applyRetention(points, { keepLast: 1 }, NOW);
    expect(groups.map((g) => g.vm)).toEqual(['a', 'z']);
    // An unparseable time sorts as text (after any ISO time) and is kept, outside every rule.
    expect(groups[0]!.keep.map((k) => [k.point.id, k.reasons])).toEqual([['q', ['unparseable time']], ['r', ['last']]]);
    expect(groups[1]!.keep.map((k) => k.point.id)).toEqual(['b']);
    expect(groups[1]!.remove.map((p) => p.id)).toEqual(['a']);
  });

  it('refuses an empty policy (USAGE) and bad counts (INVALID_ARGUMENT)', () => {
    expectCode(() => applyRetention([pt('a', NOW)], {}, NOW), 'USAGE');
    expectCode(() => validatePolicy({}), 'USAGE');
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expectCode(() => validatePolicy({ keepLast: bad }), 'INVALID_ARGUMENT');
      expectCode(() => validatePolicy({ keepDaily: bad }), 'INVALID_ARGUMENT');
    }
    for (const bad of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) expectCode(() => validatePolicy({ keepWithin: bad }), 'INVALID_ARGUMENT');
    expect(applyRetention([], { keepLast: 1 }, NOW)).toEqual([]);
  });
});

describe('isoWeek', () => {
  it('matches ISO-8601 at year boundaries', () => {
    expect(isoWeek(Date.parse('2026-01-01T00:00:00Z'))).toBe('2026-W01'); // a Thursday
    expect(isoWeek(Date.parse('2024-12-30T12:00:00Z'))).toBe('2025-W01'); // Monday of week 1 of 2025
    expect(isoWeek(Date.parse('2021-01-03T23:59:59Z'))).toBe('2020-W53'); // a Sunday
    expect(isoWeek(Date.parse('2021-01-04T00:00:00Z'))).toBe('2021-W01');
    expect(isoWeek(Date.parse('1969-12-31T00:00:00Z'))).toBe('1970-W01');
  });

  it('changes exactly on Monday 00:00 UTC', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 20_000 }), fc.integer({ min: 1, max: D - 1 }), (day, ms) => {
        const t = day * D;
        const monday = new Date(t).getUTCDay() === 1;
        expect(isoWeek(t - ms) !== isoWeek(t)).toBe(monday);
        expect(isoWeek(t + ms)).toBe(isoWeek(t));
      }),
    );
  });
});

describe('applyRetention: properties', () => {
  it('is a partition of the input, every kept point with a reason', () => {
    fc.assert(
      fc.property(pointsArb, policyArb, (points, policy) => {
        const groups = applyRetention(points, policy, NOW);
        const out = groups.flatMap((g) => [...g.keep.map((k) => k.point), ...g.remove]);
        expect(out.map((p) => p.id).sort()).toEqual(points.map((p) => p.id).sort());
        for (const g of groups) {
          for (const k of g.keep) expect(k.reasons.length).toBeGreaterThan(0);
          for (const p of [...g.keep.map((k) => k.point), ...g.remove]) expect([p.vm, p.disk]).toEqual([g.vm, g.disk]);
        }
      }),
    );
  });

  it('keeps the newest point of every group', () => {
    fc.assert(
      fc.property(pointsArb, policyArb, (points, policy) => {
        for (const g of applyRetention(points, policy, NOW)) {
          const all = [...g.keep.map((k) => k.point), ...g.remove];
          const newest = all.reduce((a, b) => (b.time > a.time || (b.time === a.time && b.id > a.id) ? b : a));
          expect(g.keep[0]?.point).toBe(newest);
        }
      }),
    );
  });

  it('keep-last N alone keeps exactly min(N, count) per group: the newest ones', () => {
    fc.assert(
      fc.property(pointsArb, fc.integer({ min: 1, max: 10 }), (points, n) => {
        const groups = applyRetention(points, { keepLast: n }, NOW);
        for (const g of groups) {
          const total = points.filter((p) => groupKey(p) === `${g.vm}/${g.disk}`).length;
          expect(g.keep).toHaveLength(Math.min(n, total));
          const oldestKept = g.keep.at(-1)!.point.time;
          for (const r of g.remove) expect(r.time <= oldestKept).toBe(true);
        }
      }),
    );
  });

  it('a bucket rule alone keeps one point per bucket, in min(N, buckets) buckets', () => {
    fc.assert(
      fc.property(pointsArb, fc.integer({ min: 1, max: 10 }), fc.constantFrom('keepDaily', 'keepWeekly', 'keepMonthly', 'keepYearly'), (points, n, rule) => {
        const key = (t: string) => (rule === 'keepDaily' ? t.slice(0, 10) : rule === 'keepWeekly' ? isoWeek(Date.parse(t)) : rule === 'keepMonthly' ? t.slice(0, 7) : t.slice(0, 4));
        for (const g of applyRetention(points, { [rule]: n }, NOW)) {
          const all = [...g.keep.map((k) => k.point), ...g.remove];
          const buckets = new Set(all.map((p) => key(p.time)));
          expect(g.keep).toHaveLength(Math.min(n, buckets.size));
          expect(new Set(g.keep.map((k) => key(k.point.time))).size).toBe(g.keep.length);
        }
      }),
    );
  });

  it('keep-within keeps exactly the points newer than now - duration (plus the newest)', () => {
    fc.assert(
      fc.property(pointsArb, fc.integer({ min: 1, max: 800 * D }), (points, within) => {
        for (const g of applyRetention(points, { keepWithin: within }, NOW)) {
          for (const k of g.keep) expect(Date.parse(k.point.time) > NOW - within || k.reasons[0] === 'newest').toBe(true);
          for (const r of g.remove) expect(Date.parse(r.time) <= NOW - within).toBe(true);
        }
      }),
    );
  });

  it('is idempotent: the policy applied to what it kept keeps it all (same now)', () => {
    fc.assert(
      fc.property(pointsArb, policyArb, (points, policy) => {
        const kept = applyRetention(points, policy, NOW).flatMap((g) => g.keep.map((k) => k.point));
        const again = applyRetention(kept, policy, NOW);
        expect(again.flatMap((g) => g.remove)).toEqual([]);
        expect(again.flatMap((g) => g.keep.map((k) => k.point.id)).sort()).toEqual(kept.map((p) => p.id).sort());
      }),
    );
  });

  it('does not depend on the order of its input', () => {
    fc.assert(
      fc.property(pointsArb, policyArb, fc.integer(), (points, policy, seed) => {
        const shuffled = [...points].sort((a, b) => ((a.id.charCodeAt(3) * seed) % 7) - ((b.id.charCodeAt(3) * seed) % 7));
        expect(applyRetention(shuffled, policy, NOW)).toEqual(applyRetention(points, policy, NOW));
      }),
    );
  });
});

describe('durations and counts', () => {
  it('parses units and combinations', () => {
    expect(parseDuration('30d')).toBe(30 * D);
    expect(parseDuration('12h')).toBe(12 * H);
    expect(parseDuration('2w')).toBe(14 * D);
    expect(parseDuration('6m')).toBe(180 * D);
    expect(parseDuration('1y')).toBe(365 * D);
    expect(parseDuration('1y6m')).toBe(545 * D);
    expect(parseDuration('2d12h')).toBe(2.5 * D);
    expect(parseDuration('0d1h')).toBe(H);
  });

  it('rejects anything else with INVALID_ARGUMENT', () => {
    for (const bad of ['', 'd', '30', '30 d', '-1d', '1.5d', '1D', '30x', '1d1d', '0d', '0y0m', '1h2', 'P1D', '99999999999999999999y']) {
      expectCode(() => parseDuration(bad), 'INVALID_ARGUMENT');
    }
  });

  it('formats what it parses back to the same duration', () => {
    expect(formatDuration(parseDuration('2w'))).toBe('14d');
    expect(formatDuration(parseDuration('1y6m'))).toBe('545d');
    expect(formatDuration(parseDuration('1m'))).toBe('30d');
    expect(formatDuration(90_061_001)).toBe('1d1h61s1ms');
    fc.assert(
      fc.property(fc.nat(50), fc.nat(11), fc.nat(29), fc.nat(23), (y, m, d, h) => {
        fc.pre(y + m + d + h > 0);
        const text = `${y}y${m}m${d}d${h}h`;
        expect(parseDuration(formatDuration(parseDuration(text)))).toBe(parseDuration(text));
      }),
    );
  });

  it('parses keep counts as positive integers only', () => {
    expect(parseKeepCount('--keep-last', '7')).toBe(7);
    for (const bad of ['0', '-1', '1.5', 'x', '', ' 3', '1e3', '0x10', '9999999999']) expectCode(() => parseKeepCount('--keep-last', bad), 'INVALID_ARGUMENT');
  });
});
