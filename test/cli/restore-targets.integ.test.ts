/**
 * Restore targets other than a new file: a character device (/dev/null) and a FIFO
 * are written as streams in place (no `.partial` file beside them), byte-exact; a block
 * device (a loop device from util-linux's losetup, root) is written in place with
 * direct I/O and with --buffered, zero chunks as zeros over what was there before.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
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

  it('writes a block device in place, zero chunks included, with direct I/O and with --buffered', async () => {
    // 8 MiB less one sector: the device ends inside a 4 KiB block, so the last bytes
    // go through the page cache either way.
    const size = 8 * MiB - 512;
    const source = join(dir, 'dev-source.img');
    const want = await makeImage(source, size, 'device');
    const backed = await backupOk(repo, source, 'devvm');
    expect(backed.chunksZero).toBeGreaterThan(0);
    const devPoint = backed.point;
    const backing = join(dir, 'loop-backing.img');
    for (const flags of [[], ['--buffered']]) {
      await fsp.writeFile(backing, Buffer.alloc(size, 0xa5)); // stale bytes where the image has zeros
      const dev = execFileSync('losetup', ['--find', '--show', backing], { encoding: 'utf8' }).trim();
      try {
        const out = await cliOk(['restore', devPoint, '--repo', repo, '--output', dev, '--json', ...flags]);
        expect(JSON.parse(out.stdout).output).toBe(dev);
        expect(existsSync(`${dev}.partial`)).toBe(false);
        expect(await sha256File(dev)).toBe(want);
        if (flags.length === 0) {
          // And back: the device as a backup source (the SAN / hot-add path; its size
          // from sysfs, read by the workers with pread): every chunk dedups against the image's.
          const again = await backupOk(repo, dev, 'devvm-source', ['--disk', 'dev']);
          expect(again).toMatchObject({ sizeBytes: size, bytesRead: size, chunksNew: 0, chunksZero: backed.chunksZero });
        }
      } finally {
        execFileSync('losetup', ['--detach', dev]);
      }
      expect(await sha256File(backing)).toBe(want);
    }
  });
});
