/**
 * Retention policy: which points of each disk to keep, as a pure function of the
 * points, a policy and the current time (no repository access; `forget.ts` applies
 * the decision).
 *
 * Terms:
 * - group: the points of one (vm, disk), ordered newest first (time, then id);
 * - keep rule: `keepLast` (the N newest), a bucket rule (`keepHourly` ... `keepYearly`:
 *   the newest point of each of the N newest distinct UTC hours / days / ISO weeks /
 *   months / years that hold points), or `keepWithin` (every point newer than
 *   `now - keepWithin`);
 * - reason: why a point is kept, one per rule that keeps it ("last", "daily 2026-11-20",
 *   "within 30d").
 *
 * A point is kept when any rule keeps it. Two safety rules on top of restic's semantics:
 * an empty policy is refused (USAGE), and the newest point of every group is always kept
 * (reason "newest" when no rule chose it): it is the base of the disk's next
 * incremental, and a policy of only `keepWithin` must not empty a disk that has not been
 * backed up lately. A point whose time does not parse is kept ("unparseable time").
 */
import { ChunkvaultError } from './errors.js';

/** What the policy needs of a point; any richer record (a PointRecord) passes through. */
export interface RetentionPoint {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  /** ISO-8601 time. */
  readonly time: string;
}

/** Counts are positive integers; `keepWithin` is a positive duration in milliseconds. */
export interface RetentionPolicy {
  readonly keepLast?: number;
  readonly keepHourly?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
  readonly keepYearly?: number;
  readonly keepWithin?: number;
}

export interface KeptPoint<P extends RetentionPoint> {
  readonly point: P;
  /** Every reason the point is kept, in rule order; never empty. */
  readonly reasons: readonly string[];
}

/** The decision for one (vm, disk): `keep` and `remove`, both newest first. */
export interface RetentionGroup<P extends RetentionPoint> {
  readonly vm: string;
  readonly disk: string;
  readonly keep: readonly KeptPoint<P>[];
  readonly remove: readonly P[];
}

type BucketRule = 'keepHourly' | 'keepDaily' | 'keepWeekly' | 'keepMonthly' | 'keepYearly';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

/** ISO-8601 week of a UTC time, as "2026-W47" (the week belongs to the year of its Thursday). */
export function isoWeek(ms: number): string {
  const day = Math.floor(ms / DAY_MS);
  const weekday = (new Date(day * DAY_MS).getUTCDay() + 6) % 7; // Monday = 0
  const thursday = new Date((day - weekday + 3) * DAY_MS);
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * DAY_MS));
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** Bucket rules in reason order, each with its label and bucket key (UTC). */
const BUCKETS: readonly { rule: BucketRule; label: string; key: (ms: number) => string }[] = [
  { rule: 'keepHourly', label: 'hourly', key: (ms) => new Date(ms).toISOString().slice(0, 13) },
  { rule: 'keepDaily', label: 'daily', key: (ms) => new Date(ms).toISOString().slice(0, 10) },
  { rule: 'keepWeekly', label: 'weekly', key: isoWeek },
  { rule: 'keepMonthly', label: 'monthly', key: (ms) => new Date(ms).toISOString().slice(0, 7) },
  { rule: 'keepYearly', label: 'yearly', key: (ms) => String(new Date(ms).getUTCFullYear()) },
];

const COUNT_RULES = ['keepLast', ...BUCKETS.map((b) => b.rule)] as const;

/**
 * Checks a policy: every count a positive integer, `keepWithin` a positive duration,
 * and at least one rule (an empty policy would forget everything: USAGE).
 */
export function validatePolicy(policy: RetentionPolicy): void {
  for (const rule of COUNT_RULES) {
    const n = policy[rule];
    if (n !== undefined && !(Number.isSafeInteger(n) && n > 0)) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `${rule} must be a positive integer, not ${n}`, { details: { rule, value: String(n) } });
    }
  }
  const within = policy.keepWithin;
  if (within !== undefined && !(Number.isFinite(within) && within > 0)) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `keepWithin must be a positive duration, not ${within}`, { details: { rule: 'keepWithin', value: String(within) } });
  }
  if (COUNT_RULES.every((r) => policy[r] === undefined) && within === undefined) {
    throw new ChunkvaultError('USAGE', 'no keep rule given: refusing to forget every point (give a --keep-* rule or point ids)');
  }
}

/** Newest first: by time, then by id (the catalog's order, reversed). */
function newestFirst(a: RetentionPoint, b: RetentionPoint): number {
  return a.time > b.time ? -1 : a.time < b.time ? 1 : a.id > b.id ? -1 : a.id < b.id ? 1 : 0;
}

/** The reasons each point of one group (newest first) is kept; index-aligned with `group`. */
function groupReasons(group: readonly RetentionPoint[], policy: RetentionPolicy, now: number): string[][] {
  const reasons = group.map((): string[] => []);
  const times = group.map((p) => Date.parse(p.time));
  group.forEach((_p, i) => {
    if (Number.isNaN(times[i])) reasons[i]!.push('unparseable time');
  });
  const valid = group.map((_p, i) => i).filter((i) => !Number.isNaN(times[i]));
  if (policy.keepLast !== undefined) for (const i of valid.slice(0, policy.keepLast)) reasons[i]!.push('last');
  for (const { rule, label, key } of BUCKETS) {
    let left = policy[rule] ?? 0;
    let previous: string | undefined;
    for (const i of valid) {
      if (left === 0) break;
      const bucket = key(times[i]!);
      if (bucket === previous) continue;
      // Newest first, so the first point met in a bucket is that bucket's newest.
      reasons[i]!.push(`${label} ${bucket}`);
      previous = bucket;
      left--;
    }
  }
  if (policy.keepWithin !== undefined) {
    const label = `within ${formatDuration(policy.keepWithin)}`;
    for (const i of valid) if (times[i]! > now - policy.keepWithin) reasons[i]!.push(label);
  }
  if (group.length > 0 && reasons[0]!.length === 0) reasons[0]!.push('newest');
  return reasons;
}

/**
 * Applies `policy` to `points` per (vm, disk) at time `now`. Returns one group per
 * (vm, disk), sorted by vm then disk; every input point lands in exactly one `keep` or
 * `remove` list. Throws USAGE / INVALID_ARGUMENT for a bad policy (validatePolicy).
 */
export function applyRetention<P extends RetentionPoint>(points: readonly P[], policy: RetentionPolicy, now: Date | number): RetentionGroup<P>[] {
  validatePolicy(policy);
  const nowMs = typeof now === 'number' ? now : now.getTime();
  const groups = new Map<string, P[]>();
  for (const p of points) {
    const k = JSON.stringify([p.vm, p.disk]);
    const list = groups.get(k);
    if (list) list.push(p);
    else groups.set(k, [p]);
  }
  const keys = [...groups.keys()].sort();
  return keys.map((k) => {
    const group = groups.get(k)!.sort(newestFirst);
    const reasons = groupReasons(group, policy, nowMs);
    const keep: KeptPoint<P>[] = [];
    const remove: P[] = [];
    group.forEach((point, i) => {
      const r = reasons[i]!;
      if (r.length > 0) keep.push({ point, reasons: r });
      else remove.push(point);
    });
    return { vm: group[0]!.vm, disk: group[0]!.disk, keep, remove };
  });
}

/** Unit lengths of durations. Months and years are fixed lengths (30 and 365 days), not calendar steps. */
const UNIT_MS: Readonly<Record<string, number>> = { y: 365 * DAY_MS, m: 30 * DAY_MS, w: 7 * DAY_MS, d: DAY_MS, h: HOUR_MS };

/**
 * Parses a duration such as `30d`, `12h`, `2w`, `6m` (months), `1y` or a combination
 * (`1y6m`, `2d12h`; each unit at most once) into milliseconds. A month counts 30 days and
 * a year 365. INVALID_ARGUMENT on anything else, and on a zero duration.
 */
export function parseDuration(text: string): number {
  const bad = (why: string) =>
    new ChunkvaultError('INVALID_ARGUMENT', `invalid duration "${text}": ${why} (e.g. 30d, 12h, 2w, 6m, 1y, 1y6m)`, { details: { value: text } });
  if (!/^(\d+[ymwdh])+$/.test(text)) throw bad('use a number then a unit y, m, w, d or h');
  let ms = 0;
  const seen = new Set<string>();
  for (const [, digits, unit] of text.matchAll(/(\d+)([ymwdh])/g)) {
    if (seen.has(unit!)) throw bad(`unit ${unit} given twice`);
    seen.add(unit!);
    const n = Number(digits);
    if (!Number.isSafeInteger(n)) throw bad('number too large');
    ms += n * UNIT_MS[unit!]!;
  }
  if (ms === 0) throw bad('it must be longer than zero');
  if (!Number.isSafeInteger(ms)) throw bad('too long');
  return ms;
}

/**
 * A duration in ms as days and hours (`30d`, `545d`, `2d12h`), which parseDuration reads
 * back; months and years are not used ("1m" reads like a minute). Sub-hour rests as `Ns`/`Nms`.
 */
export function formatDuration(ms: number): string {
  let rest = ms;
  let out = '';
  for (const unit of ['d', 'h']) {
    const n = Math.floor(rest / UNIT_MS[unit]!);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * UNIT_MS[unit]!;
  }
  if (rest >= 1000) out += `${Math.floor(rest / 1000)}s`;
  if (rest % 1000 > 0) out += `${rest % 1000}ms`;
  return out || '0s';
}

/**
 * Parses a keep count given on a command line (`--keep-last 7`): a positive decimal
 * integer, else INVALID_ARGUMENT naming `option`.
 */
export function parseKeepCount(option: string, text: string): number {
  const n = /^\d{1,9}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n > 0)) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `${option} needs a positive integer, not "${text}"`, { details: { option, value: text } });
  }
  return n;
}
