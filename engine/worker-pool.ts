/**
 * The CPU pool: hashing, compression and decompression on piscina worker threads.
 * Buffers move to workers by transfer (never copied); callers get them back in the
 * result. `maxQueue` bounds the queue and `whenReady()` gives backpressure.
 */
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { ChunkvaultError, type ErrorCode } from './errors.js';
import type { HashResult, HashTask, OpenTask, PackResult, PackTask, WorkerError } from './_worker.js';

/** Resolves the compiled worker (tests run the TypeScript sources, workers need JS). */
function workerFile(): string {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) return join(resolve(dirname(here), '..'), 'dist', 'engine', '_worker.js');
  return join(dirname(here), '_worker.js');
}

export interface WorkerPoolOptions {
  /** Worker threads; default: available cores. */
  readonly threads?: number;
}

export class WorkerPool {
  readonly threads: number;
  private readonly piscina: Piscina;

  constructor(options: WorkerPoolOptions = {}) {
    this.threads = Math.max(1, options.threads ?? availableParallelism());
    this.piscina = new Piscina({
      filename: workerFile(),
      minThreads: this.threads,
      maxThreads: this.threads,
      maxQueue: this.threads * 64,
      idleTimeout: 30_000,
    });
  }

  /** Tasks waiting or running. */
  get pending(): number {
    return this.piscina.queueSize + this.piscina.utilization * this.threads;
  }

  hash(task: HashTask): Promise<HashResult> {
    return this.piscina.run(task, { name: 'hash', transferList: [task.buf.buffer as ArrayBuffer] });
  }

  async compress(task: PackTask): Promise<{ buf: Uint8Array; packed: PackResult }> {
    return this.piscina.run(task, { name: 'compress', transferList: [task.buf.buffer as ArrayBuffer] });
  }

  /** Checks and decompresses a record; rejects with CHUNK_CORRUPT when it is damaged. */
  async open(task: OpenTask): Promise<Uint8Array> {
    const result: { raw: Uint8Array } | WorkerError = await this.piscina.run(task, {
      name: 'open',
      transferList: [task.payload.buffer as ArrayBuffer],
    });
    if ('error' in result) {
      throw new ChunkvaultError(result.error.code as ErrorCode, result.error.message);
    }
    return result.raw;
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}
