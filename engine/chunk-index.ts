/**
 * The chunk index: an LMDB environment (`index.mdb`) mapping digest -> location
 * (FORMAT.md "Index"). It is a cache of the container footers and can be rebuilt
 * from them. LMDB because several processes must share it at once (backups beside
 * GC beside the media agent): readers never block, one writer transaction at a time
 * across processes, commits atomic and crash-proof (bench/index.ts compares it with
 * classic-level, which locks the database to one process).
 *
 * Reads are synchronous memory-mapped lookups; writes are batched into one
 * transaction and awaited until durable (flushed), never one commit per chunk.
 */
import { open, type Database, type RootDatabase } from 'lmdb';
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

/** Named databases of the index environment besides the main one (FORMAT.md "Index"). */
export type AuxDbName = 'gc-meta' | 'gc-condemned' | 'gc-condemned-loc' | 'gc-dead-bytes' | 'remote-containers';

type Binary = Database<Uint8Array, Uint8Array>;

function openTable(root: RootDatabase<Uint8Array, Uint8Array>, name: string): Binary {
  return root.openDB<Uint8Array, Uint8Array>({ name, keyEncoding: 'binary', encoding: 'binary', compression: false });
}

export class ChunkIndex {
  /** The `aux` tables, opened once each (openDB is a transaction, not a lookup). */
  private readonly tables = new Map<AuxDbName, Binary>();

  private constructor(
    private readonly root: RootDatabase<Uint8Array, Uint8Array>,
    private readonly db: Binary,
  ) {}

  /** Opens (creating if needed) the index environment at `path` (a file). */
  static open(path: string): ChunkIndex {
    try {
      const root = open<Uint8Array, Uint8Array>({
        path,
        keyEncoding: 'binary',
        encoding: 'binary',
        compression: false,
        maxDbs: 8,
        noSubdir: true,
      });
      return new ChunkIndex(root, openTable(root, 'chunks'));
    } catch (err) {
      throw new ChunkvaultError('INDEX_CORRUPT', `unable to open the index: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Looks up many digests for a dedup decision; `undefined` where absent. Condemned
   * chunks (see engine/gc) are absent here: a backup must not take a new hit on them.
   */
  async getMany(digests: readonly Uint8Array[]): Promise<(ChunkLocation | undefined)[]> {
    return Promise.resolve(this.getManySync(digests));
  }

  /**
   * Looks up many digests for reading (restore, verify, stats): also where a GC has
   * condemned them but not yet decided. A committed point's chunk can be condemned
   * between a GC's sweep and its finish (the point was committed by a backup in the
   * GC's barrier); its data stays in place until finish has put it back.
   */
  async findMany(digests: readonly Uint8Array[]): Promise<(ChunkLocation | undefined)[]> {
    const condemned = this.aux('gc-condemned');
    return Promise.resolve(
      digests.map((d) => {
        const v = this.db.getBinary(d) ?? condemned.getBinary(d);
        return v === undefined ? undefined : decodeLocation(v);
      }),
    );
  }

  getManySync(digests: readonly Uint8Array[]): (ChunkLocation | undefined)[] {
    return digests.map((d) => {
      const v = this.db.getBinary(d);
      return v === undefined ? undefined : decodeLocation(v);
    });
  }

  /** Writes many entries in one transaction and waits until it is durable. */
  async putMany(entries: Iterable<[Uint8Array, ChunkLocation]>): Promise<void> {
    const list = [...entries];
    if (list.length === 0) return;
    await this.db.transaction(() => {
      for (const [key, loc] of list) void this.db.put(key, encodeLocation(loc));
    });
    await this.root.flushed;
  }

  async deleteMany(digests: readonly Uint8Array[]): Promise<void> {
    if (digests.length === 0) return;
    await this.db.transaction(() => {
      for (const key of digests) void this.db.remove(key);
    });
    await this.root.flushed;
  }

  /** Every entry, in key order, from one consistent snapshot per page of `pageSize` keys. */
  async *entries(pageSize = 4096): AsyncGenerator<[Uint8Array, ChunkLocation]> {
    let start: Uint8Array | undefined;
    for (;;) {
      const page: [Uint8Array, ChunkLocation][] = [];
      for (const { key, value } of this.db.getRange({ ...(start ? { start } : {}), limit: pageSize + (start ? 1 : 0) })) {
        if (start && Buffer.compare(key, start) === 0) continue;
        page.push([new Uint8Array(key), decodeLocation(value)]);
      }
      if (page.length === 0) return;
      yield* page;
      start = page[page.length - 1]![0];
      if (page.length < pageSize) return;
    }
  }

  /** Number of entries (from LMDB's own statistics: constant time). */
  count(): number {
    return (this.db.getStats() as { entryCount: number }).entryCount;
  }

  async clear(): Promise<void> {
    await this.db.clearAsync();
    await this.root.flushed;
  }

  /**
   * A named database of the same environment, so that GC moves entries between the
   * index and its own tables in one atomic transaction.
   */
  aux(name: AuxDbName): Binary {
    let table = this.tables.get(name);
    if (!table) this.tables.set(name, (table = openTable(this.root, name)));
    return table;
  }

  /** The main table, for transactions that span it and an `aux` table. */
  main(): Binary {
    return this.db;
  }

  /** Runs `fn` in one write transaction across every table, durable on return. */
  async transact(fn: () => void): Promise<void> {
    await this.root.transaction(fn);
    await this.root.flushed;
  }

  /** Makes the next reads see every commit made so far by any process. */
  refresh(): void {
    this.root.resetReadTxn();
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
