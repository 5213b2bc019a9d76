/**
 * The embedded default job (`chunkvault demo`): a local repository and a generated
 * sample disk, one full backup and several incrementals from the extents written
 * between them, then every point restored and checked against the SHA-256 of the
 * disk at that moment, and a stats table.
 */
import { promises as fsp } from 'node:fs';
import { join, resolve } from 'node:path';
import { Repository, repoStats } from '../engine/index.js';
import { runFileBackup, runRestore } from './jobs.js';
import { mutateDisk, sha256File, writeSampleDisk } from './sample-disk.js';
import { formatBytes } from './units.js';
import { formatStats } from './stats-report.js';

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
    let ok = true;
    for (const [id, sha] of expected) {
      const out = join(dir, `restore-${id}.img`);
      await runRestore({ repo, point: await repo.catalog.get(id), output: out });
      const got = await sha256File(out);
      await fsp.rm(out);
      ok &&= got === sha;
      o.log(`restore ${id}: ${got === sha ? 'OK, byte-identical' : 'MISMATCH'} (sha256 ${got.slice(0, 16)}...)`);
    }
    o.log('');
    o.log(formatStats(await repoStats(repo)));
    return ok;
  } finally {
    await repo.close();
  }
}
