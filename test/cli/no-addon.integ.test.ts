/**
 * An install whose native addon was never built (node_modules copied without running
 * the install script): every command must fail with one clean `chunkvault: INTERNAL:`
 * line naming the fix and exit status 1, never a Node stack trace, and the worker
 * pool must turn its workers' start-up failure into a typed rejection of its tasks.
 * The install is a copy of dist/ beside a link to the real node_modules, where the
 * addon cannot be found.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../engine/errors.js';
import { ensureBuilt, makeImage, makeTempDir, MiB, removeTempDir, ROOT } from '../helpers/cli.js';

let dir: string;
let install: string;
let image: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('no-addon');
  install = join(dir, 'install');
  await fsp.mkdir(install);
  await fsp.cp(join(ROOT, 'dist'), join(install, 'dist'), { recursive: true });
  await fsp.copyFile(join(ROOT, 'package.json'), join(install, 'package.json'));
  await fsp.symlink(join(ROOT, 'node_modules'), join(install, 'node_modules'));
  image = join(dir, 'disk.img');
  await makeImage(image, 4 * MiB, 'no-addon');
});

afterAll(() => removeTempDir(dir));

function run(args: readonly string[]) {
  const r = spawnSync(process.execPath, [join(install, 'dist', 'src', 'cli', 'main.js'), ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, CHUNKVAULT_NO_PROGRESS: '1', CHUNKVAULT_DEBUG: undefined },
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const FIX = /^chunkvault: INTERNAL: the native addon is not built \(.+\): run npm ci, or npm run build:native$/;

describe('an install without the native addon', () => {
  it('fails a backup with one INTERNAL line, exit status 1 and no repository written', () => {
    const repo = join(dir, 'repo');
    const args = ['backup', image, '--repo', repo, '--vm', 'vm-a', '--disk', 'd0', '--json'];
    const r = run(args);
    const what = JSON.stringify(r, null, 1);
    expect(r.signal, what).toBeNull();
    expect(r.code, what).toBe(ERROR_CODES.INTERNAL);
    expect(r.stderr.trimEnd().split('\n'), what).toEqual([expect.stringMatching(FIX)]);
    expect(JSON.parse(r.stdout).error.code, what).toBe('INTERNAL');
    expect(existsSync(repo), 'a repository was created').toBe(false);
  });

  it('fails the other commands the same way', () => {
    for (const args of [['restore', '--help'], ['list', '--repo', join(dir, 'none')], ['--version']]) {
      const r = run(args);
      const what = `${args.join(' ')}: ${JSON.stringify(r, null, 1)}`;
      expect(r.code, what).toBe(ERROR_CODES.INTERNAL);
      expect(r.stderr.trimEnd().split('\n'), what).toEqual([expect.stringMatching(FIX)]);
    }
  });

  it('rejects the worker pool tasks with the typed error instead of crashing the process', () => {
    // The CLI's case: workers pre-started (prewarmWorkerPool) fail while nothing runs on
    // them, which piscina reports as an 'error' event; tasks submitted later must reject.
    // The pause lets both workers fail first (nothing outside the pool can observe it).
    const pool = join(install, 'dist', 'engine', 'worker-pool.js');
    const script = `
      import { availableParallelism } from 'node:os';
      import { prewarmWorkerPool, WorkerPool } from ${JSON.stringify(pool)};
      prewarmWorkerPool();
      await new Promise((r) => setTimeout(r, 1500));
      const pool = new WorkerPool({ threads: availableParallelism() });
      const task = () => pool.hash([{ buf: new Uint8Array(4096), length: 4096 }]);
      const outcomes = await Promise.allSettled([task(), task()]);
      await pool.close();
      console.log(JSON.stringify(outcomes.map((o) => o.status === 'rejected' ? { code: o.reason.code, message: o.reason.message } : 'resolved')));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    const what = JSON.stringify({ code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr }, null, 1);
    expect(r.status, what).toBe(0);
    expect(r.stderr, what).toBe('');
    const outcomes = JSON.parse(r.stdout) as { code: string; message: string }[];
    expect(outcomes, what).toHaveLength(2);
    for (const o of outcomes) {
      expect(o.code, what).toBe('INTERNAL');
      expect(o.message, what).toMatch(/native addon is not built/);
    }
  });
});
