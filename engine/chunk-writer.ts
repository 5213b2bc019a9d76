/**
 * The write side of the chunk store for one backup: dedup lookups (chunks of this
 * backup's open container first, then the index), appends of new chunks to the open
 * container, and sealing (container synced and published, then its entries indexed).
 *
 * Duplicate-chunk policy: a digest already in the index or in this backup's open
 * container is not stored again, after its check hash was compared (a mismatch means
 * a SHA-256 collision or a damaged index: HASH_MISMATCH, the backup fails). A digest
 * stored by a crashed backup in a sealed container that never reached the index is
 * stored again; `index rebuild` keeps either copy.
 */
import { ContainerWriter } from './container.js';
import type { RecordHeader } from './container-format.js';
import { locationOf, type ChunkIndex, type ChunkLocation } from './chunk-index.js';
import { ChunkvaultError } from './errors.js';
import { toHex } from './_bytes.js';

export interface NewChunk {
  readonly header: RecordHeader;
  readonly payload: Uint8Array;
}

export class ChunkWriter {
  /** Chunks not yet in the index (open or sealing containers), by digest hex. */
  private readonly pending = new Map<string, ChunkLocation>();
  private container: ContainerWriter | undefined;
  /** The container being sealed in the background (at most one). */
  private sealing: Promise<void> | undefined;
  private failure: unknown;
  private storedBytes = 0;

  constructor(
    private readonly repoDir: string,
    private readonly index: ChunkIndex,
    private readonly containerTargetBytes: number,
  ) {}

  /** Stored bytes (record headers + payloads) this writer added. */
  get bytesAdded(): number {
    return this.storedBytes;
  }

  /** Looks up digests: this backup's unindexed chunks first, then the index, in one batch. */
  async lookup(digests: readonly Uint8Array[]): Promise<(ChunkLocation | undefined)[]> {
    const found: (ChunkLocation | undefined)[] = digests.map((d) => this.pending.get(toHex(d)));
    const missing = digests.filter((_, i) => found[i] === undefined);
    const fromIndex = await this.index.getMany(missing);
    let j = 0;
    return found.map((f) => f ?? fromIndex[j++]);
  }

  /** This backup's location of `digest` when it added it and it is not indexed yet. */
  pendingLocation(digest: Uint8Array): ChunkLocation | undefined {
    return this.pending.get(toHex(digest));
  }

  /** Compares the check hash of a dedup hit; a mismatch fails the backup. */
  static checkHit(digest: Uint8Array, loc: ChunkLocation, checkHash: bigint): void {
    if (loc.checkHash !== checkHash) {
      throw new ChunkvaultError(
        'HASH_MISMATCH',
        `chunk ${toHex(digest)}: the check hash differs from the stored chunk with the same SHA-256 (collision or damaged index)`,
        { details: { chunk: toHex(digest), container: loc.containerId } },
      );
    }
  }

  /** Appends a new chunk; a container that reaches its target size is sealed in the background. */
  async add(chunk: NewChunk): Promise<ChunkLocation> {
    if (this.failure) throw this.failure;
    const key = toHex(chunk.header.digest);
    const known = this.pending.get(key);
    if (known) return known;
    this.container ??= await ContainerWriter.create(this.repoDir);
    const before = this.container.byteSize;
    const { containerId, entry } = await this.container.append(chunk.header, chunk.payload);
    this.storedBytes += this.container.byteSize - before;
    const loc = locationOf(containerId, entry);
    this.pending.set(key, loc);
    if (this.container.byteSize >= this.containerTargetBytes || this.container.isFull) await this.startSeal();
    return loc;
  }

  /** Seals the open container (if any), waits for every seal, and indexes the chunks. */
  async seal(): Promise<void> {
    await this.startSeal();
    await this.sealing;
    if (this.failure) throw this.failure;
  }

  /** Drops the unsealed container. Sealed ones stay (valid, indexed, unreferenced). */
  async abort(): Promise<void> {
    const container = this.container;
    this.container = undefined;
    await this.sealing?.catch(() => undefined);
    this.pending.clear();
    await container?.abort();
  }

  /**
   * Starts sealing the open container. Waits for the previous seal first, so at most
   * one container is sealing while the next one fills.
   */
  private async startSeal(): Promise<void> {
    const container = this.container;
    if (!container) return;
    this.container = undefined;
    await this.sealing;
    if (this.failure) {
      await container.abort();
      throw this.failure;
    }
    this.sealing = (async () => {
      const entries = await container.seal();
      await this.index.putMany(entries.map((e) => [e.digest, locationOf(container.id, e)]));
      for (const e of entries) this.pending.delete(toHex(e.digest));
    })().catch((err: unknown) => {
      this.failure ??= err;
    });
  }
}
