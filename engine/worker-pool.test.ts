/**
 * The pre-started pool (prewarmWorkerPool, used by the CLI entry for backup and
 * restore): a WorkerPool takes its workers over and runs tasks on them, and a process
 * that pre-starts a pool it never uses still exits by itself (idle workers are unref'd).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { prewarmWorkerPool, WorkerPool } from './worker-pool.js';

describe('prewarmWorkerPool', () => {
  it('hands its workers to the first default WorkerPool, which runs tasks on them', async () => {
    prewarmWorkerPool();
    const pool = new WorkerPool();
    try {
      expect(pool.threads).toBe(availableParallelism());
      const buf = new Uint8Array(65536).fill(7);
      const [r] = await pool.hash([{ buf, length: buf.length }]);
      expect(Buffer.from(r!.digest).toString('hex')).toBe(createHash('sha256').update(new Uint8Array(65536).fill(7)).digest('hex'));
    } finally {
      await pool.close();
    }
  });

  it('does not keep a process alive when nothing takes the workers over', () => {
    const mod = fileURLToPath(new URL('../dist/engine/worker-pool.js', import.meta.url));
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', `import { prewarmWorkerPool } from ${JSON.stringify(mod)}; prewarmWorkerPool();`], { timeout: 20_000, encoding: 'utf8' });
    expect(r.error, 'the process did not exit within 20 s').toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
  });

  it('keeps top-level await out of the worker and the modules it loads', () => {
    // Node 20 aborts the whole process (V8 "Check failed: (location_) != nullptr") when a worker
    // is terminated while an async module is still evaluating: seen once when a pool was closed
    // right after start-up. No top-level await means no async module in the worker.
    const files = ['_worker.ts', '_worker-open.ts', '_worker-prepare.ts', 'codecs.ts', 'hashing.ts', 'errors.ts', 'constants.ts', '_bytes.ts'];
    for (const f of files) {
      const text = readFileSync(fileURLToPath(new URL(`./${f}`, import.meta.url)), 'utf8');
      expect(text.split('\n').filter((l) => /^(export\s+)?((const|let|var)\s+[^=]+=\s*)?await\b/.test(l)), f).toEqual([]);
    }
  });
});
