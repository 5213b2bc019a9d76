/**
 * The sweep: every index entry whose digest the mark did not reach is condemned:
 * removed from the index and remembered in `gc-condemned` (digest -> location) and
 * `gc-condemned-loc` (container id + offset -> digest), in one transaction per batch.
 * From that moment no new dedup hit can reach the chunk; a backup that took one
 * before is in the barrier, and finish resurrects whatever the points it committed
 * reference. The data itself stays in its container until finish.
 */
import { encodeLocation, decodeLocation, type ChunkIndex, type ChunkLocation } from '../chunk-index.js';
import { fromHex, toHex } from '../_bytes.js';
import type { DigestSet } from './digest-set.js';

const BATCH = 2048;

/** `gc-condemned-loc` key: container id (16 bytes) then the record offset, big-endian (8 bytes). */
export function locKey(containerId: string, offset: number): Uint8Array {
  const key = new Uint8Array(24);
  key.set(fromHex(containerId), 0);
  new DataView(key.buffer).setBigUint64(16, BigInt(offset), false);
  return key;
}

export function parseLocKey(key: Uint8Array): { containerId: string; offset: number } {
  return { containerId: toHex(key.subarray(0, 16)), offset: Number(new DataView(key.buffer, key.byteOffset, 24).getBigUint64(16, false)) };
}

export interface CondemnResult {
  readonly scanned: number;
  readonly condemned: number;
  readonly condemnedBytes: number;
}

/** Condemns every unmarked index entry. Safe to repeat after a crash (already moved ones are gone from the index). */
export async function condemnUnmarked(index: ChunkIndex, live: DigestSet, onProgress?: (scanned: number) => void): Promise<CondemnResult> {
  let scanned = 0;
  let condemned = 0;
  let condemnedBytes = 0;
  let batch: [Uint8Array, ChunkLocation][] = [];
  const flush = async () => {
    condemned += await moveToCondemned(index, batch);
    batch = [];
  };
  for await (const [digest, loc] of index.entries()) {
    scanned++;
    if (live.has(digest)) continue;
    batch.push([digest, loc]);
    condemnedBytes += loc.storedLength;
    if (batch.length >= BATCH) {
      await flush();
      onProgress?.(scanned);
    }
  }
  await flush();
  return { scanned, condemned, condemnedBytes };
}

async function moveToCondemned(index: ChunkIndex, batch: readonly [Uint8Array, ChunkLocation][]): Promise<number> {
  if (batch.length === 0) return 0;
  const main = index.main();
  const byDigest = index.aux('gc-condemned');
  const byLoc = index.aux('gc-condemned-loc');
  let moved = 0;
  await index.transact(() => {
    for (const [digest] of batch) {
      // Re-read inside the transaction: another process may have changed the entry since the scan.
      const current = main.getBinary(digest);
      if (current === undefined) continue;
      const now = decodeLocation(current);
      void main.remove(digest);
      void byDigest.put(digest, encodeLocation(now));
      void byLoc.put(locKey(now.containerId, now.offset), digest);
      moved++;
    }
  });
  return moved;
}

/**
 * Puts condemned digests that a point references back into the index (unless a
 * backup meanwhile stored the chunk again, whose entry then wins). Returns how many.
 */
export async function resurrect(index: ChunkIndex, digests: readonly Uint8Array[]): Promise<number> {
  const byDigest = index.aux('gc-condemned');
  const hits = digests.filter((d) => byDigest.getBinary(d) !== undefined);
  if (hits.length === 0) return 0;
  const main = index.main();
  const byLoc = index.aux('gc-condemned-loc');
  let count = 0;
  await index.transact(() => {
    for (const d of hits) {
      const v = byDigest.getBinary(d);
      if (v === undefined) continue;
      const loc = decodeLocation(v);
      void byDigest.remove(d);
      // When a backup stored the chunk again meanwhile, its entry wins and this copy stays dead.
      if (main.getBinary(d) !== undefined) continue;
      void main.put(d, v);
      void byLoc.remove(locKey(loc.containerId, loc.offset));
      count++;
    }
  });
  return count;
}
