/**
 * The actions behind each CLI command. Each returns the process exit status.
 */
import {
  ChunkvaultError,
  compressionText,
  parseCompression,
  rebuildIndex,
  Repository,
  repoStats,
  verify,
  type PointRecord,
  type VerifyReport,
  type VmBackupRecord,
} from '../../engine/index.js';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { frontEndFor, runBackupJob, runRestore, vmFrontEndFor } from '../jobs.js';
import { runVmBackupJob } from '../vm-jobs.js';
import { remoteRepoOf } from '../remote/url.js';
import type { FrontEnd, VmFrontEnd } from '../../adapters/index.js';
import { ComposedVm } from '../../adapters/composed-vm.js';
import { formatBytes, parseSize } from '../units.js';
import { createProgress } from './progress.js';
import { printJson, table } from './output.js';
import { formatStats, statsJson } from '../stats-report.js';

/** The media-agent client, loaded only for `--repo http(s)://...` (it pulls in HTTP/2 and TLS). */
const remoteCli = () => import('../remote/cli.js');

export interface RepoOption {
  repo?: string;
}

/** `--repo` or CHUNKVAULT_REPO, else a usage error. */
export function repoDir(o: RepoOption): string {
  const dir = o.repo ?? process.env.CHUNKVAULT_REPO;
  if (!dir) throw new ChunkvaultError('USAGE', 'no repository: pass --repo <repo> or set CHUNKVAULT_REPO');
  return dir;
}

/** Opens a repository, runs `fn`, always closes it. */
export async function withRepo<T>(o: RepoOption, fn: (repo: Repository) => Promise<T>): Promise<T> {
  const repo = await Repository.open(repoDir(o));
  try {
    return await fn(repo);
  } finally {
    await repo.close();
  }
}

/** An AbortSignal fired by SIGINT/SIGTERM, so jobs stop cleanly and clean up. */
export function interruptSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return ac.signal;
}

export async function cmdInit(dir: string, o: { chunkSize?: string; compression?: string; json?: boolean }): Promise<number> {
  const config = await Repository.init(dir, {
    ...(o.chunkSize !== undefined ? { chunkSize: parseSize(o.chunkSize) } : {}),
    ...(o.compression !== undefined ? { compression: parseCompression(o.compression, 3) } : {}),
  });
  if (o.json) printJson({ repo: dir, ...config });
  else {
    process.stdout.write(`created repository ${dir} (chunk size ${formatBytes(config.chunkSize)}, compression ${compressionText(config.compression)})\n`);
  }
  return 0;
}

export interface BackupCliOptions extends RepoOption {
  /** Required, except for sources that name a VM (xen://). */
  vm?: string;
  disk?: string;
  changedExtents?: string;
  bitmap?: string;
  full?: boolean;
  json?: boolean;
}

export async function cmdBackup(sources: string[], o: BackupCliOptions): Promise<number> {
  const remote = remoteRepoOf(o);
  if (remote) return (await remoteCli()).cmdRemoteBackup(remote, sources, o);
  const vmSource = sources.length === 1 ? await vmFrontEndFor(sources[0]!, { ...(o.changedExtents ? { changedExtentsFile: o.changedExtents } : {}), ...(o.bitmap !== undefined ? { bitmap: o.bitmap } : {}) }) : null;
  if (vmSource) {
    if (o.disk !== undefined) throw new ChunkvaultError('USAGE', '--disk does not apply to a VM source: its disks are named by the front-end');
    return runVmCli(vmSource, o);
  }
  const vm = o.vm;
  if (vm === undefined) throw new ChunkvaultError('USAGE', "required option '--vm <vm>' not specified");
  if (sources.length > 1) return cmdBackupVm(sources, { ...o, vm });
  return withRepo(o, async (repo) => {
    const progress = createProgress('backup');
    const frontEnd = await frontEndFor(sources[0]!, {
      ...(o.changedExtents ? { changedExtentsFile: o.changedExtents } : {}),
      ...(o.bitmap !== undefined ? { bitmap: o.bitmap } : {}),
    });
    const point = await runBackupJob({
      repo,
      frontEnd,
      vm,
      ...(o.disk ? { disk: o.disk } : {}),
      full: o.full ?? false,
      signal: interruptSignal(),
      onProgress: (p) => progress.update(p.done, p.total),
    });
    progress.finish();
    printBackup(point, o.json ?? false);
    return 0;
  });
}

/** Several sources: the disks of one VM, committed together as one VM backup. */
async function cmdBackupVm(sources: string[], o: BackupCliOptions & { vm: string }): Promise<number> {
  if (o.disk !== undefined || o.changedExtents !== undefined || o.bitmap !== undefined) {
    throw new ChunkvaultError('USAGE', '--disk, --changed-extents and --bitmap apply to a single source; back up several disks without them');
  }
  const disks: FrontEnd[] = [];
  for (const s of sources) disks.push(await frontEndFor(s));
  return runVmCli(new ComposedVm(o.vm, disks), o);
}

/** Runs a whole-VM job (several sources, or one that names a VM) and prints its points. */
async function runVmCli(frontEnd: VmFrontEnd, o: BackupCliOptions): Promise<number> {
  return withRepo(o, async (repo) => {
    const progress = createProgress('backup');
    const { record, points } = await runVmBackupJob({
      repo,
      frontEnd,
      ...(o.vm !== undefined ? { vm: o.vm } : {}),
      full: o.full ?? false,
      signal: interruptSignal(),
      onProgress: (_disk, p) => progress.update(p.done, p.total),
    });
    progress.finish();
    if (o.json) printJson({ job: record.id, vm: record.vm, time: record.time, points: points.map((p) => ({ point: p.id, disk: p.disk, parent: p.parent, mode: p.mode, sizeBytes: p.sizeBytes, ...p.stats })) });
    else {
      process.stdout.write(`VM backup ${record.id} committed: vm ${record.vm}, ${points.length} disks\n`);
      for (const p of points) printBackup(p, false);
    }
    return 0;
  });
}

function printBackup(p: PointRecord, json: boolean): void {
  const s = p.stats;
  if (json) {
    printJson({ point: p.id, vm: p.vm, disk: p.disk, parent: p.parent, mode: p.mode, sizeBytes: p.sizeBytes, ...s });
    return;
  }
  const rate = s.durationMs > 0 ? formatBytes((s.bytesRead / s.durationMs) * 1000) + '/s' : '-';
  process.stdout.write(
    `point ${p.id} committed: vm ${p.vm} disk ${p.disk} (${p.mode}, ${formatBytes(p.sizeBytes)})\n` +
      `  read ${formatBytes(s.bytesRead)} in ${(s.durationMs / 1000).toFixed(2)} s (${rate}); ` +
      `new ${formatBytes(s.bytesNew)} stored from ${formatBytes(s.rawNew)}; ` +
      `chunks: ${s.chunksNew} new, ${s.chunksDedup} dedup, ${s.chunksZero} zero\n`,
  );
}

export async function cmdPoints(o: RepoOption & { vm?: string; disk?: string; json?: boolean }): Promise<number> {
  const remote = remoteRepoOf(o);
  if (remote) return (await remoteCli()).cmdRemotePoints(remote, o);
  const repo = await Repository.open(repoDir(o));
  const points = await repo.catalog.list({ ...(o.vm ? { vm: o.vm } : {}), ...(o.disk ? { disk: o.disk } : {}) });
  await repo.close();
  if (o.json) {
    printJson(points);
    return 0;
  }
  const rows = points.map((p) => [p.id, p.vm, p.disk, p.time.replace('T', ' ').slice(0, 19), p.mode, formatBytes(p.sizeBytes), formatBytes(p.stats.bytesNew), p.parent ?? '-']);
  process.stdout.write(table(['ID', 'VM', 'DISK', 'TIME (UTC)', 'MODE', 'SIZE', 'NEW', 'PARENT'], rows, [5, 6]) + '\n');
  // Why a front-end had to read everything (e.g. a lost dirty bitmap), one line per point.
  for (const p of points) if (typeof p.meta?.['fullReason'] === 'string') process.stdout.write(`${p.id}: full read: ${p.meta['fullReason']}\n`);
  return 0;
}

export interface RestoreCliOptions extends RepoOption {
  vm?: string;
  disk?: string;
  output: string;
  verifyDigest?: boolean;
  buffered?: boolean;
  json?: boolean;
}

export async function cmdRestore(ref: string, o: RestoreCliOptions): Promise<number> {
  const remote = remoteRepoOf(o);
  if (remote) return (await remoteCli()).cmdRemoteRestore(remote, ref, o);
  return withRepo(o, async (repo) => {
    const vmBackup = o.disk === undefined ? await repo.catalog.findVmBackup(ref) : undefined;
    if (vmBackup) return restoreVmBackup(repo, vmBackup, ref, o);
    const point = await repo.catalog.resolve(ref, { ...(o.vm ? { vm: o.vm } : {}), ...(o.disk ? { disk: o.disk } : {}) });
    const started = Date.now();
    const progress = createProgress('restore');
    await runRestore({
      repo,
      point,
      output: o.output,
      signal: interruptSignal(),
      verifyDigest: o.verifyDigest ?? false,
      buffered: o.buffered ?? false,
      onProgress: (p) => progress.update(p.done, p.total),
    });
    progress.finish();
    const ms = Date.now() - started;
    if (o.json) printJson({ point: point.id, output: o.output, sizeBytes: point.sizeBytes, durationMs: ms });
    else if (o.output !== '-') process.stdout.write(`restored point ${point.id} (${formatBytes(point.sizeBytes)}) to ${o.output} in ${(ms / 1000).toFixed(2)} s\n`);
    return 0;
  });
}

/** Restores every disk of a VM backup into the directory `o.output` as `<disk>` (plus `.img` without an extension). */
async function restoreVmBackup(repo: Repository, record: VmBackupRecord, ref: string, o: RestoreCliOptions): Promise<number> {
  const clash = (await repo.catalog.list()).some((p) => p.id.startsWith(ref));
  if (clash) throw new ChunkvaultError('POINT_AMBIGUOUS', `${ref} matches both a point and a VM backup: give more characters`);
  if (o.output === '-') throw new ChunkvaultError('USAGE', 'a VM backup restores to a directory (one image per disk), not to stdout');
  await mkdir(o.output, { recursive: true });
  const started = Date.now();
  const restored: { disk: string; point: string; output: string }[] = [];
  for (const { disk, point: id } of record.disks) {
    const point = await repo.catalog.get(id);
    const output = join(o.output, /\.[A-Za-z0-9]+$/.test(disk) ? disk : `${disk}.img`);
    const progress = createProgress(`restore ${disk}`);
    await runRestore({ repo, point, output, signal: interruptSignal(), verifyDigest: o.verifyDigest ?? false, buffered: o.buffered ?? false, onProgress: (p) => progress.update(p.done, p.total) });
    progress.finish();
    restored.push({ disk, point: id, output });
  }
  if (o.json) printJson({ job: record.id, vm: record.vm, disks: restored, durationMs: Date.now() - started });
  else process.stdout.write(`restored VM backup ${record.id} (vm ${record.vm}, ${restored.length} disks) to ${o.output}\n`);
  return 0;
}

export async function cmdVerify(ref: string | undefined, o: RepoOption & { readData?: boolean; json?: boolean }): Promise<number> {
  return withRepo(o, async (repo) => {
    const points = ref ? [await repo.catalog.resolve(ref)] : undefined;
    const progress = createProgress('verify', 'items');
    const report = await verify(repo, { ...(points ? { points } : {}), readData: o.readData ?? false, onProgress: (p) => progress.update(p.done, p.total) });
    progress.finish();
    printVerify(report, o.json ?? false);
    return report.ok ? 0 : new ChunkvaultError('VERIFY_FAILED', '').exitCode;
  });
}

function printVerify(r: VerifyReport, json: boolean): void {
  if (json) {
    printJson(r);
    return;
  }
  for (const p of r.problems) {
    const pts = p.points.length ? ` (points: ${p.points.join(', ')})` : '';
    process.stdout.write(`${p.code}: ${p.message}${pts}\n`);
  }
  const what = `${r.pointsChecked} points, ${r.chunksReferenced} chunks referenced, ${r.containersChecked} containers${r.chunksRead ? `, ${r.chunksRead} chunks read` : ''}`;
  process.stdout.write(r.ok ? `ok: ${what}\n` : `FAILED: ${r.problems.length} problems; checked ${what}\n`);
}

export async function cmdStats(o: RepoOption & { json?: boolean }): Promise<number> {
  const remote = remoteRepoOf(o);
  if (remote) return (await remoteCli()).cmdRemoteStats(remote, o);
  return withRepo(o, async (repo) => {
    const s = await repoStats(repo);
    if (o.json) printJson(statsJson(s, (await import('../report/index.js')).buildReport(s, await repo.catalog.list())));
    else process.stdout.write(formatStats(s));
    return 0;
  });
}

export async function cmdIndexRebuild(o: RepoOption & { json?: boolean }): Promise<number> {
  return withRepo(o, async (repo) => {
    const progress = createProgress('index rebuild', 'items');
    const r = await rebuildIndex(repo, (p) => progress.update(p.done, p.total));
    progress.finish();
    if (o.json) printJson(r);
    else process.stdout.write(`index rebuilt: ${r.chunks} chunks from ${r.containers} containers${r.scanned.length ? ` (${r.scanned.length} recovered by scanning)` : ''}\n`);
    return 0;
  });
}
