/**
 * The read side of the chunk store: digest -> location (index) -> record (container)
 * -> checked raw bytes (worker pool: payload hash, decompression, check hash).
 * Keeps a small LRU of open container files.
 *
 * Two paths: `read` fetches one chunk into fresh memory (ingest, verify); `readMany`
 * fills a shared output slab with a batch of chunks (restore):
 *
 *   wants (digest -> output offset)
 *     -> unique digests -> one index.findMany
 *     -> per container, records sorted by offset, coalesced into ranges
 *        (gap <= COALESCE_GAP, span <= MAX_RANGE_BYTES), read into the input slab
 *     -> each record header checked against the index (main thread)
 *     -> worker tasks of ~TASK_RAW_BYTES: payload hash, decompress into the output
 *        slab, check hash, copies to the other offsets of the same digest
 */
import { ContainerReader } from './container.js';
import type { RecordHeader } from './container-format.js';
import type { ChunkIndex, ChunkLocation } from './chunk-index.js';
import type { WorkerPool } from './worker-pool.js';
import { OPEN_BATCH_FIELDS, type OpenBatchFailure } from './_worker-open.js';
import { ChunkvaultError, isChunkvaultError, toChunkvaultError, type ErrorCode } from './errors.js';
import { toHex } from './_bytes.js';
import { KIB, MIB, RECORD_HEADER_BYTES } from './constants.js';
import { adviseHugePages } from './native.js';

const MAX_OPEN_CONTAINERS = 32;
/** Records this close in one container are read with one call (the gap is read and dropped). */
const COALESCE_GAP = 64 * KIB;
/** Largest coalesced read. */
const MAX_RANGE_BYTES = 8 * MIB;
/** Raw bytes per worker task: large enough to amortise the round trip, small enough to spread. */
const TASK_RAW_BYTES = 2 * MIB;
/** Containers read at once by one `readMany` (object stores: parallel GETs). */
const CONTAINERS_IN_FLIGHT = 4;

/** One chunk `readMany` must place: its raw bytes go to `out[offset, offset + length)`. */
export interface ChunkWant {
  readonly digest: Uint8Array;
  readonly offset: number;
  /** Expected raw length; a record of another length is CHUNK_CORRUPT. */
  readonly length: number;
}

/**
 * Input memory of `readMany` (stored records as read), reused across calls and grown
 * to the largest batch. Shared memory: workers read it in place. One per concurrent
 * `readMany` call.
 */
export class ReadScratch {
  private buf = new Uint8Array(new SharedArrayBuffer(0));

  get(bytes: number): Uint8Array {
    if (this.buf.length < bytes) {
      this.buf = new Uint8Array(new SharedArrayBuffer(Math.max(bytes, this.buf.length * 2)));
      adviseHugePages(this.buf);
    }
    return this.buf;
  }
}

/** One distinct chunk of a batch. */
interface Unique {
  readonly digest: Uint8Array;
  readonly outOffset: number;
  readonly copies: number[];
  loc?: ChunkLocation;
  /** Offset of its payload in the input slab, once read and checked. */
  payloadAt?: number;
  payloadHash?: bigint;
  error?: ChunkvaultError;
}

/** A coalesced read: records `recs` of one container, read into the input slab at `at`. */
interface Range {
  readonly start: number;
  end: number;
  readonly at: number;
  readonly recs: Unique[];
}

/** Wraps a failure reading one chunk as today's single-chunk path reports it. */
function chunkError(err: unknown, digest: Uint8Array, loc: ChunkLocation): ChunkvaultError {
  const chunk = toHex(digest);
  const details = { chunk, container: loc.containerId, offset: loc.offset };
  if (isChunkvaultError(err, 'CHUNK_MISSING')) return new ChunkvaultError('CHUNK_MISSING', err.message, { cause: err, details });
  // Only damage is reported as damage: I/O and internal failures keep their own code.
  if (!isChunkvaultError(err, 'CHUNK_CORRUPT') && !isChunkvaultError(err, 'CONTAINER_CORRUPT')) return toChunkvaultError(err, `reading chunk ${chunk}`);
  const message = `chunk ${chunk} in container ${loc.containerId} at ${loc.offset} is damaged: ${(err as Error).message}`;
  return new ChunkvaultError('CHUNK_CORRUPT', message, { cause: err, details });
}

/** A record header must agree with the index entry that led to it. */
function checkAgainstIndex(header: RecordHeader, loc: ChunkLocation): void {
  if (header.checkHash !== loc.checkHash || header.codec !== loc.codec || header.rawLength !== loc.rawLength) {
    throw new ChunkvaultError('CHUNK_CORRUPT', 'record header disagrees with the index');
  }
}

/** Records of one container sorted by offset, coalesced; input slab offsets from `at`. */
function coalesce(recs: Unique[], at: number): Range[] {
  recs.sort((a, b) => a.loc!.offset - b.loc!.offset);
  const ranges: Range[] = [];
  let cur: Range | undefined;
  for (const u of recs) {
    const start = u.loc!.offset;
    const end = start + RECORD_HEADER_BYTES + u.loc!.storedLength;
    if (cur && start - cur.end <= COALESCE_GAP && Math.max(end, cur.end) - cur.start <= MAX_RANGE_BYTES) {
      cur.end = Math.max(cur.end, end);
      cur.recs.push(u);
      continue;
    }
    if (cur) at += cur.end - cur.start;
    cur = { start, end, at, recs: [u] };
    ranges.push(cur);
  }
  return ranges;
}

/** Builds the worker tasks of one range's good records (each task ~TASK_RAW_BYTES of output). */
function batches(recs: readonly Unique[]): Unique[][] {
  const out: Unique[][] = [];
  let cur: Unique[] = [];
  let bytes = 0;
  for (const u of recs) {
    cur.push(u);
    bytes += u.loc!.rawLength * (1 + u.copies.length);
    if (bytes >= TASK_RAW_BYTES) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

export class ChunkReader {
  private readonly open = new Map<string, Promise<ContainerReader>>();
  /** Reads in flight per container: a container in use is never closed by the LRU. */
  private readonly inUse = new Map<string, number>();

  constructor(
    private readonly repoDir: string,
    private readonly index: ChunkIndex,
    private readonly pool: WorkerPool,
  ) {}

  /** Locations of many digests in one index call; a missing one is CHUNK_MISSING. */
  async locate(digests: readonly Uint8Array[]): Promise<ChunkLocation[]> {
    const locs = await this.index.findMany(digests);
    return locs.map((loc, i) => {
      if (loc) return loc;
      const chunk = toHex(digests[i] as Uint8Array);
      throw new ChunkvaultError('CHUNK_MISSING', `chunk ${chunk} is not in the repository`, { details: { chunk } });
    });
  }

  /**
   * Reads, checks and decompresses one chunk. With `verifyDigest`, SHA-256 is checked
   * too. Damage is CHUNK_CORRUPT (or CONTAINER_CORRUPT) naming the chunk.
   */
  async read(digest: Uint8Array, loc: ChunkLocation, verifyDigest = false): Promise<Uint8Array> {
    this.hold(loc.containerId, 1);
    try {
      const container = await this.container(loc.containerId);
      const rec = await container.readRecord(loc.offset, loc.storedLength, digest);
      checkAgainstIndex(rec.header, loc);
      return await this.pool.open({
        payload: rec.payload,
        codec: loc.codec,
        rawLength: loc.rawLength,
        payloadHash: rec.header.payloadHash,
        checkHash: loc.checkHash,
        digest: verifyDigest ? digest : null,
      });
    } catch (err) {
      throw chunkError(err, digest, loc);
    } finally {
      this.hold(loc.containerId, -1);
    }
  }

  /**
   * Reads, checks and decompresses a batch of chunks into `out` (shared memory), with
   * the same checks and errors as `read`. A digest wanted at several offsets is read and
   * decompressed once. `scratch` holds the stored records meanwhile. Every started read
   * and worker task has finished when this settles, so both slabs may then be reused;
   * on failure it rejects with the error of the first failing chunk in `wants` order.
   */
  async readMany(wants: readonly ChunkWant[], out: Uint8Array, scratch: ReadScratch, verifyDigest = false): Promise<void> {
    if (!(out.buffer instanceof SharedArrayBuffer)) throw new ChunkvaultError('INTERNAL', 'readMany needs a SharedArrayBuffer output');
    const uniques = this.uniques(wants, out.length);
    if (uniques.length === 0) return;
    const locs = await this.locate(uniques.map((u) => u.digest));
    const groups = new Map<string, Unique[]>();
    uniques.forEach((u, i) => {
      u.loc = locs[i]!;
      const g = groups.get(u.loc.containerId);
      if (g) g.push(u);
      else groups.set(u.loc.containerId, [u]);
    });
    this.checkLengths(wants, uniques);
    let at = 0;
    const plans: { id: string; ranges: Range[] }[] = [];
    for (const [id, recs] of groups) {
      const ranges = coalesce(recs, at);
      const last = ranges[ranges.length - 1]!;
      at = last.at + last.end - last.start;
      plans.push({ id, ranges });
    }
    const input = scratch.get(at);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < plans.length) {
        const p = plans[next++]!;
        await this.readContainer(p.id, p.ranges, input, out, verifyDigest);
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONTAINERS_IN_FLIGHT, plans.length) }, lane));
    const failed = uniques.find((u) => u.error);
    if (failed) throw failed.error!;
  }

  async close(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    await Promise.allSettled(all.map(async (p) => (await p).close()));
  }

  /** Distinct digests in first-want order; later wants of the same digest become copies. */
  private uniques(wants: readonly ChunkWant[], outLength: number): Unique[] {
    const byHex = new Map<string, Unique>();
    for (const w of wants) {
      if (w.offset < 0 || w.offset + w.length > outLength) throw new ChunkvaultError('INTERNAL', `readMany: offset ${w.offset} outside the output`);
      const hex = toHex(w.digest);
      const u = byHex.get(hex);
      if (u) u.copies.push(w.offset);
      else byHex.set(hex, { digest: w.digest, outOffset: w.offset, copies: [] });
    }
    return [...byHex.values()];
  }

  /** Every want's length must be the record's raw length (a map naming a chunk of another size is damage). */
  private checkLengths(wants: readonly ChunkWant[], uniques: readonly Unique[]): void {
    const byOffset = new Map<number, Unique>();
    for (const u of uniques) {
      byOffset.set(u.outOffset, u);
      for (const c of u.copies) byOffset.set(c, u);
    }
    for (const w of wants) {
      const loc = byOffset.get(w.offset)!.loc!;
      if (loc.rawLength !== w.length) {
        const chunk = toHex(w.digest);
        throw new ChunkvaultError('CHUNK_CORRUPT', `chunk ${chunk} has ${loc.rawLength} bytes, expected ${w.length}`, {
          details: { chunk, container: loc.containerId, offset: loc.offset },
        });
      }
    }
  }

  /** Reads one container's ranges in offset order; each range's tasks start as soon as it is read. */
  private async readContainer(id: string, ranges: readonly Range[], input: Uint8Array, out: Uint8Array, verifyDigest: boolean): Promise<void> {
    this.hold(id, 1);
    const tasks: Promise<void>[] = [];
    try {
      const container = await this.container(id);
      for (const r of ranges) {
        const good = await this.readRange(container, r, input);
        for (const b of batches(good)) tasks.push(this.openBatch(b, input, out, verifyDigest));
      }
    } catch (err) {
      for (const r of ranges) for (const u of r.recs) if (u.payloadAt === undefined) u.error ??= chunkError(err, u.digest, u.loc!);
    } finally {
      await Promise.all(tasks);
      this.hold(id, -1);
    }
  }

  /** Reads a range and checks each record header; returns the records that passed. */
  private async readRange(container: ContainerReader, r: Range, input: Uint8Array): Promise<Unique[]> {
    const end = Math.min(r.end, container.fileSize);
    if (end > r.start) await container.readInto(input.subarray(r.at, r.at + end - r.start), r.start);
    const good: Unique[] = [];
    for (const u of r.recs) {
      const loc = u.loc!;
      const hdr = r.at + loc.offset - r.start;
      try {
        container.checkRecordBounds(loc.offset, loc.storedLength);
        const header = container.checkRecordHeader(input.subarray(hdr, hdr + RECORD_HEADER_BYTES), loc.offset, loc.storedLength, u.digest);
        checkAgainstIndex(header, loc);
        u.payloadHash = header.payloadHash;
        u.payloadAt = hdr + RECORD_HEADER_BYTES;
        good.push(u);
      } catch (err) {
        u.error = chunkError(err, u.digest, loc);
      }
    }
    return good;
  }

  /** One worker task; failures come back as data and become errors on their chunks. */
  private async openBatch(recs: readonly Unique[], input: Uint8Array, out: Uint8Array, verifyDigest: boolean): Promise<void> {
    const records = new Float64Array(recs.length * OPEN_BATCH_FIELDS);
    const hashes = new BigUint64Array(recs.length * 2);
    const digests = verifyDigest ? new Uint8Array(recs.length * 32) : null;
    const copies: number[] = [];
    recs.forEach((u, i) => {
      const loc = u.loc!;
      records.set([u.payloadAt!, loc.storedLength, loc.codec, loc.rawLength, u.outOffset], i * OPEN_BATCH_FIELDS);
      hashes[2 * i] = u.payloadHash!;
      hashes[2 * i + 1] = loc.checkHash;
      digests?.set(u.digest, 32 * i);
      for (const c of u.copies) copies.push(i, c);
    });
    let failed: OpenBatchFailure[] | null;
    try {
      failed = await this.pool.openBatch({ input, output: out, records, hashes, digests, copies: Float64Array.from(copies) });
    } catch (err) {
      for (const u of recs) u.error ??= chunkError(err, u.digest, u.loc!);
      return;
    }
    for (const f of failed ?? []) {
      const u = recs[f.index]!;
      u.error = chunkError(new ChunkvaultError(f.code as ErrorCode, f.message), u.digest, u.loc!);
    }
  }

  private hold(id: string, delta: number): void {
    const n = (this.inUse.get(id) ?? 0) + delta;
    if (n <= 0) this.inUse.delete(id);
    else this.inUse.set(id, n);
  }

  private evictOne(): void {
    for (const [id, reader] of this.open) {
      if (this.inUse.has(id)) continue;
      this.open.delete(id);
      void reader.then((r) => r.close(), () => undefined);
      return;
    }
  }

  private container(id: string): Promise<ContainerReader> {
    let p = this.open.get(id);
    if (p) {
      this.open.delete(id);
      this.open.set(id, p);
      return p;
    }
    p = ContainerReader.open(this.repoDir, id);
    p.catch(() => this.open.delete(id));
    this.open.set(id, p);
    if (this.open.size > MAX_OPEN_CONTAINERS) this.evictOne();
    return p;
  }
}
