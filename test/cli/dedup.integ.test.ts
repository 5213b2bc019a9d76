/**
 * Deduplication seen from the CLI: repeated backups, cloned VMs, empty incrementals
 * and repeated regions inside one image store each distinct chunk once, and the
 * `stats` accounting (dedup ratio, exclusive bytes) says so.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cliOk,
  ensureBuilt,
  expectRestores,
  initRepo,
  KiB,
  listPoints,
  makeImage,
  makeTempDir,
  MiB,
  mutateImage,
  removeTempDir,
  seededBytes,
  sha256File,
  writeJson,
} from '../helpers/cli.js';

const RECORD_HEADER_BYTES = 64; // FORMAT.md "Record"

let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('dedup');
});

afterAll(async () => {
  await removeTempDir(dir);
});

interface StatsJson {
  points: number;
  vms: number;
  logicalBytes: number;
  zeroBytes: number;
  uniqueChunks: number;
  uniqueRawBytes: number;
  dedupRatio: number;
  perPoint: { id: string; vm: string; exclusiveBytes: number; sharedBytes: number; uniqueBytes: number; bytesNew: number; zeroBytes: number }[];
  perVm: { vm: string; exclusiveBytes: number; sharedBytes: number }[];
  storedPayloadBytes: number;
}

async function stats(repo: string): Promise<StatsJson> {
  return (await cliOk(['stats', '--repo', repo, '--json'])).json as StatsJson;
}

describe('deduplication', () => {
  it('stores (almost) nothing for a second full backup of an unchanged image', async () => {
    const repo = join(dir, 'again-repo');
    const image = join(dir, 'again.img');
    await initRepo(repo);
    const sha = await makeImage(image, 32 * MiB + 4096, 'again');
    const first = await backupOk(repo, image, 'vm-again');
    const second = await backupOk(repo, image, 'vm-again');
    expect(first.bytesNew).toBeGreaterThan(MiB);
    expect(second).toMatchObject({ mode: 'full', parent: first.point, bytesRead: first.bytesRead });
    expect(second.bytesNew).toBeLessThan(first.bytesNew / 100);
    expect(second.chunksNew).toBe(0);
    expect(second.chunksDedup).toBe(first.chunksNew + first.chunksDedup);
    expect((await stats(repo)).uniqueChunks).toBe(first.chunksNew);
    await expectRestores(repo, new Map([[first.point, sha], [second.point, sha]]), dir);
    await checkRepo(repo);
  });

  it('shares every chunk between two VMs cloned from one image', async () => {
    const repo = join(dir, 'clone-repo');
    const base = join(dir, 'golden.img');
    const vm1 = join(dir, 'clone1.img');
    const vm2 = join(dir, 'clone2.img');
    await initRepo(repo);
    const sha = await makeImage(base, 24 * MiB + 512, 'golden');
    await fsp.copyFile(base, vm1);
    await fsp.copyFile(base, vm2);
    const a = await backupOk(repo, vm1, 'clone-1', ['--disk', 'root']);
    // The sample image repeats some regions itself: the clone doubles whatever ratio one copy has.
    const single = (await stats(repo)).dedupRatio;
    expect(single).toBeGreaterThanOrEqual(1);
    const b = await backupOk(repo, vm2, 'clone-2', ['--disk', 'root']);
    expect(b.bytesNew).toBeLessThan(a.bytesNew / 100);
    expect(b.chunksNew).toBe(0);
    let s = await stats(repo);
    expect(s).toMatchObject({ points: 2, vms: 2, uniqueChunks: a.chunksNew, uniqueRawBytes: a.rawNew });
    expect(s.dedupRatio / single).toBeCloseTo(2, 6);
    for (const p of s.perPoint) expect(p.exclusiveBytes, `exclusive bytes of ${p.vm}`).toBe(0);
    // Each clone references every stored chunk, all of them shared with the other.
    for (const p of s.perPoint) expect(p.sharedBytes, `shared bytes of ${p.vm}`).toBe(s.storedPayloadBytes);
    expect(s.perVm).toEqual([
      { vm: 'clone-1', exclusiveBytes: 0, sharedBytes: s.storedPayloadBytes },
      { vm: 'clone-2', exclusiveBytes: 0, sharedBytes: s.storedPayloadBytes },
    ]);
    expect(s.perPoint.map((p) => p.zeroBytes)).toEqual([s.zeroBytes / 2, s.zeroBytes / 2]);

    // The second clone diverges: only its new chunks are exclusive to its new point.
    const { extents, sha: sha2 } = await mutateImage(vm2, { seed: 'clone-2-day-1', writes: 10, maxLength: 600 * KiB });
    const c = await backupOk(repo, vm2, 'clone-2', ['--disk', 'root', '--changed-extents', await writeJson(join(dir, 'clone.json'), extents)]);
    expect(c.chunksNew).toBeGreaterThan(0);
    s = await stats(repo);
    const byId = new Map(s.perPoint.map((p) => [p.id, p]));
    expect(byId.get(a.point)!.exclusiveBytes).toBe(0);
    expect(byId.get(b.point)!.exclusiveBytes).toBe(0);
    expect(byId.get(c.point)!.exclusiveBytes).toBe(c.bytesNew - RECORD_HEADER_BYTES * c.chunksNew);
    const vm2Space = s.perVm.find((v) => v.vm === 'clone-2')!;
    expect(vm2Space.exclusiveBytes).toBe(c.bytesNew - RECORD_HEADER_BYTES * c.chunksNew);
    await expectRestores(repo, new Map([[a.point, sha], [b.point, sha], [c.point, sha2]]), dir);
    await checkRepo(repo);
  });

  it('adds nothing for an incremental with an empty extent list, and restores it identically', async () => {
    const repo = join(dir, 'empty-inc-repo');
    const image = join(dir, 'empty-inc.img');
    await initRepo(repo);
    const sha = await makeImage(image, 16 * MiB + 3333, 'empty-inc');
    const full = await backupOk(repo, image, 'vm-empty');
    const none = await writeJson(join(dir, 'none.json'), []);
    const inc = await backupOk(repo, image, 'vm-empty', ['--changed-extents', none]);
    expect(inc).toMatchObject({ mode: 'incremental', parent: full.point, bytesRead: 0, bytesNew: 0, chunksRead: 0, chunksNew: 0, sizeBytes: full.sizeBytes });
    const inc2 = await backupOk(repo, image, 'vm-empty', ['--changed-extents', none]);
    expect(inc2).toMatchObject({ parent: inc.point, bytesNew: 0 });
    expect((await listPoints(repo, ['--vm', 'vm-empty'])).map((p) => p.id)).toEqual([full.point, inc.point, inc2.point]);
    expect((await stats(repo)).uniqueChunks).toBe(full.chunksNew);
    await expectRestores(repo, new Map([[full.point, sha], [inc.point, sha], [inc2.point, sha]]), dir);
    await checkRepo(repo);
  });

  it('stores a region repeated inside one image once', async () => {
    const repo = join(dir, 'repeat-repo');
    const image = join(dir, 'repeat.img');
    await initRepo(repo, ['--chunk-size', '256K']);
    const block = seededBytes('repeat', 2 * MiB); // 8 chunks of 256 KiB
    const fh = await fsp.open(image, 'w');
    try {
      for (let i = 0; i < 8; i++) await fh.write(block, 0, block.length, i * 4 * MiB); // data, then 2 MiB of zeros
    } finally {
      await fh.close();
    }
    const b = await backupOk(repo, image, 'vm-repeat');
    expect(b).toMatchObject({ chunksRead: 120, chunksZero: 56, chunksNew: 8, chunksDedup: 56 });
    const s = await stats(repo);
    expect(s.uniqueRawBytes).toBe(2 * MiB);
    expect(s.dedupRatio).toBeCloseTo(8, 5);
    await expectRestores(repo, new Map([[b.point, await sha256File(image)]]), dir);
    await checkRepo(repo);
  });
});
