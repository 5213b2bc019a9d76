/**
 * One image file of a chain, opened read-only, with positional reads that never return
 * short data, and the error helpers every reader in this folder uses.
 *
 * Error policy: malformed on-disk structures are SOURCE_READ_FAILED with
 * `details.reason` (a stable kebab-case word), `details.format` and `details.path`; a
 * file that ends before a structure it declares is SOURCE_TRUNCATED; a missing image
 * or parent is SOURCE_NOT_FOUND. Branch on `code` and `details.reason`, never the text.
 */
import { promises as fsp } from 'node:fs';
import { ChunkvaultError, toChunkvaultError, type ErrorDetails } from '../../engine/index.js';
import { applyWrites, type LogWrite } from './_vhdx-log.js';

export type ImageFormat = 'vhdx' | 'vhd' | 'raw';

/** A malformed-image error: SOURCE_READ_FAILED with a stable `details.reason`. */
export function formatError(
  format: ImageFormat,
  path: string,
  reason: string,
  message: string,
  extra: ErrorDetails = {},
): ChunkvaultError {
  return new ChunkvaultError('SOURCE_READ_FAILED', `${format} image ${path}: ${message}`, {
    details: { ...extra, format, path, reason },
  });
}

/** A parse failure in a format codec: the reader turns it into a typed error with the file's path. */
export class FormatProblem {
  constructor(
    readonly reason: string,
    readonly message: string,
  ) {}
}

/** Runs a format codec; a FormatProblem becomes `formatError(format, path, ...)`. */
export async function parseOrFail<T>(format: ImageFormat, path: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof FormatProblem) throw formatError(format, path, err.reason, err.message);
    throw err;
  }
}

export class ImageFile {
  private closed = false;
  private overlay: readonly LogWrite[] = [];
  private logicalSize: number;

  private constructor(
    readonly path: string,
    readonly format: ImageFormat,
    private readonly fh: fsp.FileHandle,
    /** File size in bytes at open time. */
    private readonly physicalSize: number,
  ) {
    this.logicalSize = physicalSize;
  }

  /** File size in bytes: as opened, or as extended by a replayed log. */
  get size(): number {
    return this.logicalSize;
  }

  /**
   * Makes every later read see `writes` (a replayed VHDX log, applied in order) on top
   * of the file, and the file at least `minSize` bytes long (the tail reads as zeros).
   */
  setOverlay(writes: readonly LogWrite[], minSize: number): void {
    this.overlay = writes;
    const ends = writes.map((w) => w.offset + w.length);
    this.logicalSize = Math.max(this.physicalSize, minSize, ...ends);
  }

  /** Opens `path` read-only; SOURCE_NOT_FOUND when it does not exist. */
  static async open(path: string, format: ImageFormat): Promise<ImageFile> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new ChunkvaultError('SOURCE_NOT_FOUND', `image ${path} does not exist`, { details: { path, reason: 'missing' } });
      }
      throw new ChunkvaultError('SOURCE_READ_FAILED', `cannot open image ${path}`, { cause: toChunkvaultError(err, 'open'), details: { path } });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw formatError(format, path, 'not-a-file', 'is not a regular file');
      return new ImageFile(path, format, fh, st.size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Fills `target` from file position `pos`; SOURCE_TRUNCATED when the file ends first. */
  async readExact(target: Uint8Array, pos: number, what: string): Promise<void> {
    if (this.overlay.length === 0 && this.logicalSize === this.physicalSize) return this.readPhysical(target, pos, what);
    if (pos + target.length > this.logicalSize) return this.readPhysical(target, pos, what); // fails as truncated
    const physical = Math.max(0, Math.min(target.length, this.physicalSize - pos));
    await this.readPhysical(target.subarray(0, physical), pos, what);
    target.fill(0, physical);
    applyWrites(this.overlay, target, pos);
  }

  private async readPhysical(target: Uint8Array, pos: number, what: string): Promise<void> {
    let done = 0;
    while (done < target.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.fh.read(target, done, target.length - done, pos + done));
      } catch (err) {
        throw new ChunkvaultError('SOURCE_READ_FAILED', `reading ${what} of ${this.path} at ${pos + done} failed`, {
          cause: toChunkvaultError(err, 'read'),
          details: { path: this.path, offset: pos + done },
        });
      }
      if (n === 0) {
        throw new ChunkvaultError('SOURCE_TRUNCATED', `${this.format} image ${this.path}: ${what} at ${pos} runs past the end of the file (${this.size} bytes)`, {
          details: { format: this.format, path: this.path, reason: 'truncated', offset: pos + done },
        });
      }
      done += n;
    }
  }

  /** Reads `length` bytes at `pos` into a new buffer. */
  async read(pos: number, length: number, what: string): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    await this.readExact(buf, pos, what);
    return buf;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
