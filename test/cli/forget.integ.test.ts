/**
 * `forget` through the real CLI: keep-last per disk with --vm filtering, points named by
 * id or prefix (the parent of later points included: they still restore exactly),
 * --dry-run and bad arguments change nothing, the --json shape, multi-disk VM records
 * rewritten or deleted, the forget lock. Forget deletes catalog records only: maps stay
 * for GC. Time-bucket rules are covered by engine/retention.test.ts (a backup's time is
 * the commit time, so the CLI cannot make points days apart).
 */
import { spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cli,
  cliFails,
  cliOk,
  ensureBuilt,
  expectCliError,
  expectRestores,
  initRepo,
  KiB,
  listPoints,
  makeImage,
  makeTempDir,
  MiB,
  mutateImage,
  removeTempDir,
  repoSnapshot,
  sha256File,
  writeJson,
} from '../helpers/cli.js';

interface ForgetJson {
  dryRun: boolean;
  groups: { vm: string; disk: string; keep: { id: string; time: string; reasons: string[] }[]; remove: { id: string; time: string }[] }[];
  removed: number;
  vmBackups: { replaced: string[]; deleted: string[] };
}

let dir: string;
let repo: string;
/** vm-a/disk0: a full backup and 4 incrementals, oldest first; point id -> image SHA-256. */
const chainA: string[] = [];
const expected = new Map<string, string>();
const pointsB: string[] = [];

function mapFile(id: string): string {
  return join(repo, 'maps', id.slice(0, 2), `${id}.map`);
}

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('forget');
  repo = join(dir, 'repo');
  await initRepo(repo, ['--chunk-size', '64K']);
  const image = join(dir, 'a.img');
  await makeImage(image, 3 * MiB + 4321, 'forget-a');
  const full = await backupOk(repo, image, 'vm-a', ['--disk', 'disk0']);
  chainA.push(full.point);
  expected.set(full.point, await sha256File(image));
  for (let i = 1; i <= 4; i++) {
    const { extents, sha } = await mutateImage(image, { seed: `forget-${i}`, writes: 4, maxLength: 200 * KiB });
    const file = await writeJson(join(dir, `ext-${i}.json`), extents);
    const inc = await backupOk(repo, image, 'vm-a', ['--disk', 'disk0', '--changed-extents', file]);
    expect(inc.parent).toBe(chainA.at(-1));
    chainA.push(inc.point);
    expected.set(inc.point, sha);
  }
  const imageB = join(dir, 'b.img');
  await makeImage(imageB, MiB, 'forget-b');
  for (let i = 0; i < 2; i++) pointsB.push((await backupOk(repo, imageB, 'vm-b', ['--disk', 'disk0'])).point);
});

afterAll(async () => {
  if (repo) await checkRepo(repo);
  await removeTempDir(dir);
});

describe('forget', () => {
  it('documents every option in --help', async () => {
    const r = await cliOk(['forget', '--help']);
    for (const opt of ['--repo', '--vm', '--disk', '--keep-last', '--keep-hourly', '--keep-daily', '--keep-weekly', '--keep-monthly', '--keep-yearly', '--keep-within', '--dry-run', '--json']) {
      expect(r.stdout).toContain(opt);
    }
  });

  it('refuses bad arguments with exit 2 and changes nothing', async () => {
    const before = await repoSnapshot(repo);
    const cases: [string[], 'USAGE' | 'INVALID_ARGUMENT'][] = [
      [[], 'USAGE'],
      [['--vm', 'vm-a'], 'USAGE'],
      [['--keep-last', '0'], 'INVALID_ARGUMENT'],
      [['--keep-daily', '-3'], 'INVALID_ARGUMENT'],
      [['--keep-weekly', '1.5'], 'INVALID_ARGUMENT'],
      [['--keep-within', '5x'], 'INVALID_ARGUMENT'],
      [['--keep-within', '0d'], 'INVALID_ARGUMENT'],
      [[chainA[0]!, '--keep-last', '1'], 'USAGE'],
      [['--keep-last', '1', '--vm', 'bad/name'], 'INVALID_ARGUMENT'],
      [['--keep-lats', '1'], 'USAGE'],
    ];
    for (const [args, code] of cases) {
      for (const json of [[], ['--json']]) await cliFails(['forget', '--repo', repo, ...args, ...json], code);
    }
    await cliFails(['forget', '--repo', repo, 'ffffffffffffffff', '--json'], 'POINT_NOT_FOUND');
    // A point of another VM is not found within --vm; nothing of the valid ids goes either.
    await cliFails(['forget', '--repo', repo, chainA[1]!, pointsB[0]!, '--vm', 'vm-a'], 'POINT_NOT_FOUND');
    expect(await repoSnapshot(repo)).toEqual(before);
  });

  it('--dry-run reports the decision and changes nothing', async () => {
    const before = await repoSnapshot(repo);
    const r = await cliOk(['forget', '--repo', repo, '--keep-last', '2', '--dry-run', '--json']);
    const out = r.json as ForgetJson;
    expect(out.dryRun).toBe(true);
    expect(out.removed).toBe(0);
    expect(out.groups.map((g) => [g.vm, g.disk, g.keep.length, g.remove.length])).toEqual([
      ['vm-a', 'disk0', 2, 3],
      ['vm-b', 'disk0', 2, 0],
    ]);
    const human = await cliOk(['forget', '--repo', repo, '--keep-last', '2', '--dry-run']);
    expect(human.stdout).toMatch(/ID\s+TIME \(UTC\)\s+ACTION\s+REASONS/);
    expect(human.stdout).toContain('vm vm-a disk disk0: keep 2, would remove 3');
    expect(human.stdout).toMatch(/dry run: would remove 3 of 7 points; nothing was changed/);
    expect(await repoSnapshot(repo)).toEqual(before);
    expect(await listPoints(repo)).toHaveLength(7);
  });

  it('forgets the parent of later points by unique prefix: the later ones restore exactly', async () => {
    const first = chainA[0]!;
    const r = await cliOk(['forget', '--repo', repo, first.slice(0, 12), '--json']);
    expect(r.stderr, 'no warning: not the newest point').toBe('');
    const out = r.json as ForgetJson;
    expect(out).toMatchObject({ dryRun: false, removed: 1, vmBackups: { replaced: [], deleted: [] } });
    expect(out.groups).toHaveLength(1);
    expect(out.groups[0]!.remove).toEqual([{ id: first, time: expect.any(String) }]);
    expect(out.groups[0]!.keep.map((k) => k.id)).toEqual([...chainA.slice(1)].reverse());
    expect(out.groups[0]!.keep.every((k) => k.reasons.length === 1)).toBe(true);
    expect((await listPoints(repo, ['--vm', 'vm-a'])).map((p) => p.id)).toEqual(chainA.slice(1));
    expect(existsSync(join(repo, 'catalog', 'points', `${first}.json`))).toBe(false);
    expect(existsSync(mapFile(first)), 'forget leaves maps to gc').toBe(true);
    await cliFails(['restore', first, '--repo', repo, '--output', join(dir, 'gone.img')], 'POINT_NOT_FOUND');
    await cliFails(['restore', first, '--repo', repo, '--output', join(dir, 'gone.img'), '--json'], 'POINT_NOT_FOUND');
    expect(existsSync(join(dir, 'gone.img'))).toBe(false);
    await expectRestores(repo, new Map(chainA.slice(1).map((id) => [id, expected.get(id)!])), dir);
  });

  it('keeps the last N of the chosen VM only, with reasons, and prints a table', async () => {
    const r = await cliOk(['forget', '--repo', repo, '--vm', 'vm-a', '--keep-last', '2']);
    expect(r.stdout).toContain('vm vm-a disk disk0: keep 2, remove 2');
    expect(r.stdout).toMatch(/removed 2 of 4 points from the catalog/);
    for (const id of chainA.slice(3)) expect(r.stdout).toMatch(new RegExp(`${id}\\s+\\S+ \\S+\\s+keep\\s+last`));
    for (const id of chainA.slice(1, 3)) expect(r.stdout).toMatch(new RegExp(`${id}\\s+\\S+ \\S+\\s+remove`));
    expect((await listPoints(repo, ['--vm', 'vm-a'])).map((p) => p.id)).toEqual(chainA.slice(3));
    expect((await listPoints(repo, ['--vm', 'vm-b'])).map((p) => p.id)).toEqual(pointsB);
    await expectRestores(repo, new Map(chainA.slice(3).map((id) => [id, expected.get(id)!])), dir);
    // Applying the same policy again removes nothing.
    const again = await cliOk(['forget', '--repo', repo, '--vm', 'vm-a', '--keep-last', '2', '--json']);
    expect((again.json as ForgetJson).removed).toBe(0);
  });

  it('keeps every point newer than --keep-within, with its reason', async () => {
    const r = await cliOk(['forget', '--repo', repo, '--vm', 'vm-b', '--keep-within', '1h', '--json']);
    const out = r.json as ForgetJson;
    expect(out.removed).toBe(0);
    expect(out.groups[0]!.keep.map((k) => k.reasons)).toEqual([['within 1h'], ['within 1h']]);
  });

  it('drops a forgotten disk from its VM record, and deletes the record with its last disk', async () => {
    const sys = join(dir, 'sys.img');
    const data = join(dir, 'data.img');
    await makeImage(sys, 2 * MiB, 'md-sys');
    await makeImage(data, MiB + 17, 'md-data');
    const jobs: { job: string; points: { point: string; disk: string }[] }[] = [];
    for (let i = 0; i < 2; i++) jobs.push((await cliOk(['backup', sys, data, '--repo', repo, '--vm', 'vm-md', '--json'])).json);
    const [older, newer] = jobs as [(typeof jobs)[0], (typeof jobs)[0]];
    // Forget one disk of the newer job by id: its VM record keeps the other disk.
    const dataPoint = newer.points.find((p) => p.disk === 'data.img')!.point;
    const oneRun = await cliOk(['forget', '--repo', repo, dataPoint, '--json']);
    expect(oneRun.stderr).toContain(`warning: ${dataPoint} was the newest point of vm vm-md disk data.img: its next incremental builds on point ${older.points.find((p) => p.disk === 'data.img')!.point}`);
    const one = oneRun.json as ForgetJson;
    expect(one.vmBackups).toEqual({ replaced: [newer.job], deleted: [] });
    const record = JSON.parse(await fsp.readFile(join(repo, 'catalog', 'vm-backups', `${newer.job}.json`), 'utf8'));
    expect(record.disks.map((d: { disk: string }) => d.disk)).toEqual(['sys.img']);
    const into = join(dir, 'vm-restore');
    await cliOk(['restore', newer.job, '--repo', repo, '--output', into]);
    expect(await fsp.readdir(into)).toEqual(['sys.img']);
    expect(await sha256File(join(into, 'sys.img'))).toBe(await sha256File(sys));
    // keep-last 1 per disk: the older job loses its sys disk (its data disk is now the newest of that disk).
    const pointOf = (j: (typeof jobs)[0], disk: string) => j.points.find((p) => p.disk === disk)!.point;
    const dry = await cliOk(['forget', '--repo', repo, '--vm', 'vm-md', '--keep-last', '1', '--dry-run']);
    expect(dry.stdout).toContain(`VM backup ${older.job}: the removed disks would be dropped from its record`);
    const policy = (await cliOk(['forget', '--repo', repo, '--vm', 'vm-md', '--keep-last', '1', '--json'])).json as ForgetJson;
    expect(policy.vmBackups).toEqual({ replaced: [older.job], deleted: [] });
    expect(policy.groups.map((g) => [g.disk, g.keep.map((k) => k.id), g.remove.map((p) => p.id)])).toEqual([
      ['data.img', [pointOf(older, 'data.img')], []],
      ['sys.img', [pointOf(newer, 'sys.img')], [pointOf(older, 'sys.img')]],
    ]);
    // Forgotten by its job id, the older VM backup loses its last disk and its record.
    const last = (await cliOk(['forget', '--repo', repo, older.job, '--json'])).json as ForgetJson;
    expect(last.groups.flatMap((g) => g.remove.map((p) => p.id))).toEqual([pointOf(older, 'data.img')]);
    expect(last.vmBackups).toEqual({ replaced: [], deleted: [older.job] });
    expect(existsSync(join(repo, 'catalog', 'vm-backups', `${older.job}.json`))).toBe(false);
    await cliFails(['restore', older.job, '--repo', repo, '--output', join(dir, 'old-vm')], 'POINT_NOT_FOUND');
    expect((await listPoints(repo, ['--vm', 'vm-md'])).map((p) => p.id)).toEqual([pointOf(newer, 'sys.img')]);
  });

  it('waits for another forget, fails with REPO_LOCKED, and takes over a dead one', async () => {
    const lock = join(repo, 'locks', 'forget.lock');
    await fsp.writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), time: new Date().toISOString() }));
    const before = await repoSnapshot(repo);
    const r = await cli(['forget', '--repo', repo, '--keep-last', '1']);
    expectCliError(r, 'REPO_LOCKED');
    expect(await repoSnapshot(repo)).toEqual(before);
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((resolve) => dead.on('exit', resolve));
    await fsp.writeFile(lock, JSON.stringify({ pid: dead.pid, host: hostname(), time: new Date().toISOString() }));
    await fsp.writeFile(`${lock}.${dead.pid}.1234`, 'a candidate a killed forget left');
    await cliOk(['forget', '--repo', repo, '--vm', 'vm-b', '--keep-last', '1']);
    expect(existsSync(lock)).toBe(false);
    expect((await listPoints(repo, ['--vm', 'vm-b'])).map((p) => p.id)).toEqual([pointsB[1]]);
    expect((await fsp.readdir(join(repo, 'locks'))).filter((n) => n.startsWith('forget'))).toEqual([]);
  });
});
