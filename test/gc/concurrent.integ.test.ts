/**
 * GC beside backups in other processes, repeated: every round changes three VM
 * images, starts their backups as three processes, forgets older points and runs
 * GC while the backups write (all sharing the LMDB index). After every round each
 * remaining point restores byte-identically and verify --read-data passes.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  checkRepo,
  cliOk,
  ensureBuilt,
  expectRestores,
  listPoints,
  makeImage,
  makeTempDir,
  MiB,
  mutateImage,
  removeTempDir,
  startCli,
  describeResult,
} from '../helpers/cli.js';
import { smallRepo } from './_engine.js';

const ROUNDS = Number(process.env.GC_CONCURRENT_ROUNDS ?? 5);
const VMS = ['web', 'db', 'cache'];

let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('gc-concurrent');
});

afterAll(async () => {
  await removeTempDir(dir);
});

interface GcJson {
  status: string;
  chunksCondemned: number;
  chunksResurrected: number;
  containersRemoved: number;
  containersCompacted: number;
}

describe('GC while backups run in other processes', () => {
  it(`never damages a point over ${ROUNDS} rounds`, async () => {
    const repo = join(dir, 'repo');
    await smallRepo(repo);
    const images = new Map<string, string>();
    for (const vm of VMS) {
      images.set(vm, join(dir, `${vm}.img`));
      await makeImage(images.get(vm)!, 6 * MiB + 4097, `gc-conc-${vm}`);
    }
    const expected = new Map<string, string>();
    const gcs: GcJson[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const shas = new Map<string, string>();
      for (const vm of VMS) shas.set(vm, (await mutateImage(images.get(vm)!, { seed: `r${round}-${vm}`, writes: 12, maxLength: 256 * 1024 })).sha);
      const backups = VMS.map((vm) => startCli(['backup', images.get(vm)!, '--repo', repo, '--vm', vm, '--disk', 'd0', '--json']));
      // Forget all but the newest two per VM and collect while the backups write.
      await cliOk(['forget', '--repo', repo, '--keep-last', '2', '--json']);
      const gcRun = startCli(['gc', '--repo', repo, '--json', ...(round % 2 ? ['--wait'] : [])]);
      for (const [i, b] of backups.entries()) {
        const r = await b.result;
        expect(r.code, describeResult(['backup', VMS[i]!], r)).toBe(0);
        expect(r.json?.point).toMatch(/^[0-9a-f]{16}$/);
        expected.set(r.json.point as string, shas.get(VMS[i]!)!);
      }
      const g = await gcRun.result;
      expect(g.code, describeResult(['gc'], g)).toBe(0);
      gcs.push(g.json as GcJson);
      const listed = await listPoints(repo);
      for (const id of [...expected.keys()]) if (!listed.some((p) => p.id === id)) expected.delete(id);
      expect(listed.length).toBe(expected.size);
      await expectRestores(repo, expected, dir);
      await checkRepo(repo);
    }
    const last = (await cliOk(['gc', '--repo', repo, '--wait', '--json'])).json as GcJson;
    expect(last.status).toBe('done');
    await expectRestores(repo, expected, dir);
    await checkRepo(repo);
    // GC did real work beside the backups.
    expect(gcs.reduce((a, g) => a + g.chunksCondemned, 0) + last.chunksCondemned).toBeGreaterThan(0);
    expect(gcs.reduce((a, g) => a + g.containersRemoved + g.containersCompacted, 0) + last.containersRemoved + last.containersCompacted).toBeGreaterThan(0);
  }, 600_000);
});
