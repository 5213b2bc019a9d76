/**
 * One backup of one disk into a synthetic-full restore point.
 *
 * Plan: the slots to read are the whole disk, or the changed extents aligned outward
 * to chunk boundaries (plus every slot from the old end when the disk was resized).
 * Every other slot is copied from the parent's map (an incremental), or is zero (no
 * parent, or `base: 'zero'`: a full backup of the allocated extents only).
 *
 * Windows: the next slab's worth of planned slots, from a span of at most
 * WINDOW_SPAN_SLOTS disk slots (PlanCursor); planned slot k sits at slab position k.
 *
 *   source --(N reads of up to 1 MiB in flight)--> window slab (shared memory)
 *     --> pool: zero check, SHA-256 + XXH64 (+ compression when most chunks are new)
 *   (a local file or block device, BlockSource.pread: the pool task reads its slots
 *    itself, next to the hashing, after a read-ahead hint for the window)
 *     --> index getMany --> pool: compress the misses not compressed yet
 *     --> container append (in slot order) --> map window --> ... --> commit
 *
 * Workers read and write the slab in place (engine/_window-slab.ts): no chunk is
 * copied, allocated or transferred between threads.
 *
 * Commit order (FORMAT.md): seal containers -> index -> map (tmp, fsync, rename)
 * -> point record (the commit). On any failure nothing is committed and the open
 * container and map are deleted.
 */
import { rm } from 'node:fs/promises';
import type { BlockSource, Extent, PreadAccess } from './source.js';
import type { Repository } from './repository.js';
import { Semaphore } from './_buffer-pool.js';
import { ChunkWriter } from './chunk-writer.js';
import { SlabPool, type SlabViews } from './_window-slab.js';
import { extentsToSlots, slotCountOf, unionSlots, type SlotRange } from './extents.js';
import { MapReader, MapWriter, mapPath, slotCountFor, slotLength, type MapGeometry } from './point-map.js';
import { newPointId, validateName, type PointRecord, type PointStats } from './catalog.js';
import { ChunkvaultError, toChunkvaultError } from './errors.js';
import { DIGEST_BYTES, MIB, type CodecId } from './constants.js';
import type { ChunkLocation } from './chunk-index.js';
import type { CompressionSetting } from './codecs.js';
import type { WorkerPool } from './worker-pool.js';
import { adviseWillNeed, type ReadFailure } from './native.js';

export interface BackupProgress {
  /** Bytes of the read plan processed so far. */
  readonly done: number;
  readonly total: number;
}

export interface BackupRequest {
  readonly source: BlockSource;
  readonly vm: string;
  readonly disk: string;
  /** Extents to read; undefined reads the whole disk. */
  readonly changed?: readonly Extent[];
  /** The previous point of this disk (recorded as the parent). */
  readonly parent?: PointRecord | null;
  /**
   * Where slots that are not read come from: `parent` (an incremental: the parent's map;
   * the default when there is a parent) or `zero` (a full backup of the allocated
   * extents only: everything else is a hole).
   */
  readonly base?: 'parent' | 'zero';
  readonly changeToken?: string | null;
  readonly meta?: Record<string, unknown>;
  /** The multi-disk job this point belongs to (committed later by its VM record). */
  readonly job?: string;
  /** Reads in flight for sources read by this thread (default 4); a source with `pread` is read by the pool's tasks. */
  readonly readConcurrency?: number;
  readonly onProgress?: (p: BackupProgress) => void;
  readonly signal?: AbortSignal;
}

interface Counters {
  bytesRead: number;
  rawNew: number;
  chunksRead: number;
  chunksZero: number;
  chunksNew: number;
  chunksDedup: number;
}

/** Bytes of planned chunks per window (per pipeline stage): one slab. */
const WINDOW_BYTES = 4 * MIB;
/**
 * Most disk slots one window spans. A window holds up to a slab of *planned* slots, so
 * an incremental whose changes are scattered still hands the pool full windows; the
 * span bounds the window's digest array (8192 x 32 bytes).
 */
const WINDOW_SPAN_SLOTS = 8192;
/** Windows being read, hashed and compressed beyond the one being appended. */
const PREPARE_AHEAD = 3;
/** Bytes of chunks per worker task: one round trip per batch amortises the messaging. */
const TASK_BYTES = 1 * MIB;
/** Largest single read of consecutive planned slots. */
const READ_BYTES = 1 * MIB;

/** Slots to read for `req` (see the module comment). */
export function planSlots(g: MapGeometry, changed: readonly Extent[] | undefined, parent: PointRecord | null): SlotRange[] {
  if (!changed) return g.slotCount > 0 ? [{ first: 0, end: g.slotCount }] : [];
  let ranges = extentsToSlots(changed, g.chunkSize, g.slotCount);
  if (parent && parent.sizeBytes !== g.diskSize) {
    const from = Math.floor(Math.min(parent.sizeBytes, g.diskSize) / g.chunkSize);
    if (from < g.slotCount) ranges = unionSlots(ranges, [{ first: from, end: g.slotCount }]);
  }
  return ranges;
}

/**
 * A parent read before this backup registered its session may have been forgotten
 * (and its chunks collected) meanwhile. Once registered, a parent whose record still
 * exists keeps its chunks until this backup ends (FORMAT.md "Garbage collection").
 */
export async function ensureParentKept(repo: Repository, parent: PointRecord | null, session: { end(): Promise<void> }): Promise<void> {
  if (!parent) return;
  try {
    await repo.catalog.get(parent.id);
  } catch (err) {
    await session.end();
    throw new ChunkvaultError('NO_PARENT', `the parent point ${parent.id} was forgotten while this backup started; run it again`, { cause: err, details: { point: parent.id } });
  }
}

/** Runs a backup; resolves with the committed point record. */
export async function backup(repo: Repository, req: BackupRequest): Promise<PointRecord> {
  validateName('vm', req.vm);
  validateName('disk', req.disk);
  const started = Date.now();
  const { chunkSize } = repo.config;
  const g: MapGeometry = { chunkSize, diskSize: req.source.sizeBytes, slotCount: slotCountFor(req.source.sizeBytes, chunkSize) };
  const parent = req.parent ?? null;
  const ranges = planSlots(g, req.changed, parent);
  const index = await repo.index();
  const session = await repo.beginSession('backup', req.job);
  await ensureParentKept(repo, parent, session);
  const id = newPointId();
  const job = new BackupJob(repo, req, g, ranges, new ChunkWriter(repo.dir, index, repo.config.containerTargetBytes));
  let mapWriter: MapWriter | undefined;
  let parentMap: MapReader | undefined;
  const fromParent = parent !== null && (req.base ?? 'parent') === 'parent';
  let mapCommitted = false;
  const checkInterrupt = () => {
    if (req.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
  };
  try {
    mapWriter = await MapWriter.create(repo.dir, id, g);
    parentMap = fromParent ? await MapReader.open(mapPath(repo.dir, parent.id)) : undefined;
    await job.run(mapWriter, parentMap);
    checkInterrupt();
    await job.writer.seal();
    checkInterrupt();
    const mapDigest = await mapWriter.commit(mapPath(repo.dir, id));
    mapCommitted = true;
    const record: PointRecord = {
      id,
      vm: req.vm,
      disk: req.disk,
      time: new Date().toISOString(),
      parent: parent?.id ?? null,
      mode: req.changed && fromParent ? 'incremental' : 'full',
      sizeBytes: g.diskSize,
      chunkSize,
      slotCount: g.slotCount,
      mapDigest,
      changeToken: req.changeToken ?? null,
      source: req.source.describe(),
      stats: job.stats(Date.now() - started),
      ...(req.meta ? { meta: req.meta } : {}),
      ...(req.job ? { job: req.job } : {}),
    };
    checkInterrupt();
    await repo.catalog.commit(record);
    return record;
  } catch (err) {
    // A map without its point record is an orphan: remove it now rather than leave it to GC.
    await Promise.allSettled([job.abort(), mapWriter?.abort(), mapCommitted ? rm(mapPath(repo.dir, id), { force: true }) : undefined]);
    throw err;
  } finally {
    await parentMap?.close();
    await session.end();
  }
}

/** Worker-side reads of a window: the source's descriptor and each slab position's disk offset. */
interface WorkerRead {
  readonly pread: PreadAccess;
  readonly offsets: Float64Array;
}

/** A window whose chunks are hashed, looked up and compressed, ready to append. */
interface PreparedWindow {
  /** Window-relative slot of each slab position. */
  readonly planned: number[];
  /** Slab positions of the non-zero planned slots, ascending. */
  readonly data: number[];
  /** Index location of each of `data` (undefined: not stored yet). */
  readonly locations: (ChunkLocation | undefined)[];
}

/** A window: disk slots [first, end), of which `planned` (relative to first, ascending) are read. */
export interface Window {
  readonly first: number;
  readonly end: number;
  readonly planned: number[];
}

/**
 * Cuts the disk into windows in ascending order. A window ends after `maxPlanned`
 * planned slots (a slab's worth) or `maxSpan` slots, whichever comes first: a full
 * backup gets windows of `maxPlanned` consecutive slots, an incremental windows that
 * gather that many changed slots from a wider span. A cursor over the sorted ranges
 * keeps the whole walk linear.
 */
export class PlanCursor {
  private at = 0;

  constructor(
    private readonly ranges: readonly SlotRange[],
    private readonly slotCount: number,
  ) {}

  next(first: number, maxPlanned: number, maxSpan: number): Window {
    const limit = Math.min(first + maxSpan, this.slotCount);
    while (this.at < this.ranges.length && this.ranges[this.at]!.end <= first) this.at++;
    const planned: number[] = [];
    for (let k = this.at; k < this.ranges.length && planned.length < maxPlanned; k++) {
      const r = this.ranges[k]!;
      if (r.first >= limit) break;
      const to = Math.min(r.end, limit, Math.max(r.first, first) + maxPlanned - planned.length);
      for (let s = Math.max(r.first, first); s < to; s++) planned.push(s - first);
    }
    const end = planned.length === maxPlanned ? first + planned[planned.length - 1]! + 1 : limit;
    return { first, end, planned };
  }
}

/** Parent map slots read per call: an incremental walks every window of the disk. */
const PARENT_READ_SLOTS = 32768;

/** The parent map's digests, read 1 MiB at a time (one window needs 512 bytes of them). */
class ParentSlots {
  private block: Uint8Array = new Uint8Array(0);
  private blockFirst = 0;

  constructor(private readonly map: MapReader) {}

  async read(first: number, count: number): Promise<Uint8Array> {
    if (first < this.blockFirst || (first + count - this.blockFirst) * DIGEST_BYTES > this.block.length) {
      const n = Math.min(this.map.geometry.slotCount - first, Math.max(count, PARENT_READ_SLOTS));
      this.block = await this.map.readSlots(first, n);
      this.blockFirst = first;
    }
    const at = (first - this.blockFirst) * DIGEST_BYTES;
    return this.block.subarray(at, at + count * DIGEST_BYTES);
  }
}

/** Slab positions [from, to) whose planned slots are consecutive on disk: one read. */
interface ReadRun {
  readonly from: number;
  readonly to: number;
}

/** Splits the planned slots (sorted) into runs of consecutive slots of at most `max` each. */
function runsOf(planned: readonly number[], max: number): ReadRun[] {
  const runs: ReadRun[] = [];
  let from = 0;
  for (let p = 1; p <= planned.length; p++) {
    if (p === planned.length || planned[p] !== planned[p - 1]! + 1 || p - from >= max) {
      runs.push({ from, to: p });
      from = p;
    }
  }
  return runs;
}

class BackupJob {
  readonly writer: ChunkWriter;
  private readonly counters: Counters = { bytesRead: 0, rawNew: 0, chunksRead: 0, chunksZero: 0, chunksNew: 0, chunksDedup: 0 };
  private readonly window: number;
  private readonly slabs: SlabPool;
  private readonly reads: Semaphore;
  private readonly readsInFlight = new Set<Promise<void>>();
  private readonly pool: WorkerPool;
  private readonly compression: CompressionSetting;
  private readonly totalBytes: number;
  private cancelled = false;
  /** Fraction of recent chunks that were new: above 1/2, compress while hashing. */
  private newRatio = 1;

  constructor(repo: Repository, private readonly req: BackupRequest, private readonly g: MapGeometry, private readonly ranges: SlotRange[], writer: ChunkWriter) {
    this.writer = writer;
    this.window = Math.max(4, Math.floor(WINDOW_BYTES / g.chunkSize));
    // One window appending, PREPARE_AHEAD being read and prepared, one waiting to read.
    this.slabs = new SlabPool(2 + PREPARE_AHEAD, this.window, g.chunkSize);
    this.reads = new Semaphore(req.readConcurrency ?? 4);
    this.pool = repo.pool();
    this.compression = repo.config.compression;
    this.totalBytes = Math.min(slotCountOf(ranges) * g.chunkSize, g.diskSize);
  }

  /**
   * Window pipeline: up to PREPARE_AHEAD windows are read, hashed and compressed while
   * the oldest is appended to the container and the map (appends stay in slot order).
   */
  async run(mapWriter: MapWriter, parentMap: MapReader | undefined): Promise<void> {
    const parentSlots = parentMap?.geometry.slotCount ?? 0;
    const plan = new PlanCursor(this.ranges, this.g.slotCount);
    const parent = parentMap ? new ParentSlots(parentMap) : undefined;
    const inFlight: Promise<void>[] = [];
    // Every window's read and pool work: the slabs go back to the arena only once all have settled.
    const touching = new Set<Promise<unknown>>();
    let chain: Promise<void> = Promise.resolve();
    try {
      for (let first = 0; first < this.g.slotCount; ) {
        if (this.req.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
        const w = plan.next(first, this.window, Math.max(this.window, WINDOW_SPAN_SLOTS));
        const { end, planned } = w;
        first = end;
        const digests = new Uint8Array((end - w.first) * DIGEST_BYTES);
        if (parent && w.first < parentSlots) digests.set(await parent.read(w.first, Math.min(end, parentSlots) - w.first));
        const slab = planned.length > 0 ? await this.slabs.acquire() : undefined;
        const prepared = slab ? this.readAndPrepare(slab, w, digests) : undefined;
        if (prepared) {
          touching.add(prepared);
          void prepared.then(() => touching.delete(prepared), () => undefined);
        }
        const previous = chain;
        chain = (async () => {
          await previous;
          if (slab && prepared) {
            await this.append(slab, await prepared, digests);
            this.slabs.release(slab);
          }
          await mapWriter.append(digests);
          this.req.onProgress?.({ done: this.counters.bytesRead, total: this.totalBytes });
        })();
        chain.catch(() => undefined);
        inFlight.push(chain);
        if (inFlight.length > PREPARE_AHEAD) await inFlight.shift();
      }
    } catch (err) {
      this.cancelled = true;
      throw err;
    } finally {
      // A failed window stops the reads not yet sent (as abort does) before waiting for the rest.
      await chain.catch(() => (this.cancelled = true));
      await Promise.allSettled(touching);
      this.slabs.dispose();
    }
    await chain;
  }

  stats(durationMs: number): PointStats {
    return { ...this.counters, bytesNew: this.writer.bytesAdded, durationMs };
  }

  /** Stops starting reads, waits for those in flight, drops the open container. */
  async abort(): Promise<void> {
    this.cancelled = true;
    await Promise.allSettled([...this.readsInFlight, this.writer.abort()]);
  }

  /**
   * Reads a window into its slab and prepares it: by the workers themselves when the
   * source allows (BlockSource.pread), else by this thread first. Planned slot k has
   * its length at slab position k either way.
   */
  private async readAndPrepare(slab: SlabViews, w: Window, digests: Uint8Array): Promise<PreparedWindow> {
    let length = 0;
    for (let p = 0; p < w.planned.length; p++) {
      slab.length[p] = slotLength(this.g, w.first + w.planned[p]!);
      length += slab.length[p]!;
    }
    const pread = this.req.source.pread;
    let prepared: PreparedWindow;
    if (pread) {
      const offsets = Float64Array.from(w.planned, (slot) => (w.first + slot) * this.g.chunkSize);
      for (const run of runsOf(w.planned, Number.MAX_SAFE_INTEGER)) {
        const last = run.to - 1;
        adviseWillNeed(pread.fd, offsets[run.from]!, offsets[last]! + slab.length[last]! - offsets[run.from]!);
      }
      prepared = await this.prepare(slab, w.planned, digests, { pread, offsets });
    } else {
      await this.read(slab, w);
      prepared = await this.prepare(slab, w.planned, digests);
    }
    this.counters.bytesRead += length;
    this.counters.chunksRead += w.planned.length;
    return prepared;
  }

  /**
   * Reads the planned slots of a window into its slab (planned slot k at slab position
   * k), consecutive slots in one read.
   */
  private async read(slab: SlabViews, w: Window): Promise<void> {
    const perRead = Math.max(1, Math.floor(READ_BYTES / this.g.chunkSize));
    await Promise.all(runsOf(w.planned, perRead).map((run) => this.track(this.readRun(slab, w, run))));
  }

  private track(p: Promise<void>): Promise<void> {
    this.readsInFlight.add(p);
    void p.finally(() => this.readsInFlight.delete(p)).catch(() => undefined);
    return p;
  }

  private async readRun(slab: SlabViews, w: Window, run: ReadRun): Promise<void> {
    let length = 0;
    for (let p = run.from; p < run.to; p++) length += slab.length[p]!;
    const at = run.from * this.g.chunkSize;
    const offset = (w.first + w.planned[run.from]!) * this.g.chunkSize;
    try {
      await this.reads.run(async () => {
        // Reads still queued when the backup failed are not sent (each could retry at length).
        if (this.cancelled) throw new ChunkvaultError('INTERRUPTED', 'read cancelled');
        await this.req.source.readInto(slab.raw.subarray(at, at + length), offset);
      });
    } catch (err) {
      if (err instanceof ChunkvaultError) throw err;
      throw new ChunkvaultError('SOURCE_READ_FAILED', `reading the source at offset ${offset} failed`, {
        cause: toChunkvaultError(err, 'read'),
        details: { offset, length },
      });
    }
  }

  /**
   * Runs prepare tasks over `slots` of the slab in batches of about TASK_BYTES; with
   * `read`, each task first reads its slots (slot slots[k] from disk offset offsets[k]).
   */
  private async onPool(slab: SlabViews, slots: number[], hash: boolean, compress: CompressionSetting | undefined, read?: WorkerRead): Promise<void> {
    // Reads not yet sent when the backup failed are not sent (as readRun does).
    if (read && this.cancelled) throw new ChunkvaultError('INTERRUPTED', 'read cancelled');
    const per = Math.max(1, Math.floor(TASK_BYTES / this.g.chunkSize));
    const tasks: Promise<ReadFailure | undefined>[] = [];
    for (let k = 0; k < slots.length; k += per) {
      const part = slots.slice(k, k + per);
      const taskRead = read ? { fd: read.pread.fd, offsets: Float64Array.from(part, (p) => read.offsets[p]!) } : undefined;
      tasks.push(this.pool.prepare({ slab, slots: part, hash, ...(compress ? { compress } : {}), ...(taskRead ? { read: taskRead } : {}) }));
    }
    // Every task settles before this returns or throws: none may still touch the slab after.
    const settled = await Promise.allSettled(tasks);
    const rejected = settled.find((r) => r.status === 'rejected');
    if (rejected) throw rejected.reason;
    const failure = settled.map((r) => (r.status === 'fulfilled' ? r.value : undefined)).find((f) => f !== undefined);
    if (failure && read) throw read.pread.failure(failure.errno, failure.offset);
  }

  /** Zero check and hashes (and maybe compression) on the pool, lookup, compress misses. */
  private async prepare(slab: SlabViews, planned: number[], digests: Uint8Array, read?: WorkerRead): Promise<PreparedWindow> {
    const speculative = this.newRatio > 0.5;
    const positions = planned.map((_, p) => p);
    await this.onPool(slab, positions, true, speculative ? this.compression : undefined, read);
    const data: number[] = [];
    for (const p of positions) {
      if (slab.zero[p] === 0) data.push(p);
      else {
        this.counters.chunksZero++;
        const i = planned[p]!;
        digests.fill(0, i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
      }
    }
    const locations = await this.writer.lookup(data.map((i) => slab.digest.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES)));
    if (!speculative) await this.onPool(slab, data.filter((_, k) => locations[k] === undefined), false, this.compression);
    return { planned, data, locations };
  }

  /** Appends the window's new chunks in slot order and fills its map digests. */
  private async append(slab: SlabViews, w: PreparedWindow, digests: Uint8Array): Promise<void> {
    let added = 0;
    for (let k = 0; k < w.data.length; k++) {
      const i = w.data[k]!;
      const digest = slab.digest.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
      const loc = w.locations[k] ?? this.writer.pendingLocation(digest);
      if (loc) ChunkWriter.checkHit(digest, loc, slab.check[i]!);
      else {
        const storedLength = slab.payloadLength[i]!;
        await this.writer.add({
          // The header outlives the slab (footer, index): its digest is a copy.
          header: { codec: slab.codec[i] as CodecId, rawLength: slab.length[i]!, storedLength, digest: digest.slice(), checkHash: slab.check[i]!, payloadHash: slab.payloadHash[i]! },
          payload: slab.out.subarray(i * slab.outStride, i * slab.outStride + storedLength),
        });
        added++;
        this.counters.rawNew += slab.length[i]!;
      }
      digests.set(digest, w.planned[i]! * DIGEST_BYTES);
    }
    this.counters.chunksNew += added;
    this.counters.chunksDedup += w.data.length - added;
    if (w.data.length > 0) this.newRatio = added / w.data.length;
  }
}
