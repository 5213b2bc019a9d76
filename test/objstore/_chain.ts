/**
 * The chain-of-backups suite, one body for every back end: a full backup and
 * incrementals from changed extents, every point restored byte-identically, the
 * listing and parent chain, a two-disk VM backup, forget + gc with the survivors
 * still exact, and a full repository check at the end. On an object store each step
 * also runs as on a second machine (an empty cache): the catalog and maps come from
 * the bucket and the index is rebuilt from the container footers.
 */
import { join } from 'node:path';
import { expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cliOk,
  initRepo,
  KiB,
  listPoints,
  makeImage,
  MiB,
  mutateImage,
  restoreSha,
  sha256File,
  writeJson,
} from '../helpers/cli.js';
import type { Backend } from './_backends.js';

export function chainSuite(backend: () => Backend, dir: () => string): void {
  const vm = 'vm-chain';
  const size = 24 * MiB + 4321;
  const expected = new Map<string, string>();
  const order: string[] = [];
  let repo: string;

  it('backs up a full image and 5 incrementals', async () => {
    repo = backend().repo('chain');
    const image = join(dir(), 'chain.img');
    await initRepo(repo, ['--chunk-size', '1M']);
    await makeImage(image, size, 'objstore-chain');
    const full = await backupOk(repo, image, vm, ['--disk', 'd0']);
    expect(full).toMatchObject({ mode: 'full', parent: null, sizeBytes: size, bytesRead: size });
    expected.set(full.point, await sha256File(image));
    order.push(full.point);
    for (let i = 1; i <= 5; i++) {
      const { extents, sha } = await mutateImage(image, { seed: `objstore-${i}`, writes: 4 + i, maxLength: 300 * KiB });
      const file = await writeJson(join(dir(), `chain-${i}.json`), extents);
      const inc = await backupOk(repo, image, vm, ['--disk', 'd0', '--changed-extents', file]);
      expect(inc).toMatchObject({ mode: 'incremental', parent: order.at(-1), sizeBytes: size });
      expect(inc.bytesRead).toBeLessThan(size);
      expected.set(inc.point, sha);
      order.push(inc.point);
    }
  });

  it('restores every point byte-identically', async () => {
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir()), `restore of ${id}`).toBe(sha);
  });

  it('lists the points in order with their parent chain', async () => {
    const points = await listPoints(repo, ['--vm', vm]);
    expect(points.map((p) => p.id)).toEqual(order);
    points.forEach((p, i) => expect(p.parent).toBe(i === 0 ? null : order[i - 1]));
  });

  it('restores every point from another machine (empty cache)', async () => {
    const other = backend().machine('second');
    expect((await listPoints(repo, other)).map((p) => p.id)).toEqual(order);
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir(), other), `restore of ${id} elsewhere`).toBe(sha);
  });

  it('commits a two-disk VM backup as one job and restores both disks', async () => {
    const a = join(dir(), 'vm-a.img');
    const b = join(dir(), 'vm-b.img');
    await makeImage(a, 3 * MiB + 5, 'vm-a');
    await makeImage(b, 2 * MiB, 'vm-b');
    const r = await cliOk(['backup', a, b, '--repo', repo, '--vm', 'vm-two', '--json']);
    expect(r.json.points).toHaveLength(2);
    const out = join(dir(), 'vm-two-out');
    await cliOk(['restore', r.json.job, '--repo', repo, '--output', out, ...backend().machine('third')]);
    expect(await sha256File(join(out, 'vm-a.img'))).toBe(await sha256File(a));
    expect(await sha256File(join(out, 'vm-b.img'))).toBe(await sha256File(b));
  });

  it('forgets the two oldest points, collects garbage, and the rest still restore exactly', async () => {
    const gone = order.splice(0, 2);
    await cliOk(['forget', ...gone, '--repo', repo, '--json']);
    for (const id of gone) expected.delete(id);
    const gc = await cliOk(['gc', '--repo', repo, '--wait', '--json']);
    expect(gc.json.bytesFreed, gc.stdout).toBeGreaterThan(0);
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir()), `restore of ${id} after gc`).toBe(sha);
    // The second machine's index names containers GC removed: it is rebuilt on open.
    const other = backend().machine('second');
    expect((await listPoints(repo, [...other, '--vm', vm])).map((p) => p.id)).toEqual(order);
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir(), other), `restore of ${id} elsewhere after gc`).toBe(sha);
  });

  it('reports space usage from the containers (stats)', async () => {
    const s = await cliOk(['stats', '--repo', repo, '--json']);
    expect(s.json.points).toBe(order.length + 2);
    expect(s.json.storedBytes).toBeGreaterThan(0);
  });

  it('ends with a clean repository check', async () => {
    const report = await checkRepo(repo);
    expect(report.pointsChecked).toBe(order.length + 2);
  });
}
