/**
 * The `stats` report as a text table, shared by the CLI and the demo, and the
 * document `stats --json` prints.
 */
import type { RepoStats } from '../engine/index.js';
import type { ReportData } from './report/index.js';
import { table } from './cli/output.js';
import { formatBytes, formatRatio } from './units.js';

/** The stats report as text: overall figures, then one row per point. */
export function formatStats(s: RepoStats): string {
  const overall = table(
    ['', 'VALUE'],
    [
      ['points', String(s.points)],
      ['vms', String(s.vms)],
      ['logical bytes', formatBytes(s.logicalBytes)],
      ['zero bytes (not stored)', formatBytes(s.zeroBytes)],
      ['unique chunks', String(s.uniqueChunks)],
      ['unique raw bytes', formatBytes(s.uniqueRawBytes)],
      ['stored bytes (containers)', formatBytes(s.storedBytes)],
      ['dedup ratio', formatRatio(s.dedupRatio)],
      ['compression ratio', formatRatio(s.compressionRatio)],
      ['total ratio (logical/stored)', formatRatio(s.totalRatio)],
    ],
    [1],
  );
  const rows = s.perPoint.map((p) => [p.id, p.vm, p.disk, formatBytes(p.logicalBytes), formatBytes(p.zeroBytes), formatBytes(p.uniqueBytes), formatBytes(p.bytesNew), formatBytes(p.exclusiveBytes), formatBytes(p.sharedBytes)]);
  const per = table(['POINT', 'VM', 'DISK', 'LOGICAL', 'ZERO', 'UNIQUE', 'ADDED', 'EXCLUSIVE', 'SHARED'], rows, [3, 4, 5, 6, 7, 8]);
  return `${overall}\n\n${per}\n`;
}

/**
 * What `stats --json` prints: every `repoStats` field, plus `report`, the series and
 * rankings of `chunkvault report` (src/report/model.ts defines each).
 */
export function statsJson(s: RepoStats, report: ReportData): RepoStats & { report: ReportData } {
  return { ...s, report };
}
