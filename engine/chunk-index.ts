/**
 * The chunk index: LevelDB (classic-level) mapping digest -> location (FORMAT.md
 * "Index"). It is a cache of the container footers and can be rebuilt from them.
 * Reads are batched with getMany and writes with batch: one native call per
 * window, never one awaited get per chunk.
 */
import { ClassicLevel } from 'classic-level';
import { CONTAINER_ID_BYTES, INDEX_VALUE_BYTES, type CodecId } from './constants.js';
import { fromHex, readHash64, readU64, toHex, view, writeHash64, writeU64 } from './_bytes.js';
import { ChunkvaultError } from './errors.js';
import type { FooterEntry } from './container-format.js';

/** Where a chunk is stored and what it must hash to. */
export interface ChunkLocation {
  readonly containerId: string;
  readonly offset: number;
  readonly rawLength: number;
  readonly storedLength: number;
  readonly checkHash: bigint;
  readonly codec: CodecId;
}

export function encodeLocation(loc: ChunkLocation): Uint8Array {
  const buf = new Uint8Array(INDEX_VALUE_BYTES);
  const dv = view(buf);
  buf.set(fromHex(loc.containerId), 0);
  writeU64(dv, 16, loc.offset);
  dv.setUint32(24, loc.rawLength, true);
  dv.setUint32(28, loc.storedLength, true);
  writeHash64(dv, 32, loc.checkHash);
  dv.setUint8(40, loc.codec);
  return buf;
}

export function decodeLocation(buf: Uint8Array): ChunkLocation {
  if (buf.length !== INDEX_VALUE_BYTES) {
    throw new ChunkvaultError('INDEX_CORRUPT', `index value has ${buf.length} bytes, expected ${INDEX_VALUE_BYTES}`);
  }
  const dv = view(buf);
  return {
    containerId: toHex(buf.subarray(0, CONTAINER_ID_BYTES)),
    offset: readU64(dv, 16, 'INDEX_CORRUPT', 'index offset'),
    rawLength: dv.getUint32(24, true),
    storedLength: dv.getUint32(28, true),
    checkHash: readHash64(dv, 32),
    codec: dv.getUint8(40) as CodecId,
  };
}

export function locationOf(containerId: string, e: FooterEntry): ChunkLocation {
  return {
    containerId,
    offset: e.offset,
    rawLength: e.rawLength,
    storedLength: e.storedLength,
    checkHash: e.checkHash,
    codec: e.codec,
  };
}

export class ChunkIndex {
  private constructor(private readonly db: ClassicLevel<Uint8Array, Uint8Array>) {}

  /** Opens (creating if needed) the index; a second process gets REPO_LOCKED. */
  static async open(dir: string): Promise<ChunkIndex> {
    const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if ((err as { code?: string }).code === 'LEVEL_DATABASE_NOT_OPEN' && cause?.code === 'LEVEL_LOCKED') {
        throw new ChunkvaultError('REPO_LOCKED', 'the repository index is in use by another chunkvault process', {
          cause: err,
        });
      }
      throw new ChunkvaultError('INDEX_CORRUPT', `unable to open the index: ${(err as Error).message}`, { cause: err });
    }
    return new ChunkIndex(db);
  }

  /** Looks up many digests in one native call; `undefined` where absent. */
  async getMany(digests: readonly Uint8Array[]): Promise<(ChunkLocation | undefined)[]> {
    if (digests.length === 0) return [];
    const values = await this.db.getMany(digests as Uint8Array[]);
    return values.map((v) => (v === undefined ? undefined : decodeLocation(v)));
  }

  /** Writes many entries in one synced batch. */
  async putMany(entries: Iterable<[Uint8Array, ChunkLocation]>): Promise<void> {
    const ops = [...entries].map(([key, loc]) => ({ type: 'put' as const, key, value: encodeLocation(loc) }));
    if (ops.length > 0) await this.db.batch(ops, { sync: true } as never);
  }

  async deleteMany(digests: readonly Uint8Array[]): Promise<void> {
    const ops = digests.map((key) => ({ type: 'del' as const, key }));
    if (ops.length > 0) await this.db.batch(ops, { sync: true } as never);
  }

  /** Every entry, in key order. */
  async *entries(): AsyncGenerator<[Uint8Array, ChunkLocation]> {
    for await (const [key, value] of this.db.iterator()) {
      yield [key, decodeLocation(value)];
    }
  }

  async clear(): Promise<void> {
    await this.db.clear();
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
