/**
 * End-to-end benchmark: chunkvault against restic and borg on the same disk images.
 *
 *   npm run bench:e2e [-- --size 2G --quick --json FILE --keep DIR --tools LIST --no-extra --profile --repeat N]
 *
 * Day 1 is a raw image (default 2 GiB, --quick 512 MiB) of a real ext4 filesystem
 * populated from host files to about 65 %, free space zero, written densely. Day 2
 * overwrites about 5 % of it (1 MiB writes at seeded offsets plus 32 x 4 KiB) and
 * records the changed extents. Every subject runs full -> incremental -> (chunkvault:
 * re-read of day 2 with no extent list) -> restore day 1 -> restore day 2, and each
 * restore is checked byte-identical (SHA-256). Subjects:
 *
 *   chunkvault: default (lz4:4, 256 KiB); and unless --no-extra: lz4:1 (LZ4's own
 *               default acceleration), zstd:1, zstd:3, and
 *               the default pinned to one core (taskset) to show how the pool scales
 *   restic:     repository v2, compression auto
 *   borg:       default chunker and fixed,4194304, each with lz4 and zstd,3
 *
 * Every figure comes from the same run. All tools read the images from the page
 * cache (each source is read once before each step; no root drop_caches), and
 * dirty pages are flushed between steps. Wall, CPU (user+sys) and peak RSS come
 * from GNU time around each child. `--profile` adds one chunkvault full backup,
 * incremental and restore under `node --cpu-prof` (default settings, a fresh
 * repository) and prints the top self-time frames of each (profiles are left in the
 * work directory, removed unless --keep). `--tools` takes a comma list of
 * chunkvault,restic,borg. `--repeat N` runs every subject N times, each from a fresh
 * repository, and reports per step the run with the median wall time (all wall times
 * are in the JSON and the table); the runs are interleaved (round r runs every subject
 * once), so a host that speeds up or slows down during the run affects every tool
 * alike. Work happens in a fresh directory under the system temp dir, or in --keep
 * DIR, which is then left in place.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { available, run, sha256File } from './_e2e-exec.js';
import { buildDay1, type Day1, type Day2, makeDay2 } from './_e2e-image.js';
import { printProfiles, profileChunkvault } from './_e2e-profile.js';
import { printRatios, printRows, ratios } from './_e2e-report.js';
import { borg, chunkvault, type Ctx, medianRows, restic, type Row, runSubject, type Subject } from './_e2e-tools.js';
import { bytes, machineInfo, printMachine, watchOtherLoad, writeJson } from './_report.js';

const MIB = 1024 * 1024;
const SEED = 0xe2e1;
const FILL = 0.65;
const CHANGE_RATIO = 0.05;
const SMALL_WRITES = 32;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Args {
  sizeBytes: number;
  quick: boolean;
  json: string;
  keep: string | undefined;
  tools: Set<string>;
  extra: boolean;
  profile: boolean;
  repeat: number;
}

function parseSize(s: string): number {
  const m = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(s.trim());
  if (!m) throw new Error(`invalid size ${s}; use e.g. 512M or 2G`);
  const mult = { '': 1, K: 1024, M: MIB, G: 1024 * MIB, T: 1024 * 1024 * MIB }[(m[2] ?? '').toUpperCase()] ?? 1;
  const n = Number(m[1]) * mult;
  if (n < 64 * MIB || n % MIB !== 0) throw new Error(`size ${s} must be a whole number of MiB, at least 64 MiB`);
  return n;
}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { sizeBytes: 0, quick: false, json: join(ROOT, 'bench', 'out', 'e2e.json'), keep: undefined, tools: new Set(['chunkvault', 'restic', 'borg']), extra: true, profile: false, repeat: 1 };
  let size: string | undefined;
  const value = (i: number, name: string): string => {
    const v = argv[i];
    if (!v) throw new Error(`${name} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') a.quick = true;
    else if (arg === '--no-extra') a.extra = false;
    else if (arg === '--profile') a.profile = true;
    else if (arg === '--size') size = value(++i, arg);
    else if (arg === '--json') a.json = resolve(value(++i, arg));
    else if (arg === '--keep') a.keep = resolve(value(++i, arg));
    else if (arg === '--tools') a.tools = new Set(value(++i, arg).split(','));
    else if (arg === '--repeat') a.repeat = Math.max(1, Math.floor(Number(value(++i, arg))) || 1);
    else throw new Error(`unknown argument ${arg}; use [--size SIZE] [--quick] [--json FILE] [--keep DIR] [--tools LIST] [--no-extra] [--profile] [--repeat N]`);
  }
  a.sizeBytes = parseSize(size ?? (a.quick ? '512M' : '2G'));
  return a;
}

/** Refuses to start without the programs the run needs, naming the package to install. */
function checkPrograms(args: Args): Record<string, string> {
  const need: [string, string, string][] = [
    ['/usr/bin/time', '--version', 'time'],
    ['mke2fs', '-V', 'e2fsprogs'],
    ['taskset', '--version', 'util-linux'],
  ];
  if (args.tools.has('restic')) need.push(['restic', 'version', 'restic']);
  if (args.tools.has('borg')) need.push(['borg', '--version', 'borgbackup']);
  const versions: Record<string, string> = {};
  for (const [cmd, flag, pkg] of need) {
    const v = available(cmd, flag);
    if (v === undefined) throw new Error(`${cmd} not found: apt-get install -y ${pkg}`);
    else versions[cmd] = v;
  }
  return versions;
}

function subjects(ctx: Ctx, args: Args): Subject[] {
  const list: Subject[] = [];
  const cv = args.tools.has('chunkvault');
  if (cv) list.push(chunkvault(ctx, 'lz4:4 (default)', 'lz4', [], ['full', 'incremental', 'reread']));
  if (args.tools.has('restic')) list.push(restic(ctx));
  if (args.tools.has('borg')) {
    for (const chunker of ['buzhash', 'fixed4M'] as const) for (const c of ['lz4', 'zstd,3'] as const) list.push(borg(ctx, chunker, c));
  }
  if (cv && args.extra) {
    list.push(chunkvault(ctx, 'lz4:1', 'lz4', ['--compression', 'lz4:1'], ['full', 'incremental', 'reread']));
    list.push(chunkvault(ctx, 'zstd:1', 'zstd-1', ['--compression', 'zstd:1'], ['full', 'incremental', 'reread']));
    list.push(chunkvault(ctx, 'zstd:3', 'zstd-3', ['--compression', 'zstd:3'], ['full', 'incremental', 'reread']));
    list.push(chunkvault(ctx, 'lz4, 1 core', 'lz4', [], ['full'], ['taskset', '-c', '0']));
  }
  return list;
}

function prepareImages(tmp: string, args: Args, log: (m: string) => void): { day1: Day1; day2: Day2; sha1: string; sha2: string } {
  const t0 = Date.now();
  const day1 = buildDay1(join(tmp, 'images'), args.sizeBytes, FILL, SEED);
  const day2 = makeDay2(join(tmp, 'images'), day1, CHANGE_RATIO, MIB, SMALL_WRITES, SEED);
  const sha1 = sha256File(day1.path).sha256;
  const sha2 = sha256File(day2.path).sha256;
  log(
    `images ready in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${bytes(day1.sizeBytes)} ext4, ${day1.files} files (${bytes(day1.fileBytes)}), ` +
      `${(day1.zeroShare * 100).toFixed(1)} % zero 256 KiB blocks; day 2: ${day2.bigWrites} x 1 MiB + ${day2.smallWrites} x 4 KiB writes, ` +
      `${bytes(day2.changedBytes)} changed (${((day2.changedBytes / day1.sizeBytes) * 100).toFixed(2)} %)`,
  );
  return { day1, day2, sha1, sha2 };
}

/**
 * Copies the built CLI (dist/src, dist/engine, dist/adapters, and the native addon)
 * into the work directory and returns its entry point. Other work rebuilds dist/ while a run takes minutes;
 * the copy keeps every step on the same build. node_modules is linked, not copied.
 */
function snapshotCli(tmp: string): string {
  const dir = join(tmp, 'cli');
  for (const part of ['src', 'engine', 'adapters']) cpSync(join(ROOT, 'dist', part), join(dir, 'dist', part), { recursive: true });
  const addon = join('engine', 'native', 'build', 'Release', 'chunkvault_native.node');
  cpSync(join(ROOT, addon), join(dir, addon));
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  const cli = join(dir, 'dist', 'src', 'cli', 'main.js');
  run(process.execPath, [cli, '--version']);
  return cli;
}

/** The commit measured, and the files of the product that differ from it. */
function gitState(): { head: string; dirty: string[] } {
  try {
    const head = run('git', ['rev-parse', 'HEAD'], { cwd: ROOT }).trim();
    const dirty = run('git', ['status', '--porcelain', '--', 'engine', 'src', 'adapters'], { cwd: ROOT }).split('\n').filter(Boolean);
    return { head, dirty };
  } catch {
    return { head: 'unknown', dirty: [] };
  }
}

const NOTES = [
  'Runs are interleaved: each round runs every tool and configuration once, so drift in the host\'s speed during the run affects all of them alike.',
  'All tools read the same dense images from the page cache (each source is read once before each step; no drop_caches); `sync` runs between steps.',
  'Peers back up the image path with a new inode each day, so their incremental reads the whole image; chunkvault\'s incremental reads only the changed extents, its re-read reads the whole day-2 image with no extent list and is compared with the peers\' incremental.',
  'Restore wall includes fdatasync of the output file (chunkvault syncs its output itself; restic and borg do not). chunkvault and borg --sparse write holes for zero blocks; restic 0.14 has no sparse restore.',
  'Repository size is the apparent size of the repository directory; chunkvault keeps its index inside it, restic and borg keep a local cache outside (cacheBytes in the JSON).',
  'MB/s = logical image bytes (1e6) / wall, for every step, including incrementals.',
];

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const machine = machineInfo();
  const loadStart = loadavg();
  const otherLoad = watchOtherLoad();
  printMachine(machine);
  const programs = checkPrograms(args);
  console.log(`# programs: ${Object.entries(programs).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
  const tmp = args.keep ?? mkdtempSync(join(tmpdir(), 'chunkvault-e2e-'));
  if (args.keep && existsSync(args.keep) && readdirSync(args.keep).length > 0) throw new Error(`--keep ${args.keep} must be empty or absent`);
  mkdirSync(tmp, { recursive: true });
  const t0 = Date.now();
  const log = (m: string): void => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}`);
  const git = gitState();
  console.log(`# chunkvault at ${git.head}${git.dirty.length ? `, with local changes: ${git.dirty.join(', ')}` : ''}`);
  try {
    const cli = snapshotCli(tmp);
    const images = prepareImages(tmp, args, log);
    const ctx: Ctx = { tmp, ...images, cli, log };
    const rows: Row[] = [];
    const list = subjects(ctx, args);
    const runs = list.map((): Row[][] => []);
    for (let r = 1; r <= args.repeat; r++) {
      list.forEach((s, i) => {
        log(`${s.tool} ${s.config}${args.repeat > 1 ? `, run ${r} of ${args.repeat}` : ''}`);
        runs[i]!.push(runSubject(ctx, s, join(tmp, 'time.txt')));
        if (!args.keep || r < args.repeat) rmSync(s.repo, { recursive: true, force: true });
      });
    }
    list.forEach((_, i) => rows.push(...medianRows(runs[i]!)));
    const profile = args.profile && args.tools.has('chunkvault') ? profileChunkvault(ctx) : undefined;
    const loadEnd = loadavg();
    const others = otherLoad();
    console.log(`\n## ${bytes(args.sizeBytes)} image, ${((Date.now() - t0) / 1000).toFixed(0)} s in all`);
    console.log(`load average start ${loadStart.map((x) => x.toFixed(2)).join(' ')}, end ${loadEnd.map((x) => x.toFixed(2)).join(' ')}; other processes kept ${others.toFixed(2)} cores busy on average\n`);
    printRows(rows);
    const r = ratios(rows);
    console.log('\nchunkvault / best peer (time ratio below 1 = chunkvault faster; size ratio after the same step)');
    printRatios(r);
    if (profile) printProfiles(profile);
    for (const n of NOTES) console.log(`- ${n}`);
    const failed = rows.filter((x) => x.verified === false);
    mkdirSync(dirname(args.json), { recursive: true });
    const { day1, day2, sha1, sha2 } = images;
    writeJson(args.json, {
      machine,
      programs,
      git,
      args: { ...args, tools: [...args.tools] },
      loadavgStart: loadStart,
      loadavgEnd: loadEnd,
      otherCoresBusy: others,
      totalSec: (Date.now() - t0) / 1000,
      image: { ...day1, sha256: sha1, day2: { ...day2, extents: day2.extents.length, sha256: sha2 } },
      notes: NOTES,
      rows,
      ratios: r,
      profile,
    });
    if (failed.length > 0) {
      console.error(`${failed.length} restore(s) did not match their image`);
      process.exitCode = 1;
    }
  } finally {
    if (!args.keep) rmSync(tmp, { recursive: true, force: true });
  }
}

main();
