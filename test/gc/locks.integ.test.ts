/**
 * The two refusals of the GC lock table (engine/FORMAT.md "Sessions and locks"): a
 * second gc while one holds the lock fails with GC_RUNNING, and `index rebuild` while a
 * backup or restore session is live fails with REPO_BUSY; neither changes anything.
 * Both lock holders here are this test process, which is alive throughout.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, Repository } from '../../engine/index.js';
import { cliFails, cliOk, ensureBuilt, makeTempDir, removeTempDir, repoSnapshot, seededBytes } from '../helpers/cli.js';
import { MemorySource, smallRepo } from './_engine.js';

let dir: string;
let root: string;
let repo: Repository;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('gc-locks');
  root = join(dir, 'repo');
  await smallRepo(root);
  repo = await Repository.open(root);
  await backup(repo, { source: new MemorySource(seededBytes('locks', 1 << 20)), vm: 'vm', disk: 'd0', parent: null });
});

afterAll(async () => {
  await repo.close();
  await removeTempDir(dir);
});

describe('GC lock and busy repository', () => {
  it('refuses a second gc while the GC lock is held (GC_RUNNING), changing nothing', async () => {
    const lock = await repo.gcLock();
    try {
      const before = await repoSnapshot(root);
      await cliFails(['gc', '--repo', root, '--json'], 'GC_RUNNING');
      expect(await repoSnapshot(root)).toEqual(before);
    } finally {
      await lock.end();
    }
    await cliOk(['gc', '--repo', root]);
  });

  it('refuses index rebuild while a session is live (REPO_BUSY), leaving the index as it was', async () => {
    const session = await repo.beginSession('read');
    try {
      const indexed = (await repo.index()).count();
      await cliFails(['index', 'rebuild', '--repo', root, '--json'], 'REPO_BUSY');
      expect((await repo.index()).count()).toBe(indexed);
    } finally {
      await session.end();
    }
    await cliOk(['index', 'rebuild', '--repo', root]);
  });
});
