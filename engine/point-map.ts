/**
 * Point maps (FORMAT.md "Point map"): a restore point's fixed index, one 32-byte
 * digest per chunk slot, with the zero sentinel for all-zero chunks. Written and read
 * as streams so memory stays bounded whatever the disk size.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { DIGEST_BYTES, MAP_HEADER_BYTES, MAP_MAGIC, MAP_TRAILER_BYTES } from './constants.js';
import { bytesEqual, readU64, toHex, view, writeU64 } from './_bytes.js';
import { publish, readFull } from './_fs.js';
import { sha256Stream } from './hashing.js';
import { ChunkvaultError, toChunkvaultError } from './errors.js';
import { ownedTmp } from './_owner.js';

/** The all-zero digest: marks a slot whose bytes are all zero. */
export const ZERO_DIGEST: Uint8Array = new Uint8Array(DIGEST_BYTES);

export function isZeroDigest(d: Uint8Array): boolean {
  return bytesEqual(d, ZERO_DIGEST);
}

export interface MapGeometry {
  readonly chunkSize: number;
  readonly diskSize: number;
  readonly slotCount: number;
}

export function slotCountFor(diskSize: number, chunkSize: number): number {
  return Math.ceil(diskSize / chunkSize);
}

/** Length of slot `i` (the last slot may be short). */
export function slotLength(g: MapGeometry, i: number): number {
  return Math.min(g.chunkSize, g.diskSize - i * g.chunkSize);
}

export function encodeMapHeader(g: MapGeometry): Uint8Array {
  const buf = new Uint8Array(MAP_HEADER_BYTES);
  const dv = view(buf);
  buf.set(MAP_MAGIC, 0);
  dv.setUint16(8, 1, true);
  dv.setUint16(10, DIGEST_BYTES, true);
  dv.setUint32(12, g.chunkSize, true);
  writeU64(dv, 16, g.diskSize);
  writeU64(dv, 24, g.slotCount);
  return buf;
}

export function decodeMapHeader(buf: Uint8Array): MapGeometry {
  if (buf.length < MAP_HEADER_BYTES || !bytesEqual(buf.subarray(0, 8), MAP_MAGIC)) {
    throw new ChunkvaultError('MAP_CORRUPT', 'bad point map magic');
  }
  const dv = view(buf);
  if (dv.getUint16(8, true) !== 1 || dv.getUint16(10, true) !== DIGEST_BYTES) {
    throw new ChunkvaultError('MAP_CORRUPT', 'unsupported point map version or digest length');
  }
  const chunkSize = dv.getUint32(12, true);
  const diskSize = readU64(dv, 16, 'MAP_CORRUPT', 'disk size');
  const slotCount = readU64(dv, 24, 'MAP_CORRUPT', 'slot count');
  if (chunkSize === 0 || slotCount !== slotCountFor(diskSize, chunkSize)) {
    throw new ChunkvaultError('MAP_CORRUPT', 'point map geometry is inconsistent');
  }
  return { chunkSize, diskSize, slotCount };
}

export function mapPath(repoDir: string, pointId: string): string {
  return join(repoDir, 'maps', pointId.slice(0, 2), `${pointId}.map`);
}

const WRITE_BATCH_SLOTS = 8192;

/** Writes a map sequentially, slot by slot, into `tmp/`; `commit` publishes it. */
export class MapWriter {
  private readonly hash = sha256Stream();
  private buffer = new Uint8Array(WRITE_BATCH_SLOTS * DIGEST_BYTES);
  private used = 0;
  private written = 0;
  private slots = 0;

  private constructor(
    private readonly fh: fsp.FileHandle,
    private readonly tmpPath: string,
    readonly geometry: MapGeometry,
  ) {}

  static async create(repoDir: string, pointId: string, g: MapGeometry): Promise<MapWriter> {
    const tmpPath = ownedTmp(join(repoDir, 'tmp'), `${pointId}.map.tmp`);
    const fh = await fsp.open(tmpPath, 'w', 0o644);
    const w = new MapWriter(fh, tmpPath, g);
    await w.write(encodeMapHeader(g));
    return w;
  }

  get slotsWritten(): number {
    return this.slots;
  }

  /** Appends the digests of the next slots (a multiple of 32 bytes). */
  async append(digests: Uint8Array): Promise<void> {
    if (this.slots + digests.length / DIGEST_BYTES > this.geometry.slotCount) {
      throw new ChunkvaultError('INTERNAL', 'more slots than the map holds');
    }
    this.slots += digests.length / DIGEST_BYTES;
    let at = 0;
    while (at < digests.length) {
      const n = Math.min(digests.length - at, this.buffer.length - this.used);
      this.buffer.set(digests.subarray(at, at + n), this.used);
      this.used += n;
      at += n;
      if (this.used === this.buffer.length) await this.flush();
    }
  }

  /** Completes, syncs and publishes the map; returns the SHA-256 hex of the map body. */
  async commit(finalPath: string): Promise<string> {
    if (this.slots !== this.geometry.slotCount) {
      throw new ChunkvaultError('INTERNAL', `map has ${this.slots} of ${this.geometry.slotCount} slots`);
    }
    await this.flush();
    const digest = this.hash.digest();
    await this.write(digest, false);
    await this.fh.datasync();
    await this.fh.close();
    await publish(this.tmpPath, finalPath);
    return toHex(digest);
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await fsp.rm(this.tmpPath, { force: true });
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return;
    const chunk = this.buffer.subarray(0, this.used);
    await this.write(chunk);
    this.buffer = new Uint8Array(WRITE_BATCH_SLOTS * DIGEST_BYTES);
    this.used = 0;
  }

  private async write(data: Uint8Array, hashed = true): Promise<void> {
    if (hashed) this.hash.update(data);
    const { bytesWritten } = await this.fh.write(data, 0, data.length, this.written);
    if (bytesWritten !== data.length) throw new ChunkvaultError('IO_ERROR', 'short write to point map');
    this.written += data.length;
  }
}

/** Random access to a committed map. `open` checks geometry; `verifyDigest` checks the whole file. */
export class MapReader {
  private constructor(
    private readonly fh: fsp.FileHandle,
    readonly geometry: MapGeometry,
    private readonly path: string,
  ) {}

  static async open(path: string): Promise<MapReader> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ChunkvaultError('MAP_CORRUPT', `point map ${path} is missing`, { details: { path } });
      }
      throw toChunkvaultError(err, 'unable to open point map');
    }
    try {
      const head = new Uint8Array(MAP_HEADER_BYTES);
      if ((await readFull(fh, head, 0)) !== MAP_HEADER_BYTES) throw new ChunkvaultError('MAP_CORRUPT', 'point map truncated');
      const g = decodeMapHeader(head);
      const { size } = await fh.stat();
      if (size !== MAP_HEADER_BYTES + g.slotCount * DIGEST_BYTES + MAP_TRAILER_BYTES) {
        throw new ChunkvaultError('MAP_CORRUPT', `point map ${path} has the wrong size (truncated?)`);
      }
      return new MapReader(fh, g, path);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Reads `count` slot digests starting at `first`, as one buffer of count x 32 bytes. */
  async readSlots(first: number, count: number): Promise<Uint8Array> {
    const buf = new Uint8Array(count * DIGEST_BYTES);
    const n = await readFull(this.fh, buf, MAP_HEADER_BYTES + first * DIGEST_BYTES);
    if (n !== buf.length) throw new ChunkvaultError('MAP_CORRUPT', `point map ${this.path} truncated`);
    return buf;
  }

  /** Streams every slot in windows of up to `window` slots. */
  async *windows(window = 8192): AsyncGenerator<{ first: number; digests: Uint8Array }> {
    for (let first = 0; first < this.geometry.slotCount; first += window) {
      const count = Math.min(window, this.geometry.slotCount - first);
      yield { first, digests: await this.readSlots(first, count) };
    }
  }

  /** Re-hashes the map and compares with its trailer and with `expectedHex` (from the catalog). */
  async verifyDigest(expectedHex: string): Promise<void> {
    const h = sha256Stream();
    const body = MAP_HEADER_BYTES + this.geometry.slotCount * DIGEST_BYTES;
    const step = 4 * 1024 * 1024;
    for (let at = 0; at < body; at += step) {
      const buf = new Uint8Array(Math.min(step, body - at));
      await readFull(this.fh, buf, at);
      h.update(buf);
    }
    const trailer = new Uint8Array(MAP_TRAILER_BYTES);
    await readFull(this.fh, trailer, body);
    const actual = h.digest();
    if (!bytesEqual(actual, trailer) || toHex(actual) !== expectedHex) {
      throw new ChunkvaultError('MAP_CORRUPT', `point map ${this.path} does not match its checksum`, {
        details: { path: this.path },
      });
    }
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}
