/**
 * Restore targets: a new regular file (written to `<path>.partial`, renamed on
 * success, sparse: zero chunks are holes), an existing block device (every byte
 * written in place), and a stream such as stdout, a FIFO or a character device like
 * /dev/null (in order, zeros written).
 */
import { once } from 'node:events';
import { createWriteStream, promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { ChunkvaultError, DirectWriter, toChunkvaultError, type RestoreTarget } from '../engine/index.js';

function outputError(err: unknown, what: string): ChunkvaultError {
  const inner = toChunkvaultError(err, what);
  return new ChunkvaultError('OUTPUT_FAILED', inner.message, { cause: err, details: inner.details });
}

/** Buffered bytes after which a background datasync starts (see FileTarget.startSync). */
const SYNC_EVERY_BYTES = 128 * 1024 * 1024;
export interface FileTargetOptions {
  /**
   * Write aligned runs with direct I/O (O_DIRECT, Linux), bypassing the page cache
   * (default true). A restore writes a whole disk once: through the page cache it
   * would evict everything else, then copy every byte twice. Falls back to buffered
   * writes when the filesystem or the memory does not allow it.
   */
  readonly direct?: boolean;
}

/**
 * A new file or a block device. Restore hands over large runs (many slots, one write
 * each) and overlaps them with reading the next windows itself, so one positional
 * write at a time is enough. Measured on a 2-core machine: 8 concurrent 256 KiB writes
 * to one file spent much of their time contending on the inode lock (rwsem spinning);
 * splitting each run into 2 concurrent writes gained nothing over 1.
 *
 * The aligned part of each run goes through a DirectWriter (a second, O_DIRECT handle);
 * the final fsync (per inode) makes both handles' writes durable. Measured on the
 * 2-core VM (bench/RESULTS.md "Direct I/O"): 2 GiB through the page cache costs
 * 0.4-4.4 s of kernel copying depending on whether the VM's host has to supply fresh
 * pages, direct writes 1.1-1.6 s including the device.
 */
export class FileTarget implements RestoreTarget {
  readonly sparse: boolean;
  private fh: fsp.FileHandle | undefined;
  /** Direct writes of the aligned part of each run (engine/direct-io.ts). */
  private direct: DirectWriter | undefined;
  private readonly writePath: string;
  /** A background datasync started by `write` (flushes early what commit must flush anyway). */
  private syncing: Promise<void> | undefined;
  private unsynced = 0;
  private failure: unknown;

  private constructor(
    private readonly path: string,
    private readonly isDevice: boolean,
    private readonly wantDirect: boolean,
  ) {
    this.sparse = !isDevice;
    this.writePath = isDevice ? path : `${path}.partial`;
  }

  static async create(path: string, options: FileTargetOptions = {}): Promise<FileTarget> {
    const st = await fsp.stat(path).catch(() => undefined);
    return new FileTarget(path, st?.isBlockDevice() ?? false, options.direct ?? true);
  }

  async begin(sizeBytes: number): Promise<void> {
    try {
      this.fh = await fsp.open(this.writePath, this.isDevice ? 'r+' : 'w', 0o644);
      if (!this.isDevice) await this.fh.truncate(sizeBytes);
    } catch (err) {
      throw outputError(err, `cannot create ${this.path}`);
    }
    this.direct = await DirectWriter.open(this.writePath, this.wantDirect);
  }

  /** Resolves once all of `data` is written (the caller then reuses its memory). */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.failure) throw outputError(this.failure, `writing ${this.path}`);
    try {
      const direct = await this.direct!.writeAligned(offset, data);
      if (direct < data.length) await this.writeBuffered(offset + direct, data.subarray(direct));
    } catch (err) {
      this.failure ??= err;
      throw outputError(err, `writing ${this.path}`);
    }
  }

  /** Bytes written with direct I/O so far. */
  get directBytes(): number {
    return this.direct?.bytesWritten ?? 0;
  }

  private async writeBuffered(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh!.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    this.unsynced += data.length;
    if (this.unsynced >= SYNC_EVERY_BYTES && !this.syncing) this.startSync();
  }

  /**
   * Starts writeback of what is written so far without waiting for it: the kernel would
   * otherwise keep a whole restore dirty in the page cache (below its background
   * threshold) and the final fsync would write all of it while nothing else runs.
   * Durability is still the final fsync's; this only moves disk work earlier.
   */
  private startSync(): void {
    this.unsynced = 0;
    const p: Promise<void> = this.fh!.datasync().then(
      () => {
        if (this.syncing === p) this.syncing = undefined;
      },
      (err: unknown) => {
        this.failure ??= err;
      },
    );
    this.syncing = p;
  }

  async commit(): Promise<void> {
    await this.syncing;
    if (this.failure) throw outputError(this.failure, `writing ${this.path}`);
    try {
      await this.direct?.close();
      await this.fh!.sync();
      await this.fh!.close();
      this.fh = undefined;
      if (!this.isDevice) await fsp.rename(this.writePath, this.path);
    } catch (err) {
      throw outputError(err, `finishing ${this.path}`);
    }
  }

  async abort(): Promise<void> {
    await this.syncing;
    await this.direct?.close();
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
    if (!this.isDevice) await fsp.rm(this.writePath, { force: true });
  }
}

/** The target for an output argument: `-`, a path, a block device or another special file. */
export async function openTarget(output: string, options: FileTargetOptions = {}): Promise<RestoreTarget> {
  if (output === '-') return StreamTarget.stdout();
  const st = await fsp.stat(output).catch(() => undefined);
  if (st && !st.isFile() && !st.isBlockDevice()) {
    if (st.isDirectory()) throw new ChunkvaultError('OUTPUT_FAILED', `${output} is a directory`);
    return new StreamTarget(createWriteStream(output, { flags: 'a' }));
  }
  return FileTarget.create(output, options);
}

export class StreamTarget implements RestoreTarget {
  readonly sparse = false;
  private failure: Error | undefined;

  constructor(private readonly out: Writable) {
    out.on('error', (err) => (this.failure ??= err));
  }

  /** Standard output (process.stdout handles pipes whose fd is non-blocking). */
  static stdout(): StreamTarget {
    return new StreamTarget(process.stdout);
  }

  async begin(): Promise<void> {}

  /**
   * Resolves once the stream has handed `data` on (its write callback): the caller
   * reuses that memory, and a stream keeps a reference to what it buffers. Waiting for
   * each write is the backpressure; a close or error wakes it up (a closed pipe never
   * calls back).
   */
  async write(_offset: number, data: Uint8Array): Promise<void> {
    if (this.failure) throw outputError(this.failure, 'writing the output stream');
    const ac = new AbortController();
    const written = new Promise<void>((resolve, reject) => this.out.write(data, (err) => (err ? reject(err) : resolve())));
    written.catch(() => undefined);
    try {
      await Promise.race([written, once(this.out, 'close', { signal: ac.signal }).then(() => Promise.reject(new Error('output stream closed')))]);
    } catch (err) {
      this.failure ??= err as Error;
    } finally {
      ac.abort();
    }
    if (this.failure) throw outputError(this.failure, 'writing the output stream');
  }

  async commit(): Promise<void> {
    if (this.failure) throw outputError(this.failure, 'writing the output stream');
    if (this.out === process.stdout) {
      // stdout is never ended; wait until everything queued has been flushed.
      await new Promise<void>((resolve, reject) => this.out.write(new Uint8Array(0), (err) => (err ? reject(outputError(err, 'writing the output stream')) : resolve())));
      return;
    }
    await new Promise<void>((resolve, reject) => this.out.end((err?: Error | null) => (err ? reject(outputError(err, 'closing output')) : resolve())));
  }

  async abort(): Promise<void> {
    if (this.out !== process.stdout) this.out.destroy();
  }
}
