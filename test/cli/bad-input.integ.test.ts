/**
 * Bad input through the CLI: each case must fail with its stable error code (on
 * stderr as `chunkvault: CODE: message`, and as `{error: {code}}` with --json), the
 * exit status engine/errors.ts ERROR_CODES gives that code, and must write nothing:
 * no point, no map, no container, no temporary file.
 */
import { existsSync, promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../../engine/errors.js';
import {
  backupOk,
  checkRepo,
  cli,
  cliOk,
  copyDir,
  describeResult,
  ensureBuilt,
  expectCliError,
  initRepo,
  leftoverTemporaries,
  listPoints,
  makeImage,
  makeTempDir,
  MiB,
  removeTempDir,
  repoSnapshot,
  restoreSha,
  writeJson,
} from '../helpers/cli.js';
import { mapFile } from '../helpers/repo-files.js';

const SIZE = 8 * MiB + 4321;

let dir: string;
let repo: string;
let image: string;
let imageSha: string;
let point: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('bad-input');
  repo = join(dir, 'repo');
  image = join(dir, 'disk.img');
  await initRepo(repo);
  imageSha = await makeImage(image, SIZE, 'bad-input');
  point = (await backupOk(repo, image, 'vm-x', ['--disk', 'd'])).point;
});

afterAll(async () => {
  // Every case above left the repository as it was: it still checks clean.
  if (repo && existsSync(repo)) await checkRepo(repo);
  await removeTempDir(dir);
});

/**
 * Runs `args` twice (plain and with --json) against `target`; both must fail with
 * `code` and leave the repository's files exactly as they were.
 */
async function expectRejected(target: string, args: string[], code: ErrorCode): Promise<void> {
  const before = existsSync(target) ? await repoSnapshot(target) : undefined;
  for (const a of [args, [...args, '--json']]) {
    const r = await cli(a);
    expectCliError(r, code, a);
    expect(r.stderr.trim().split('\n'), `${describeResult(a, r)}\n(one error line)`).toHaveLength(1);
  }
  if (before) {
    expect(await repoSnapshot(target), `${args.join(' ')} changed the repository`).toEqual(before);
    expect(await leftoverTemporaries(target)).toEqual([]);
  } else {
    expect(existsSync(target), `${args.join(' ')} created ${target}`).toBe(false);
  }
}

async function extentsFile(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await fsp.writeFile(path, text);
  return path;
}

describe('changed-extent lists', () => {
  const cases: [string, string][] = [
    ['beyond the disk end', JSON.stringify([{ offset: SIZE - 10, length: 11 }])],
    ['starting at the disk end', JSON.stringify([{ offset: SIZE, length: 1 }])],
    ['one good and one beyond the end', JSON.stringify([{ offset: 0, length: 10 }, { offset: 2 * SIZE, length: 10 }])],
    ['a negative offset', JSON.stringify([{ offset: -4096, length: 4096 }])],
    ['a negative length', JSON.stringify([{ offset: 4096, length: -1 }])],
    ['a non-numeric offset', JSON.stringify([{ offset: '4096', length: 4096 }])],
    ['a non-numeric length', JSON.stringify([{ offset: 0, length: 'all' }])],
    ['a fractional offset', JSON.stringify([{ offset: 1.5, length: 10 }])],
    ['an unsafe integer', '[{"offset": 0, "length": 36893488147419103232}]'],
    ['a null offset', JSON.stringify([{ offset: null, length: 10 }])],
    ['a missing length', JSON.stringify([{ offset: 0 }])],
    ['malformed JSON', '[{"offset": 0, "length": 10}'],
    ['an empty file', ''],
    ['not an array (an object)', JSON.stringify({ offset: 0, length: 10 })],
    ['not an array (a number)', '42'],
    ['an array of non-objects', JSON.stringify([[0, 10]])],
  ];
  for (const [name, text] of cases) {
    it(`rejects ${name} with EXTENTS_INVALID`, async () => {
      const file = await extentsFile(`extents-${name.replace(/\W+/g, '-')}.json`, text);
      await expectRejected(repo, ['backup', image, '--repo', repo, '--vm', 'vm-x', '--disk', 'd', '--changed-extents', file], 'EXTENTS_INVALID');
    });
  }

  it('rejects a missing extents file with EXTENTS_INVALID', async () => {
    await expectRejected(repo, ['backup', image, '--repo', repo, '--vm', 'vm-x', '--disk', 'd', '--changed-extents', join(dir, 'nope.json')], 'EXTENTS_INVALID');
  });

  it('rejects --changed-extents without an earlier point with NO_PARENT', async () => {
    const file = await writeJson(join(dir, 'ok.json'), [{ offset: 0, length: 4096 }]);
    await expectRejected(repo, ['backup', image, '--repo', repo, '--vm', 'vm-new', '--disk', 'd', '--changed-extents', file], 'NO_PARENT');
    // The same vm, another disk: still no parent for that disk.
    await expectRejected(repo, ['backup', image, '--repo', repo, '--vm', 'vm-x', '--disk', 'other', '--changed-extents', file], 'NO_PARENT');
  });
});

describe('point references', () => {
  it('rejects an unknown point id, prefix or non-id with POINT_NOT_FOUND', async () => {
    const out = join(dir, 'never.img');
    const unknown = point.startsWith('0') ? '1' + point.slice(1) : '0' + point.slice(1);
    for (const ref of [unknown, unknown.slice(0, 6), 'not-an-id', 'ZZZZ']) {
      await expectRejected(repo, ['restore', ref, '--repo', repo, '--output', out], 'POINT_NOT_FOUND');
      expect(existsSync(out)).toBe(false);
    }
    await expectRejected(repo, ['restore', 'latest', '--repo', repo, '--vm', 'vm-none', '--output', out], 'POINT_NOT_FOUND');
    await expectRejected(repo, ['verify', unknown, '--repo', repo], 'POINT_NOT_FOUND');
  });

  it('rejects an ambiguous prefix and an ambiguous "latest" with POINT_AMBIGUOUS', async () => {
    // A second, valid point whose id shares 15 characters with the first: the same
    // map under a sibling id (random ids would need ~2^8 backups to collide on 4).
    const twin = await copyDir(repo, join(dir, 'twin-repo'));
    const sibling = point.slice(0, 15) + (point.endsWith('0') ? '1' : '0');
    const record = JSON.parse(await fsp.readFile(join(twin, 'catalog', 'points', `${point}.json`), 'utf8'));
    await fsp.mkdir(join(twin, 'maps', sibling.slice(0, 2)), { recursive: true });
    await fsp.copyFile(mapFile(twin, point), mapFile(twin, sibling));
    await fsp.writeFile(join(twin, 'catalog', 'points', `${sibling}.json`), JSON.stringify({ ...record, id: sibling, disk: 'd2' }));
    const out = join(dir, 'never.img');
    for (const prefix of [point.slice(0, 4), point.slice(0, 15)]) {
      await expectRejected(twin, ['restore', prefix, '--repo', twin, '--output', out], 'POINT_AMBIGUOUS');
    }
    await expectRejected(twin, ['restore', 'latest', '--repo', twin, '--vm', 'vm-x', '--output', out], 'POINT_AMBIGUOUS');
    expect(existsSync(out)).toBe(false);
    // Disambiguated, both restore.
    expect(await restoreSha(twin, point, dir)).toBe(imageSha);
    expect(await restoreSha(twin, 'latest', dir, ['--vm', 'vm-x', '--disk', 'd2'])).toBe(imageSha);
    await checkRepo(twin);
  });
});

describe('repositories', () => {
  it('refuses a repository of a newer format (config.json format 3) for every command', async () => {
    const newer = await copyDir(repo, join(dir, 'format3-repo'));
    const configPath = join(newer, 'config.json');
    const config = JSON.parse(await fsp.readFile(configPath, 'utf8'));
    await fsp.writeFile(configPath, JSON.stringify({ ...config, format: 3 }, null, 2));
    const out = join(dir, 'never.img');
    const commands: string[][] = [
      ['backup', image, '--repo', newer, '--vm', 'vm-x', '--disk', 'd'],
      ['backup', image, '--repo', newer, '--vm', 'vm-new'],
      ['points', '--repo', newer],
      ['restore', point, '--repo', newer, '--output', out],
      ['verify', '--repo', newer],
      ['verify', '--repo', newer, '--read-data'],
      ['stats', '--repo', newer],
      ['index', 'rebuild', '--repo', newer],
    ];
    for (const args of commands) await expectRejected(newer, args, 'REPO_VERSION_UNSUPPORTED');
    expect(existsSync(out)).toBe(false);
    await expectRejected(newer, ['init', newer], 'REPO_EXISTS');
    expect(JSON.parse(await fsp.readFile(configPath, 'utf8')).format).toBe(3);
  });

  it('reports a missing repository as REPO_NOT_FOUND and creates nothing', async () => {
    const missing = join(dir, 'no-such-repo');
    const out = join(dir, 'never.img');
    for (const args of [
      ['backup', image, '--repo', missing, '--vm', 'vm-x'],
      ['points', '--repo', missing],
      ['restore', 'latest', '--repo', missing, '--vm', 'vm-x', '--output', out],
      ['verify', '--repo', missing, '--read-data'],
      ['stats', '--repo', missing],
      ['index', 'rebuild', '--repo', missing],
    ]) {
      await expectRejected(missing, args, 'REPO_NOT_FOUND');
    }
    expect(existsSync(out)).toBe(false);
  });

  it('refuses init on an existing repository with REPO_EXISTS and keeps its config', async () => {
    const config = await fsp.readFile(join(repo, 'config.json'), 'utf8');
    await expectRejected(repo, ['init', repo], 'REPO_EXISTS');
    await expectRejected(repo, ['init', repo, '--chunk-size', '64K', '--compression', 'none'], 'REPO_EXISTS');
    expect(await fsp.readFile(join(repo, 'config.json'), 'utf8')).toBe(config);
  });

  it('rejects invalid chunk sizes and compressions with INVALID_ARGUMENT and creates nothing', async () => {
    const target = join(dir, 'never-repo');
    for (const size of ['100K', '32K', '8M', '0', 'abc', '1.5M', '-64K']) {
      await expectRejected(target, ['init', target, '--chunk-size', size], 'INVALID_ARGUMENT');
    }
    for (const codec of ['gzip', 'zstd:0', 'zstd:20', 'zstd:x', 'lz4:0', 'lz4:65538', 'none:1']) {
      await expectRejected(target, ['init', target, '--compression', codec], 'INVALID_ARGUMENT');
    }
  });

  it('rejects an empty --chunk-size or --compression value (e.g. an unset shell variable) with INVALID_ARGUMENT', async () => {
    const target = join(dir, 'never-repo-empty');
    await expectRejected(target, ['init', target, '--chunk-size', ''], 'INVALID_ARGUMENT');
    await expectRejected(target, ['init', target, '--compression', ''], 'INVALID_ARGUMENT');
  });

  it('reports a missing source as SOURCE_NOT_FOUND', async () => {
    await expectRejected(repo, ['backup', join(dir, 'no-such.img'), '--repo', repo, '--vm', 'vm-x', '--disk', 'd'], 'SOURCE_NOT_FOUND');
    await expectRejected(repo, ['backup', join(dir, 'no-such-dir', 'x.img'), '--repo', repo, '--vm', 'vm-x'], 'SOURCE_NOT_FOUND');
  });

  it('rejects invalid vm and disk names with INVALID_ARGUMENT', async () => {
    for (const vm of ['bad name', '', '..', 'a/b', 'x'.repeat(129), 'tab\there']) {
      await expectRejected(repo, ['backup', image, '--repo', repo, '--vm', vm, '--disk', 'd'], 'INVALID_ARGUMENT');
    }
    for (const disk of ['.', 'a/b', 'sp ace']) {
      await expectRejected(repo, ['backup', image, '--repo', repo, '--vm', 'vm-x', '--disk', disk], 'INVALID_ARGUMENT');
    }
    expect((await listPoints(repo)).map((p) => p.id)).toEqual([point]);
  });
});

describe('command line', () => {
  it('exits 2 on unknown options, unknown commands and missing required options or arguments, writing nothing', async () => {
    const before = await repoSnapshot(repo);
    const cases: string[][] = [
      ['backup', image, '--repo', repo, '--vm', 'vm-x', '--frobnicate'],
      ['points', '--repo', repo, '--all'],
      ['restore', point, '--repo', repo, '--output', join(dir, 'x.img'), '-z'],
      ['frobnicate', '--repo', repo],
      ['index', 'frobnicate', '--repo', repo],
      ['backup', image, '--repo', repo], // no --vm
      ['restore', point, '--repo', repo], // no --output
      ['restore', '--repo', repo, '--output', join(dir, 'x.img')], // no point
      ['backup', '--repo', repo, '--vm', 'vm-x'], // no source
      ['init'], // no directory
      ['init', join(dir, 'never-repo-usage'), '--chunk-size'], // option without its value
    ];
    for (const args of cases) {
      const r = await cli(args);
      expect(r.code, describeResult(args, r)).toBe(2);
      expect(r.stderr, describeResult(args, r)).toMatch(/^chunkvault: USAGE: /);
    }
    expect(existsSync(join(dir, 'x.img'))).toBe(false);
    expect(existsSync(join(dir, 'never-repo-usage'))).toBe(false);
    expect(await repoSnapshot(repo)).toEqual(before);
  });

  it('exits 2 with USAGE when no repository is given (no --repo, no CHUNKVAULT_REPO)', async () => {
    await expectRejected(repo, ['points'], 'USAGE');
    await expectRejected(repo, ['backup', image, '--vm', 'vm-x'], 'USAGE');
    // CHUNKVAULT_REPO stands in for --repo.
    const r = await cliOk(['points', '--json'], { env: { CHUNKVAULT_REPO: repo } });
    expect(r.json.map((p: { id: string }) => p.id)).toEqual([point]);
  });

  it('reports an unwritable restore output as OUTPUT_FAILED', async () => {
    await expectRejected(repo, ['restore', point, '--repo', repo, '--output', join(dir, 'no-such-dir', 'out.img')], 'OUTPUT_FAILED');
  });

  it('prints help for every command (exit 0, every flag mentioned)', async () => {
    const flags: [string[], string[]][] = [
      [[], ['init', 'backup', 'points', 'restore', 'verify', 'stats', 'forget', 'gc', 'report', 'estimate', 'index', 'demo']],
      [['init'], ['--chunk-size', '--compression', '--json']],
      [['backup'], ['--repo', '--vm', '--disk', '--changed-extents', '--full', '--json']],
      [['points'], ['--repo', '--vm', '--disk', '--json']],
      [['restore'], ['--repo', '--vm', '--disk', '--output', '--verify-digest', '--json']],
      [['verify'], ['--repo', '--read-data', '--json']],
      [['stats'], ['--repo', '--json']],
      [['forget'], ['--repo', '--keep-last', '--keep-daily', '--keep-within', '--dry-run', '--json']],
      [['gc'], ['--repo', '--dry-run', '--wait', '--audit', '--compact-threshold', '--json']],
      [['report'], ['--repo', '--html', '--json']],
      [['index'], ['rebuild']],
      [['index', 'rebuild'], ['--repo', '--json']],
      [['demo'], ['--dir', '--size', '--incrementals']],
    ];
    for (const [command, mentions] of flags) {
      // `help <command>` too, where commander offers it (one level deep).
      for (const args of command.length === 1 ? [[...command, '--help'], ['help', ...command]] : [[...command, '--help']]) {
        const r = await cliOk(args);
        expect(r.stdout, args.join(' ')).toMatch(/^Usage: chunkvault/);
        for (const m of mentions) expect(r.stdout, `${args.join(' ')} mentions ${m}`).toContain(m);
      }
    }
  });

  it('lists every source form in the help of backup and estimate', async () => {
    const forms = ['/dev/sdX', 'vhdx:PATH', 'vhd:PATH', 'nbd://', 'nbds://', 'nbd+unix://', 'kvm:', 'kvm+qmp:', 'vmware://', 'hyperv://', 'xen://', 'xens://'];
    for (const command of ['backup', 'estimate']) {
      const help = (await cliOk([command, '--help'])).stdout;
      for (const f of forms) expect(help, `${command} --help mentions ${f}`).toContain(f);
      for (const v of ['$CHUNKVAULT_VMWARE_PASSWORD', '$CHUNKVAULT_HYPERV_PASSWORD', '$CHUNKVAULT_XEN_PASSWORD']) expect(help, `${command} --help mentions ${v}`).toContain(v);
    }
  });
});
