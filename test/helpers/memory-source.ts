/**
 * An in-memory disk for in-process engine tests, optionally gated: `gate` runs before
 * each read (a read may cover several consecutive chunks), to hold or fail a backup at
 * a chosen moment.
 */
import type { BlockSource } from '../../engine/index.js';

export class MemorySource implements BlockSource {
  constructor(
    private readonly data: Uint8Array,
    /** Called before each read (a read may cover several consecutive chunks). */
    private readonly gate?: (offset: number, length: number) => Promise<void>,
  ) {}

  get sizeBytes(): number {
    return this.data.length;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    await this.gate?.(offset, target.length);
    target.set(this.data.subarray(offset, offset + target.length));
  }

  describe(): string {
    return 'memory';
  }

  async close(): Promise<void> {}
}
