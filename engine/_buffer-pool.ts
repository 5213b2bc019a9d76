/**
 * A fixed set of chunk-size buffers, reused for the whole job (no per-chunk
 * allocation churn). `acquire` waits when every buffer is out: that wait is the
 * backpressure of the read side. Each buffer owns its ArrayBuffer, so it can be
 * transferred to a worker and back.
 */
export class BufferPool {
  private readonly free: Uint8Array[] = [];
  private readonly waiters: ((b: Uint8Array) => void)[] = [];

  constructor(
    readonly bufferSize: number,
    count: number,
  ) {
    for (let i = 0; i < count; i++) this.free.push(new Uint8Array(new ArrayBuffer(bufferSize)));
  }

  acquire(): Promise<Uint8Array> {
    const buf = this.free.pop();
    if (buf) return Promise.resolve(buf);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Returns a buffer (possibly a new view of a transferred-back ArrayBuffer). */
  release(buf: Uint8Array): void {
    const whole = buf.byteOffset === 0 && buf.length === this.bufferSize ? buf : new Uint8Array(buf.buffer, 0, this.bufferSize);
    const waiter = this.waiters.shift();
    if (waiter) waiter(whole);
    else this.free.push(whole);
  }
}

/** Counts concurrent holders; `run` waits for a free slot. */
export class Semaphore {
  private active = 0;
  private readonly queue: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}
