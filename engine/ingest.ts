/**
 * Ingest: builds one restore point from pieces pushed by a caller (the media agent),
 * instead of pulling a `BlockSource` as `backup()` does.
 *
 * Terms: an override is a slot whose digest this ingest sets (a whole chunk uploaded,
 * a digest the caller vouches is stored, or a partial chunk merged with the base); the
 * base of a slot is the parent's chunk (an incremental) or zeros.
 *
 *   putChunk(slot, bytes) --pool: SHA-256 + XXH64 + compress--> lookup --> append
 *   setDigest(slot, digest)              (the caller checked the chunk is stored)
 *   writeAt(offset, bytes) --> partial chunks (base + patches) --> putChunk when whole
 *   commit: for each window, parent map (or zeros) + overrides --> map --> point record
 *
 * Memory stays bounded: overrides live in a sparse temporary file (32 B per slot at
 * `slot x 32`) plus a bitmap of 1 bit per slot; at most `maxPartialBytes` of partial
 * chunks are held (the oldest is stored early when more arrive).
 *
 * Commit order is backup()'s (FORMAT.md): seal containers -> index -> map -> point
 * record (the commit). Abort, or any failure, commits nothing.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Repository } from './repository.js';
import { ChunkWriter } from './chunk-writer.js';
import { ChunkReader } from './chunk-reader.js';
import { MapReader, MapWriter, isZeroDigest, mapPath, slotCountFor, slotLength, type MapGeometry } from './point-map.js';
import { newPointId, validateName, type PointRecord, type PointStats } from './catalog.js';
import { ChunkvaultError } from './errors.js';
import { bytesEqual, isAllZero } from './_bytes.js';
import { readFull, writeFull } from './_fs.js';
import { ownedTmp } from './_owner.js';
import { ensureParentKept } from './backup.js';
import { DIGEST_BYTES, MIB } from './constants.js';
import type { HashResult } from './_worker.js';

/** Sector size: raw extents start and end on multiples of it (except at the disk end). */
export const INGEST_SECTOR = 512;

export interface IngestOptions {
  readonly vm: string;
  readonly disk: string;
  readonly sizeBytes: number;
  /** The point the new one starts from (unwritten slots keep its data); null: zeros. */
  readonly parent: PointRecord | null;
  readonly changeToken?: string | null;
  /** What the point record says was read (no secrets). */
  readonly source?: string;
  readonly meta?: Record<string, unknown>;
  /** Record the point as a full read (every slot sent) even when it has a parent. */
  readonly full?: boolean;
  /** Called with the digest of every non-zero chunk stored or deduplicated by `putChunk`/`writeAt`. */
  readonly onChunk?: (digest: Uint8Array) => void;
  /** Bytes of partial chunks held in memory before the oldest is stored. Default 32 MiB. */
  readonly maxPartialBytes?: number;
}

/** What storing one uploaded chunk did. `stored` false: it was already in the store. */
export interface PutResult {
  readonly digest: Uint8Array;
  readonly zero: boolean;
  readonly stored: boolean;
}

/** The GC session (engine/sessions.ts) this ingest or reader holds for its whole life. */
interface Hold {
  end(): Promise<void>;
}

interface Partial {
  readonly buf: Uint8Array;
  /** One bit per sector written since the partial was made. */
  readonly written: Uint8Array;
  count: number;
}

/** One point being built from pushed chunks; see the module comment. */
export class PointIngest {
  readonly id = newPointId();
  readonly geometry: MapGeometry;
  private readonly writer: ChunkWriter;
  private readonly reader: ChunkReader;
  private readonly setBits: Uint8Array;
  private readonly partials = new Map<number, Partial>();
  private readonly maxPartials: number;
  private readonly started = Date.now();
  private readonly counters = { bytesRead: 0, rawNew: 0, chunksRead: 0, chunksZero: 0, chunksNew: 0, chunksDedup: 0 };
  /** Serialises appends (ChunkWriter is one sequential appender) and partial merges. */
  private lock: Promise<unknown> = Promise.resolve();
  private readonly inflight = new Set<Promise<unknown>>();
  private state: 'open' | 'committing' | 'done' = 'open';

  private constructor(
    private readonly repo: Repository,
    private readonly o: IngestOptions,
    private readonly slotsFile: fsp.FileHandle,
    private readonly slotsPath: string,
    private readonly parentMap: MapReader | undefined,
    private readonly hold: Hold,
    index: Awaited<ReturnType<Repository['index']>>,
  ) {
    const { chunkSize } = repo.config;
    this.geometry = { chunkSize, diskSize: o.sizeBytes, slotCount: slotCountFor(o.sizeBytes, chunkSize) };
    this.writer = new ChunkWriter(repo.dir, index, repo.config.containerTargetBytes);
    this.reader = new ChunkReader(repo.dir, index, repo.pool());
    this.setBits = new Uint8Array(Math.ceil(this.geometry.slotCount / 8));
    this.maxPartials = Math.max(2, Math.floor((o.maxPartialBytes ?? 32 * MIB) / chunkSize));
  }

  /** Starts an ingest; the parent must be a committed point of the same repository. */
  static async open(repo: Repository, o: IngestOptions): Promise<PointIngest> {
    validateName('vm', o.vm);
    validateName('disk', o.disk);
    if (!Number.isSafeInteger(o.sizeBytes) || o.sizeBytes < 0) throw new ChunkvaultError('INVALID_ARGUMENT', `invalid disk size ${o.sizeBytes}`);
    const hold: Hold = await repo.beginSession('backup');
    await ensureParentKept(repo, o.parent, hold);
    let parentMap: MapReader | undefined;
    let fh: fsp.FileHandle | undefined;
    try {
      const index = await repo.index();
      if (o.parent) {
        parentMap = await MapReader.open(mapPath(repo.dir, o.parent.id));
        await parentMap.verifyDigest(o.parent.mapDigest);
      }
      const id = newPointId();
      const path = ownedTmp(join(repo.dir, 'tmp'), `${id}.slots.tmp`);
      fh = await fsp.open(path, 'w+', 0o600);
      const ingest = new PointIngest(repo, o, fh, path, parentMap, hold, index);
      await ingest.rebaseResizedSlot();
      return ingest;
    } catch (err) {
      await Promise.allSettled([parentMap?.close(), fh?.close(), hold.end()]);
      throw err;
    }
  }

  /** Whether each digest is in the store (indexed, or added by this ingest). */
  async has(digests: readonly Uint8Array[]): Promise<boolean[]> {
    return (await this.writer.lookup(digests)).map((l) => l !== undefined);
  }

  /**
   * Sets a slot to a digest the caller found in the store with `has` (or the zero
   * sentinel). Commit checks again that every such chunk is stored.
   */
  setDigest(slot: number, digest: Uint8Array): Promise<void> {
    return this.track(() => this.setDigestNow(slot, digest));
  }

  private async setDigestNow(slot: number, digest: Uint8Array): Promise<void> {
    this.checkOpen();
    this.checkSlot(slot);
    if (digest.length !== DIGEST_BYTES) throw new ChunkvaultError('INVALID_ARGUMENT', 'a digest has 32 bytes');
    this.partials.delete(slot);
    await this.setOverride(slot, digest);
  }

  /**
   * Stores the whole chunk of `slot` (exactly its length) and sets the slot to it. With
   * `expect`, a chunk whose SHA-256 differs is refused (INVALID_ARGUMENT) and nothing is set.
   */
  putChunk(slot: number, data: Uint8Array, expect?: Uint8Array): Promise<PutResult> {
    return this.track(() => this.putChunkNow(slot, data, expect));
  }

  private async putChunkNow(slot: number, data: Uint8Array, expect?: Uint8Array): Promise<PutResult> {
    this.checkOpen();
    this.checkSlot(slot);
    const len = slotLength(this.geometry, slot);
    if (data.length !== len) throw new ChunkvaultError('EXTENTS_INVALID', `slot ${slot} holds ${len} bytes, got ${data.length}`, { details: { slot, length: data.length } });
    const result = await this.store(data, false, expect);
    this.partials.delete(slot);
    this.counters.bytesRead += len;
    this.counters.chunksRead++;
    await this.setOverride(slot, result.digest);
    return result;
  }

  /**
   * Writes raw bytes at `offset` (a multiple of 512; the length too, except at the
   * disk end). Whole chunks are stored at once; partial ones are merged with the slot's
   * current content. Writing the same bytes twice gives the same point.
   */
  writeAt(offset: number, data: Uint8Array): Promise<void> {
    return this.track(() => this.writeAtNow(offset, data));
  }

  private async writeAtNow(offset: number, data: Uint8Array): Promise<void> {
    this.checkOpen();
    const end = offset + data.length;
    const aligned = offset % INGEST_SECTOR === 0 && (end % INGEST_SECTOR === 0 || end === this.geometry.diskSize);
    if (!Number.isSafeInteger(offset) || offset < 0 || end > this.geometry.diskSize || !aligned) {
      throw new ChunkvaultError('EXTENTS_INVALID', `extent [${offset}, ${end}) is not 512-aligned inside the disk (${this.geometry.diskSize} bytes)`, { details: { offset, length: data.length } });
    }
    const cs = this.geometry.chunkSize;
    for (let at = offset; at < end; ) {
      const slot = Math.floor(at / cs);
      const slotEnd = Math.min((slot + 1) * cs, this.geometry.diskSize);
      const n = Math.min(end, slotEnd) - at;
      const piece = data.subarray(at - offset, at - offset + n);
      if (n === slotEnd - slot * cs) await this.putChunkNow(slot, piece);
      else await this.serial(() => this.patch(slot, at - slot * cs, piece));
      at += n;
    }
  }

  /** Stores the partial chunks, writes the map and commits the point record. */
  async commit(): Promise<PointRecord> {
    this.checkOpen();
    this.state = 'committing';
    let mapWriter: MapWriter | undefined;
    let mapCommitted = false;
    try {
      // Uploads that started before the commit finish into this point (or fail it).
      const failed = (await Promise.allSettled([...this.inflight])).find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      await this.serial(() => this.flushPartials(0));
      mapWriter = await MapWriter.create(this.repo.dir, this.id, this.geometry);
      await this.writeMap(mapWriter);
      await this.writer.seal();
      const mapDigest = await mapWriter.commit(mapPath(this.repo.dir, this.id));
      mapCommitted = true;
      const record = this.record(mapDigest);
      await this.repo.catalog.commit(record);
      this.state = 'done';
      await this.release();
      return record;
    } catch (err) {
      await Promise.allSettled([mapWriter?.abort(), mapCommitted ? fsp.rm(mapPath(this.repo.dir, this.id), { force: true }) : undefined]);
      await this.abort();
      throw err;
    }
  }

  /** Drops everything this ingest wrote that no point references. Idempotent. */
  async abort(): Promise<void> {
    if (this.state === 'done') return;
    this.state = 'done';
    await this.lock.catch(() => undefined);
    await this.writer.abort().catch(() => undefined);
    await this.release();
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Raw bytes received so far. */
  get bytesReceived(): number {
    return this.counters.bytesRead;
  }

  /** Stored bytes this ingest added (record headers + payloads). */
  get bytesStored(): number {
    return this.writer.bytesAdded;
  }

  private async release(): Promise<void> {
    this.partials.clear();
    await Promise.allSettled([this.slotsFile.close(), this.parentMap?.close(), this.reader.close()]);
    await fsp.rm(this.slotsPath, { force: true });
    await this.hold.end().catch(() => undefined);
  }

  private checkOpen(): void {
    if (this.state !== 'open') throw new ChunkvaultError('INVALID_ARGUMENT', 'this ingest is already committed or aborted');
  }

  private checkSlot(slot: number): void {
    if (!Number.isSafeInteger(slot) || slot < 0 || slot >= this.geometry.slotCount) {
      throw new ChunkvaultError('EXTENTS_INVALID', `slot ${slot} is outside the disk (${this.geometry.slotCount} slots)`, { details: { slot } });
    }
  }

  /** Runs an upload, known to commit (which waits for it) and refused once the ingest is over. */
  private track<T>(fn: () => Promise<T>): Promise<T> {
    const p = fn();
    this.inflight.add(p);
    void p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    );
    return p;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.then(fn, fn);
    this.lock = next.catch(() => undefined);
    return next;
  }

  /**
   * Hashes and compresses (always: a chunk the store already holds costs the same CPU
   * time as a new one), then appends it under the lock unless the store has it.
   */
  private async store(data: Uint8Array, locked = false, expect?: Uint8Array): Promise<PutResult> {
    const mismatch = () => new ChunkvaultError('INVALID_ARGUMENT', 'the chunk does not match its digest');
    if (isAllZero(data)) {
      if (expect && !isZeroDigest(expect)) throw mismatch();
      this.counters.chunksZero++;
      return { digest: new Uint8Array(DIGEST_BYTES), zero: true, stored: false };
    }
    const buf = new Uint8Array(data.length);
    buf.set(data);
    const [h] = await this.repo.pool().hash([{ buf, length: buf.length, compress: this.repo.config.compression }]);
    if (!h?.compressed) throw new ChunkvaultError('INTERNAL', 'the worker pool returned no hash');
    if (expect && !bytesEqual(expect, h.digest)) throw mismatch();
    return locked ? this.append(h) : this.serial(() => this.append(h));
  }

  /** Appends a hashed chunk unless it is stored already; the caller holds the lock. */
  private async append(h: HashResult): Promise<PutResult> {
    // An upload still hashing when the ingest was aborted must not start a new container.
    if (this.state === 'done') throw new ChunkvaultError('INVALID_ARGUMENT', 'this ingest is already committed or aborted');
    this.o.onChunk?.(h.digest);
    const [loc] = await this.writer.lookup([h.digest]);
    if (loc) {
      ChunkWriter.checkHit(h.digest, loc, h.checkHash);
      this.counters.chunksDedup++;
      return { digest: h.digest, zero: false, stored: false };
    }
    const p = h.compressed!;
    await this.writer.add({ header: { codec: p.codec, rawLength: h.buf.length, storedLength: p.payload.length, digest: h.digest, checkHash: h.checkHash, payloadHash: p.payloadHash }, payload: p.payload });
    this.counters.chunksNew++;
    this.counters.rawNew += h.buf.length;
    return { digest: h.digest, zero: false, stored: true };
  }

  private async setOverride(slot: number, digest: Uint8Array): Promise<void> {
    await writeFull(this.slotsFile, digest, slot * DIGEST_BYTES);
    this.setBits[slot >> 3]! |= 1 << (slot & 7);
  }

  private isSet(slot: number): boolean {
    return ((this.setBits[slot >> 3] ?? 0) & (1 << (slot & 7))) !== 0;
  }

  /** The slot's current bytes: its override, else the parent's chunk (resized), else zeros. */
  private async currentBytes(slot: number): Promise<Uint8Array> {
    const out = new Uint8Array(slotLength(this.geometry, slot));
    let digest: Uint8Array | undefined;
    if (this.isSet(slot)) {
      digest = new Uint8Array(DIGEST_BYTES);
      await readFull(this.slotsFile, digest, slot * DIGEST_BYTES);
    } else if (this.parentMap && slot < this.parentMap.geometry.slotCount) {
      digest = await this.parentMap.readSlots(slot, 1);
    }
    if (!digest || isZeroDigest(digest)) return out;
    // A chunk this ingest added is readable once its container is sealed and indexed.
    if (this.writer.pendingLocation(digest)) await this.writer.seal();
    const [loc] = await this.reader.locate([digest]);
    const data = await this.reader.read(digest, loc!);
    out.set(data.subarray(0, Math.min(data.length, out.length)));
    return out;
  }

  /** Merges `piece` at `at` within `slot` (under the lock). */
  private async patch(slot: number, at: number, piece: Uint8Array): Promise<void> {
    let p = this.partials.get(slot);
    if (!p) {
      await this.flushPartials(this.maxPartials - 1);
      p = { buf: await this.currentBytes(slot), written: new Uint8Array(Math.ceil(this.geometry.chunkSize / INGEST_SECTOR / 8)), count: 0 };
      this.partials.set(slot, p);
    }
    p.buf.set(piece, at);
    this.counters.bytesRead += piece.length;
    for (let s = at / INGEST_SECTOR; s < Math.ceil((at + piece.length) / INGEST_SECTOR); s++) {
      const bit = 1 << (s & 7);
      if ((p.written[s >> 3]! & bit) === 0) p.count++;
      p.written[s >> 3]! |= bit;
    }
    if (p.count * INGEST_SECTOR >= p.buf.length) await this.flushOne(slot, p);
  }

  /** Stores partial chunks, oldest first, until at most `keep` remain (under the lock). */
  private async flushPartials(keep: number): Promise<void> {
    while (this.partials.size > keep) {
      const [slot, p] = this.partials.entries().next().value as [number, Partial];
      await this.flushOne(slot, p);
    }
  }

  /** Stores one partial chunk; runs under the lock, so it appends directly. */
  private async flushOne(slot: number, p: Partial): Promise<void> {
    this.partials.delete(slot);
    this.counters.chunksRead++;
    const r = await this.store(p.buf, true);
    await this.setOverride(slot, r.digest);
  }

  /** Re-derives the slot at the parent's old end when the disk was resized (its length changed). */
  private async rebaseResizedSlot(): Promise<void> {
    const pg = this.parentMap?.geometry;
    if (!pg || pg.diskSize === this.geometry.diskSize) return;
    const last = Math.min(pg.slotCount, this.geometry.slotCount) - 1;
    if (last < 0 || slotLength(pg, last) === slotLength(this.geometry, last)) return;
    const p: Partial = { buf: await this.currentBytes(last), written: new Uint8Array(Math.ceil(this.geometry.chunkSize / INGEST_SECTOR / 8)), count: 0 };
    this.partials.set(last, p);
  }

  /** Streams parent (or zero) digests merged with the overrides into the map; checks the overrides are stored. */
  private async writeMap(mapWriter: MapWriter): Promise<void> {
    const window = 8192;
    const parentSlots = this.parentMap?.geometry.slotCount ?? 0;
    for (let first = 0; first < this.geometry.slotCount; first += window) {
      const end = Math.min(first + window, this.geometry.slotCount);
      const digests = new Uint8Array((end - first) * DIGEST_BYTES);
      if (this.parentMap && first < parentSlots) digests.set(await this.parentMap.readSlots(first, Math.min(end, parentSlots) - first));
      const overrides = new Uint8Array((end - first) * DIGEST_BYTES);
      await readFull(this.slotsFile, overrides, first * DIGEST_BYTES);
      const check: Uint8Array[] = [];
      for (let s = first; s < end; s++) {
        if (!this.isSet(s)) continue;
        const d = overrides.subarray((s - first) * DIGEST_BYTES, (s - first + 1) * DIGEST_BYTES);
        digests.set(d, (s - first) * DIGEST_BYTES);
        if (!isZeroDigest(d)) check.push(d);
      }
      const found = await this.writer.lookup(check);
      const missing = found.findIndex((l) => l === undefined);
      if (missing >= 0) throw new ChunkvaultError('CHUNK_MISSING', 'a slot names a chunk that is not in the repository', { details: { chunk: Buffer.from(check[missing]!).toString('hex') } });
      await mapWriter.append(digests);
    }
  }

  private record(mapDigest: string): PointRecord {
    const stats: PointStats = { ...this.counters, bytesNew: this.writer.bytesAdded, durationMs: Date.now() - this.started };
    return {
      id: this.id,
      vm: this.o.vm,
      disk: this.o.disk,
      time: new Date().toISOString(),
      parent: this.o.parent?.id ?? null,
      mode: this.o.parent && !this.o.full ? 'incremental' : 'full',
      sizeBytes: this.geometry.diskSize,
      chunkSize: this.geometry.chunkSize,
      slotCount: this.geometry.slotCount,
      mapDigest,
      changeToken: this.o.changeToken ?? null,
      source: this.o.source ?? 'ingest',
      stats,
      ...(this.o.meta ? { meta: this.o.meta } : {}),
    };
  }
}

/**
 * Random-access reads of a committed point (HTTP Range reads, streamed images). The
 * map is checked against the catalog once, at open; every chunk is checked as it is
 * read. Windows of chunks are fetched in parallel on the worker pool.
 */
export class PointReader {
  private constructor(
    private readonly map: MapReader,
    private readonly reader: ChunkReader,
    private readonly hold: Hold,
  ) {}

  static async open(repo: Repository, point: PointRecord): Promise<PointReader> {
    const hold: Hold = await repo.beginSession('read');
    let map: MapReader | undefined;
    try {
      map = await MapReader.open(mapPath(repo.dir, point.id));
      await map.verifyDigest(point.mapDigest);
      return new PointReader(map, new ChunkReader(repo.dir, await repo.index(), repo.pool()), hold);
    } catch (err) {
      await Promise.allSettled([map?.close(), hold.end()]);
      throw err;
    }
  }

  get sizeBytes(): number {
    return this.map.geometry.diskSize;
  }

  /** The map's slot digests, window by window (32 bytes per slot; zero sentinel for zeros). */
  slotDigests(window = 8192): AsyncGenerator<{ first: number; digests: Uint8Array }> {
    return this.map.windows(window);
  }

  /** The bytes `[offset, offset + length)`, in order, as consecutive pieces. */
  async *range(offset: number, length: number, windowBytes = 8 * MIB): AsyncGenerator<Uint8Array> {
    const g = this.map.geometry;
    const end = Math.min(offset + length, g.diskSize);
    if (offset >= end) return;
    const firstSlot = Math.floor(offset / g.chunkSize);
    const endSlot = Math.ceil(end / g.chunkSize);
    const window = Math.max(1, Math.floor(windowBytes / g.chunkSize));
    let ahead: Promise<Uint8Array[]> | undefined = this.fetch(firstSlot, Math.min(firstSlot + window, endSlot));
    for (let first = firstSlot; first < endSlot; first += window) {
      const current = await ahead!;
      const nextFirst = first + window;
      ahead = nextFirst < endSlot ? this.fetch(nextFirst, Math.min(nextFirst + window, endSlot)) : undefined;
      ahead?.catch(() => undefined);
      for (let i = 0; i < current.length; i++) {
        const slotStart = (first + i) * g.chunkSize;
        const data = current[i]!;
        const from = Math.max(offset, slotStart) - slotStart;
        const to = Math.min(end, slotStart + data.length) - slotStart;
        yield data.subarray(from, to);
      }
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.map.close(), this.reader.close()]);
    await this.hold.end().catch(() => undefined);
  }

  private async fetch(first: number, end: number): Promise<Uint8Array[]> {
    const g = this.map.geometry;
    const digests = await this.map.readSlots(first, end - first);
    const slots = Array.from({ length: end - first }, (_, i) => digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES));
    const data = slots.filter((d) => !isZeroDigest(d));
    const locs = await this.reader.locate(data);
    const read = await Promise.all(data.map((d, k) => this.reader.read(d, locs[k]!)));
    let k = 0;
    return slots.map((d, i) => {
      const len = slotLength(g, first + i);
      if (isZeroDigest(d)) return new Uint8Array(len);
      const chunk = read[k++]!;
      if (chunk.length !== len) throw new ChunkvaultError('CHUNK_CORRUPT', `slot ${first + i}: chunk has ${chunk.length} bytes, expected ${len}`);
      return chunk;
    });
  }
}
