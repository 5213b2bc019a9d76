/**
 * `chunkvault report --html FILE`: the dedup-analysis page (src/report), written
 * atomically: a temporary file beside FILE, fsynced, then renamed over it, so FILE is
 * either the old page or the whole new one.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ChunkvaultError, toChunkvaultError } from '../../engine/index.js';
import { formatBytes } from '../units.js';
import { repoDir, withRepo, type RepoOption } from './commands.js';
import { printJson } from './output.js';

export interface ReportCliOptions extends RepoOption {
  html?: string;
  json?: boolean;
}

/** Writes `text` to `path` through a temporary file in the same directory; OUTPUT_FAILED on any error. */
export async function writeOutputAtomic(path: string, text: string): Promise<number> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  const data = Buffer.from(text, 'utf8');
  try {
    const fh = await fsp.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    const cause = toChunkvaultError(err, `unable to write ${path}`);
    throw new ChunkvaultError('OUTPUT_FAILED', cause.message, { cause: err, details: { path, ...(typeof cause.details.errno === 'string' ? { errno: cause.details.errno } : {}) } });
  }
  return data.length;
}

export async function cmdReport(o: ReportCliOptions): Promise<number> {
  if (!o.html) throw new ChunkvaultError('USAGE', "required option '--html <file>' not specified");
  const out = resolve(o.html);
  const repo = repoDir(o);
  // The page is written after the repository (and its lock) is released.
  const { collectReport, renderReportHtml } = await import('../report/index.js');
  const { stats, data } = await withRepo(o, (r) => collectReport(r));
  const bytes = await writeOutputAtomic(out, renderReportHtml(stats, data, { repo, generatedAt: new Date().toISOString() }));
  if (o.json) printJson({ html: out, bytes, points: stats.points, vms: stats.vms, report: data });
  else process.stdout.write(`report written to ${out} (${formatBytes(bytes)}, ${stats.points} point${stats.points === 1 ? '' : 's'}, ${stats.vms} VM${stats.vms === 1 ? '' : 's'})\n`);
  return 0;
}
