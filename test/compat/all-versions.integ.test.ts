/**
 * Every released repository format stays readable (restic's TestAllVersions): each
 * committed fixture under test/fixtures/repos is unpacked, checked with
 * `verify --read-data`, and every point restores to its recorded SHA-256.
 * Fixtures without an index also exercise `index rebuild`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sha256File } from '../../src/sample-disk.js';

const root = join(import.meta.dirname, '..', '..');
const cli = join(root, 'dist', 'src', 'cli', 'main.js');
const fixtures = join(root, 'test', 'fixtures', 'repos');
const work = mkdtempSync(join(tmpdir(), 'cv-compat-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function run(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, CHUNKVAULT_NO_PROGRESS: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const tarballs = readdirSync(fixtures).filter((n) => n.endsWith('.tar.gz'));

describe('released repository formats', () => {
  it('has fixtures', () => expect(tarballs.length).toBeGreaterThan(0));

  it.each(tarballs)('reads %s', async (name) => {
    const repo = join(work, name.replace('.tar.gz', ''));
    execFileSync('mkdir', ['-p', repo]);
    execFileSync('tar', ['-xzf', join(fixtures, name), '-C', repo]);
    if (!existsSync(join(repo, 'index'))) expect(run(['index', 'rebuild', '--repo', repo]).code).toBe(0);
    const check = run(['verify', '--repo', repo, '--read-data', '--json']);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    const expected = JSON.parse(readFileSync(join(fixtures, name.replace('.tar.gz', '.expected.json')), 'utf8')) as { point: string; sha256: string }[];
    for (const { point, sha256 } of expected) {
      const out = join(work, `${point}.img`);
      const r = run(['restore', point, '--repo', repo, '--output', out]);
      expect(r.code, r.stderr).toBe(0);
      expect(await sha256File(out)).toBe(sha256);
    }
  });
});
