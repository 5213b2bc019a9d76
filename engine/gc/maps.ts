/**
 * Reading point maps for GC: every digest a point references, skipping the slots it
 * shares with the previous point of the same disk. Points of one disk differ from
 * their predecessor only where the disk changed, so the mark set gets one insertion
 * per changed slot, while the maps themselves are read sequentially (32 bytes a slot).
 *
 * A map that fails its checksum stops GC (MAP_CORRUPT): marking from a damaged map
 * could miss live chunks, and removing those would turn one damaged map into lost data.
 */
import type { PointRecord } from '../catalog.js';
import { DIGEST_BYTES } from '../constants.js';
import { isZeroDigest, MapReader, mapPath } from '../point-map.js';
import { bytesEqual } from '../_bytes.js';
import { toChunkvaultError } from '../errors.js';

const WINDOW = 8192;

/** Groups points per (vm, disk), each group oldest first. */
export function byDisk(points: readonly PointRecord[]): PointRecord[][] {
  const groups = new Map<string, PointRecord[]>();
  for (const p of points) {
    const key = `${p.vm}\u0000${p.disk}`;
    const list = groups.get(key) ?? [];
    list.push(p);
    groups.set(key, list);
  }
  const order = (a: PointRecord, b: PointRecord) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : 1);
  return [...groups.values()].map((g) => g.sort(order));
}

export async function openVerified(repoDir: string, p: PointRecord): Promise<MapReader> {
  const map = await MapReader.open(mapPath(repoDir, p.id)).catch((err: unknown) => {
    throw toChunkvaultError(err, `gc: point ${p.id}`);
  });
  try {
    await map.verifyDigest(p.mapDigest);
    return map;
  } catch (err) {
    await map.close();
    throw toChunkvaultError(err, `gc: point ${p.id}`);
  }
}

/**
 * Calls `visit` with batches of the non-zero digests of `p` that differ from `prev`
 * at the same slot (all of them when `prev` is undefined). Returns slots read.
 */
export async function changedDigests(
  repoDir: string,
  p: PointRecord,
  prev: PointRecord | undefined,
  visit: (digests: Uint8Array[]) => Promise<void>,
): Promise<number> {
  const map = await openVerified(repoDir, p);
  const before = prev ? await openVerified(repoDir, prev).catch(() => undefined) : undefined;
  try {
    const prevSlots = before?.geometry.slotCount ?? 0;
    for await (const { first, digests } of map.windows(WINDOW)) {
      const count = digests.length / DIGEST_BYTES;
      const overlap = Math.max(0, Math.min(count, prevSlots - first));
      const old = before && overlap > 0 ? await before.readSlots(first, overlap) : undefined;
      const out: Uint8Array[] = [];
      for (let i = 0; i < count; i++) {
        const d = digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
        if (isZeroDigest(d)) continue;
        if (old && i < overlap && bytesEqual(d, old.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES))) continue;
        out.push(d);
      }
      await visit(out);
    }
    return map.geometry.slotCount;
  } finally {
    await Promise.all([map.close(), before?.close()]);
  }
}

/**
 * Calls `visit` with batches of the non-zero digests of the map `pointId`, read
 * without its record (a forgotten point's map, whose record is gone). Used only to
 * keep chunks, never to drop them, so an unverified map can only keep too much.
 */
export async function allDigests(repoDir: string, pointId: string, visit: (digests: Uint8Array[]) => Promise<void>): Promise<void> {
  let map: MapReader;
  try {
    map = await MapReader.open(mapPath(repoDir, pointId));
  } catch {
    return; // removed meanwhile (a failed job's discard): nothing to keep
  }
  try {
    for await (const { digests } of map.windows(WINDOW)) {
      const out: Uint8Array[] = [];
      for (let at = 0; at < digests.length; at += DIGEST_BYTES) {
        const d = digests.subarray(at, at + DIGEST_BYTES);
        if (!isZeroDigest(d)) out.push(d);
      }
      await visit(out);
    }
  } finally {
    await map.close();
  }
}
