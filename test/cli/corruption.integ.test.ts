/**
 * Damage detection through the CLI: flipped payload bytes, a truncated and a deleted
 * container, damaged point maps and a lost index. `verify --read-data` must name what
 * is bad and which points it affects; restores of affected points must fail cleanly
 * (exit status 4, no output file); unaffected points must still restore; and once the
 * damage is undone the repository checks clean again.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cli,
  cliOk,
  copyDir,
  describeResult,
  ensureBuilt,
  expectCliError,
  expectRestores,
  initRepo,
  KiB,
  makeImage,
  makeTempDir,
  MiB,
  mutateImage,
  removeTempDir,
  verifyRepo,
  writeJson,
  type VerifyJson,
} from '../helpers/cli.js';
import { flipBytes, listContainers, mapFile, mapSlotOffset, payloadMiddle, pointChunks, readFooter, readMap, type FooterRecord } from '../helpers/repo-files.js';

let dir: string;
let template: string;
/** Points of vm-a (full, then two incrementals) and of vm-b (distinct data), with their SHA-256. */
const pointsA: string[] = [];
let pointB: string;
const sha = new Map<string, string>();
/** Chunks each point references. */
const chunksOf = new Map<string, Set<string>>();

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('corruption');
  template = join(dir, 'template-repo');
  await initRepo(template, ['--chunk-size', '256K']);
  const imageA = join(dir, 'a.img');
  const shaA = await makeImage(imageA, 16 * MiB + 100, 'corrupt-a');
  const full = await backupOk(template, imageA, 'vm-a', ['--disk', 'd']);
  pointsA.push(full.point);
  sha.set(full.point, shaA);
  for (let i = 1; i <= 2; i++) {
    const { extents, sha: s } = await mutateImage(imageA, { seed: `corrupt-a-${i}`, writes: 6, maxLength: 700 * KiB });
    const inc = await backupOk(template, imageA, 'vm-a', ['--disk', 'd', '--changed-extents', await writeJson(join(dir, `a${i}.json`), extents)]);
    pointsA.push(inc.point);
    sha.set(inc.point, s);
  }
  const imageB = join(dir, 'b.img');
  const shaB = await makeImage(imageB, 12 * MiB + 5, 'corrupt-b-distinct');
  pointB = (await backupOk(template, imageB, 'vm-b', ['--disk', 'd'])).point;
  sha.set(pointB, shaB);
  for (const p of [...pointsA, pointB]) chunksOf.set(p, await pointChunks(template, p));
  await checkRepo(template);
});

afterAll(async () => {
  await removeTempDir(dir);
});

let copies = 0;
async function freshRepo(): Promise<string> {
  return copyDir(template, join(dir, `repo-${++copies}`));
}

/** Points (of all) that reference any of `digests`. */
function usersOf(digests: Iterable<string>): string[] {
  const set = new Set(digests);
  return [...chunksOf].filter(([, chunks]) => [...chunks].some((c) => set.has(c))).map(([p]) => p).sort();
}

/**
 * A container written by vm-a only, and in it a record of a chunk that vm-b does not
 * use; preferably one that not every vm-a point uses (so some vm-a point stays intact).
 */
async function pickVictim(repo: string): Promise<{ container: { id: string; path: string; size: number }; record: FooterRecord; records: FooterRecord[] }> {
  const chunksB = chunksOf.get(pointB)!;
  for (const container of await listContainers(repo)) {
    const records = await readFooter(container.path);
    if (records.some((r) => chunksB.has(r.digest)) || !records.some((r) => usersOf([r.digest]).length > 0)) continue;
    const used = records.filter((r) => usersOf([r.digest]).length > 0);
    const record = used.find((r) => usersOf([r.digest]).length < pointsA.length) ?? used[0]!;
    return { container, record, records };
  }
  throw new Error('no container holds vm-a data only');
}

/** A restore that must fail with `code`, leaving neither the output nor `<out>.partial`. */
async function expectRestoreFails(repo: string, point: string, code: 'CHUNK_CORRUPT' | 'CHUNK_MISSING' | 'MAP_CORRUPT' | 'CONTAINER_CORRUPT', codes: string[] = [code]) {
  const out = join(dir, `failed-${point}-${copies}.img`);
  const args = ['restore', point, '--repo', repo, '--output', out, '--json'];
  const r = await cli(args);
  const what = describeResult(args, r);
  expect(codes, what).toContain(r.json?.error?.code);
  expectCliError(r, r.json.error.code, args);
  expect(existsSync(out), `${what}: no output file`).toBe(false);
  expect(existsSync(`${out}.partial`), `${what}: no partial file`).toBe(false);
  return r;
}

function pointsNamed(report: VerifyJson): string[] {
  return [...new Set(report.problems.flatMap((p) => p.points))].sort();
}

describe('a flipped byte inside a record payload', () => {
  it('is named by verify with every affected point; affected restores fail cleanly, others succeed', async () => {
    const repo = await freshRepo();
    const { container, record } = await pickVictim(repo);
    const affected = usersOf([record.digest]);
    await flipBytes(container.path, payloadMiddle(record), 4);

    const { result, report } = await verifyRepo(repo);
    const what = describeResult(['verify', '--read-data', '--json'], result);
    expect(result.code, what).toBe(4);
    expect(report.ok).toBe(false);
    expect(report.problems, what).toHaveLength(1);
    expect(report.problems[0], what).toMatchObject({ code: 'CHUNK_CORRUPT', chunk: record.digest, container: container.id });
    expect([...report.problems[0]!.points].sort(), what).toEqual(affected);

    // An existing file at the output path is left alone by a failed restore.
    const keep = join(dir, 'keep.img');
    await fsp.writeFile(keep, 'previous contents');
    const r = await cli(['restore', affected[0]!, '--repo', repo, '--output', keep]);
    expectCliError(r, 'CHUNK_CORRUPT');
    expect(r.stderr).toContain(record.digest);
    expect(await fsp.readFile(keep, 'utf8')).toBe('previous contents');
    expect(existsSync(`${keep}.partial`)).toBe(false);
    for (const p of affected) {
      const failed = await expectRestoreFails(repo, p, 'CHUNK_CORRUPT');
      expect(failed.json.error.details?.chunk).toBe(record.digest);
    }
    const intact = [...pointsA, pointB].filter((p) => !affected.includes(p));
    expect(intact).toContain(pointB);
    await expectRestores(repo, new Map(intact.map((p) => [p, sha.get(p)!])), dir);

    await flipBytes(container.path, payloadMiddle(record), 4); // undo
    await checkRepo(repo);
  });
});

describe('a damaged container', () => {
  it('truncated: verify reports the container and the points that lost chunks; restores fail cleanly', async () => {
    const repo = await freshRepo();
    const { container, records } = await pickVictim(repo);
    const cut = Math.floor(container.size / 2);
    const lost = records.filter((r) => r.offset + 64 + r.storedLength > cut).map((r) => r.digest);
    const affected = usersOf(lost);
    expect(affected.length).toBeGreaterThan(0);
    await fsp.truncate(container.path, cut);

    const { result, report } = await verifyRepo(repo);
    const what = describeResult(['verify', '--read-data', '--json'], result);
    expect(result.code, what).toBe(4);
    expect(report.problems.some((p) => p.container === container.id), what).toBe(true);
    for (const p of affected) await expectRestoreFails(repo, p, 'CHUNK_CORRUPT', ['CHUNK_CORRUPT', 'CONTAINER_CORRUPT']);
    const intact = [...pointsA, pointB].filter((p) => !affected.includes(p));
    await expectRestores(repo, new Map(intact.map((p) => [p, sha.get(p)!])), dir);
    // Which backups are damaged is what an operator needs to know.
    expect(pointsNamed(report), `${what}\n(the points that reference chunks lost with the tail must be named)`).toEqual(affected);

    await fsp.copyFile(join(template, 'containers', container.id.slice(0, 2), `${container.id}.ctr`), container.path); // undo
    await checkRepo(repo);
  });

  it('deleted: verify --read-data reports it and the affected points; restores fail with CHUNK_MISSING', async () => {
    const repo = await freshRepo();
    const { container, records } = await pickVictim(repo);
    const affected = usersOf(records.map((r) => r.digest));
    await fsp.rm(container.path);

    for (const p of affected) await expectRestoreFails(repo, p, 'CHUNK_MISSING');
    await expectRestores(repo, new Map([[pointB, sha.get(pointB)!]]), dir);
    // The structural check (no --read-data) notices the missing file...
    const quick = await cli(['verify', '--repo', repo, '--json']);
    expect(quick.code, describeResult(['verify', '--json'], quick)).toBe(4);
    // ...and so must the full data check.
    const { result, report } = await verifyRepo(repo);
    const what = describeResult(['verify', '--read-data', '--json'], result);
    expect(result.code, what).toBe(4);
    expect(report.ok, what).toBe(false);
    expect(pointsNamed(report), what).toEqual(affected);

    await fsp.copyFile(join(template, 'containers', container.id.slice(0, 2), `${container.id}.ctr`), container.path); // undo
    await checkRepo(repo);
  });
});

describe('a damaged point map', () => {
  it('flipped digest byte or truncation: MAP_CORRUPT from verify and restore, other points intact', async () => {
    const repo = await freshRepo();
    const flipped = pointsA[1]!;
    const truncated = pointsA[2]!;
    const { slotCount } = await readMap(mapFile(repo, flipped));
    await flipBytes(mapFile(repo, flipped), mapSlotOffset(Math.floor(slotCount / 2)) + 7);
    const truncSize = (await fsp.stat(mapFile(repo, truncated))).size;
    await fsp.truncate(mapFile(repo, truncated), truncSize - 40);

    const { result, report } = await verifyRepo(repo);
    const what = describeResult(['verify', '--read-data', '--json'], result);
    expect(result.code, what).toBe(4);
    const mapProblems = report.problems.filter((p) => p.code === 'MAP_CORRUPT');
    expect(mapProblems.map((p) => p.points).sort(), what).toEqual([[flipped], [truncated]].sort());
    expect(report.problems.filter((p) => p.code !== 'MAP_CORRUPT'), what).toEqual([]);
    for (const p of [flipped, truncated]) await expectRestoreFails(repo, p, 'MAP_CORRUPT');
    await expectRestores(repo, new Map([pointsA[0]!, pointB].map((p) => [p, sha.get(p)!])), dir);

    for (const p of [flipped, truncated]) await fsp.copyFile(mapFile(template, p), mapFile(repo, p)); // undo
    await checkRepo(repo);
  });
});

describe('a lost index', () => {
  it('index rebuild after deleting the index restores full function', async () => {
    const repo = await freshRepo();
    let records = 0;
    const containers = await listContainers(repo);
    for (const c of containers) records += (await readFooter(c.path)).length;
    for (const f of ['index.mdb', 'index.mdb-lock']) await fsp.rm(join(repo, f), { force: true });

    const r = await cliOk(['index', 'rebuild', '--repo', repo, '--json']);
    expect(r.json).toEqual({ containers: containers.length, chunks: records, scanned: [] });
    await expectRestores(repo, new Map([...pointsA, pointB].map((p) => [p, sha.get(p)!])), dir);
    await checkRepo(repo);
  });
});
