/**
 * Restore targets other than a new file: a character device (/dev/null) and a FIFO
 * are written as streams in place (no `.partial` file beside them), byte-exact.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliOk, backupOk, initRepo, makeImage, makeTempDir, removeTempDir, sha256File, MiB } from '../helpers/cli.js';

let dir: string;
let repo: string;
let image: string;
let point: string;
beforeAll(async () => {
  dir = await makeTempDir('restore-targets');
  repo = join(dir, 'repo');
  image = join(dir, 'disk.img');
  await makeImage(image, 5 * MiB + 77, 'targets');
  await initRepo(repo);
  point = (await backupOk(repo, image, 'vm')).point;
});
afterAll(() => removeTempDir(dir));

describe('restore targets', () => {
  it('writes to /dev/null in place', async () => {
    await cliOk(['restore', point, '--repo', repo, '--output', '/dev/null']);
    expect(existsSync('/dev/null.partial')).toBe(false);
  });

  it('streams into a FIFO', async () => {
    const fifo = join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const reader = spawn('cat', [fifo]);
    const hash = createHash('sha256');
    reader.stdout.on('data', (d: Buffer) => hash.update(d));
    const closed = new Promise((resolve) => reader.on('close', resolve));
    await cliOk(['restore', point, '--repo', repo, '--output', fifo]);
    await closed;
    expect(hash.digest('hex')).toBe(await sha256File(image));
  });
});
