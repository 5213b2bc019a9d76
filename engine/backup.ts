/**
 * One backup of one disk into a synthetic-full restore point.
 *
 * Plan: the slots to read are the whole disk, or the changed extents aligned outward
 * to chunk boundaries (plus every slot from the old end when the disk was resized).
 * Every other slot is copied from the parent's map (an incremental), or is zero (no
 * parent, or `base: 'zero'`: a full backup of the allocated extents only).
 *
 *   source --(N reads in flight)--> window of W slots --> zero check
 *     --> pool: SHA-256 + XXH64 --> index getMany --> pool: compress misses
 *     --> container append (in slot order) --> map window --> ... --> commit
 *
 * Commit order (FORMAT.md): seal containers -> index -> map (tmp, fsync, rename)
 * -> point record (the commit). On any failure nothing is committed and the open
 * container and map are deleted.
 */
import { rm } from 'node:fs/promises';
import type { BlockSource, Extent } from './source.js';
import type { Repository } from './repository.js';
import { BufferPool } from './_buffer-pool.js';
import { ChunkWriter } from './chunk-writer.js';
import { extentsToSlots, slotCountOf, unionSlots, type SlotRange } from './extents.js';
import { MapReader, MapWriter, mapPath, slotCountFor, type MapGeometry } from './point-map.js';
import { newPointId, validateName, type PointRecord, type PointStats } from './catalog.js';
import { SlotReader, type SlotData } from './slot-reader.js';
import { ChunkvaultError } from './errors.js';
import { isAllZero } from './_bytes.js';
import { DIGEST_BYTES, MIB } from './constants.js';

/** Bytes of chunks processed per window (per pipeline stage). */
const WINDOW_BYTES = 4 * MIB;
/** Windows being hashed and compressed beyond the one being appended. */
const PREPARE_AHEAD = 4;
import type { HashResult, PackResult } from './_worker.js';
import type { ChunkLocation } from './chunk-index.js';
import type { CompressionSetting } from './codecs.js';
import type { WorkerPool } from './worker-pool.js';

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

/** Bytes of chunks per worker task: one round trip per batch amortises the messaging. */
const TASK_BYTES = 1 * MIB;

/** Splits items into consecutive groups of about TASK_BYTES (at least one item each). */
function batchByBytes<T>(items: readonly T[], size: (x: T) => number = (x) => (x as SlotData).length): T[][] {
  const out: T[][] = [];
  let group: T[] = [];
  let bytes = 0;
  for (const it of items) {
    group.push(it);
    bytes += size(it);
    if (bytes >= TASK_BYTES) {
      out.push(group);
      group = [];
      bytes = 0;
    }
  }
  if (group.length > 0) out.push(group);
  return out;
}

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

/** A window whose chunks are hashed, looked up and compressed, ready to append. */
interface PreparedWindow {
  readonly items: SlotData[];
  readonly data: SlotData[];
  readonly hashed: HashResult[];
  readonly locations: (ChunkLocation | undefined)[];
  readonly packed: Map<number, PackResult>;
}

class BackupJob {
  readonly writer: ChunkWriter;
  private readonly counters: Counters = { bytesRead: 0, rawNew: 0, chunksRead: 0, chunksZero: 0, chunksNew: 0, chunksDedup: 0 };
  private readonly window: number;
  private readonly buffers: BufferPool;
  private readonly reader: SlotReader;
  private readonly pool: WorkerPool;
  private readonly compression: CompressionSetting;
  private readonly totalBytes: number;
  /** Fraction of recent chunks that were new: above 1/2, compress while hashing. */
  private newRatio = 1;

  constructor(repo: Repository, private readonly req: BackupRequest, private readonly g: MapGeometry, ranges: SlotRange[], writer: ChunkWriter) {
    this.writer = writer;
    this.window = Math.max(4, Math.floor(WINDOW_BYTES / g.chunkSize));
    const concurrency = req.readConcurrency ?? 4;
    // One window appending, PREPARE_AHEAD being hashed, one read ahead, plus reads in flight.
    this.buffers = new BufferPool(g.chunkSize, this.window * (2 + PREPARE_AHEAD) + concurrency);
    this.reader = new SlotReader(req.source, g, ranges, this.buffers, concurrency, this.window + concurrency);
    this.pool = repo.pool();
    this.compression = repo.config.compression;
    this.totalBytes = Math.min(slotCountOf(ranges) * g.chunkSize, g.diskSize);
  }

  /**
   * Window pipeline: up to PREPARE_AHEAD windows are hashed and compressed on the pool
   * while the oldest is appended to the container and the map (appends stay in slot
   * order). More than one window ahead keeps the workers busy while the main thread
   * waits for the reads of the next window.
   */
  async run(mapWriter: MapWriter, parentMap: MapReader | undefined): Promise<void> {
    const parentSlots = parentMap?.geometry.slotCount ?? 0;
    let pending = await this.reader.next();
    const inFlight: Promise<void>[] = [];
    let chain: Promise<void> = Promise.resolve();
    try {
      for (let first = 0; first < this.g.slotCount; first += this.window) {
        if (this.req.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
        const end = Math.min(first + this.window, this.g.slotCount);
        const digests = new Uint8Array((end - first) * DIGEST_BYTES);
        if (parentMap && first < parentSlots) digests.set(await parentMap.readSlots(first, Math.min(end, parentSlots) - first));
        const items: SlotData[] = [];
        while (pending && pending.slot < end) {
          items.push(pending);
          pending = await this.reader.next();
        }
        const prepared = this.prepare(items, digests, first);
        prepared.catch(() => undefined);
        const previous = chain;
        chain = (async () => {
          await previous;
          const w = await prepared;
          await this.append(w, digests, first);
          await mapWriter.append(digests);
          this.req.onProgress?.({ done: this.counters.bytesRead, total: this.totalBytes });
        })();
        chain.catch(() => undefined);
        inFlight.push(chain);
        if (inFlight.length > PREPARE_AHEAD) await inFlight.shift();
      }
    } finally {
      await chain.catch(() => undefined);
    }
    await chain;
  }

  stats(durationMs: number): PointStats {
    return { ...this.counters, bytesNew: this.writer.bytesAdded, durationMs };
  }

  async abort(): Promise<void> {
    await Promise.allSettled([this.reader.cancel(), this.writer.abort()]);
  }

  /** Zero check, then hash (and maybe compress) on the pool, lookup, compress misses. */
  private async prepare(items: SlotData[], digests: Uint8Array, first: number): Promise<PreparedWindow> {
    const data = items.filter((it) => {
      if (!this.countZero(it)) return true;
      digests.fill(0, (it.slot - first) * DIGEST_BYTES, (it.slot - first + 1) * DIGEST_BYTES);
      return false;
    });
    const speculative = this.newRatio > 0.5 && this.compression.codec !== 'none';
    const extra = speculative ? { compress: this.compression } : {};
    const batches = batchByBytes(data).map((group) => this.pool.hash(group.map((it) => ({ buf: it.buf, length: it.length, ...extra }))));
    const hashed = (await Promise.all(batches)).flat();
    hashed.forEach((h, i) => ((data[i] as SlotData).buf = h.buf));
    const locations = await this.writer.lookup(hashed.map((h) => h.digest));
    const packed = await this.packMisses(data, hashed, locations.map((l) => l === undefined));
    return { items, data, hashed, locations, packed };
  }

  /** Appends the window's new chunks in slot order and fills its map digests. */
  private async append(w: PreparedWindow, digests: Uint8Array, first: number): Promise<void> {
    let added = 0;
    for (let i = 0; i < w.data.length; i++) {
      const it = w.data[i] as SlotData;
      const h = w.hashed[i] as HashResult;
      const loc = w.locations[i] ?? this.writer.pendingLocation(h.digest);
      if (loc) ChunkWriter.checkHit(h.digest, loc, h.checkHash);
      else {
        const p = w.packed.get(i) ?? h.compressed;
        if (!p) throw new ChunkvaultError('INTERNAL', 'missing compressed chunk');
        await this.writer.add({
          header: { codec: p.codec, rawLength: it.length, storedLength: p.payload.length, digest: h.digest, checkHash: h.checkHash, payloadHash: p.payloadHash },
          payload: p.payload,
        });
        added++;
        this.counters.rawNew += it.length;
      }
      digests.set(h.digest, (it.slot - first) * DIGEST_BYTES);
    }
    this.counters.chunksNew += added;
    this.counters.chunksDedup += w.data.length - added;
    if (w.data.length > 0) this.newRatio = added / w.data.length;
    for (const it of w.items) this.buffers.release(it.buf);
  }

  /** Counts the slot as read; true (and digest stays zero) when it is all zeros. */
  private countZero(it: SlotData): boolean {
    this.counters.bytesRead += it.length;
    this.counters.chunksRead++;
    if (!isAllZero(it.buf.subarray(0, it.length))) return false;
    this.counters.chunksZero++;
    return true;
  }

  private async packMisses(data: SlotData[], hashed: HashResult[], miss: boolean[]): Promise<Map<number, PackResult>> {
    const todo = data.map((it, i) => ({ it, i })).filter(({ i }) => miss[i] && !hashed[i]?.compressed);
    const out = new Map<number, PackResult>();
    const jobs = batchByBytes(todo, (x) => x.it.length).map(async (group) => {
      const results = await this.pool.compress(group.map(({ it }) => ({ buf: it.buf, length: it.length, ...this.compression })));
      results.forEach((r, k) => {
        const { it, i } = group[k]!;
        it.buf = r.buf;
        out.set(i, r.packed);
      });
    });
    await Promise.all(jobs);
    return out;
  }
}
