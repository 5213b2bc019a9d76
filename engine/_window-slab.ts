/**
 * Window slabs: the memory of the backup hot path. A slab holds one window of W chunk
 * slots in shared memory (SharedArrayBuffer), laid out as areas indexed by slot:
 *
 *   raw      W x chunkSize          the disk bytes, read in by the main thread
 *   out      W x outStride          payloads, compressed by the workers
 *   digest   W x 32                 SHA-256
 *   check, payloadHash  W x u64     XXH64 of the raw bytes / of the payload
 *   length, payloadLength W x u32   raw and payload lengths
 *   zero, codec  W x u8             all-zero flag, codec id
 *
 * A fixed number of slabs is allocated once per backup; `acquire` waits when all are
 * in use, which is the backpressure of the read side. Workers receive the views in a
 * task message (cloning a view of shared memory shares it: nothing is copied). Slabs
 * live in the shared arena (shared-arena.ts), so a payload moves into a container
 * stage with one memory.copy; `dispose` gives them back once nothing touches them.
 */
import { payloadBound } from './codecs.js';
import { allocArenaBlock, freeArenaBlock } from './shared-arena.js';

export interface SlabViews {
  readonly chunkSize: number;
  readonly outStride: number;
  readonly raw: Uint8Array;
  readonly out: Uint8Array;
  readonly digest: Uint8Array;
  readonly check: BigUint64Array;
  readonly payloadHash: BigUint64Array;
  readonly length: Uint32Array;
  readonly payloadLength: Uint32Array;
  readonly zero: Uint8Array;
  readonly codec: Uint8Array;
}

function makeSlab(slots: number, chunkSize: number): { views: SlabViews; block: Uint8Array } {
  const outStride = Math.ceil(payloadBound(chunkSize) / 8) * 8;
  const rawBytes = slots * chunkSize;
  const outBytes = slots * outStride;
  const u64 = slots * 8;
  const total = rawBytes + outBytes + slots * 32 + 2 * u64 + 2 * slots * 4 + 2 * slots;
  const block = allocArenaBlock(total);
  const sab = block.buffer;
  // The block starts on a page: every area below keeps its element alignment.
  let at = block.byteOffset;
  const take = (n: number): number => {
    const from = at;
    at += n;
    return from;
  };
  const views: SlabViews = {
    chunkSize,
    outStride,
    raw: new Uint8Array(sab, take(rawBytes), rawBytes),
    out: new Uint8Array(sab, take(outBytes), outBytes),
    check: new BigUint64Array(sab, take(u64), slots),
    payloadHash: new BigUint64Array(sab, take(u64), slots),
    digest: new Uint8Array(sab, take(slots * 32), slots * 32),
    length: new Uint32Array(sab, take(slots * 4), slots),
    payloadLength: new Uint32Array(sab, take(slots * 4), slots),
    zero: new Uint8Array(sab, take(slots), slots),
    codec: new Uint8Array(sab, take(slots), slots),
  };
  return { views, block };
}

/** A fixed set of slabs of `slots` chunk slots each. */
export class SlabPool {
  private readonly free: SlabViews[] = [];
  private readonly waiters: ((s: SlabViews) => void)[] = [];
  private readonly blocks: Uint8Array[] = [];

  constructor(count: number, readonly slots: number, chunkSize: number) {
    for (let i = 0; i < count; i++) {
      const { views, block } = makeSlab(slots, chunkSize);
      this.free.push(views);
      this.blocks.push(block);
    }
  }

  /**
   * Gives every slab's memory back to the arena. Only once no read, worker task or
   * append can touch any of them; the pool is unusable afterwards.
   */
  dispose(): void {
    for (const b of this.blocks.splice(0)) freeArenaBlock(b);
    this.free.length = 0;
  }

  acquire(): Promise<SlabViews> {
    const s = this.free.pop();
    if (s) return Promise.resolve(s);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(slab: SlabViews): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(slab);
    else this.free.push(slab);
  }
}
