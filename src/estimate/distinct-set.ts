/**
 * Exact distinct-digest sets on disk, so memory stays bounded whatever the input size.
 *
 * Choice: a temporary classic-level (LevelDB) database under `os.tmpdir()`, deleted on
 * close, rather than a HyperLogLog. Estimates must agree with what a backup then stores
 * (within 1 %), and a distinct counter cannot say *which* chunks are new, which we need
 * to compress each distinct chunk once. Memory is LevelDB's own cache and write buffer
 * (a few MiB); disk use is about 40 B per distinct chunk per set.
 *
 * Keys are `scope (2 B) + scheme (1 B) + digest (32 B)`: scope 0xffff is the set across
 * every source, scope i the set of source i. Lookups and inserts run as one `getMany`
 * plus one `batch` per call (never one awaited `get` per key), and calls are serialised
 * so "first seen" is decided once per digest.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { ChunkvaultError } from '../../engine/index.js';

export const GLOBAL_SCOPE = 0xffff;

const EMPTY = new Uint8Array(0);

export class DistinctSets {
  private chain: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly dir: string,
    private readonly db: ClassicLevel<Uint8Array, Uint8Array>,
  ) {}

  static async create(): Promise<DistinctSets> {
    const dir = await mkdtemp(join(tmpdir(), 'chunkvault-estimate-'));
    const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
    try {
      await db.open();
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw new ChunkvaultError('IO_ERROR', `unable to create the temporary digest set in ${dir}`, { cause: err });
    }
    return new DistinctSets(dir, db);
  }

  /**
   * Adds `digests` (32 B each, concatenated) to set (scope, scheme); returns 1 for each
   * one not seen before in that set (and not earlier in this call), else 0.
   */
  add(scope: number, scheme: number, digests: readonly Uint8Array[]): Promise<Uint8Array> {
    const run = this.chain.then(() => this.addNow(scope, scheme, digests));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async addNow(scope: number, scheme: number, digests: readonly Uint8Array[]): Promise<Uint8Array> {
    const keys = digests.map((d) => {
      const k = new Uint8Array(3 + d.length);
      k[0] = scope >> 8;
      k[1] = scope & 0xff;
      k[2] = scheme;
      k.set(d, 3);
      return k;
    });
    const fresh = new Uint8Array(keys.length);
    if (keys.length === 0) return fresh;
    const found = await this.db.getMany(keys);
    const seen = new Set<string>();
    const ops: { type: 'put'; key: Uint8Array; value: Uint8Array }[] = [];
    keys.forEach((key, i) => {
      if (found[i] !== undefined) return;
      const hex = Buffer.from(key.buffer, key.byteOffset, key.length).toString('latin1');
      if (seen.has(hex)) return;
      seen.add(hex);
      fresh[i] = 1;
      ops.push({ type: 'put', key, value: EMPTY });
    });
    if (ops.length > 0) await this.db.batch(ops);
    return fresh;
  }

  /** Closes and deletes the database. */
  async close(): Promise<void> {
    await this.chain;
    await this.db.close().catch(() => undefined);
    await rm(this.dir, { recursive: true, force: true });
  }
}
