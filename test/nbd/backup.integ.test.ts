/**
 * `chunkvault backup <NBD URI>` end to end against real qemu-nbd and nbdkit: a full
 * backup reads only allocated data, `--bitmap` reads only the dirty extents on top of
 * the latest point, a server EIO fails the backup cleanly (no point, exit 6), and an
 * `nbds://` export is read over verified TLS.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { convertToRaw, describeWithPeers, makeTempDir, qemuIo, run, startNbdkit, startQemuNbd } from '../fixtures/peers.js';
import { makeTestPki } from '../fixtures/tls.js';
import { backupOk, checkRepo, cli, expectCliError, initRepo, listPoints, restoreSha, sha256File } from '../helpers/cli.js';

const MiB = 1024 * 1024;

describeWithPeers('backup from NBD exports', ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdkit', 'openssl'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  let image: string;
  let repo: string;

  beforeAll(async () => {
    dir = await makeTempDir('chunkvault-nbd-backup-');
    image = join(dir.path, 'disk.qcow2');
    repo = join(dir.path, 'repo');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    await qemuIo(image, 'qcow2', ['write -P 0xaa 0 3M', 'write -P 0x5b 20M 2M', 'write -P 0x00 40M 1M']);
    await initRepo(repo);
  });
  afterAll(async () => {
    await checkRepo(repo);
    await dir.remove();
  });

  async function expectedSha(name: string): Promise<string> {
    const raw = join(dir.path, `${name}.raw`);
    await convertToRaw(image, raw);
    return sha256File(raw);
  }

  it('reads only allocated data for a full backup and only dirty extents with --bitmap', async () => {
    let server = await startQemuNbd({ dir: dir.path }, { image, format: 'qcow2' });
    const full = await backupOk(repo, server.uri, 'vm1', ['--disk', 'd0']);
    await server.stop();
    expect(full.bytesRead).toBeLessThanOrEqual(6 * MiB);
    const fullSha = await expectedSha('full');

    await run('qemu-img', ['bitmap', '--add', '-f', 'qcow2', image, 'bk1']);
    await qemuIo(image, 'qcow2', ['write -P 0xcc 1M 64k', 'write -P 0xdd 50M 4k']);
    server = await startQemuNbd({ dir: dir.path }, { image, format: 'qcow2', bitmap: 'bk1' });
    const inc = await backupOk(repo, server.uri, 'vm1', ['--disk', 'd0', '--bitmap', 'bk1']);
    await server.stop();
    expect(inc.bytesRead).toBeLessThanOrEqual(2 * 256 * 1024);

    const points = await listPoints(repo, ['--vm', 'vm1']);
    expect(points.map((p) => [p.mode, p.parent])).toEqual([
      ['full', null],
      ['incremental', full.point],
    ]);
    expect(await restoreSha(repo, full.point, dir.path)).toBe(fullSha);
    expect(await restoreSha(repo, inc.point, dir.path)).toBe(await expectedSha('inc'));
  });

  it('fails cleanly with REMOTE_ERROR when the server answers EIO, committing nothing', async () => {
    const raw = join(dir.path, 'eio.raw');
    await convertToRaw(image, raw);
    const server = await startNbdkit({ dir: dir.path }, ['--filter=error', 'file', raw, 'error-pread=EIO', 'error-pread-rate=100%']);
    const before = await listPoints(repo);
    const r = await cli(['backup', server.uri, '--repo', repo, '--vm', 'vm-eio', '--disk', 'd0']);
    await server.stop();
    expectCliError(r, 'REMOTE_ERROR');
    expect(r.code).toBe(6);
    expect(await listPoints(repo)).toEqual(before);
  });

  it('reads an nbds:// export over TLS verified against its CA, and refuses a wrong CA', async () => {
    const raw = join(dir.path, 'tls.raw');
    await convertToRaw(image, raw);
    const pki = await makeTestPki(join(dir.path, 'pki'));
    const other = await makeTestPki(join(dir.path, 'pki-other'), 'another CA');
    const server = await startNbdkit({ dir: dir.path, tls: true }, ['--tls=require', `--tls-certificates=${pki.dir}`, 'file', raw]);
    try {
      const bad = await cli(['backup', `${server.uri}&tls-ca=${other.caFile}`, '--repo', repo, '--vm', 'vm-tls', '--disk', 'd0']);
      expectCliError(bad, 'TLS_FAILED');
      const ok = await backupOk(repo, `${server.uri}&tls-ca=${pki.caFile}`, 'vm-tls', ['--disk', 'd0']);
      expect(await restoreSha(repo, ok.point, dir.path)).toBe(await sha256File(raw));
    } finally {
      await server.stop();
    }
  });
});
