/**
 * What the engine reads a disk from. Adapters (files, NBD, hypervisor front-ends)
 * implement `BlockSource`; the engine knows nothing else about them.
 *
 * Terms: an extent is a byte range `[offset, offset + length)` of the disk.
 */

export interface Extent {
  readonly offset: number;
  readonly length: number;
}

/** A consistent, read-only view of one disk. */
export interface BlockSource {
  /** Disk size in bytes. */
  readonly sizeBytes: number;
  /**
   * Fills `target` entirely with the disk bytes starting at `offset`.
   * Rejects (never returns short data) when the source ends early or fails.
   * The source must not keep a reference to `target` after the promise settles.
   */
  readInto(target: Uint8Array, offset: number): Promise<void>;
  /** A short human description for logs and the point record (no secrets). */
  describe(): string;
  /** Releases every resource (file handles, connections). Idempotent. */
  close(): Promise<void>;
}
