/**
 * The dedup-analysis data model behind `chunkvault report` and `stats --json`: time
 * series and rankings derived from the per-point figures of `repoStats` (logical,
 * zero, exclusive and added bytes) and from the point records' own stats (rawNew,
 * chunksNew). Pure: the same inputs always give the same figures.
 *
 * Terms. Points are taken oldest first (time, then id, the catalog order). "Added"
 * bytes of a point are `stats.bytesNew`: what its backup wrote to containers, record
 * headers included. "Added payload" is that minus one record header per new chunk
 * (`RECORD_HEADER_BYTES x chunksNew`), the unit `exclusiveBytes` is counted in.
 *
 * Repository timeline: one sample per point p_k, the sums running over p_1..p_k:
 *
 *   logicalBytes[k]     = sum logicalBytes        (every point is a full image)
 *   storedBytes[k]      = sum bytesNew            (the repository's growth)
 *   rawBytes[k]         = sum rawNew              (raw bytes of the chunks added)
 *   dedupRatio[k]       = (sum logicalBytes - sum zeroBytes) / rawBytes[k]
 *   compressionRatio[k] = rawBytes[k] / sum (added payload)
 *
 * A ratio whose denominator is 0 is 0 (shown as "-"). With no point ever deleted and
 * no failed backup leaving chunks that a later one reused, the last samples equal the
 * whole-repository `dedupRatio` and `compressionRatio` of `repoStats`; otherwise those
 * (which count only the chunks points reference now) are the authority.
 *
 * Per (vm, disk): one sample per point of that disk: `logicalBytes[i]` its size,
 * `addedBytes[i]` its bytesNew, `storedBytes[i]` the running sum of bytesNew over the
 * disk's points, `exclusiveBytes[i]` its exclusiveBytes (what deleting it would free).
 *
 * Per VM: one sample per point of the VM: `logicalBytes[k]` = the sum, over the VM's
 * disks, of the size of each disk's latest point at or before p_k (the VM's size then);
 * `storedBytes[k]` = the running sum of bytesNew over the VM's points. Space, from the
 * chunks the VM's points reference now (engine/stats.ts `perVm`):
 *
 *   addedBytes     = sum bytesNew of the VM's points (what its backups stored)
 *   exclusiveBytes = stored bytes of chunks only this VM references (freed with the VM)
 *   sharedBytes    = stored bytes of chunks it references together with other VMs
 *
 * Growth contributors: the points, and the VMs, with the largest added bytes.
 */
import type { PointRecord, RepoStats, VmSpace } from '../../engine/index.js';
import { RECORD_HEADER_BYTES } from '../../engine/constants.js';

/** The repository-wide running sums, one sample per point (see the module comment). */
export interface RepoTimeline {
  readonly times: readonly string[];
  readonly pointIds: readonly string[];
  readonly logicalBytes: readonly number[];
  readonly storedBytes: readonly number[];
  readonly rawBytes: readonly number[];
  readonly dedupRatio: readonly number[];
  readonly compressionRatio: readonly number[];
}

/** One disk of one VM over time (one sample per point of the disk). */
export interface DiskSeries {
  readonly vm: string;
  readonly disk: string;
  readonly times: readonly string[];
  readonly pointIds: readonly string[];
  readonly logicalBytes: readonly number[];
  readonly addedBytes: readonly number[];
  readonly storedBytes: readonly number[];
  readonly exclusiveBytes: readonly number[];
}

/** One VM over time (one sample per point of any of its disks) and its space. */
export interface VmSeries {
  readonly vm: string;
  readonly disks: readonly string[];
  readonly points: number;
  readonly times: readonly string[];
  readonly logicalBytes: readonly number[];
  readonly storedBytes: readonly number[];
  readonly addedBytes: number;
  readonly exclusiveBytes: number;
  readonly sharedBytes: number;
}

/** A point among the largest contributors to growth. */
export interface PointContributor {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  readonly time: string;
  readonly mode: string;
  readonly addedBytes: number;
  /** addedBytes / all bytes added by every point (0 when nothing was added). */
  readonly share: number;
}

/** A VM among the largest contributors to growth. */
export interface VmContributor {
  readonly vm: string;
  readonly points: number;
  readonly addedBytes: number;
  readonly share: number;
}

/** Every figure of the report; `stats --json` carries it as `report`. */
export interface ReportData {
  readonly timeline: RepoTimeline;
  readonly vms: readonly VmSeries[];
  readonly disks: readonly DiskSeries[];
  readonly topPoints: readonly PointContributor[];
  readonly topVms: readonly VmContributor[];
}

export interface ReportOptions {
  /** How many points and VMs the growth rankings keep (default 10). */
  readonly top?: number;
}

/** The per-point facts every series is computed from. */
interface PointFacts {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  readonly time: string;
  readonly mode: string;
  readonly logical: number;
  readonly zero: number;
  readonly exclusive: number;
  readonly added: number;
  readonly raw: number;
  readonly payload: number;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

function byTime(a: PointFacts, b: PointFacts): number {
  return a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * Joins the stats' per-point figures with the point records (by id). A point missing
 * from `records` counts no raw bytes and its whole bytesNew as payload.
 */
function pointFacts(stats: RepoStats, records: readonly PointRecord[]): PointFacts[] {
  const byId = new Map(records.map((r) => [r.id, r]));
  const facts = stats.perPoint.map((p): PointFacts => {
    const r = byId.get(p.id);
    const chunksNew = r?.stats.chunksNew ?? 0;
    return {
      id: p.id,
      vm: p.vm,
      disk: p.disk,
      time: p.time,
      mode: r?.mode ?? 'full',
      logical: p.logicalBytes,
      zero: p.zeroBytes,
      exclusive: p.exclusiveBytes,
      added: p.bytesNew,
      raw: r?.stats.rawNew ?? 0,
      payload: Math.max(0, p.bytesNew - RECORD_HEADER_BYTES * chunksNew),
    };
  });
  return facts.sort(byTime);
}

function timeline(points: readonly PointFacts[]): RepoTimeline {
  let logical = 0;
  let zero = 0;
  let stored = 0;
  let raw = 0;
  let payload = 0;
  const t = { times: [] as string[], pointIds: [] as string[], logicalBytes: [] as number[], storedBytes: [] as number[], rawBytes: [] as number[], dedupRatio: [] as number[], compressionRatio: [] as number[] };
  for (const p of points) {
    logical += p.logical;
    zero += p.zero;
    stored += p.added;
    raw += p.raw;
    payload += p.payload;
    t.times.push(p.time);
    t.pointIds.push(p.id);
    t.logicalBytes.push(logical);
    t.storedBytes.push(stored);
    t.rawBytes.push(raw);
    t.dedupRatio.push(ratio(logical - zero, raw));
    t.compressionRatio.push(ratio(raw, payload));
  }
  return t;
}

function groupBy<K>(points: readonly PointFacts[], key: (p: PointFacts) => K): Map<K, PointFacts[]> {
  const groups = new Map<K, PointFacts[]>();
  for (const p of points) {
    const g = groups.get(key(p));
    if (g) g.push(p);
    else groups.set(key(p), [p]);
  }
  return groups;
}

function runningSum(values: readonly number[]): number[] {
  let s = 0;
  return values.map((v) => (s += v));
}

function diskSeries(points: readonly PointFacts[]): DiskSeries[] {
  const groups = groupBy(points, (p) => `${p.vm}\u0000${p.disk}`);
  return [...groups.values()].map((ps) => ({
    vm: ps[0]!.vm,
    disk: ps[0]!.disk,
    times: ps.map((p) => p.time),
    pointIds: ps.map((p) => p.id),
    logicalBytes: ps.map((p) => p.logical),
    addedBytes: ps.map((p) => p.added),
    storedBytes: runningSum(ps.map((p) => p.added)),
    exclusiveBytes: ps.map((p) => p.exclusive),
  }));
}

function vmSeries(vm: string, ps: readonly PointFacts[], space: VmSpace | undefined): VmSeries {
  const latest = new Map<string, number>();
  const logicalBytes = ps.map((p) => {
    latest.set(p.disk, p.logical);
    return [...latest.values()].reduce((a, b) => a + b, 0);
  });
  const addedBytes = ps.reduce((a, p) => a + p.added, 0);
  return {
    vm,
    disks: [...latest.keys()].sort(),
    points: ps.length,
    times: ps.map((p) => p.time),
    logicalBytes,
    storedBytes: runningSum(ps.map((p) => p.added)),
    addedBytes,
    exclusiveBytes: space?.exclusiveBytes ?? 0,
    sharedBytes: space?.sharedBytes ?? 0,
  };
}

/** Largest first; ties by name (or id) so the order is stable. */
function largest<T extends { addedBytes: number }>(items: T[], name: (t: T) => string, top: number): T[] {
  return items.sort((a, b) => b.addedBytes - a.addedBytes || (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0)).slice(0, top);
}

/**
 * The report's figures from `repoStats` and the point records (see the module comment
 * for how each series is computed). VMs and disks are ordered by their first point
 * (time, then id); `records` may hold points `stats` lacks (they are ignored).
 */
export function buildReport(stats: RepoStats, records: readonly PointRecord[], options: ReportOptions = {}): ReportData {
  const top = options.top ?? 10;
  const points = pointFacts(stats, records);
  const totalAdded = points.reduce((a, p) => a + p.added, 0);
  const space = new Map(stats.perVm.map((v) => [v.vm, v]));
  const vms = [...groupBy(points, (p) => p.vm)].map(([vm, ps]) => vmSeries(vm, ps, space.get(vm)));
  const topPoints = largest(
    points.map((p) => ({ id: p.id, vm: p.vm, disk: p.disk, time: p.time, mode: p.mode, addedBytes: p.added, share: ratio(p.added, totalAdded) })),
    (p) => p.id,
    top,
  );
  const topVms = largest(
    vms.map((v) => ({ vm: v.vm, points: v.points, addedBytes: v.addedBytes, share: ratio(v.addedBytes, totalAdded) })),
    (v) => v.vm,
    top,
  );
  return { timeline: timeline(points), vms, disks: diskSeries(points), topPoints, topVms };
}
