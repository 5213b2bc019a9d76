/**
 * An on-disk set of digests (an LMDB environment of its own): GC's mark set. Memory
 * stays bounded whatever the repository size: the set lives in a memory-mapped file
 * the kernel pages in and out, not on the V8 heap.
 */
import { promises as fsp } from 'node:fs';
import { open, type RootDatabase } from 'lmdb';

const PRESENT = new Uint8Array(0);

export class DigestSet {
  private count = 0;

  private constructor(
    private readonly db: RootDatabase<Uint8Array, Uint8Array>,
    private readonly path: string,
  ) {}

  /** A new, empty set at `path` (any previous file there is removed). */
  static async create(path: string): Promise<DigestSet> {
    await DigestSet.remove(path);
    const db = open<Uint8Array, Uint8Array>({ path, keyEncoding: 'binary', encoding: 'binary', compression: false, noSubdir: true, overlappingSync: false, noSync: true });
    return new DigestSet(db, path);
  }

  static async remove(path: string): Promise<void> {
    await Promise.all([fsp.rm(path, { force: true }), fsp.rm(`${path}-lock`, { force: true })]);
  }

  /** Adds digests in one transaction (they are copied). */
  async add(digests: readonly Uint8Array[]): Promise<void> {
    if (digests.length === 0) return;
    await this.db.transaction(() => {
      for (const d of digests) void this.db.put(d, PRESENT);
    });
    this.count += digests.length;
  }

  has(digest: Uint8Array): boolean {
    return this.db.getBinary(digest) !== undefined;
  }

  /** Insertions made (duplicates included). */
  get insertions(): number {
    return this.count;
  }

  async destroy(): Promise<void> {
    await this.db.close();
    await DigestSet.remove(this.path);
  }
}
