/**
 * A raw disk image file or a block device as a `BlockSource` (the SAN / hot-add
 * path: the snapshot disk is visible as a local device or file). Reads are positional
 * (pread); a short read means the source shrank underneath us: SOURCE_TRUNCATED. The
 * engine's workers may read the descriptor themselves (`pread`), with the same errors.
 */
import { promises as fsp } from 'node:fs';
import { basename } from 'node:path';
import { getSystemErrorName } from 'node:util';
import { ChunkvaultError, toChunkvaultError, type BlockSource, type PreadAccess } from '../../engine/index.js';

async function blockDeviceSize(rdev: number): Promise<number> {
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
  const sectors = await fsp.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8');
  return Number(sectors.trim()) * 512;
}

export class FileSource implements BlockSource {
  private closed = false;
  readonly pread: PreadAccess;

  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
    readonly sizeBytes: number,
  ) {
    this.pread = { fd: fh.fd, failure: (errno, offset) => (errno === 0 ? this.truncated(offset) : this.readFailed(offset, errno)) };
  }

  /** Opens a regular file or block device read-only; SOURCE_NOT_FOUND when absent. */
  static async open(path: string): Promise<FileSource> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        throw new ChunkvaultError('SOURCE_NOT_FOUND', `source ${path} does not exist`, { details: { source: path } });
      }
      throw new ChunkvaultError('SOURCE_READ_FAILED', `cannot open source ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const st = await fh.stat();
      if (st.isDirectory()) throw new ChunkvaultError('SOURCE_READ_FAILED', `source ${path} is a directory`);
      const size = st.isBlockDevice() ? await blockDeviceSize(st.rdev) : st.size;
      return new FileSource(path, fh, size);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  get name(): string {
    return basename(this.path);
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    while (done < target.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.fh.read(target, done, target.length - done, offset + done));
      } catch (err) {
        throw this.readFailed(offset + done, undefined, err);
      }
      if (n === 0) throw this.truncated(offset + done);
      done += n;
    }
  }

  private readFailed(offset: number, errno?: number, cause?: unknown): ChunkvaultError {
    const name = errno === undefined ? undefined : getSystemErrorName(-errno);
    return new ChunkvaultError('SOURCE_READ_FAILED', `reading ${this.path} at ${offset} failed${name ? `: ${name}` : ''}`, {
      ...(cause !== undefined ? { cause: toChunkvaultError(cause, 'read') } : {}),
      details: { offset, ...(name ? { errno: name } : {}) },
    });
  }

  private truncated(offset: number): ChunkvaultError {
    return new ChunkvaultError('SOURCE_TRUNCATED', `${this.path} ended at ${offset}, expected ${this.sizeBytes} bytes`, { details: { offset } });
  }

  describe(): string {
    return `file:${this.path}`;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
