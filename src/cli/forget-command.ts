/**
 * `chunkvault forget`: removes restore points from the catalog by a retention policy
 * (--keep-*) or by id. Only catalog records go (engine/forget.ts); the space is freed
 * by GC. Needs no index lock, so it runs beside backups.
 */
import { Command, Option } from 'commander';
import {
  ChunkvaultError,
  forget,
  parseDuration,
  parseKeepCount,
  Repository,
  validateName,
  type ForgetResult,
  type RetentionPolicy,
} from '../../engine/index.js';
import { repoDir, type RepoOption } from './commands.js';
import { printJson, table } from './output.js';
import { cacheOption, endpointOption, objectStoreOptions } from './object-store-options.js';

export interface ForgetCliOptions extends RepoOption {
  vm?: string;
  disk?: string;
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
  keepYearly?: string;
  keepWithin?: string;
  dryRun?: boolean;
  json?: boolean;
}

const COUNT_OPTIONS = [
  ['keepLast', '--keep-last'],
  ['keepHourly', '--keep-hourly'],
  ['keepDaily', '--keep-daily'],
  ['keepWeekly', '--keep-weekly'],
  ['keepMonthly', '--keep-monthly'],
  ['keepYearly', '--keep-yearly'],
] as const;

/** The policy the flags describe (INVALID_ARGUMENT for a bad count or duration); empty when no --keep-* is given. */
export function policyFromOptions(o: ForgetCliOptions): RetentionPolicy {
  const policy: { -readonly [K in keyof RetentionPolicy]: RetentionPolicy[K] } = {};
  for (const [key, flag] of COUNT_OPTIONS) {
    const text = o[key];
    if (text !== undefined) policy[key] = parseKeepCount(flag, text);
  }
  if (o.keepWithin !== undefined) policy.keepWithin = parseDuration(o.keepWithin);
  return policy;
}

export async function cmdForget(refs: string[], o: ForgetCliOptions): Promise<number> {
  const policy = policyFromOptions(o);
  const hasPolicy = Object.keys(policy).length > 0;
  if (refs.length > 0 && hasPolicy) throw new ChunkvaultError('USAGE', 'give point ids or --keep-* rules, not both');
  if (refs.length === 0 && !hasPolicy) {
    throw new ChunkvaultError('USAGE', 'no keep rule given: refusing to forget every point (give --keep-last, --keep-daily, ..., --keep-within, or point ids)');
  }
  if (o.vm !== undefined) validateName('vm', o.vm);
  if (o.disk !== undefined) validateName('disk', o.disk);
  const repo = await Repository.open(repoDir(o));
  try {
    const result = await forget(repo, {
      ...(o.vm !== undefined ? { vm: o.vm } : {}),
      ...(o.disk !== undefined ? { disk: o.disk } : {}),
      ...(hasPolicy ? { policy } : { points: refs }),
      dryRun: o.dryRun ?? false,
    });
    if (o.json) printJson(forgetJson(result));
    else process.stdout.write(formatForget(result));
    for (const line of newestWarnings(result)) process.stderr.write(`chunkvault: warning: ${line}\n`);
    return 0;
  } finally {
    await repo.close();
  }
}

/** The `--json` document: `{ dryRun, groups: [{ vm, disk, keep: [{id,time,reasons}], remove: [{id,time}] }], removed, vmBackups }`. */
export function forgetJson(r: ForgetResult): unknown {
  return {
    dryRun: r.dryRun,
    groups: r.groups.map((g) => ({
      vm: g.vm,
      disk: g.disk,
      keep: g.keep.map((k) => ({ id: k.point.id, time: k.point.time, reasons: k.reasons })),
      remove: g.remove.map((p) => ({ id: p.id, time: p.time })),
    })),
    removed: r.removed,
    vmBackups: r.vmBackups,
  };
}

/**
 * Disks whose newest point a named forget removes. The next incremental of such a disk
 * builds on an older point: right for change tracking the engine keeps (its change token
 * belongs to that older point), but wrong for --changed-extents or --bitmap lists made
 * against the forgotten point. (A policy always keeps the newest point.)
 */
export function newestWarnings(r: ForgetResult): string[] {
  return r.groups.flatMap((g) => {
    const gone = g.remove[0];
    const base = g.keep[0]?.point;
    if (!gone || (base && base.time > gone.time) || (base && base.time === gone.time && base.id > gone.id)) return [];
    const next = base ? `point ${base.id}` : 'nothing (a full read)';
    return [
      `${gone.id} ${r.dryRun ? 'would be' : 'was'} the newest point of vm ${g.vm} disk ${g.disk}: its next incremental builds on ${next}; ` +
        'give --full to a --changed-extents or --bitmap backup made against the forgotten point',
    ];
  });
}

/** A table per disk (newest first), then one summary line. */
export function formatForget(r: ForgetResult): string {
  const time = (t: string) => t.replace('T', ' ').slice(0, 19);
  const out: string[] = [];
  for (const g of r.groups) {
    out.push(`vm ${g.vm} disk ${g.disk}: keep ${g.keep.length}, ${r.dryRun ? 'would remove' : 'remove'} ${g.remove.length}`);
    const rows = [
      ...g.keep.map((k) => ({ p: k.point, row: [k.point.id, time(k.point.time), 'keep', k.reasons.join(', ')] })),
      ...g.remove.map((p) => ({ p, row: [p.id, time(p.time), 'remove', ''] })),
    ].sort((a, b) => (a.p.time > b.p.time ? -1 : a.p.time < b.p.time ? 1 : a.p.id > b.p.id ? -1 : 1));
    out.push(table(['ID', 'TIME (UTC)', 'ACTION', 'REASONS'], rows.map((x) => x.row)), '');
  }
  const would = r.dryRun ? 'would be ' : '';
  for (const id of r.vmBackups.replaced) out.push(`VM backup ${id}: the removed disks ${would || 'are '}dropped from its record`);
  for (const id of r.vmBackups.deleted) out.push(`VM backup ${id}: ${would}deleted (no disk left)`);
  const total = r.groups.reduce((n, g) => n + g.keep.length + g.remove.length, 0);
  const removing = r.groups.reduce((n, g) => n + g.remove.length, 0);
  if (r.groups.length === 0) out.push('no points matched: nothing to forget');
  else if (r.dryRun) out.push(`dry run: would remove ${removing} of ${total} points; nothing was changed`);
  else out.push(`removed ${r.removed} of ${total} points from the catalog${r.removed > 0 ? '; gc frees their maps and unreferenced chunks' : ''}`);
  return out.join('\n') + '\n';
}

/** Adds `forget` to the program (options mirror restic's forget). */
export function addForgetCommand(program: Command): void {
  program
    .command('forget [points...]')
    .description(
      'remove restore points from the catalog, by keep rules applied per VM disk (newest first; a point is kept when any rule keeps it, ' +
        'and the newest point of every disk always) or by point id, unique prefix or VM backup (job) id; maps and chunks stay until gc. ' +
        'Give at least one --keep-* rule or a point: forget never removes every point by default',
    )
    .addOption(new Option('--repo <repo>', 'repository directory (default: $CHUNKVAULT_REPO)'))
    .addOption(endpointOption())
    .addOption(cacheOption())
    .option('--vm <vm>', 'only points of this VM')
    .option('--disk <disk>', 'only points of this disk')
    .option('--keep-last <n>', 'keep the n newest points')
    .option('--keep-hourly <n>', 'keep the newest point of each of the last n hours that have points (UTC)')
    .option('--keep-daily <n>', 'keep the newest point of each of the last n days that have points (UTC)')
    .option('--keep-weekly <n>', 'keep the newest point of each of the last n ISO weeks that have points (UTC)')
    .option('--keep-monthly <n>', 'keep the newest point of each of the last n months that have points (UTC)')
    .option('--keep-yearly <n>', 'keep the newest point of each of the last n years that have points (UTC)')
    .option('--keep-within <duration>', 'keep every point newer than now minus duration: 30d, 12h, 2w, 6m (30-day months), 1y (365 days), 1y6m')
    .option('--dry-run', 'print what would be removed; change nothing')
    .addOption(new Option('--json', 'print { dryRun, groups: [{ vm, disk, keep: [{ id, time, reasons }], remove: [{ id, time }] }], removed, vmBackups } on stdout'))
    .action(async (refs: string[], o: ForgetCliOptions) => {
      objectStoreOptions([o]);
      process.exitCode = await cmdForget(refs, o);
    });
}
