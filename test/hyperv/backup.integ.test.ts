/**
 * `chunkvault backup` of VHDX and VHD files (chosen by extension or a `vhd:`/`vhdx:`
 * prefix): the virtual disk is backed up, not the container file, and restores equal
 * `qemu-img convert -O raw`.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeWithPeers, makeTempDir, run } from '../fixtures/peers.js';
import { backupOk, checkRepo, initRepo, restoreSha, sha256File } from '../helpers/cli.js';

describeWithPeers('backup of VHDX and VHD files', ['qemu-img', 'qemu-io'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  let repo: string;
  beforeAll(async () => {
    dir = await makeTempDir('chunkvault-vdisk-backup-');
    repo = join(dir.path, 'repo');
    await initRepo(repo);
  });
  afterAll(async () => {
    await checkRepo(repo);
    await dir.remove();
  });

  async function expectedRaw(image: string, format: string): Promise<string> {
    const raw = `${image}.raw`;
    await run('qemu-img', ['convert', '-f', format, '-O', 'raw', image, raw]);
    return sha256File(raw);
  }

  it.each([
    ['d.vhdx', 'vhdx', ['-f', 'vhdx'], ''],
    ['fixed.vhdx', 'vhdx', ['-f', 'vhdx', '-o', 'subformat=fixed'], ''],
    ['d.vhd', 'vpc', ['-f', 'vpc', '-o', 'subformat=dynamic,force_size=on'], ''],
    ['plain.img', 'vpc', ['-f', 'vpc', '-o', 'subformat=dynamic,force_size=on'], 'vhd:'],
  ])('backs up %s as its virtual disk', async (name, format, create, prefix) => {
    const image = join(dir.path, name);
    await run('qemu-img', ['create', '-q', ...create, image, '24M']);
    await run('qemu-io', ['-f', format, '-c', 'write -P 0x3c 1M 3M', '-c', 'write -P 0xc3 17M 65k', image]);
    const point = await backupOk(repo, `${prefix}${image}`, 'vm-hv', ['--disk', name]);
    expect(await restoreSha(repo, point.point, dir.path)).toBe(await expectedRaw(image, format));
  });
});
