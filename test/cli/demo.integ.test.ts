/**
 * The README's first quick-start command runs `chunkvault demo`: it must keep working
 * end to end (backups, byte-identical restores, stats, retention and GC, the report).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliOk, ensureBuilt, makeTempDir, removeTempDir } from '../helpers/cli.js';

let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('demo');
});

afterAll(async () => {
  await removeTempDir(dir);
});

describe('chunkvault demo', () => {
  it('backs up, restores byte-identically, collects garbage and writes the report', async () => {
    const work = join(dir, 'demo');
    const r = await cliOk(['demo', '--dir', work, '--size', '24M', '--incrementals', '3']);
    const restores = r.stdout.match(/^restore [0-9a-f]{16}: OK, byte-identical/gm) ?? [];
    // 4 points restored, then the 2 kept after forget --keep-last 2 again.
    expect(restores.length, r.stdout).toBe(6);
    expect(r.stdout).not.toMatch(/MISMATCH/);
    expect(r.stdout).toMatch(/^forget --keep-last 2: removed 2 points; gc: \d+ chunks unreferenced/m);
    expect(existsSync(join(work, 'report.html'))).toBe(true);
    await cliOk(['verify', '--repo', join(work, 'repo'), '--read-data']);
  }, 300_000);
});
