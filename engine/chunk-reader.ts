/**
 * The read side of the chunk store: digest -> location (index) -> record (container)
 * -> checked raw bytes (worker pool: payload hash, decompression, check hash).
 * Keeps a small LRU of open container files.
 */
import { ContainerReader } from './container.js';
import type { ChunkIndex, ChunkLocation } from './chunk-index.js';
import type { WorkerPool } from './worker-pool.js';
import { ChunkvaultError, isChunkvaultError, toChunkvaultError } from './errors.js';
import { toHex } from './_bytes.js';

const MAX_OPEN_CONTAINERS = 32;

export class ChunkReader {
  private readonly open = new Map<string, Promise<ContainerReader>>();
  /** Reads in flight per container: a container in use is never closed by the LRU. */
  private readonly inUse = new Map<string, number>();

  constructor(
    private readonly repoDir: string,
    private readonly index: ChunkIndex,
    private readonly pool: WorkerPool,
  ) {}

  /** Locations of many digests in one index call; a missing one is CHUNK_MISSING. */
  async locate(digests: readonly Uint8Array[]): Promise<ChunkLocation[]> {
    const locs = await this.index.findMany(digests);
    return locs.map((loc, i) => {
      if (loc) return loc;
      const chunk = toHex(digests[i] as Uint8Array);
      throw new ChunkvaultError('CHUNK_MISSING', `chunk ${chunk} is not in the repository`, { details: { chunk } });
    });
  }

  /**
   * Reads, checks and decompresses one chunk. With `verifyDigest`, SHA-256 is checked
   * too. Damage is CHUNK_CORRUPT (or CONTAINER_CORRUPT) naming the chunk.
   */
  async read(digest: Uint8Array, loc: ChunkLocation, verifyDigest = false): Promise<Uint8Array> {
    this.inUse.set(loc.containerId, (this.inUse.get(loc.containerId) ?? 0) + 1);
    try {
      const container = await this.container(loc.containerId);
      const rec = await container.readRecord(loc.offset, loc.storedLength, digest);
      if (rec.header.checkHash !== loc.checkHash || rec.header.codec !== loc.codec || rec.header.rawLength !== loc.rawLength) {
        throw new ChunkvaultError('CHUNK_CORRUPT', 'record header disagrees with the index');
      }
      return await this.pool.open({
        payload: rec.payload,
        codec: loc.codec,
        rawLength: loc.rawLength,
        payloadHash: rec.header.payloadHash,
        checkHash: loc.checkHash,
        digest: verifyDigest ? digest : null,
      });
    } catch (err) {
      const chunk = toHex(digest);
      const details = { chunk, container: loc.containerId, offset: loc.offset };
      if (isChunkvaultError(err, 'CHUNK_MISSING')) throw new ChunkvaultError('CHUNK_MISSING', err.message, { cause: err, details });
      // Only damage is reported as damage: I/O and internal failures keep their own code.
      if (!isChunkvaultError(err, 'CHUNK_CORRUPT') && !isChunkvaultError(err, 'CONTAINER_CORRUPT')) throw toChunkvaultError(err, `reading chunk ${chunk}`);
      const message = `chunk ${chunk} in container ${loc.containerId} at ${loc.offset} is damaged: ${(err as Error).message}`;
      throw new ChunkvaultError('CHUNK_CORRUPT', message, { cause: err, details });
    } finally {
      const n = (this.inUse.get(loc.containerId) ?? 1) - 1;
      if (n === 0) this.inUse.delete(loc.containerId);
      else this.inUse.set(loc.containerId, n);
    }
  }

  async close(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    await Promise.allSettled(all.map(async (p) => (await p).close()));
  }

  private evictOne(): void {
    for (const [id, reader] of this.open) {
      if (this.inUse.has(id)) continue;
      this.open.delete(id);
      void reader.then((r) => r.close(), () => undefined);
      return;
    }
  }

  private container(id: string): Promise<ContainerReader> {
    let p = this.open.get(id);
    if (p) {
      this.open.delete(id);
      this.open.set(id, p);
      return p;
    }
    p = ContainerReader.open(this.repoDir, id);
    p.catch(() => this.open.delete(id));
    this.open.set(id, p);
    if (this.open.size > MAX_OPEN_CONTAINERS) this.evictOne();
    return p;
  }
}
