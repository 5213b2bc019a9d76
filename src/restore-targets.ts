/**
 * Restore targets: a new regular file (written to `<path>.partial`, renamed on
 * success, sparse: zero chunks are holes), an existing block device (every byte
 * written in place), and a stream such as stdout, a FIFO or a character device like
 * /dev/null (in order, zeros written).
 */
import { once } from 'node:events';
import { createWriteStream, promises as fsp } from 'node:fs';
import type { Writable } from 'node:stream';
import { ChunkvaultError, toChunkvaultError, type RestoreTarget } from '../engine/index.js';

function outputError(err: unknown, what: string): ChunkvaultError {
  const inner = toChunkvaultError(err, what);
  return new ChunkvaultError('OUTPUT_FAILED', inner.message, { cause: err, details: inner.details });
}

/** Positional writes kept in flight at once (write-behind; offsets never overlap). */
const WRITES_IN_FLIGHT = 8;

export class FileTarget implements RestoreTarget {
  readonly sparse: boolean;
  private fh: fsp.FileHandle | undefined;
  private readonly writePath: string;
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown;

  private constructor(private readonly path: string, private readonly isDevice: boolean) {
    this.sparse = !isDevice;
    this.writePath = isDevice ? path : `${path}.partial`;
  }

  static async create(path: string): Promise<FileTarget> {
    const st = await fsp.stat(path).catch(() => undefined);
    return new FileTarget(path, st?.isBlockDevice() ?? false);
  }

  async begin(sizeBytes: number): Promise<void> {
    try {
      this.fh = await fsp.open(this.writePath, this.isDevice ? 'r+' : 'w', 0o644);
      if (!this.isDevice) await this.fh.truncate(sizeBytes);
    } catch (err) {
      throw outputError(err, `cannot create ${this.path}`);
    }
  }

  /** Starts the write and returns once fewer than WRITES_IN_FLIGHT are pending. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.failure) throw outputError(this.failure, `writing ${this.path}`);
    const p = this.writeAll(offset, data).catch((err: unknown) => {
      this.failure ??= err;
    });
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
    if (this.inflight.size >= WRITES_IN_FLIGHT) await Promise.race(this.inflight);
  }

  private async writeAll(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh!.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async commit(): Promise<void> {
    await Promise.all(this.inflight);
    if (this.failure) throw outputError(this.failure, `writing ${this.path}`);
    try {
      await this.fh!.sync();
      await this.fh!.close();
      this.fh = undefined;
      if (!this.isDevice) await fsp.rename(this.writePath, this.path);
    } catch (err) {
      throw outputError(err, `finishing ${this.path}`);
    }
  }

  async abort(): Promise<void> {
    await Promise.all(this.inflight);
    await this.fh?.close().catch(() => undefined);
    this.fh = undefined;
    if (!this.isDevice) await fsp.rm(this.writePath, { force: true });
  }
}

/** The target for an output argument: `-`, a path, a block device or another special file. */
export async function openTarget(output: string): Promise<RestoreTarget> {
  if (output === '-') return StreamTarget.stdout();
  const st = await fsp.stat(output).catch(() => undefined);
  if (st && !st.isFile() && !st.isBlockDevice()) {
    if (st.isDirectory()) throw new ChunkvaultError('OUTPUT_FAILED', `${output} is a directory`);
    return new StreamTarget(createWriteStream(output, { flags: 'a' }));
  }
  return FileTarget.create(output);
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

  async write(_offset: number, data: Uint8Array): Promise<void> {
    if (this.failure) throw outputError(this.failure, 'writing the output stream');
    if (this.out.write(data)) return;
    // Wait for drain, but also wake up on error or close (a closed pipe never drains).
    const ac = new AbortController();
    try {
      await Promise.race([once(this.out, 'drain', { signal: ac.signal }), once(this.out, 'close', { signal: ac.signal })]);
    } catch (err) {
      this.failure ??= err as Error;
    } finally {
      ac.abort();
    }
    if (this.failure) throw outputError(this.failure, 'writing the output stream');
    if (this.out.destroyed || this.out.writableEnded) throw outputError(new Error('output stream closed'), 'writing the output stream');
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
