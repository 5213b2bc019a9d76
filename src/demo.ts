/**
 * The embedded default job (`chunkvault demo`): a local repository and a generated
 * sample disk, one full backup and several incrementals from the extents written
 * between them, then every point restored and checked against the SHA-256 of the
 * disk at that moment, a stats table, retention (keep the newest two) and GC, the
 * kept points checked again, and the HTML report written beside the repository.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { forget, gc, Repository, repoStats } from '../engine/index.js';
import { runFileBackup, runRestore } from './jobs.js';
import { mutateDisk, sha256File, writeSampleDisk } from './sample-disk.js';
import { formatBytes } from './units.js';
import { formatStats } from './stats-report.js';
import { collectReport, renderReportHtml } from './report/index.js';

export interface DemoOptions {
  readonly dir: string;
  readonly sizeBytes: number;
  readonly incrementals: number;
  readonly log: (line: string) => void;
}

/** Runs the demo; resolves true when every restore matched. */
export async function runDemo(o: DemoOptions): Promise<boolean> {
  const dir = resolve(o.dir);
  await fsp.rm(dir, { recursive: true, force: true });
  await fsp.mkdir(dir, { recursive: true });
  const repoPath = join(dir, 'repo');
  const diskPath = join(dir, 'vm1-disk0.img');
  await Repository.init(repoPath);
  o.log(`repository: ${repoPath}`);
  await writeSampleDisk(diskPath, { sizeBytes: o.sizeBytes, seed: 'demo' });
  o.log(`sample disk: ${diskPath} (${formatBytes(o.sizeBytes)})`);
  const repo = await Repository.open(repoPath);
  try {
    const expected = new Map<string, string>();
    for (let day = 0; day <= o.incrementals; day++) {
      let extentsFile: string | undefined;
      if (day > 0) {
        const extents = await mutateDisk(diskPath, { seed: `day-${day}`, writes: 40, maxLength: 2 * 1024 * 1024 });
        extentsFile = join(dir, `day-${day}.extents.json`);
        await fsp.writeFile(extentsFile, JSON.stringify(extents));
      }
      const p = await runFileBackup({ repo, source: diskPath, vm: 'vm1', disk: 'disk0', ...(extentsFile ? { changedExtentsFile: extentsFile } : {}) });
      expected.set(p.id, await sha256File(diskPath));
      const rate = formatBytes((p.stats.bytesRead / Math.max(1, p.stats.durationMs)) * 1000);
      o.log(`backup ${day === 0 ? 'full       ' : `incremental ${day}`}: point ${p.id}, read ${formatBytes(p.stats.bytesRead)} (${rate}/s), stored ${formatBytes(p.stats.bytesNew)} new`);
    }
    let ok = await restoreAll(repo, dir, expected, o.log);
    o.log('');
    o.log(formatStats(await repoStats(repo)));
    ok &&= await retainAndCollect(repo, dir, expected, o.log);
    const { stats, data } = await collectReport(repo);
    const html = join(dir, 'report.html');
    await fsp.writeFile(html, renderReportHtml(stats, data, { repo: repoPath, generatedAt: new Date().toISOString() }));
    o.log(`report: ${html}`);
    return ok;
  } finally {
    await repo.close();
  }
}

/** Restores every point in `expected` and compares SHA-256; true when all match. */
async function restoreAll(repo: Repository, dir: string, expected: ReadonlyMap<string, string>, log: (l: string) => void): Promise<boolean> {
  let ok = true;
  for (const [id, sha] of expected) {
    const out = join(dir, `restore-${id}.img`);
    await runRestore({ repo, point: await repo.catalog.get(id), output: out });
    const got = await sha256File(out);
    await fsp.rm(out);
    ok &&= got === sha;
    log(`restore ${id}: ${got === sha ? 'OK, byte-identical' : 'MISMATCH'} (sha256 ${got.slice(0, 16)}...)`);
  }
  return ok;
}

/** Keeps the newest two points, collects garbage, and checks the kept points again. */
async function retainAndCollect(repo: Repository, dir: string, expected: Map<string, string>, log: (l: string) => void): Promise<boolean> {
  const f = await forget(repo, { policy: { keepLast: 2 } });
  const r = await gc(repo);
  log(`forget --keep-last 2: removed ${f.removed} points; gc: ${r.chunksCondemned} chunks unreferenced, ${r.containersRemoved} containers removed, ${r.containersCompacted} compacted, ${formatBytes(Math.max(0, r.bytesFreed))} reclaimed`);
  const kept = new Set((await repo.catalog.list()).map((p) => p.id));
  for (const id of [...expected.keys()]) if (!kept.has(id)) expected.delete(id);
  return restoreAll(repo, dir, expected, log);
}
