/**
 * The dedup-analysis report (`chunkvault report`, and the `report` field of
 * `stats --json`): a data model of time series and rankings computed from a
 * repository, and a self-contained HTML page that charts it.
 */
import { repoStats, type Repository, type RepoStats } from '../../engine/index.js';
import { buildReport, type ReportData, type ReportOptions } from './model.js';

export { buildReport } from './model.js';
export type { DiskSeries, PointContributor, ReportData, ReportOptions, RepoTimeline, VmContributor, VmSeries } from './model.js';
export { MAX_BAR_VMS, renderReportHtml } from './html.js';
export type { PageInfo } from './html.js';
export { escapeHtml } from './svg.js';

/**
 * `repoStats` and the report built from it and the catalog. Needs the index (and so
 * the repository's process lock) like `repoStats`.
 */
export async function collectReport(repo: Repository, options: ReportOptions = {}): Promise<{ stats: RepoStats; data: ReportData }> {
  const stats = await repoStats(repo);
  const records = await repo.catalog.list();
  return { stats, data: buildReport(stats, records, options) };
}
