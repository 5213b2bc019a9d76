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

/** Direct read access to a source for worker threads (see `BlockSource.pread`). */
export interface PreadAccess {
  /** A descriptor open for reading the disk bytes at their disk offsets; valid until `close`. */
  readonly fd: number;
  /**
   * The error to report for a failed read at `offset`: `errno` is the system error
   * number, or 0 when the source ended early (the same codes `readInto` rejects with).
   */
  failure(errno: number, offset: number): Error;
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
  /**
   * Set by sources backed by a local file or block device: the engine's worker threads
   * then read it themselves (pread on `fd`, same offsets as `readInto`), next to the
   * hashing, instead of the main thread reading into shared memory first.
   */
  readonly pread?: PreadAccess;
  /** A short human description for logs and the point record (no secrets). */
  describe(): string;
  /** Releases every resource (file handles, connections). Idempotent. */
  close(): Promise<void>;
}
