/**
 * The tools under test, each behind one small `Subject` seam (init, back up the live
 * image, restore a backup to a directory), and the one step sequence every subject
 * runs on the same two images:
 *
 *   full (day 1) -> incremental (day 2) -> [re-read (day 2, no extent list)]
 *     -> restore day 1 -> restore day 2
 *
 * The image is backed up from one fixed path, `<tmp>/live/disk.img`, a hard link to
 * day 1 and then to day 2, as a hypervisor's snapshot would appear: restic and borg
 * see the same path with a new inode and mtime, so they read the whole file again
 * (their "incremental"); chunkvault reads only the changed extents. Before each step
 * the source is read once (page cache warm for every tool) and dirty pages are
 * flushed, so one step's writeback does not bill the next. A restore step's wall time
 * includes fdatasync of the output file, because chunkvault syncs its output and
 * restic and borg do not; the sync share is reported separately.
 */
import { linkSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { dirSize, run, sha256File, syncAll, timed, type Timing, type TimedResult, warm } from './_e2e-exec.js';
import type { Day1, Day2 } from './_e2e-image.js';

export type Step = 'full' | 'incremental' | 'reread' | 'restore-day1' | 'restore-day2';
export type Tool = 'chunkvault' | 'restic' | 'borg';
export type BackupKind = 'full' | 'incremental' | 'reread';

export interface Row {
  readonly tool: Tool;
  readonly config: string;
  /** Compression class, for size comparisons at a comparable setting: zstd-1 | zstd-3 | lz4. */
  readonly codec: string;
  readonly step: Step;
  readonly wallSec: number;
  readonly userSec: number;
  readonly sysSec: number;
  readonly cpuSec: number;
  readonly maxRssMiB: number;
  /** Logical image bytes / wall, 1e6 B/s. */
  readonly mbps: number;
  /** Repository size after the step (apparent bytes, and allocated). */
  readonly repoBytes: number;
  readonly repoAllocBytes: number;
  /** The tool's local cache outside the repository (restic, borg), apparent bytes. */
  readonly cacheBytes: number;
  /** 1-minute load average when the step ended (the machine is shared). */
  readonly load1: number;
  /** Restore steps: seconds of the output's fdatasync (included in wallSec). */
  readonly syncSec?: number;
  /** Restore steps: output is byte-identical (SHA-256) to the image. */
  readonly verified?: boolean;
  readonly detail?: unknown;
  /** With --repeat: the wall seconds of every run of this step (the row is the median run). */
  readonly wallRuns?: readonly number[];
}

/**
 * Runs of the same subject merged step by step: each step's row is the run with the
 * median wall time (its CPU, RSS and sizes with it), and `wallRuns` lists all of them.
 * A restore that failed its check in any run keeps `verified: false`.
 */
export function medianRows(runs: readonly (readonly Row[])[]): Row[] {
  const first = runs[0] ?? [];
  return first.map((_, i) => {
    const same = runs.map((r) => r[i]).filter((r): r is Row => r !== undefined);
    const sorted = [...same].sort((a, b) => a.wallSec - b.wallSec);
    const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
    const failed = same.some((r) => r.verified === false);
    return { ...mid, wallRuns: same.map((r) => r.wallSec), ...(failed ? { verified: false } : {}) };
  });
}

export interface Ctx {
  readonly tmp: string;
  readonly day1: Day1;
  readonly day2: Day2;
  readonly sha1: string;
  readonly sha2: string;
  /** Path of node's entry point for the chunkvault CLI. */
  readonly cli: string;
  readonly log: (msg: string) => void;
}

/** One tool in one configuration. `backup` returns the id that `restore` takes. */
export interface Subject {
  readonly tool: Tool;
  readonly config: string;
  readonly codec: string;
  readonly repo: string;
  readonly cacheDir?: string;
  readonly steps: readonly BackupKind[];
  init(): void;
  backup(kind: BackupKind, live: string, timeFile: string): { t: TimedResult; id: string; detail?: unknown };
  /** Restores `id` under `outDir` and returns the timing and the restored file's path. */
  restore(id: string, outDir: string, timeFile: string): { t: TimedResult; file: string };
}

const LIVE_NAME = 'disk.img';

function livePath(ctx: Ctx): string {
  return join(ctx.tmp, 'live', LIVE_NAME);
}

/** Points the live path at `image` (a hard link: same bytes, same page cache, new inode). */
function setLive(ctx: Ctx, image: string): void {
  const live = livePath(ctx);
  mkdirSync(join(ctx.tmp, 'live'), { recursive: true });
  rmSync(live, { force: true });
  linkSync(image, live);
}

function row(ctx: Ctx, s: Subject, step: Step, t: Timing, extra: Partial<Row> = {}): Row {
  const repo = dirSize(s.repo);
  const wallSec = t.wallSec + (extra.syncSec ?? 0);
  return {
    tool: s.tool,
    config: s.config,
    codec: s.codec,
    step,
    wallSec,
    userSec: t.userSec,
    sysSec: t.sysSec,
    cpuSec: t.userSec + t.sysSec,
    maxRssMiB: t.maxRssKiB / 1024,
    mbps: ctx.day1.sizeBytes / 1e6 / wallSec,
    repoBytes: repo.apparent,
    repoAllocBytes: repo.allocated,
    cacheBytes: s.cacheDir ? dirSize(s.cacheDir).apparent : 0,
    load1: loadavg()[0] ?? 0,
    ...extra,
  };
}

function restoreStep(ctx: Ctx, s: Subject, step: Step, id: string, sha: string, timeFile: string): Row {
  const outDir = join(ctx.tmp, 'restore', `${s.tool}-${s.config.replace(/[^\w.-]+/g, '_')}`);
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  syncAll();
  const { t, file } = s.restore(id, outDir, timeFile);
  const sync = timed('sync', ['-d', file], timeFile);
  const got = sha256File(file);
  const verified = got.sha256 === sha && got.bytes === ctx.day1.sizeBytes;
  const allocated = statSync(file).blocks * 512;
  rmSync(outDir, { recursive: true, force: true });
  if (!verified) ctx.log(`!! ${s.tool} ${s.config} ${step}: restored file differs (sha256 ${got.sha256}, ${got.bytes} bytes)`);
  return row(ctx, s, step, t, { syncSec: sync.wallSec, verified, detail: { outputAllocatedBytes: allocated } });
}

/** Runs the whole step sequence for one subject and returns its rows. */
export function runSubject(ctx: Ctx, s: Subject, timeFile: string): Row[] {
  const rows: Row[] = [];
  const say = (r: Row): void => {
    rows.push(r);
    ctx.log(`   ${s.tool} ${s.config} ${r.step}: ${r.wallSec.toFixed(2)} s, CPU ${r.cpuSec.toFixed(2)} s, ${r.maxRssMiB.toFixed(0)} MiB RSS`);
  };
  rmSync(s.repo, { recursive: true, force: true });
  if (s.cacheDir) rmSync(s.cacheDir, { recursive: true, force: true });
  s.init();
  const ids: Partial<Record<BackupKind, string>> = {};
  for (const kind of s.steps) {
    const image = kind === 'full' ? ctx.day1.path : ctx.day2.path;
    setLive(ctx, image);
    warm(image);
    syncAll();
    const b = s.backup(kind, livePath(ctx), timeFile);
    ids[kind] = b.id;
    say(row(ctx, s, kind, b.t, { detail: b.detail }));
  }
  if (ids.full) say(restoreStep(ctx, s, 'restore-day1', ids.full, ctx.sha1, timeFile));
  if (ids.incremental) say(restoreStep(ctx, s, 'restore-day2', ids.incremental, ctx.sha2, timeFile));
  return rows;
}

// ---------------------------------------------------------------- chunkvault

/**
 * chunkvault through its CLI: `init [--compression C]`; full and re-read are plain
 * backups; the incremental passes day 2's extent list. `prefix` (e.g. taskset) runs
 * the CLI on fewer cores; the worker pool sizes itself from the CPU affinity.
 */
export function chunkvault(
  ctx: Ctx,
  config: string,
  codec: string,
  initArgs: readonly string[],
  steps: readonly BackupKind[],
  prefix: readonly string[] = [],
): Subject {
  const repo = join(ctx.tmp, 'repos', `cv-${config.replace(/[^\w.-]+/g, '_')}`);
  const env = { ...process.env, CHUNKVAULT_NO_PROGRESS: '1' };
  const cv = (args: readonly string[], timeFile: string): TimedResult => timed(process.execPath, [ctx.cli, ...args], timeFile, { env, prefix });
  return {
    tool: 'chunkvault',
    config,
    codec,
    repo,
    steps,
    init() {
      run(process.execPath, [ctx.cli, 'init', repo, ...initArgs, '--json'], { env });
    },
    backup(kind, live, timeFile) {
      const extents = kind === 'incremental' ? ['--changed-extents', ctx.day2.extentsFile] : [];
      const t = cv(['backup', live, '--repo', repo, '--vm', 'vm1', '--disk', 'disk0', ...extents, '--json'], timeFile);
      const out = JSON.parse(t.stdout) as { point: string; mode: string; bytesRead: number; chunksNew: number; chunksDedup: number; chunksZero: number; bytesNew: number };
      const { mode, bytesRead, chunksNew, chunksDedup, chunksZero, bytesNew } = out;
      return { t, id: out.point, detail: { point: out.point, mode, bytesRead, chunksNew, chunksDedup, chunksZero, bytesNew } };
    },
    restore(id, outDir, timeFile) {
      const file = join(outDir, LIVE_NAME);
      const t = cv(['restore', id, '--repo', repo, '--vm', 'vm1', '--disk', 'disk0', '--output', file, '--json'], timeFile);
      return { t, file };
    },
  };
}

// ---------------------------------------------------------------- restic

/** Finds the one regular file named `name` under `dir` (restic restores absolute paths under the target). */
function findFile(dir: string, name: string): string {
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() && e.name === name) return join(e.parentPath, e.name);
  }
  throw new Error(`no ${name} under ${dir}`);
}

/** restic with repository format 2 and its default compression ("auto": zstd, fastest level). */
export function restic(ctx: Ctx): Subject {
  const repo = join(ctx.tmp, 'repos', 'restic');
  const cacheDir = join(ctx.tmp, 'cache', 'restic');
  const env = { ...process.env, RESTIC_PASSWORD: 'e2e-bench', RESTIC_CACHE_DIR: cacheDir, RESTIC_REPOSITORY: repo };
  return {
    tool: 'restic',
    config: 'auto (zstd fastest)',
    // restic's "auto" is klauspost/compress zstd SpeedFastest, comparable to zstd level 1
    codec: 'zstd-1',
    repo,
    cacheDir,
    steps: ['full', 'incremental'],
    init() {
      run('restic', ['init', '--repository-version', '2', '-q'], { env });
    },
    backup(_kind, live, timeFile) {
      const t = timed('restic', ['backup', '--json', '--host', 'e2e', LIVE_NAME], timeFile, { env, cwd: join(live, '..') });
      const lines = t.stdout.trim().split('\n');
      const summary = JSON.parse(lines[lines.length - 1] ?? '{}') as { snapshot_id?: string; data_added?: number; data_blobs?: number };
      if (!summary.snapshot_id) throw new Error(`restic backup printed no snapshot id: ${t.stdout.slice(-300)}`);
      return { t, id: summary.snapshot_id, detail: { snapshot: summary.snapshot_id, dataAdded: summary.data_added, dataBlobs: summary.data_blobs } };
    },
    restore(id, outDir, timeFile) {
      const t = timed('restic', ['restore', id, '--target', outDir, '-q'], timeFile, { env });
      return { t, file: findFile(outDir, LIVE_NAME) };
    },
  };
}

// ---------------------------------------------------------------- borg

/** borg 1.2, unencrypted, one repository per chunker x compression configuration. */
export function borg(ctx: Ctx, chunker: 'buzhash' | 'fixed4M', compression: 'lz4' | 'zstd,3'): Subject {
  const config = `${chunker} ${compression}`;
  const slug = `borg-${chunker}-${compression.replace(',', '')}`;
  const repo = join(ctx.tmp, 'repos', slug);
  const cacheDir = join(ctx.tmp, 'cache', slug);
  const env = {
    ...process.env,
    BORG_BASE_DIR: join(ctx.tmp, 'cache', 'borg-base'),
    BORG_CACHE_DIR: cacheDir,
    BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
    BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
  };
  // borg 1.2's default is buzhash,19,23,21,4095 (2 MiB average); fixed 4 MiB is its block-device mode
  const chunkerArgs = chunker === 'fixed4M' ? ['--chunker-params', 'fixed,4194304'] : [];
  const names: Record<BackupKind, string> = { full: 'day1', incremental: 'day2', reread: 'day2-reread' };
  return {
    tool: 'borg',
    config,
    codec: compression === 'lz4' ? 'lz4' : 'zstd-3',
    repo,
    cacheDir,
    steps: ['full', 'incremental'],
    init() {
      run('borg', ['init', '-e', 'none', repo], { env });
    },
    backup(kind, live, timeFile) {
      const archive = `${repo}::${names[kind]}`;
      const t = timed('borg', ['create', '--compression', compression, ...chunkerArgs, archive, LIVE_NAME], timeFile, { env, cwd: join(live, '..') });
      return { t, id: archive };
    },
    restore(id, outDir, timeFile) {
      const t = timed('borg', ['extract', '--sparse', id], timeFile, { env, cwd: outDir });
      return { t, file: join(outDir, LIVE_NAME) };
    },
  };
}
