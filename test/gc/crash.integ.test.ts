/**
 * GC killed with SIGKILL at seeded moments spread over a whole GC run: afterwards
 * every remaining point restores byte-identically and verify --read-data passes,
 * and the next GC finishes the job (the repository then holds no unreferenced chunk
 * and a third GC finds nothing to do).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cliOk,
  copyDir,
  describeResult,
  ensureBuilt,
  expectRestores,
  leftoverTemporaries,
  listPoints,
  makeImage,
  makeTempDir,
  MiB,
  mutateImage,
  prng,
  removeTempDir,
  startCli,
} from '../helpers/cli.js';
import { smallRepo } from './_engine.js';

const KILL_RUNS = Number(process.env.GC_KILL_RUNS ?? 20);
const VMS = ['a', 'b', 'c'];

let dir: string;
let template: string;
const expected = new Map<string, string>();

interface GcJson {
  status: string;
  chunksCondemned: number;
  containersRemoved: number;
  containersCompacted: number;
}

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('gc-crash');
  template = join(dir, 'template');
  await smallRepo(template);
  // Four generations per VM, then keep only the newest: most containers become
  // dead or mostly dead, so the GC run has removals and compactions to interrupt.
  for (const vm of VMS) {
    const image = join(dir, `${vm}.img`);
    let sha = await makeImage(image, 5 * MiB + 511, `gc-crash-${vm}`);
    for (let g = 0; g < 4; g++) {
      const p = await backupOk(template, image, vm, ['--disk', 'd0']);
      if (g === 3) expected.set(p.point, sha);
      else sha = (await mutateImage(image, { seed: `${vm}-${g}`, writes: 20, maxLength: 512 * 1024 })).sha;
    }
  }
  await cliOk(['forget', '--repo', template, '--keep-last', '1']);
}, 300_000);

afterAll(async () => {
  await removeTempDir(dir);
});

async function gcJson(repo: string): Promise<GcJson> {
  return (await cliOk(['gc', '--repo', repo, '--json'])).json as GcJson;
}

async function killRun(i: number, delayMs: number): Promise<boolean> {
  const repo = await copyDir(template, join(dir, `run-${i}`));
  const running = startCli(['gc', '--repo', repo, '--json']);
  await new Promise((r) => setTimeout(r, delayMs));
  running.child.kill('SIGKILL');
  const r = await running.result;
  const what = `run ${i} (SIGKILL after ${delayMs.toFixed(0)} ms): ${describeResult(['gc'], r)}`;
  const points = await listPoints(repo);
  expect(new Set(points.map((p) => p.id)), what).toEqual(new Set(expected.keys()));
  await expectRestores(repo, expected, dir);
  await checkRepo(repo);
  const next = await gcJson(repo);
  expect(next.status, what).toBe('done');
  const third = await gcJson(repo);
  expect(third, what).toMatchObject({ status: 'done', chunksCondemned: 0, containersRemoved: 0, containersCompacted: 0 });
  await expectRestores(repo, expected, dir);
  await checkRepo(repo);
  expect(await leftoverTemporaries(repo), what).toEqual([]);
  await fsp.rm(repo, { recursive: true, force: true });
  return r.signal === 'SIGKILL';
}

describe('SIGKILL during gc', () => {
  it(`leaves every point intact at ${KILL_RUNS} seeded moments, and the next gc finishes`, async () => {
    // Time one whole GC on a copy to spread the kills over it.
    const probe = await copyDir(template, join(dir, 'probe'));
    const started = Date.now();
    const full = await gcJson(probe);
    const duration = Date.now() - started;
    expect(full.chunksCondemned).toBeGreaterThan(0);
    expect(full.containersRemoved + full.containersCompacted).toBeGreaterThan(0);
    const rand = prng(424242);
    let killed = 0;
    for (let i = 0; i < KILL_RUNS; i++) {
      if (await killRun(i, 50 + rand() * duration)) killed++;
    }
    console.log(`gc takes ${duration} ms from process start; ${killed} of ${KILL_RUNS} runs were killed before exiting`);
    expect(killed).toBeGreaterThan(KILL_RUNS / 2);
  }, 900_000);
});
