/**
 * Container files on disk: `ContainerWriter` appends records and seals, and
 * `ContainerReader` opens a sealed container and reads records back. Byte layout in
 * container-format.ts; commit order in FORMAT.md.
 *
 * Writer invariants: records are copied into a STAGE_BYTES buffer and written with one
 * call per fill (large sequential appends, no per-record allocation). Two stages per
 * writer, from a process-wide free list: one fills while the other is being written
 * (write-behind, one write in flight). Stages are page-aligned, and each fill's 4 KiB-
 * aligned part is written with direct I/O (direct-io.ts): the unaligned rest is carried
 * to the start of the next stage, so every direct write starts on a block boundary,
 * and only the file's last partial block is written through the page cache, at seal.
 * The first I/O error is sticky and every later call fails with it (a half-written
 * container is never sealed).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import {
  CONTAINER_HEADER_BYTES,
  FOOTER_ENTRY_BYTES,
  MAX_RECORDS_PER_CONTAINER,
  RECORD_HEADER_BYTES,
  TRAILER_BYTES,
} from './constants.js';
import {
  decodeContainerHeader,
  decodeFooter,
  decodeRecordHeader,
  decodeTrailer,
  encodeContainerHeader,
  encodeFooter,
  encodeRecordHeader,
  encodeTrailer,
  type FooterEntry,
  type RecordHeader,
} from './container-format.js';
import { bytesEqual, fromHex, toHex } from './_bytes.js';
import { publish, readFull } from './_fs.js';
import { xxh64 } from './hashing.js';
import { allocArenaBlock, copyBytes, freeArenaBlock } from './shared-arena.js';
import { DIRECT_ALIGN, DirectWriter } from './direct-io.js';
import { ChunkvaultError, toChunkvaultError } from './errors.js';
import { ownedTmp } from './_owner.js';
import { bindingOf, keys, uploadContainer } from './object-repo/binding.js';
import type { ObjectReader } from './storage/index.js';

const STAGE_BYTES = 8 * 1024 * 1024;
/** Stage buffers kept for the next writer (two per writer; a backup has one open and one sealing). */
const spareStages: Uint8Array[] = [];
const MAX_SPARE_STAGES = 4;

/** Stages are arena memory (page-aligned for direct I/O; payloads arrive with one memory.copy). */
function takeStage(): Uint8Array {
  return spareStages.pop() ?? allocArenaBlock(STAGE_BYTES);
}

function giveStage(stage: Uint8Array): void {
  if (spareStages.length < MAX_SPARE_STAGES) spareStages.push(stage);
  else freeArenaBlock(stage);
}

/** `containers/<xx>/<id>.ctr` */
export function containerPath(repoDir: string, id: string): string {
  return join(repoDir, 'containers', id.slice(0, 2), `${id}.ctr`);
}

export function containerTmpPath(repoDir: string, id: string): string {
  return ownedTmp(join(repoDir, 'containers', 'tmp'), `${id}.ctr.tmp`);
}

export interface AppendedRecord {
  readonly containerId: string;
  readonly entry: FooterEntry;
}

export class ContainerWriter {
  readonly id: string;
  private readonly entries: FooterEntry[] = [];
  private size = CONTAINER_HEADER_BYTES;
  /** The stage being filled, and the other one (free, or being written by `writing`). */
  private stage = takeStage();
  private spare: Uint8Array | undefined = takeStage();
  private writing: Promise<void> | undefined;
  private staged = 0;
  private writtenBytes = 0;
  private failure: ChunkvaultError | undefined;
  private sealed = false;

  private constructor(
    private readonly repoDir: string,
    private readonly fh: fsp.FileHandle,
    private readonly direct: DirectWriter,
    idBytes: Uint8Array,
  ) {
    this.id = toHex(idBytes);
    this.stage.set(encodeContainerHeader(idBytes), 0);
    this.staged = CONTAINER_HEADER_BYTES;
  }

  static async create(repoDir: string, options: { direct?: boolean } = {}): Promise<ContainerWriter> {
    const idBytes = new Uint8Array(randomBytes(16));
    const path = containerTmpPath(repoDir, toHex(idBytes));
    const fh = await fsp.open(path, 'wx', 0o644);
    return new ContainerWriter(repoDir, fh, await DirectWriter.open(path, options.direct ?? true), idBytes);
  }

  /** Bytes written with direct I/O so far. */
  get directBytes(): number {
    return this.direct.bytesWritten;
  }

  /** Bytes the sealed file will have before its footer. */
  get byteSize(): number {
    return this.size;
  }

  get recordCount(): number {
    return this.entries.length;
  }

  get isFull(): boolean {
    return this.entries.length >= MAX_RECORDS_PER_CONTAINER;
  }

  /**
   * Appends a record; the caller may reuse `header` and `payload` memory as soon as
   * this returns (the bytes are copied into the stage).
   */
  async append(header: RecordHeader, payload: Uint8Array): Promise<AppendedRecord> {
    this.check();
    if (this.isFull) throw new ChunkvaultError('INTERNAL', 'container is full');
    const offset = this.size;
    const recordBytes = RECORD_HEADER_BYTES + payload.length;
    // After a flush less than a block is staged, so the header always fits.
    if (this.staged + recordBytes > STAGE_BYTES) await this.flush();
    encodeRecordHeader(header, this.stage.subarray(this.staged, this.staged + RECORD_HEADER_BYTES));
    this.staged += RECORD_HEADER_BYTES;
    await this.put(payload);
    this.size += recordBytes;
    const entry: FooterEntry = { ...header, offset };
    this.entries.push(entry);
    return { containerId: this.id, entry };
  }

  /** Writes the footer and trailer, syncs and publishes the file. Returns the footer entries. */
  async seal(): Promise<FooterEntry[]> {
    this.check();
    try {
      const footer = encodeFooter(this.entries);
      const trailer = encodeTrailer({ footerOffset: this.size, count: this.entries.length, footerHash: xxh64(footer) });
      await this.put(footer);
      await this.put(trailer);
      await this.flush();
      await this.settleWrite();
      // The last partial block (direct writes take whole blocks only).
      if (this.staged > 0) await this.writeAt(this.stage.subarray(0, this.staged));
      this.staged = 0;
      await this.direct.close();
      await this.fh.datasync();
      await this.fh.close();
      this.sealed = true;
      this.releaseStages();
      await publish(containerTmpPath(this.repoDir, this.id), containerPath(this.repoDir, this.id));
      // On an object store the container is durable only once uploaded: before its index entries.
      const binding = bindingOf(this.repoDir);
      if (binding) await uploadContainer(binding, this.id, containerPath(this.repoDir, this.id));
      return this.entries;
    } catch (err) {
      throw this.setFailure(err, 'unable to seal container');
    }
  }

  /** Closes and deletes the unsealed file. Safe to call after a failure. */
  async abort(): Promise<void> {
    if (this.sealed) return;
    this.sealed = true;
    await this.writing?.catch(() => undefined);
    this.releaseStages();
    await this.direct.close();
    await this.fh.close().catch(() => undefined);
    await fsp.rm(containerTmpPath(this.repoDir, this.id), { force: true });
  }

  /** Copies `data` into the stage, flushing whenever the stage is full. */
  private async put(data: Uint8Array): Promise<void> {
    for (let at = 0; at < data.length; ) {
      if (this.staged === STAGE_BYTES) await this.flush();
      const n = Math.min(data.length - at, STAGE_BYTES - this.staged);
      copyBytes(this.stage, this.staged, data.subarray(at, at + n));
      this.staged += n;
      at += n;
    }
  }

  /**
   * Starts writing the stage and switches to the other one; waits only for the write
   * before it (one in flight). Its failure is sticky: the next call throws it. With
   * direct I/O only the stage's whole blocks are written; the rest moves to the front
   * of the next stage.
   */
  private async flush(): Promise<void> {
    if (this.staged === 0) return;
    await this.settleWrite();
    const full = this.stage;
    const n = this.staged;
    const cut = this.direct.active ? n - (n % DIRECT_ALIGN) : n;
    if (cut === 0) return;
    this.stage = this.spare ?? takeStage();
    this.spare = undefined;
    copyBytes(this.stage, 0, full.subarray(cut, n));
    this.staged = n - cut;
    this.writing = this.writeAt(full.subarray(0, cut)).finally(() => (this.spare = full));
    this.writing.catch(() => undefined);
  }

  /** Waits for the write in flight; rethrows its failure. */
  private async settleWrite(): Promise<void> {
    const w = this.writing;
    this.writing = undefined;
    await w;
  }

  private releaseStages(): void {
    giveStage(this.stage);
    if (this.spare) giveStage(this.spare);
    this.spare = undefined;
  }

  /** Writes `data` at the end of what is written: its whole blocks directly when possible. */
  private async writeAt(data: Uint8Array): Promise<void> {
    try {
      let done = await this.direct.writeAligned(this.writtenBytes, data);
      while (done < data.length) {
        const { bytesWritten } = await this.fh.write(data, done, data.length - done, this.writtenBytes + done);
        done += bytesWritten;
      }
      this.writtenBytes += data.length;
    } catch (err) {
      throw this.setFailure(err, 'unable to write container');
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
    if (this.sealed) throw new ChunkvaultError('INTERNAL', 'container already sealed');
  }

  private setFailure(err: unknown, context: string): ChunkvaultError {
    this.failure ??= toChunkvaultError(err, `${context} ${this.id}`);
    return this.failure;
  }
}

/** A stored record read back from a container: its header and payload bytes. */
export interface StoredRecord {
  readonly header: RecordHeader;
  readonly payload: Uint8Array;
}

/** Where a reader's bytes come from: a local file, or an object read by ranged GETs. */
interface ByteSource {
  readAt(buf: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

function fileSource(fh: fsp.FileHandle): ByteSource {
  return { readAt: (buf, position) => readFull(fh, buf, position), close: () => fh.close() };
}

/** Bytes fetched per GET once reads turn sequential (a restore walking a container). */
const OBJECT_READ_AHEAD = 4 * 1024 * 1024;

/**
 * Ranged GETs with read-ahead: a read that starts where the previous one ended fetches
 * up to OBJECT_READ_AHEAD bytes at once and serves the following reads from them, so a
 * restore costs one GET per few MiB instead of one per record; a random read (the media
 * agent's Range requests, verify of one chunk) fetches exactly what it asks for.
 */
function objectSource(store: ObjectReader, key: string, size: number): ByteSource {
  // The block in flight or fetched; reads issued concurrently share it.
  let block: { start: number; end: number; data: Promise<Uint8Array> } | undefined;
  let lastEnd = -1;
  return {
    readAt: async (buf, position) => {
      const end = position + buf.length;
      const sequential = position === lastEnd;
      lastEnd = end;
      if (!(block && position >= block.start && end <= block.end) && sequential && buf.length < OBJECT_READ_AHEAD) {
        const blockEnd = Math.min(size, position + OBJECT_READ_AHEAD);
        if (blockEnd >= end) {
          block = { start: position, end: blockEnd, data: store.getRange(key, position, blockEnd - position) };
          block.data.catch(() => undefined); // awaited below and by the reads that share it
        }
      }
      if (block && position >= block.start && end <= block.end) {
        const start = block.start;
        buf.set((await block.data).subarray(position - start, end - start));
      } else buf.set(await store.getRange(key, position, buf.length));
      return buf.length;
    },
    close: async () => {
      block = undefined;
    },
  };
}

export class ContainerReader {
  private constructor(
    readonly id: string,
    readonly path: string,
    private readonly src: ByteSource,
    readonly fileSize: number,
  ) {}

  /**
   * Opens a sealed container: the local file, or on an object store (engine/object-repo)
   * the object, whose records are then read by ranged GETs.
   */
  static async open(repoDir: string, id: string): Promise<ContainerReader> {
    const path = containerPath(repoDir, id);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const binding = e.code === 'ENOENT' ? bindingOf(repoDir) : undefined;
      if (binding) return ContainerReader.openObject(binding.store, id);
      if (e.code === 'ENOENT') {
        throw new ChunkvaultError('CHUNK_MISSING', `container ${id} is missing`, { details: { container: id } });
      }
      throw toChunkvaultError(err, `unable to open container ${id}`);
    }
    const { size } = await fh.stat();
    return new ContainerReader(id, path, fileSource(fh), size);
  }

  private static async openObject(store: ObjectReader, id: string): Promise<ContainerReader> {
    const key = keys.container(id);
    const size = await store.head(key);
    if (size === undefined) throw new ChunkvaultError('CHUNK_MISSING', `container ${id} is missing from the bucket`, { details: { container: id, key } });
    return new ContainerReader(id, key, objectSource(store, key, size), size);
  }

  /** Reads and checks header, trailer and footer; returns the footer entries. */
  async readFooter(): Promise<FooterEntry[]> {
    if (this.fileSize < CONTAINER_HEADER_BYTES + TRAILER_BYTES) {
      throw this.corrupt('file too short');
    }
    const head = await this.readAt(0, CONTAINER_HEADER_BYTES);
    const id = this.wrap(() => decodeContainerHeader(head));
    if (!bytesEqual(id, fromHex(this.id))) throw this.corrupt('header names another container');
    const trailerBytes = await this.readAt(this.fileSize - TRAILER_BYTES, TRAILER_BYTES);
    const trailer = this.wrap(() => decodeTrailer(trailerBytes, this.fileSize));
    const footer = await this.readAt(trailer.footerOffset, trailer.count * FOOTER_ENTRY_BYTES);
    if (xxh64(footer) !== trailer.footerHash) throw this.corrupt('footer hash mismatch');
    return this.wrap(() => decodeFooter(footer, trailer.count));
  }

  /** Reads one record and checks its header against what the index/footer says. */
  async readRecord(offset: number, storedLength: number, digest?: Uint8Array): Promise<StoredRecord> {
    this.checkRecordBounds(offset, storedLength);
    const buf = await this.readAt(offset, RECORD_HEADER_BYTES + storedLength);
    return { header: this.checkRecordHeader(buf, offset, storedLength, digest), payload: buf.subarray(RECORD_HEADER_BYTES) };
  }

  /** CONTAINER_CORRUPT when a record of `storedLength` bytes at `offset` would pass the end. */
  checkRecordBounds(offset: number, storedLength: number): void {
    if (offset + RECORD_HEADER_BYTES + storedLength > this.fileSize) throw this.corrupt(`record at ${offset} beyond end`);
  }

  /**
   * Decodes the record header at the start of `buf` (read from `offset`) and checks that
   * it is the expected record: its stored length and, when given, its digest.
   */
  checkRecordHeader(buf: Uint8Array, offset: number, storedLength: number, digest?: Uint8Array): RecordHeader {
    const header = this.wrap(() => decodeRecordHeader(buf, `record at ${offset}`));
    if (header.storedLength !== storedLength || (digest && !bytesEqual(header.digest, digest))) {
      throw new ChunkvaultError('CHUNK_CORRUPT', `container ${this.id}: record at ${offset} is not the expected chunk`, {
        details: { container: this.id, offset },
      });
    }
    return header;
  }

  /**
   * Reads `buf.length` bytes at `position` into `buf` (many records at once: the batch
   * read path), through the same source, and read-ahead, as `readRecord`.
   */
  async readInto(buf: Uint8Array, position: number): Promise<void> {
    if (position + buf.length > this.fileSize) throw this.corrupt(`range at ${position} beyond end`);
    const n = await this.src.readAt(buf, position);
    if (n !== buf.length) throw this.corrupt(`short read at ${position}`);
  }

  /**
   * Walks record headers from the start (recovery when the footer is damaged or the
   * container was never sealed). Stops at the first record that does not parse.
   */
  async *scanRecords(): AsyncGenerator<FooterEntry> {
    let offset = CONTAINER_HEADER_BYTES;
    while (offset + RECORD_HEADER_BYTES <= this.fileSize) {
      const head = await this.readAt(offset, RECORD_HEADER_BYTES);
      let header: RecordHeader;
      try {
        header = decodeRecordHeader(head);
      } catch {
        return;
      }
      if (offset + RECORD_HEADER_BYTES + header.storedLength > this.fileSize) return;
      const payload = await this.readAt(offset + RECORD_HEADER_BYTES, header.storedLength);
      if (xxh64(payload) !== header.payloadHash) return;
      yield { ...header, offset };
      offset += RECORD_HEADER_BYTES + header.storedLength;
    }
  }

  async close(): Promise<void> {
    await this.src.close().catch(() => undefined);
  }

  private async readAt(position: number, length: number): Promise<Uint8Array> {
    const buf = new Uint8Array(new ArrayBuffer(length));
    const n = await this.src.readAt(buf, position);
    if (n !== length) throw this.corrupt(`short read at ${position}`);
    return buf;
  }

  private wrap<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw this.corrupt((err as Error).message, err);
    }
  }

  private corrupt(message: string, cause?: unknown): ChunkvaultError {
    return new ChunkvaultError('CONTAINER_CORRUPT', `container ${this.id}: ${message}`, {
      cause,
      details: { container: this.id, path: this.path },
    });
  }
}

