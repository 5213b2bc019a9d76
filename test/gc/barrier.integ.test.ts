/**
 * The race GC must win: a backup that took dedup hits on chunks that only forgotten
 * points referenced, while a GC (another process) condemns exactly those chunks. The
 * backup is held open just before its last read; GC condemns and, seeing the backup's
 * session, leaves reclamation pending; the backup commits; the next GC puts the
 * chunks the new point references back and reclaims only the rest.
 * Without the barrier and the resurrection step the new point would lose its data.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, forget, isChunkvaultError, Repository, verify } from '../../engine/index.js';
import { cliOk, ensureBuilt, makeTempDir, removeTempDir, seededBytes, startCli } from '../helpers/cli.js';
import { MemorySource, restoredSha, shaOf, smallRepo } from './_engine.js';

const CHUNK = 64 * 1024;
const SLOTS = 192;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('gc-barrier');
});

afterAll(async () => {
  await removeTempDir(dir);
});

interface GcJson {
  status: 'done' | 'pending';
  chunksCondemned: number;
  chunksResurrected: number;
  waitingFor: { pid: number }[];
}

/**
 * The chunks of the windows looked up before the hold were dedup hits on condemned
 * entries and must have been put back; the held window's were looked up after the
 * sweep (misses, stored again).
 */
function expectSomeResurrected(n: number): void {
  expect(n).toBeGreaterThan(0);
  expect(n).toBeLessThan(SLOTS);
}

/** A backup of `data` that stops before the read of its last chunk until `release` is called. */
function heldBackup(repo: Repository, data: Uint8Array) {
  let release!: () => void;
  let reachedEnd!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const atEnd = new Promise<void>((r) => (reachedEnd = r));
  const last = data.length - CHUNK;
  const source = new MemorySource(data, async (offset, length) => {
    // Reads cover runs of consecutive chunks: hold the one that includes the last.
    if (offset + length > last) {
      reachedEnd();
      await released;
    }
  });
  const done = backup(repo, { source, vm: 'vm-b', disk: 'd0', parent: null });
  return { done, atEnd, release };
}

describe('GC beside a backup that deduplicates against condemned chunks', () => {
  it.each([false, true])('keeps every chunk the new point references (gc --wait: %s)', async (wait) => {
    const root = join(dir, `repo-${wait}`);
    await smallRepo(root, CHUNK);
    // 12 MiB: the windows before the last one are looked up (dedup hits) before the hold on the last chunk.
    const data = seededBytes(`barrier-${wait}`, SLOTS * CHUNK);
    const repo = await Repository.open(root);
    try {
      const a = await backup(repo, { source: new MemorySource(data), vm: 'vm-a', disk: 'd0', parent: null });
      await forget(repo, { points: [a.id] });
      const held = heldBackup(repo, data);
      await held.atEnd;
      await new Promise((r) => setTimeout(r, 700));
      const args = ['gc', '--repo', root, '--json', ...(wait ? ['--wait'] : [])];
      const running = startCli(args);
      if (wait) {
        // Let GC condemn and start waiting, then let the backup commit.
        await new Promise((r) => setTimeout(r, 1500));
        held.release();
        const b = await held.done;
        const r = (await running.result);
        expect(r.code, r.stderr).toBe(0);
        const report = r.json as GcJson;
        expect(report.status).toBe('done');
        expect(report.chunksCondemned).toBe(SLOTS);
        expectSomeResurrected(report.chunksResurrected);
        expect(await restoredSha(repo, b)).toBe(shaOf(data));
      } else {
        const r = await running.result;
        expect(r.code, r.stderr).toBe(0);
        const first = r.json as GcJson;
        expect(first.status).toBe('pending');
        expect(first.chunksCondemned).toBe(SLOTS);
        expect(first.waitingFor.map((x) => x.pid)).toContain(process.pid);
        held.release();
        const b = await held.done;
        const second = (await cliOk(['gc', '--repo', root, '--json'])).json as GcJson;
        expect(second.status).toBe('done');
        expectSomeResurrected(second.chunksResurrected);
        expect(await restoredSha(repo, b)).toBe(shaOf(data));
      }
      const report = await verify(repo, { readData: true });
      expect(report.problems).toEqual([]);
      // The forgotten point's map is gone; nothing the new point needs is.
      const third = (await cliOk(['gc', '--repo', root, '--json'])).json as GcJson;
      expect(third).toMatchObject({ status: 'done', chunksCondemned: 0 });
    } finally {
      await repo.close();
    }
  }, 120_000);

  it('refuses to build on a parent forgotten before the backup registered (NO_PARENT), instead of copying slots GC may collect', async () => {
    const root = join(dir, 'repo-forgotten-parent');
    await smallRepo(root, CHUNK);
    const repo = await Repository.open(root);
    try {
      const data = seededBytes('forgotten-parent', 8 * CHUNK);
      const a = await backup(repo, { source: new MemorySource(data), vm: 'vm', disk: 'd0', parent: null });
      await forget(repo, { points: [a.id] });
      const err = await backup(repo, { source: new MemorySource(data), vm: 'vm', disk: 'd0', parent: a, changed: [{ offset: 0, length: CHUNK }] }).catch((e: unknown) => e);
      expect(isChunkvaultError(err, 'NO_PARENT')).toBe(true);
      expect(await repo.catalog.list()).toEqual([]);
      expect((await repo.sessions.live()).length).toBe(0);
    } finally {
      await repo.close();
    }
  });
});
