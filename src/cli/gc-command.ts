/**
 * `chunkvault gc`: removes chunks no point references and compacts containers,
 * beside running backups (engine/gc). Exit 0 also when reclamation is left pending
 * because backups are running: the JSON `status` says `pending`, and the next gc
 * (or `--wait`) finishes it.
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { ChunkvaultError, gc, type GcReport } from '../../engine/index.js';
import { formatBytes } from '../units.js';
import { interruptSignal, withRepo, type RepoOption } from './commands.js';
import { createProgress } from './progress.js';
import { printJson } from './output.js';
import { cacheOption, endpointOption } from './object-store-options.js';

interface GcCliOptions extends RepoOption {
  dryRun?: boolean;
  wait?: boolean;
  audit?: boolean;
  compactThreshold?: string;
  json?: boolean;
}

function threshold(text: string | undefined): number {
  if (text === undefined) return 0.2;
  const pct = Number(text.replace(/%$/, ''));
  if (!Number.isFinite(pct) || pct <= 0 || pct > 100) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `--compact-threshold must be a percentage above 0 and at most 100, not "${text}"`);
  }
  return pct / 100;
}

export async function cmdGc(o: GcCliOptions): Promise<number> {
  const compactThreshold = threshold(o.compactThreshold);
  return withRepo(o, async (repo) => {
    const progress = createProgress('gc', 'items');
    let phase = '';
    const report = await gc(repo, {
      dryRun: o.dryRun ?? false,
      wait: o.wait ?? false,
      audit: o.audit ?? false,
      compactThreshold,
      signal: interruptSignal(),
      onProgress: (p) => {
        if (p.phase !== phase) {
          progress.finish();
          phase = p.phase;
        }
        progress.update(p.done, p.total);
      },
    });
    progress.finish();
    if (o.json) printJson(report);
    else process.stdout.write(describe(report));
    return 0;
  });
}

function describe(r: GcReport): string {
  const lines = [
    `marked ${r.points} points (${r.slotsRead} slots read, ${r.markInsertions} distinct changes)`,
    `${r.dryRun ? 'would remove' : 'condemned'} ${r.chunksCondemned} of ${r.indexEntries} chunks (${formatBytes(r.bytesCondemned)} stored)`,
  ];
  if (r.dryRun) return [...lines, 'dry run: nothing was changed', ''].join('\n');
  if (r.chunksResurrected) lines.push(`kept ${r.chunksResurrected} chunks that backups committed meanwhile reference`);
  lines.push(`removed ${r.containersRemoved} containers, compacted ${r.containersCompacted} (${r.recordsDropped} dead records dropped, ${formatBytes(r.bytesWritten)} rewritten)`);
  if (r.orphanMapsRemoved || r.orphanPointsRemoved) lines.push(`removed ${r.orphanMapsRemoved} orphaned maps and ${r.orphanPointsRemoved} points of unfinished jobs`);
  lines.push(`space reclaimed: ${formatBytes(Math.max(0, r.bytesFreed))} in ${(r.durationMs / 1000).toFixed(1)} s`);
  if (r.status === 'pending') {
    lines.push(`pending: waiting for ${r.waitingFor.length} running backup(s) (pids ${r.waitingFor.map((w) => w.pid).join(', ')}); run gc again when they finish, or use --wait`);
  }
  return lines.join('\n') + '\n';
}

export function addGcCommand(program: Command, action: (fn: (o: GcCliOptions) => Promise<number>) => (...args: unknown[]) => Promise<void>): void {
  program
    .command('gc')
    .description('remove chunks no point references and compact containers; safe while backups run')
    .addOption(new Option('--repo <repo>', 'repository directory (default: $CHUNKVAULT_REPO)'))
    .addOption(endpointOption())
    .addOption(cacheOption())
    .option('--dry-run', 'report what would be removed; change nothing')
    .option('--wait', 'wait for running backups instead of leaving reclamation to the next gc')
    .option('--audit', 'check every container for unindexed leftovers, not only those new since the last gc')
    .option('--compact-threshold <percent>', 'dead share from which a container is rewritten', '20')
    .addOption(new Option('--json', 'print machine-readable JSON on stdout'))
    .action(action(cmdGc));
}
