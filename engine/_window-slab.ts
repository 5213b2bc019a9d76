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
 * task message (cloning a view of shared memory shares it: nothing is copied).
 */
import { payloadBound } from './codecs.js';

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

function makeSlab(slots: number, chunkSize: number): SlabViews {
  const outStride = Math.ceil(payloadBound(chunkSize) / 8) * 8;
  const rawBytes = slots * chunkSize;
  const outBytes = slots * outStride;
  const u64 = slots * 8;
  const total = rawBytes + outBytes + slots * 32 + 2 * u64 + 2 * slots * 4 + 2 * slots;
  const sab = new SharedArrayBuffer(total);
  let at = 0;
  const take = (n: number): number => {
    const from = at;
    at += n;
    return from;
  };
  return {
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
}

/** A fixed set of slabs of `slots` chunk slots each. */
export class SlabPool {
  private readonly free: SlabViews[] = [];
  private readonly waiters: ((s: SlabViews) => void)[] = [];

  constructor(count: number, readonly slots: number, chunkSize: number) {
    for (let i = 0; i < count; i++) this.free.push(makeSlab(slots, chunkSize));
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
