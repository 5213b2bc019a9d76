/**
 * forget against a catalog of synthetic records (no maps needed: forget touches records
 * only): the crash-safety order, checked by failing the n-th catalog write for every n
 * and then re-running, and the USAGE rules of a request.
 */
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newPointId, type Catalog, type PointRecord, type VmBackupRecord } from './catalog.js';
import { isChunkvaultError } from './errors.js';
import { forget, planForget, type ForgetRequest } from './forget.js';
import { Repository } from './repository.js';

let root: string;

beforeAll(async () => {
  root = await fsp.mkdtemp(join(tmpdir(), 'chunkvault-forget-unit-'));
});

afterAll(async () => {
  await fsp.rm(root, { recursive: true, force: true });
});

function record(vm: string, disk: string, time: number, job?: string): PointRecord {
  return {
    id: newPointId(),
    vm,
    disk,
    time: new Date(time).toISOString(),
    parent: null,
    mode: 'full',
    sizeBytes: 0,
    chunkSize: 65536,
    slotCount: 0,
    mapDigest: '0'.repeat(64),
    changeToken: null,
    source: 'test',
    stats: { bytesRead: 0, bytesNew: 0, rawNew: 0, chunksRead: 0, chunksZero: 0, chunksNew: 0, chunksDedup: 0, durationMs: 0 },
    ...(job ? { job } : {}),
  };
}

/** A repository with single-disk points of vm "solo" and three two-disk jobs of vm "duo". */
async function makeRepo(name: string): Promise<Repository> {
  const dir = join(root, name);
  await Repository.init(dir);
  const repo = await Repository.open(dir);
  const t0 = Date.parse('2026-11-01T00:00:00Z');
  for (let i = 0; i < 4; i++) await repo.catalog.commit(record('solo', 'd0', t0 + i * 3_600_000));
  for (let i = 0; i < 3; i++) {
    const job = newPointId();
    const disks = [record('duo', 'sys', t0 + i * 86_400_000, job), record('duo', 'data', t0 + i * 86_400_000 + 1, job)];
    for (const p of disks) await repo.catalog.commit(p);
    const vm: VmBackupRecord = { id: job, vm: 'duo', time: disks[1]!.time, disks: disks.map((p) => ({ disk: p.disk, point: p.id })) };
    await repo.catalog.commitVmBackup(vm);
  }
  return repo;
}

/** No visible VM record names a point whose record is gone; returns the visible point ids. */
async function checkInvariant(repo: Repository): Promise<string[]> {
  const visible = await repo.catalog.list();
  for (const vm of await repo.catalog.listVmBackups()) {
    for (const d of vm.disks) await expect(repo.catalog.get(d.point), `VM record ${vm.id} names ${d.point}`).resolves.toMatchObject({ id: d.point });
  }
  return visible.map((p) => p.id).sort();
}

type Mutator = 'deletePoint' | 'replaceVmBackup' | 'deleteVmBackup';

/** Makes the catalog's `n`-th write (0-based) and every one after it fail, as a crash would. */
function failFrom(catalog: Catalog, n: number): void {
  let calls = 0;
  for (const name of ['deletePoint', 'replaceVmBackup', 'deleteVmBackup'] as Mutator[]) {
    const real = catalog[name].bind(catalog) as (arg: never) => Promise<void>;
    (catalog as unknown as Record<Mutator, (arg: never) => Promise<void>>)[name] = async (arg: never) => {
      if (calls++ >= n) throw new Error(`injected crash before write ${calls - 1}`);
      return real(arg);
    };
  }
}

describe('forget: crash safety', () => {
  const requests: [string, (ids: Map<string, PointRecord[]>) => ForgetRequest][] = [
    ['keep-last 1', () => ({ policy: { keepLast: 1 } })],
    ['one disk of a job by id', (ids) => ({ points: [ids.get('duo/data')![2]!.id, ids.get('solo/d0')![0]!.id] })],
  ];

  for (const [label, requestFor] of requests) {
    it(`${label}: any prefix of the writes keeps the catalog consistent, and a re-run finishes the job`, async () => {
      const model = await Repository.open(join(root, `model-${label.replace(/\W/g, '')}`));
      const byDisk = new Map<string, PointRecord[]>();
      for (const p of await model.catalog.list()) byDisk.set(`${p.vm}/${p.disk}`, [...(byDisk.get(`${p.vm}/${p.disk}`) ?? []), p]);
      const request = requestFor(byDisk);
      const done = await forget(model, request);
      const final = await checkInvariant(model);
      const writes = done.removed + done.vmBackups.replaced.length + done.vmBackups.deleted.length;
      expect(writes).toBeGreaterThan(1);
      for (let n = 0; n < writes; n++) {
        const dir = join(root, `crash-${label.replace(/\W/g, '')}-${n}`);
        await fsp.cp(join(root, 'pristine'), dir, { recursive: true });
        const repo = await Repository.open(dir);
        // Same ids as the model: the pristine copy is the model before its forget.
        failFrom(repo.catalog, n);
        await expect(forget(repo, request)).rejects.toThrow(/injected crash/);
        const visible = await checkInvariant(repo);
        for (const id of final) expect(visible).toContain(id); // nothing kept was lost
        const again = await Repository.open(dir);
        await forget(again, 'points' in request && request.points ? { points: request.points.filter((id) => visible.includes(id)) } : request).catch((err: unknown) => {
          // Every named point already gone: nothing left to do.
          if (!isChunkvaultError(err, 'USAGE')) throw err;
        });
        expect(await checkInvariant(again)).toEqual(final);
      }
    });
  }

  beforeAll(async () => {
    // One pristine repository; each model and crash run works on a copy of it.
    const repo = await makeRepo('pristine');
    await repo.close();
    for (const [label] of requests) {
      await fsp.rm(join(root, `model-${label.replace(/\W/g, '')}`), { recursive: true, force: true });
      await fsp.cp(join(root, 'pristine'), join(root, `model-${label.replace(/\W/g, '')}`), { recursive: true });
    }
  });
});

describe('forget: requests', () => {
  it('needs exactly one of a policy and point ids, and finds named points within the scope', async () => {
    const repo = await makeRepo('requests');
    const solo = (await repo.catalog.list({ vm: 'solo' }))[0]!;
    const code = async (req: ForgetRequest) => planForget(repo, req).then(
      () => 'ok',
      (err: { code?: string }) => err.code,
    );
    expect(await code({})).toBe('USAGE');
    expect(await code({ policy: {} })).toBe('USAGE');
    expect(await code({ policy: { keepLast: 1 }, points: [solo.id] })).toBe('USAGE');
    expect(await code({ points: [solo.id], vm: 'duo' })).toBe('POINT_NOT_FOUND');
    expect(await code({ points: [solo.id.slice(0, 6)], vm: 'solo' })).toBe('ok');
    const dry = await forget(repo, { points: [solo.id], dryRun: true });
    expect(dry).toMatchObject({ dryRun: true, removed: 0 });
    expect(dry.groups[0]!.remove.map((p) => p.id)).toEqual([solo.id]);
    expect(dry.groups[0]!.keep.every((k) => k.reasons[0] === 'not named')).toBe(true);
    expect(await repo.catalog.list({ vm: 'solo' })).toHaveLength(4);
  });
});
