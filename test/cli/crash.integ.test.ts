/**
 * Crash safety of the commit protocol (FORMAT.md "Commit order"), seen from the CLI:
 * a backup process killed with SIGKILL at seeded moments spread over a whole backup
 * never leaves a partial point, never damages committed points, and never blocks the
 * next backup; SIGINT/SIGTERM stop a backup cleanly with exit status 130.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  copyDir,
  describeResult,
  ensureBuilt,
  expectRestores,
  initRepo,
  KiB,
  leftoverTemporaries,
  listPoints,
  makeImage,
  makeTempDir,
  MiB,
  mutateImage,
  prng,
  removeTempDir,
  repoSnapshot,
  startCli,
  waitFor,
  writeJson,
  type CliResult,
  type PointJson,
  type RunningCli,
} from '../helpers/cli.js';

const VM = 'vm-crash';
const DISK = 'sda';
const KILL_RUNS = 24;
const SIZE_B = 32 * MiB + 777; // long enough to write for a while between start-up and commit

let dir: string;
let template: string; // a repository with two committed points
let imageB: string; // the image the killed backups read
let shaB: string;
const committed = new Map<string, string>(); // template point id -> SHA-256

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('crash');
  template = join(dir, 'template-repo');
  const imageA = join(dir, 'a.img');
  imageB = join(dir, 'b.img');
  await initRepo(template, ['--chunk-size', '256K']);
  const shaA = await makeImage(imageA, 12 * MiB + 1234, 'crash-a');
  const full = await backupOk(template, imageA, VM, ['--disk', DISK]);
  committed.set(full.point, shaA);
  const { extents, sha } = await mutateImage(imageA, { seed: 'crash-a-1', writes: 8, maxLength: 512 * KiB });
  const inc = await backupOk(template, imageA, VM, ['--disk', DISK, '--changed-extents', await writeJson(join(dir, 'a1.json'), extents)]);
  committed.set(inc.point, sha);
  shaB = await makeImage(imageB, SIZE_B, 'crash-b');
});

afterAll(async () => {
  await removeTempDir(dir);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function backupArgs(repo: string, image: string): string[] {
  return ['backup', image, '--repo', repo, '--vm', VM, '--disk', DISK, '--json'];
}

/** The committed points must be the template's, plus at most one complete new one. */
function newPointAfterCrash(points: PointJson[], r: CliResult, what: string): PointJson | undefined {
  const ids = [...committed.keys()];
  expect(points.slice(0, ids.length).map((p) => p.id), what).toEqual(ids);
  expect(points.length, `${what}: at most one new point`).toBeLessThanOrEqual(ids.length + 1);
  if (r.code === 0) {
    // The backup finished before the kill landed: its point must be there.
    expect(points.length, what).toBe(ids.length + 1);
    expect(points.at(-1)!.id, what).toBe(r.json?.point);
  } else {
    expect(r.signal, what).toBe('SIGKILL');
  }
  const extra = points[ids.length];
  if (extra) expect(extra, what).toMatchObject({ vm: VM, disk: DISK, parent: ids.at(-1), sizeBytes: SIZE_B });
  return extra;
}

/** What a kill is timed from: the process start, the first write, or the commit. */
type Anchor = 'start' | 'writing' | 'commit';

/** tmp/<id>.map.tmp exists from just after the index is opened until the map is published. */
async function isWriting(repo: string): Promise<boolean> {
  return (await fsp.readdir(join(repo, 'tmp'))).some((n) => n.endsWith('.map.tmp'));
}

async function hasCommitted(repo: string): Promise<boolean> {
  return (await fsp.readdir(join(repo, 'catalog', 'points'))).length > committed.size;
}

/** Waits until the backup has reached `anchor` (or any later moment), or has exited. */
async function reached(running: RunningCli, repo: string, anchor: Anchor): Promise<void> {
  const exited = () => running.child.exitCode !== null;
  if (anchor === 'writing') await waitFor(async () => exited() || (await isWriting(repo)) || (await hasCommitted(repo)));
  if (anchor === 'commit') await waitFor(async () => exited() || (await hasCommitted(repo)));
}

async function killRun(i: number, anchor: Anchor, delayMs: number): Promise<'before-commit' | 'after-commit'> {
  const repo = await copyDir(template, join(dir, `run-${i}`));
  const running = startCli(backupArgs(repo, imageB));
  await reached(running, repo, anchor);
  const at = Date.now() - running.started;
  await sleep(delayMs);
  running.child.kill('SIGKILL');
  const r = await running.result;
  const what = `run ${i} (SIGKILL ${delayMs.toFixed(0)} ms after ${anchor}, seen at ${at} ms): ${describeResult(['backup'], r)}`;
  const extra = newPointAfterCrash(await listPoints(repo, ['--vm', VM, '--disk', DISK]), r, what);
  await checkRepo(repo);
  // Opening the index (verify did) removes what the killed writer left in tmp/.
  expect(await leftoverTemporaries(repo), what).toEqual([]);
  const expected = new Map(committed);
  if (extra) expected.set(extra.id, shaB);
  await expectRestores(repo, expected, dir);
  const next = await backupOk(repo, imageB, VM, ['--disk', DISK]);
  expect(next.parent, what).toBe(extra?.id ?? [...committed.keys()].at(-1));
  await fsp.rm(repo, { recursive: true, force: true });
  return extra ? 'after-commit' : 'before-commit';
}

interface Timing {
  working: number;
  committedAt: number;
  exited: number;
}

/**
 * Times one whole backup of image B from process start: when it starts writing,
 * when it commits (its catalog record appears) and when the process exits.
 */
async function probeBackup(): Promise<Timing> {
  const repo = await copyDir(template, join(dir, 'probe-repo'));
  const running = startCli(backupArgs(repo, imageB));
  let working = 0;
  let committedAt = 0;
  while (running.child.exitCode === null) {
    const t = Date.now() - running.started;
    if (!working && (await isWriting(repo))) working = t;
    if (!committedAt && (await hasCommitted(repo))) committedAt = t;
    await sleep(1);
  }
  const r = await running.result;
  expect(r.code, describeResult(['backup'], r)).toBe(0);
  await fsp.rm(repo, { recursive: true, force: true });
  committedAt ||= r.durationMs;
  return { working: working || committedAt / 2, committedAt, exited: r.durationMs };
}

/** The median of three probes, field by field (the first run of a process is often slower). */
async function typicalBackup(): Promise<Timing> {
  const probes = [await probeBackup(), await probeBackup(), await probeBackup()];
  const median = (k: keyof Timing) => probes.map((p) => p[k]).sort((a, b) => a - b)[1]!;
  return { working: median('working'), committedAt: median('committedAt'), exited: median('exited') };
}

describe('SIGKILL during a backup', () => {
  it(`leaves a consistent repository at ${KILL_RUNS} seeded moments`, async () => {
    const t = await typicalBackup();
    const rnd = prng(0xc0ffee);
    const outcomes: string[] = [];
    // Two kills during process start-up; two thirds of the rest stratified over the
    // writing, timed from the moment this run starts to write (so the variance of
    // process start-up does not push them past the commit); the others timed from the
    // commit to shortly after the process would have exited.
    const startUp = Math.max(0, t.working - 20);
    const writingFor = Math.max(1, t.committedAt - t.working);
    const cleanupFor = Math.max(1, t.exited - t.committedAt) + 10;
    const writing = Math.round(((KILL_RUNS - 2) * 2) / 3);
    for (let i = 0; i < KILL_RUNS; i++) {
      if (i < 2) outcomes.push(await killRun(i, 'start', rnd() * startUp));
      else if (i < 2 + writing) outcomes.push(await killRun(i, 'writing', (writingFor * (i - 2 + rnd())) / writing));
      else outcomes.push(await killRun(i, 'commit', (cleanupFor * (i - 2 - writing + rnd())) / (KILL_RUNS - 2 - writing)));
    }
    const before = outcomes.filter((o) => o === 'before-commit').length;
    console.log(`SIGKILL schedule: writing from ${t.working} ms, commit at ~${t.committedAt} ms, exit at ${t.exited} ms; ${before} kills before the commit, ${KILL_RUNS - before} after`);
    // The schedule must have hit the backup while it was writing, or it tested little
    // (two thirds are aimed there; a run slower to write than the probes shifts a few
    // of the last ones past the commit).
    expect(before, outcomes.join(',')).toBeGreaterThanOrEqual(KILL_RUNS / 3);
    expect(KILL_RUNS - before, outcomes.join(',')).toBeGreaterThanOrEqual(KILL_RUNS - 2 - writing);
  });
});

/** Starts a backup, waits until it is writing its point map, then sends `signal`. */
async function interruptedBackup(label: string, image: string, signal: NodeJS.Signals, extraDelayMs: number) {
  const repo = await copyDir(template, join(dir, label));
  const before = await repoSnapshot(repo);
  const running = startCli(backupArgs(repo, image));
  await reached(running, repo, 'writing');
  if (extraDelayMs > 0) await sleep(extraDelayMs);
  const stillRunning = running.child.exitCode === null;
  const pointsAtSignal = (await fsp.readdir(join(repo, 'catalog', 'points'))).length;
  const sentAt = new Date().toISOString();
  running.child.kill(signal);
  const r = await running.result;
  return { repo, before, r, stillRunning, pointsAtSignal, sentAt };
}

async function expectCleanInterrupt(o: Awaited<ReturnType<typeof interruptedBackup>>, signal: NodeJS.Signals): Promise<void> {
  const points = await listPoints(o.repo);
  const late = points.filter((p) => !committed.has(p.id)).map((p) => `point ${p.id} committed at ${p.time}`);
  const what = `${signal} sent at ${o.sentAt} while the backup was running; afterwards: ${late.join(', ') || 'no new point'}; ${describeResult(['backup'], o.r)}`;
  expect(o.stillRunning, 'the signal must reach a running backup').toBe(true);
  expect(o.pointsAtSignal, 'no point was committed before the signal').toBe(committed.size);
  expect(o.r.code, what).toBe(130);
  expect(o.r.stderr, what).toMatch(/^chunkvault: INTERRUPTED: /m);
  expect(o.r.json?.error?.code, what).toBe('INTERRUPTED');
  // Checked before any other command opens the index (which would clean up).
  expect(await leftoverTemporaries(o.repo), what).toEqual([]);
  const after = await repoSnapshot(o.repo);
  const newFiles = Object.keys(after).filter((p) => !(p in o.before));
  expect(newFiles.filter((p) => !/^containers\/[0-9a-f]{2}\/[0-9a-f]{32}\.ctr$/.test(p)), what).toEqual([]);
  expect(points.map((p) => p.id), what).toEqual([...committed.keys()]);
  await expectRestores(o.repo, committed, dir);
  await checkRepo(o.repo);
}

describe('SIGINT and SIGTERM during a backup', () => {
  let bigImage: string;
  let smallImage: string;

  beforeAll(async () => {
    bigImage = join(dir, 'big.img');
    await makeImage(bigImage, 48 * MiB, 'crash-big');
    smallImage = join(dir, 'small.img');
    await makeImage(smallImage, 12 * MiB, 'crash-small');
  });

  it('SIGINT early in a 48 MiB backup: exit 130, no point, no temporaries', async () => {
    await expectCleanInterrupt(await interruptedBackup('sigint-repo', bigImage, 'SIGINT', 5), 'SIGINT');
  });

  it('SIGTERM early in a 48 MiB backup: exit 130, no point, no temporaries', async () => {
    await expectCleanInterrupt(await interruptedBackup('sigterm-repo', bigImage, 'SIGTERM', 5), 'SIGTERM');
  });

  it('SIGINT while a small disk (one pipeline window) is being backed up: exit 130, no point', async () => {
    // The disk is read, hashed and committed in one window: a signal at any moment
    // before the commit must still stop the backup.
    const o = await interruptedBackup('sigint-small-repo', smallImage, 'SIGINT', 40);
    await expectCleanInterrupt(o, 'SIGINT');
  });
});

it('a killed backup never blocks later commands (no stale lock)', async () => {
  const repo = await copyDir(template, join(dir, 'lock-repo'));
  const running = startCli(backupArgs(repo, imageB));
  // The index and the backup's session lock are held from before it starts writing.
  await reached(running, repo, 'writing');
  expect(running.child.exitCode).toBe(null);
  running.child.kill('SIGKILL');
  await running.result;
  await backupOk(repo, imageB, VM, ['--disk', DISK]);
  await checkRepo(repo);
});
