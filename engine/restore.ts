/**
 * Restore of a point as a full disk image. The point map is read window by window;
 * chunks are fetched and decompressed in parallel on the worker pool and handed to the
 * target in slot order. Zero slots are skipped on targets that read back holes as
 * zeros (fresh files), written as zeros elsewhere (streams, block devices).
 * Every chunk is checked (payload hash + check hash) before it is written.
 */
import type { Repository } from './repository.js';
import type { PointRecord } from './catalog.js';
import { ChunkReader } from './chunk-reader.js';
import { ZERO_CHUNK } from './_bytes.js';
import { MapReader, isZeroDigest, mapPath, slotLength, type MapGeometry } from './point-map.js';
import { ChunkvaultError } from './errors.js';
import { DIGEST_BYTES, MIB } from './constants.js';

/** Where restored bytes go. */
export interface RestoreTarget {
  /** True when unwritten ranges read back as zeros (a new, truncated file). */
  readonly sparse: boolean;
  /** Called once with the disk size before any write. */
  begin(sizeBytes: number): Promise<void>;
  /** Writes `data` at `offset`; calls arrive in increasing offset order. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes the result durable and visible. */
  commit(): Promise<void>;
  /** Removes any partial result. */
  abort(): Promise<void>;
}

export interface RestoreOptions {
  readonly onProgress?: (p: { done: number; total: number }) => void;
  readonly signal?: AbortSignal;
  /** Check SHA-256 of every chunk too (slower; the check hash is always checked). */
  readonly verifyDigest?: boolean;
}


interface FetchedWindow {
  readonly first: number;
  readonly count: number;
  /** Slot index within the window -> raw bytes (zero slots absent). */
  readonly chunks: Map<number, Uint8Array>;
}

/** Locates and reads (checked, decompressed, in parallel on the pool) one window's chunks. */
async function fetchWindow(reader: ChunkReader, first: number, digests: Uint8Array, verifyDigest: boolean): Promise<FetchedWindow> {
  const count = digests.length / DIGEST_BYTES;
  const slots = Array.from({ length: count }, (_, i) => digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES));
  const dataIdx = slots.flatMap((d, i) => (isZeroDigest(d) ? [] : [i]));
  const locs = await reader.locate(dataIdx.map((i) => slots[i] as Uint8Array));
  const data = await Promise.all(dataIdx.map((i, k) => reader.read(slots[i] as Uint8Array, locs[k]!, verifyDigest)));
  return { first, count, chunks: new Map(dataIdx.map((i, k) => [i, data[k] as Uint8Array])) };
}

async function writeWindow(target: RestoreTarget, g: MapGeometry, w: FetchedWindow): Promise<void> {
  for (let i = 0; i < w.count; i++) {
    const slot = w.first + i;
    const len = slotLength(g, slot);
    const data = w.chunks.get(i);
    if (data) {
      if (data.length !== len) throw new ChunkvaultError('CHUNK_CORRUPT', `slot ${slot}: chunk has ${data.length} bytes, expected ${len}`);
      await target.write(slot * g.chunkSize, data);
    } else if (!target.sparse) {
      await target.write(slot * g.chunkSize, ZERO_CHUNK.subarray(0, len));
    }
  }
}

/**
 * Restores `point` into `target`; on any failure the target is aborted. One window is
 * fetched ahead while the previous one is written.
 */
export async function restore(repo: Repository, point: PointRecord, target: RestoreTarget, options: RestoreOptions = {}): Promise<void> {
  const session = await repo.beginSession('read');
  let map: MapReader;
  try {
    map = await MapReader.open(mapPath(repo.dir, point.id));
  } catch (err) {
    await session.end();
    throw err;
  }
  const reader = new ChunkReader(repo.dir, await repo.index(), repo.pool());
  let ahead: Promise<FetchedWindow> | undefined;
  try {
    await map.verifyDigest(point.mapDigest);
    const g = map.geometry;
    await target.begin(g.diskSize);
    const window = Math.max(8, Math.floor((16 * MIB) / g.chunkSize));
    for await (const { first, digests } of map.windows(window)) {
      if (options.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'restore interrupted');
      const next = fetchWindow(reader, first, digests, options.verifyDigest ?? false);
      next.catch(() => undefined);
      const current = await ahead;
      ahead = next;
      if (current) await writeAndReport(target, g, current, options);
    }
    const last = await ahead;
    if (last) await writeAndReport(target, g, last, options);
    await target.commit();
  } catch (err) {
    await ahead?.catch(() => undefined);
    await target.abort().catch(() => undefined);
    throw err;
  } finally {
    await Promise.allSettled([map.close(), reader.close()]);
    await session.end();
  }
}

async function writeAndReport(target: RestoreTarget, g: MapGeometry, w: FetchedWindow, options: RestoreOptions): Promise<void> {
  await writeWindow(target, g, w);
  options.onProgress?.({ done: Math.min((w.first + w.count) * g.chunkSize, g.diskSize), total: g.diskSize });
}
