/**
 * Space accounting. Logical bytes are what the points describe; unique bytes are the
 * raw bytes of distinct chunks; stored bytes are the container files on disk.
 *
 *   dedup ratio       = non-zero logical bytes / unique raw bytes
 *   compression ratio = unique raw bytes / stored payload bytes
 *
 * Per point: `exclusiveBytes` are the stored bytes of chunks that no other point
 * references (what deleting that point alone would free). Per VM: `exclusiveBytes`
 * are the stored bytes of chunks only that VM's points reference (what deleting the
 * VM would free), `sharedBytes` those it references together with other VMs. Memory
 * is one counter per distinct chunk referenced.
 */
import type { Repository } from './repository.js';
import type { PointRecord } from './catalog.js';
import { MapReader, isZeroDigest, mapPath, slotLength } from './point-map.js';
import { DIGEST_BYTES } from './constants.js';
import { toHex } from './_bytes.js';

export interface PointSpace {
  readonly id: string;
  readonly vm: string;
  readonly disk: string;
  readonly time: string;
  readonly logicalBytes: number;
  readonly zeroBytes: number;
  /** Raw bytes of the distinct chunks this point references. */
  readonly uniqueBytes: number;
  /** Stored bytes of chunks referenced by this point only (freed if it alone is deleted). */
  readonly exclusiveBytes: number;
  /** Stored bytes of chunks this point references together with other points. */
  readonly sharedBytes: number;
  readonly bytesNew: number;
}

export interface VmSpace {
  readonly vm: string;
  /** Stored bytes of chunks only this VM's points reference. */
  readonly exclusiveBytes: number;
  /** Stored bytes of chunks this VM references together with at least one other VM. */
  readonly sharedBytes: number;
}

export interface RepoStats {
  readonly points: number;
  readonly vms: number;
  readonly logicalBytes: number;
  readonly zeroBytes: number;
  readonly uniqueChunks: number;
  readonly uniqueRawBytes: number;
  readonly storedPayloadBytes: number;
  /** Bytes of every container file (payload + headers + footers). */
  readonly storedBytes: number;
  readonly containers: number;
  readonly dedupRatio: number;
  readonly compressionRatio: number;
  /** logical / stored. */
  readonly totalRatio: number;
  readonly perPoint: PointSpace[];
  readonly perVm: VmSpace[];
}

interface ChunkUse {
  refs: number;
  lastPoint: string;
  /** The first VM that referenced it, and every VM once a second one does. */
  vm: string;
  vms?: Set<string>;
  raw: number;
  stored: number;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

export async function repoStats(repo: Repository): Promise<RepoStats> {
  const points = await repo.catalog.list();
  const index = await repo.index();
  const uses = new Map<string, ChunkUse>();
  const perPointChunks = new Map<string, { zero: number; unique: number; referenced: number }>();
  for (const p of points) perPointChunks.set(p.id, await scanPoint(repo, p, uses, index));
  const perPoint = points.map((p) => pointSpace(p, perPointChunks.get(p.id)!, uses));
  const uniqueRawBytes = sum([...uses.values()].map((u) => u.raw));
  const storedPayloadBytes = sum([...uses.values()].map((u) => u.stored));
  const bySize = await repo.containerSizes();
  const ids = [...bySize.keys()].sort();
  const sizes = ids.map((id) => bySize.get(id) as number);
  const logicalBytes = sum(points.map((p) => p.sizeBytes));
  const zeroBytes = sum(perPoint.map((p) => p.zeroBytes));
  const storedBytes = sum(sizes);
  return {
    points: points.length,
    vms: new Set(points.map((p) => p.vm)).size,
    logicalBytes,
    zeroBytes,
    uniqueChunks: uses.size,
    uniqueRawBytes,
    storedPayloadBytes,
    storedBytes,
    containers: ids.length,
    dedupRatio: ratio(logicalBytes - zeroBytes, uniqueRawBytes),
    compressionRatio: ratio(uniqueRawBytes, storedPayloadBytes),
    totalRatio: ratio(logicalBytes, storedBytes),
    perPoint,
    perVm: vmSpace(points, uses),
  };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

async function scanPoint(
  repo: Repository,
  p: PointRecord,
  uses: Map<string, ChunkUse>,
  index: Awaited<ReturnType<Repository['index']>>,
): Promise<{ zero: number; unique: number; referenced: number }> {
  const map = await MapReader.open(mapPath(repo.dir, p.id));
  let zero = 0;
  let unique = 0;
  let referenced = 0;
  try {
    for await (const { first, digests } of map.windows()) {
      const fresh: Uint8Array[] = [];
      for (let i = 0; i * DIGEST_BYTES < digests.length; i++) {
        const d = digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
        if (isZeroDigest(d)) {
          zero += slotLength(map.geometry, first + i);
          continue;
        }
        const key = toHex(d);
        const use = uses.get(key);
        if (use?.lastPoint === p.id) continue;
        unique += slotLength(map.geometry, first + i);
        if (use) {
          use.refs++;
          use.lastPoint = p.id;
          referenced += use.stored;
          if (use.vm !== p.vm || use.vms) (use.vms ??= new Set([use.vm])).add(p.vm);
        } else {
          uses.set(key, { refs: 1, lastPoint: p.id, vm: p.vm, raw: 0, stored: 0 });
          fresh.push(d);
        }
      }
      const locs = await index.findMany(fresh);
      locs.forEach((loc, i) => {
        const use = uses.get(toHex(fresh[i] as Uint8Array))!;
        use.raw = loc?.rawLength ?? 0;
        use.stored = loc?.storedLength ?? 0;
        referenced += use.stored;
      });
    }
  } finally {
    await map.close();
  }
  return { zero, unique, referenced };
}

function vmSpace(points: readonly PointRecord[], uses: Map<string, ChunkUse>): VmSpace[] {
  const acc = new Map<string, { exclusiveBytes: number; sharedBytes: number }>();
  for (const p of points) if (!acc.has(p.vm)) acc.set(p.vm, { exclusiveBytes: 0, sharedBytes: 0 });
  for (const u of uses.values()) {
    if (!u.vms) acc.get(u.vm)!.exclusiveBytes += u.stored;
    else for (const vm of u.vms) acc.get(vm)!.sharedBytes += u.stored;
  }
  return [...acc].map(([vm, a]) => ({ vm, ...a }));
}

function pointSpace(p: PointRecord, c: { zero: number; unique: number; referenced: number }, uses: Map<string, ChunkUse>): PointSpace {
  let exclusive = 0;
  for (const u of uses.values()) if (u.refs === 1 && u.lastPoint === p.id) exclusive += u.stored;
  return {
    id: p.id,
    vm: p.vm,
    disk: p.disk,
    time: p.time,
    logicalBytes: p.sizeBytes,
    zeroBytes: c.zero,
    uniqueBytes: c.unique,
    exclusiveBytes: exclusive,
    sharedBytes: c.referenced - exclusive,
    bytesNew: p.stats.bytesNew,
  };
}
