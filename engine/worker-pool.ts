/**
 * The CPU pool: hashing, compression and decompression on piscina worker threads.
 * Buffers move to workers by transfer (never copied); callers get them back in the
 * result. Callers may submit any number of tasks at once: a semaphore admits at most
 * `maxQueue + threads` into piscina and holds the rest back (backpressure), so the
 * bounded piscina queue never overflows.
 */
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { ChunkvaultError, ERROR_CODES, toChunkvaultError, type ErrorCode } from './errors.js';
import { Semaphore } from './_buffer-pool.js';
import type { HashResult, HashTask, OpenTask, PackResult, PackSizesTask, PackTask, PrepareResult, PrepareTask, ScanResult, ScanTask, WorkerError } from './_worker.js';
import type { OpenBatchFailure, OpenBatchTask } from './_worker-open.js';
import type { ReadFailure } from './native.js';

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

/** Queued tasks piscina accepts per thread; the gate holds back the rest. */
const QUEUE_PER_THREAD = 16;

/** A started piscina and a promise that rejects when its workers fail outside a task. */
interface Started {
  readonly piscina: Piscina;
  readonly failed: Promise<never>;
}

/**
 * A worker that fails while starting (say the native addon is missing) or outside any
 * task is reported by piscina as an 'error' event, which would crash the process
 * unheard; it becomes a typed error every pending and later task rejects with.
 */
function workerFailure(err: unknown): ChunkvaultError {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === 'string' && e.code in ERROR_CODES && typeof e.message === 'string') {
    return new ChunkvaultError(e.code as ErrorCode, e.message, { cause: err });
  }
  return toChunkvaultError(err, 'a worker thread failed');
}

function start(threads: number): Started {
  const piscina = new Piscina({
    filename: workerFile(),
    minThreads: threads,
    maxThreads: threads,
    maxQueue: threads * QUEUE_PER_THREAD,
    idleTimeout: 30_000,
    // Tasks are synchronous; queueing a few per worker hides the round-trip latency
    // between a result and the next task (measured: 1.3x on re-backups).
    concurrentTasksPerWorker: 4,
  });
  let fail: (err: ChunkvaultError) => void = () => {};
  const failed = new Promise<never>((_resolve, reject) => {
    fail = reject;
  });
  failed.catch(() => {}); // observed by the tasks that race it, if any
  piscina.on('error', (err: unknown) => fail(workerFailure(err)));
  return { piscina, failed };
}

/** Workers started ahead of need by prewarmWorkerPool, until a WorkerPool takes them over. */
let warm: (Started & { threads: number }) | undefined;

/**
 * Starts the default pool's workers now (one per core), so their start-up overlaps
 * the caller's own; the first `new WorkerPool()` with that many threads takes them
 * over. Idle workers do not keep the process alive, so an unused warm pool costs
 * nothing but its start.
 */
export function prewarmWorkerPool(): void {
  if (warm) return;
  const threads = availableParallelism();
  warm = { threads, ...start(threads) };
}

export class WorkerPool {
  readonly threads: number;
  private readonly piscina: Piscina;
  private readonly failed: Promise<never>;
  private readonly gate: Semaphore;

  constructor(options: WorkerPoolOptions = {}) {
    this.threads = Math.max(1, options.threads ?? availableParallelism());
    const maxQueue = this.threads * QUEUE_PER_THREAD;
    let started: Started;
    if (warm?.threads === this.threads) {
      started = warm;
      warm = undefined;
    } else started = start(this.threads);
    this.piscina = started.piscina;
    this.failed = started.failed;
    this.gate = new Semaphore(maxQueue + this.threads);
  }

  /** Tasks waiting or running. */
  get pending(): number {
    return this.piscina.queueSize + this.piscina.utilization * this.threads;
  }

  /** Hashes a batch of chunks in one task (their buffers move to the worker and back). */
  hash(tasks: readonly HashTask[]): Promise<HashResult[]> {
    return this.run(tasks, 'hash', tasks.map((t) => t.buf));
  }

  /**
   * Backup hot path: the read (task.read), zero check, hashes and/or compression of
   * slots of a window slab, in place in its shared memory (nothing moves). Resolves
   * with a failed read as data (the caller knows the source and words the error);
   * rejects with the worker's error code otherwise.
   */
  async prepare(task: PrepareTask): Promise<ReadFailure | undefined> {
    const result: PrepareResult = await this.run(task, 'prepare', []);
    if ('error' in result) throw new ChunkvaultError(result.error.code as ErrorCode, result.error.message);
    return 'readFailure' in result ? result.readFailure : undefined;
  }

  /** Compresses a batch of chunks in one task. */
  compress(tasks: readonly PackTask[]): Promise<{ buf: Uint8Array; packed: PackResult }[]> {
    return this.run(tasks, 'compress', tasks.map((t) => t.buf));
  }

  /** Checks and decompresses a record; rejects with CHUNK_CORRUPT when it is damaged. */
  async open(task: OpenTask): Promise<Uint8Array> {
    const result: { raw: Uint8Array } | WorkerError = await this.run(task, 'open', [task.payload]);
    if ('error' in result) {
      throw new ChunkvaultError(result.error.code as ErrorCode, result.error.message);
    }
    return result.raw;
  }

  /**
   * Checks and decompresses many records in shared memory (engine/_worker-open.ts);
   * nothing is transferred. Resolves with the failed records as data, or null.
   */
  openBatch(task: OpenBatchTask): Promise<OpenBatchFailure[] | null> {
    return this.run(task, 'openBatch', []);
  }

  /** Estimation: digests (or zero flags) of ranges of one buffer, and CDC cut candidates. */
  scan(task: ScanTask): Promise<ScanResult> {
    return this.run(task, 'scan', [task.buf]);
  }

  /** Estimation: stored payload size of each range under each codec (payloads dropped). */
  packSizes(task: PackSizesTask): Promise<{ buf: Uint8Array; sizes: Uint32Array }> {
    return this.run(task, 'packSizes', [task.buf]);
  }

  private run<T>(task: object, name: string, moved: readonly Uint8Array[]): Promise<T> {
    const transferList = [...new Set(moved.map((m) => m.buffer as ArrayBuffer))];
    return this.gate.run(() => Promise.race([this.piscina.run(task, { name, transferList }) as Promise<T>, this.failed]));
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}
