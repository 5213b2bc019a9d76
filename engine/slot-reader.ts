/**
 * Reads the chunk slots of a backup plan from a `BlockSource`, in slot order, with a
 * bounded number of reads in flight and a bounded read-ahead. Results come out in
 * order whatever order the reads complete in.
 */
import type { BlockSource } from './source.js';
import type { SlotRange } from './extents.js';
import { BufferPool, Semaphore } from './_buffer-pool.js';
import { slotLength, type MapGeometry } from './point-map.js';
import { ChunkvaultError, toChunkvaultError } from './errors.js';

export interface SlotData {
  readonly slot: number;
  /** A pool buffer; bytes [0, length) hold the slot. */
  buf: Uint8Array;
  readonly length: number;
}

export class SlotReader {
  private readonly queue: Promise<SlotData>[] = [];
  private readonly slots: Generator<number>;
  private done = false;
  private cancelled = false;
  private readonly limiter: Semaphore;

  constructor(
    private readonly source: BlockSource,
    private readonly geometry: MapGeometry,
    ranges: readonly SlotRange[],
    private readonly buffers: BufferPool,
    concurrency: number,
    private readonly readAhead: number,
  ) {
    this.slots = iterateSlots(ranges);
    this.limiter = new Semaphore(concurrency);
  }

  /** The next slot's data, or undefined when the plan is done. */
  async next(): Promise<SlotData | undefined> {
    this.fill();
    const p = this.queue.shift();
    if (!p) return undefined;
    const item = await p;
    this.fill();
    return item;
  }

  /** Stops starting reads and waits for those in flight (their buffers are released). */
  async cancel(): Promise<void> {
    this.done = true;
    this.cancelled = true;
    const inflight = this.queue.splice(0);
    const settled = await Promise.allSettled(inflight);
    for (const s of settled) if (s.status === 'fulfilled') this.buffers.release(s.value.buf);
  }

  private fill(): void {
    while (!this.done && this.queue.length < this.readAhead) {
      const next = this.slots.next();
      if (next.done) {
        this.done = true;
        return;
      }
      const p = this.read(next.value);
      p.catch(() => undefined); // awaited by next(); avoid an unhandled rejection meanwhile
      this.queue.push(p);
    }
  }

  private async read(slot: number): Promise<SlotData> {
    const buf = await this.buffers.acquire();
    const length = slotLength(this.geometry, slot);
    const offset = slot * this.geometry.chunkSize;
    try {
      await this.limiter.run(async () => {
        // Reads still queued when the backup failed are not sent (each could retry at length).
        if (this.cancelled) throw new ChunkvaultError('INTERRUPTED', 'read cancelled');
        await this.source.readInto(buf.subarray(0, length), offset);
      });
    } catch (err) {
      this.buffers.release(buf);
      if (err instanceof ChunkvaultError) throw err;
      throw new ChunkvaultError('SOURCE_READ_FAILED', `reading the source at offset ${offset} failed`, {
        cause: toChunkvaultError(err, 'read'),
        details: { offset, length },
      });
    }
    return { slot, buf, length };
  }
}

function* iterateSlots(ranges: readonly SlotRange[]): Generator<number> {
  for (const r of ranges) for (let s = r.first; s < r.end; s++) yield s;
}
