import { describe, expect, it } from 'vitest';
import type { PointRecord, PointSpace, RepoStats } from '../../engine/index.js';
import { RECORD_HEADER_BYTES } from '../../engine/constants.js';
import { buildReport } from './model.js';

const MiB = 1024 * 1024;

interface Fixture {
  id: string;
  vm: string;
  disk: string;
  time: string;
  logical: number;
  zero: number;
  exclusive: number;
  chunksNew: number;
  rawNew: number;
  /** Payload added; bytesNew = payload + one record header per new chunk. */
  payload: number;
}

function space(f: Fixture): PointSpace {
  return { id: f.id, vm: f.vm, disk: f.disk, time: f.time, logicalBytes: f.logical, zeroBytes: f.zero, uniqueBytes: f.logical - f.zero, exclusiveBytes: f.exclusive, sharedBytes: 0, bytesNew: f.payload + RECORD_HEADER_BYTES * f.chunksNew };
}

function record(f: Fixture): PointRecord {
  return {
    id: f.id,
    vm: f.vm,
    disk: f.disk,
    time: f.time,
    parent: null,
    mode: f.chunksNew > 4 ? 'full' : 'incremental',
    sizeBytes: f.logical,
    chunkSize: MiB,
    slotCount: f.logical / MiB,
    mapDigest: '',
    changeToken: null,
    source: 'test',
    stats: { bytesRead: f.logical, bytesNew: f.payload + RECORD_HEADER_BYTES * f.chunksNew, rawNew: f.rawNew, chunksRead: 0, chunksZero: 0, chunksNew: f.chunksNew, chunksDedup: 0, durationMs: 1 },
  };
}

function stats(fixtures: Fixture[]): RepoStats {
  return {
    points: fixtures.length,
    vms: new Set(fixtures.map((f) => f.vm)).size,
    logicalBytes: 0,
    zeroBytes: 0,
    uniqueChunks: 0,
    uniqueRawBytes: 0,
    storedPayloadBytes: 0,
    storedBytes: 0,
    containers: 0,
    dedupRatio: 0,
    compressionRatio: 0,
    totalRatio: 0,
    perPoint: fixtures.map(space),
    // db is a clone of web/root: it shares what it references and holds nothing alone.
    perVm: [
      { vm: 'web', exclusiveBytes: 3 * MiB, sharedBytes: 3 * MiB },
      { vm: 'db', exclusiveBytes: 0, sharedBytes: 3 * MiB },
    ],
  };
}

// Two VMs: "web" (disks root and data) and "db" (one disk, a clone of web/root: adds nothing at first).
const F: Fixture[] = [
  { id: 'a000000000000001', vm: 'web', disk: 'root', time: '2026-01-01T00:00:00.000Z', logical: 8 * MiB, zero: 2 * MiB, exclusive: 0, chunksNew: 6, rawNew: 6 * MiB, payload: 3 * MiB },
  { id: 'a000000000000002', vm: 'web', disk: 'data', time: '2026-01-01T00:00:01.000Z', logical: 4 * MiB, zero: 0, exclusive: 2 * MiB, chunksNew: 4, rawNew: 4 * MiB, payload: 2 * MiB },
  { id: 'b000000000000001', vm: 'db', disk: 'root', time: '2026-01-02T00:00:00.000Z', logical: 8 * MiB, zero: 2 * MiB, exclusive: 0, chunksNew: 0, rawNew: 0, payload: 0 },
  { id: 'a000000000000003', vm: 'web', disk: 'root', time: '2026-01-03T00:00:00.000Z', logical: 10 * MiB, zero: 2 * MiB, exclusive: MiB, chunksNew: 2, rawNew: 2 * MiB, payload: MiB },
];

describe('buildReport', () => {
  // Records in a different order than the stats: the join is by id.
  const report = buildReport(stats([F[3]!, F[0]!, F[2]!, F[1]!]), [...F].reverse().map(record), { top: 3 });

  it('computes the repository timeline as running sums in time order', () => {
    const t = report.timeline;
    expect(t.pointIds).toEqual(['a000000000000001', 'a000000000000002', 'b000000000000001', 'a000000000000003']);
    expect(t.times).toEqual(F.map((f) => f.time));
    expect(t.logicalBytes).toEqual([8 * MiB, 12 * MiB, 20 * MiB, 30 * MiB]);
    const hdr = RECORD_HEADER_BYTES;
    expect(t.storedBytes).toEqual([3 * MiB + 6 * hdr, 5 * MiB + 10 * hdr, 5 * MiB + 10 * hdr, 6 * MiB + 12 * hdr]);
    expect(t.rawBytes).toEqual([6 * MiB, 10 * MiB, 10 * MiB, 12 * MiB]);
    // (logical - zero) / raw: 6/6, 10/10, 16/10, 24/12
    expect(t.dedupRatio).toEqual([1, 1, 1.6, 2]);
    // raw / payload (record headers left out): 6/3, 10/5, 10/5, 12/6
    expect(t.compressionRatio).toEqual([2, 2, 2, 2]);
  });

  it('builds one series per (vm, disk), ordered by first point', () => {
    expect(report.disks.map((d) => `${d.vm}/${d.disk}`)).toEqual(['web/root', 'web/data', 'db/root']);
    const root = report.disks[0]!;
    expect(root.times).toEqual([F[0]!.time, F[3]!.time]);
    expect(root.logicalBytes).toEqual([8 * MiB, 10 * MiB]);
    expect(root.addedBytes).toEqual([3 * MiB + 6 * RECORD_HEADER_BYTES, MiB + 2 * RECORD_HEADER_BYTES]);
    expect(root.storedBytes).toEqual([3 * MiB + 6 * RECORD_HEADER_BYTES, 4 * MiB + 8 * RECORD_HEADER_BYTES]);
    expect(root.exclusiveBytes).toEqual([0, MiB]);
  });

  it('sums the latest size of each disk for a VM, and takes its exclusive and shared space from the stats', () => {
    const [web, db] = report.vms;
    expect(web).toMatchObject({ vm: 'web', disks: ['data', 'root'], points: 3 });
    expect(web!.times).toEqual([F[0]!.time, F[1]!.time, F[3]!.time]);
    expect(web!.logicalBytes).toEqual([8 * MiB, 12 * MiB, 14 * MiB]);
    expect(web!.storedBytes).toEqual([3 * MiB + 6 * RECORD_HEADER_BYTES, 5 * MiB + 10 * RECORD_HEADER_BYTES, 6 * MiB + 12 * RECORD_HEADER_BYTES]);
    expect(web).toMatchObject({ addedBytes: 6 * MiB + 12 * RECORD_HEADER_BYTES, exclusiveBytes: 3 * MiB, sharedBytes: 3 * MiB });
    expect(db).toMatchObject({ vm: 'db', disks: ['root'], points: 1, logicalBytes: [8 * MiB], storedBytes: [0], addedBytes: 0, exclusiveBytes: 0, sharedBytes: 3 * MiB });
  });

  it('ranks the largest contributors to growth, keeping the top N', () => {
    const total = 6 * MiB + 12 * RECORD_HEADER_BYTES;
    expect(report.topPoints.map((p) => p.id)).toEqual(['a000000000000001', 'a000000000000002', 'a000000000000003']);
    expect(report.topPoints[0]).toMatchObject({ vm: 'web', disk: 'root', mode: 'full', addedBytes: 3 * MiB + 6 * RECORD_HEADER_BYTES, share: (3 * MiB + 6 * RECORD_HEADER_BYTES) / total });
    expect(report.topVms).toEqual([
      { vm: 'web', points: 3, addedBytes: total, share: 1 },
      { vm: 'db', points: 1, addedBytes: 0, share: 0 },
    ]);
  });

  it('gives empty series for an empty repository and zero ratios for zero denominators', () => {
    const empty = buildReport(stats([]), []);
    expect(empty).toEqual({
      timeline: { times: [], pointIds: [], logicalBytes: [], storedBytes: [], rawBytes: [], dedupRatio: [], compressionRatio: [] },
      vms: [],
      disks: [],
      topPoints: [],
      topVms: [],
    });
    const zeros = buildReport(stats([{ ...F[2]! }]), [record(F[2]!)]);
    expect(zeros.timeline.dedupRatio).toEqual([0]);
    expect(zeros.timeline.compressionRatio).toEqual([0]);
    expect(zeros.topPoints[0]!.share).toBe(0);
  });

  it('ignores records that the stats lack', () => {
    const r = buildReport(stats([F[0]!]), F.map(record));
    expect(r.timeline.pointIds).toEqual([F[0]!.id]);
  });
});
