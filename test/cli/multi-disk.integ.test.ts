/**
 * Several sources in one `backup` are the disks of one VM: one point per disk and one
 * VM record, all visible together; a failing disk leaves nothing visible or on disk.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRepo, cli, cliOk, expectCliError, initRepo, listPoints, makeImage, makeTempDir, removeTempDir, repoSnapshot, restoreSha, sha256File, MiB } from '../helpers/cli.js';

let dir: string;
let repo: string;
beforeAll(async () => {
  dir = await makeTempDir('multi-disk');
  repo = join(dir, 'repo');
  await initRepo(repo);
});
afterAll(async () => {
  await checkRepo(repo);
  await removeTempDir(dir);
});

describe('multi-disk VM backups', () => {
  it('backs up two disks as one VM backup and restores each exactly', async () => {
    const a = join(dir, 'sys.img');
    const b = join(dir, 'data.img');
    await makeImage(a, 6 * MiB + 123, 'sys');
    await makeImage(b, 3 * MiB, 'data');
    const r = await cliOk(['backup', a, b, '--repo', repo, '--vm', 'vm-two', '--json']);
    const out = r.json as { job: string; points: { point: string; disk: string }[] };
    expect(out.points.map((p) => p.disk)).toEqual(['sys.img', 'data.img']);
    const points = await listPoints(repo, ['--vm', 'vm-two']);
    expect(points).toHaveLength(2);
    for (const p of out.points) expect(await restoreSha(repo, p.point, dir)).toBe(await sha256File(join(dir, p.disk)));
    const into = join(dir, 'restored-vm');
    await cliOk(['restore', out.job, '--repo', repo, '--output', into]);
    for (const p of out.points) expect(await sha256File(join(into, p.disk))).toBe(await sha256File(join(dir, p.disk)));
  });

  it('writes nothing when one of the disks fails, and rejects per-disk flags', async () => {
    const before = await repoSnapshot(repo);
    const a = join(dir, 'sys.img');
    expectCliError(await cli(['backup', a, join(dir, 'missing.img'), '--repo', repo, '--vm', 'vm-two']), 'SOURCE_NOT_FOUND');
    expectCliError(await cli(['backup', a, a, '--repo', repo, '--vm', 'vm-two']), 'INVALID_ARGUMENT');
    expectCliError(await cli(['backup', a, join(dir, 'data.img'), '--repo', repo, '--vm', 'vm-two', '--disk', 'x']), 'USAGE');
    expect(await repoSnapshot(repo)).toEqual(before);
  });
});
