/**
 * Restore of a point as a full disk image. The point map is read window by window;
 * each window's chunks are read with coalesced container reads and checked and
 * decompressed on the worker pool straight into that window's output slab (shared
 * memory, slots contiguous), then handed to the target in slot order as large runs.
 * Zero slots are skipped on targets that read back holes as zeros (fresh files),
 * written as zeros elsewhere (streams, block devices). Every chunk is checked (payload
 * hash + check hash) before it is written.
 *
 * Pipeline (WINDOWS_IN_FLIGHT = 3 slabs, memory bounded whatever the disk size):
 *
 *   window N    : write runs ------------------->| slab free
 *   window N+1  : locate, read, decompress ---->| write ...
 *   window N+2  : locate, read, decompress ----------------->| write ...
 */
import type { Repository } from './repository.js';
import type { PointRecord } from './catalog.js';
import { ChunkReader, ReadScratch, type ChunkWant } from './chunk-reader.js';
import { MapReader, isZeroDigest, mapPath, slotLength, type MapGeometry } from './point-map.js';
import { ChunkvaultError } from './errors.js';
import { DIGEST_BYTES, MIB } from './constants.js';
import { alignedShared } from './aligned-memory.js';

/** Where restored bytes go. */
export interface RestoreTarget {
  /** True when unwritten ranges read back as zeros (a new, truncated file). */
  readonly sparse: boolean;
  /** Called once with the disk size before any write. */
  begin(sizeBytes: number): Promise<void>;
  /**
   * Writes `data` at `offset`. Calls are made one at a time, in increasing offset
   * order. The promise resolves once the target no longer needs `data`: the caller
   * reuses that memory afterwards, so a target that keeps it must copy it.
   */
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

/** Bytes of disk per window (one output slab). */
const WINDOW_BYTES = 16 * MIB;
/** Windows fetched or written at once: one written while the next two are fetched. */
const WINDOWS_IN_FLIGHT = 3;

/** One window's memory: raw output (slot i at i x chunkSize) and stored input. */
interface Slab {
  readonly out: Uint8Array;
  readonly scratch: ReadScratch;
}

interface FetchedWindow {
  readonly first: number;
  readonly count: number;
  readonly slab: Slab;
  /** Per slot of the window: 1 when it holds data (not the zero chunk). */
  readonly data: Uint8Array;
}

/** Locates and reads (checked, decompressed, in parallel on the pool) one window's chunks into its slab. */
async function fetchWindow(reader: ChunkReader, g: MapGeometry, first: number, digests: Uint8Array, slab: Slab, verifyDigest: boolean): Promise<FetchedWindow> {
  const count = digests.length / DIGEST_BYTES;
  const data = new Uint8Array(count);
  const wants: ChunkWant[] = [];
  for (let i = 0; i < count; i++) {
    const digest = digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
    if (isZeroDigest(digest)) continue;
    data[i] = 1;
    wants.push({ digest, offset: i * g.chunkSize, length: slotLength(g, first + i) });
  }
  await reader.readMany(wants, slab.out, slab.scratch, verifyDigest);
  return { first, count, slab, data };
}

/**
 * Writes a window as few large writes: each run of data slots is one write; zero slots
 * are holes on a sparse target, and zeroed in the slab (so the run continues) elsewhere.
 */
async function writeWindow(target: RestoreTarget, g: MapGeometry, w: FetchedWindow): Promise<void> {
  const end = (i: number) => Math.min(i * g.chunkSize, g.diskSize - w.first * g.chunkSize);
  if (!target.sparse) {
    for (let i = 0; i < w.count; i++) if (!w.data[i]) w.slab.out.fill(0, i * g.chunkSize, end(i + 1));
    await target.write(w.first * g.chunkSize, w.slab.out.subarray(0, end(w.count)));
    return;
  }
  for (let i = 0; i < w.count; ) {
    if (!w.data[i]) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < w.count && w.data[j]) j++;
    await target.write((w.first + i) * g.chunkSize, w.slab.out.subarray(i * g.chunkSize, end(j)));
    i = j;
  }
}

/** Output slabs are page-aligned, so a target may write their runs with direct I/O. */
function newSlab(g: MapGeometry, window: number): Slab {
  return { out: alignedShared(Math.min(window, g.slotCount) * g.chunkSize), scratch: new ReadScratch() };
}

/**
 * Restores `point` into `target`; on any failure the target is aborted. Two windows are
 * fetched ahead while the oldest one is written.
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
  const queue: Promise<FetchedWindow>[] = [];
  try {
    await map.verifyDigest(point.mapDigest);
    const g = map.geometry;
    await target.begin(g.diskSize);
    const window = Math.max(8, Math.floor(WINDOW_BYTES / g.chunkSize));
    const free: Slab[] = [];
    const writeOldest = async () => {
      const w = await queue.shift()!;
      await writeAndReport(target, g, w, options);
      free.push(w.slab);
    };
    for await (const { first, digests } of map.windows(window)) {
      if (options.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'restore interrupted');
      if (queue.length >= WINDOWS_IN_FLIGHT) await writeOldest();
      const next = fetchWindow(reader, g, first, digests, free.pop() ?? newSlab(g, window), options.verifyDigest ?? false);
      next.catch(() => undefined);
      queue.push(next);
    }
    while (queue.length > 0) await writeOldest();
    await target.commit();
  } catch (err) {
    // Workers may still be writing into the slabs: let every fetch settle first.
    await Promise.allSettled(queue);
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
