/**
 * Direct I/O (O_DIRECT, Linux) beside a file's ordinary handle: large aligned writes
 * skip the page cache, which a backup target would otherwise fill with data it never
 * reads back soon (container appends, restored images), copying every byte once more
 * and evicting what the machine does use. Measured on the 2-core VM (bench/RESULTS.md
 * "Direct I/O"): writing into fresh page-cache pages took 22 % of a full backup's CPU.
 * Sources are still read through the page cache: direct reads of the same image made
 * the full backup slower there (2.6-3.0 s against 2.3-2.4 s), the device's latency
 * showing through the read-ahead.
 *
 * Only the 4 KiB-aligned part of a write goes direct (offset, length and memory must
 * be aligned; memory from aligned-memory.ts is). Whatever is not aligned is the
 * caller's to write through its ordinary handle, and so is everything once direct I/O
 * turned out not to work: a filesystem that refuses the O_DIRECT open (some FUSE), or
 * an EINVAL from a write (memory not aligned after all), switches it off for good.
 * The kernel keeps direct and buffered I/O on one file coherent; durability stays with
 * the caller's fsync/fdatasync, which is per inode and covers both handles.
 */
import { constants, promises as fsp } from 'node:fs';

/** Alignment of direct writes: the largest logical block size in use (4Kn disks). */
export const DIRECT_ALIGN = 4096;

export class DirectWriter {
  private written = 0;

  private constructor(private fh: fsp.FileHandle | undefined) {}

  /** A direct handle on `path` (already created), or an inactive writer when `want` is false or the open fails. */
  static async open(path: string, want = true): Promise<DirectWriter> {
    const { O_DIRECT, O_WRONLY } = constants;
    // A filesystem without direct I/O refuses the open: the caller stays buffered.
    const fh = want && O_DIRECT !== undefined ? await fsp.open(path, O_WRONLY | O_DIRECT).catch(() => undefined) : undefined;
    return new DirectWriter(fh);
  }

  /** True while direct writes are being made. */
  get active(): boolean {
    return this.fh !== undefined;
  }

  /** Bytes written with direct I/O so far. */
  get bytesWritten(): number {
    return this.written;
  }

  /**
   * Writes the aligned prefix of `data` at `offset` when the offset and the memory are
   * aligned; returns how many bytes it wrote (the caller writes the rest buffered).
   */
  async writeAligned(offset: number, data: Uint8Array): Promise<number> {
    const length = data.length - (data.length % DIRECT_ALIGN);
    if (!this.fh || length === 0 || (offset | data.byteOffset) % DIRECT_ALIGN !== 0) return 0;
    let done = 0;
    try {
      while (done < length) {
        const { bytesWritten } = await this.fh.write(data, done, length - done, offset + done);
        done += bytesWritten;
        if (bytesWritten % DIRECT_ALIGN !== 0) break; // short and unaligned: the rest goes buffered
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      await this.close();
    }
    this.written += done;
    return done;
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
  }
}
