/**
 * Faults under the `kvm:` front-end, with real programs only. The qcow2 image's
 * backing file is an NBD export served by nbdkit with the delay filter (every read
 * slowed) and the error filter (every read fails with EIO once a trigger file
 * exists), so reads through our qemu-nbd export reach nbdkit for every byte the top
 * layer does not hold: each 256 KiB chunk around a small write does.
 *
 * - The delay filter breaks nothing: a full and an incremental backup restore exact.
 * - EIO mid-backup (trigger set after the first window): no point is committed, the
 *   new bitmap is merged back into the parent's, and the next backup (trigger gone)
 *   is incremental, exact, and includes the writes made before the failed run.
 * - qemu-nbd killed (SIGKILL, by PID) mid-backup: the same.
 * - SIGTERM to the CLI mid-backup: exit 130, qemu-nbd stopped, the private work
 *   directory removed, bitmaps as before, no point; the next backup is exact.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { KvmImageFrontEnd, type FrontEnd } from '../../adapters/index.js';
import { Repository, isChunkvaultError, type BlockSource } from '../../engine/index.js';
import { runBackupJob } from '../../src/jobs.js';
import {
  backupOk,
  checkRepo,
  ensureBuilt,
  expectCliError,
  initRepo,
  leftoverTemporaries,
  listPoints,
  makeTempDir,
  removeTempDir,
  restoreSha,
  sha256File,
  startCli,
  waitFor,
} from '../helpers/cli.js';
import {
  NBDKIT_ONE_THREAD,
  convertToRaw,
  describeWithPeersHint,
  imageBitmaps,
  isRunning,
  qemuIo,
  run,
  startNbdkit,
  type RunningServer,
} from '../fixtures/peers.js';

const MiB = 1024 * 1024;
const SIZE = 128 * MiB;
const VM = 'vm-faults';
const INSTALL = 'apt-get install -y qemu-utils nbdkit';

describeWithPeersHint('kvm: faults (nbdkit error and delay filters, killed qemu-nbd, SIGTERM)', ['qemu-img', 'qemu-io', 'qemu-nbd', 'nbdkit'], INSTALL, () => {
  let dir: string;
  let repo: string;
  let image: string;
  let trigger: string;
  let nbdkit: RunningServer;
  const expected = new Map<string, string>();
  let copies = 0;
  let serial = 0;

  /** Small writes spread over the whole disk: every chunk around them is read from the backing export. */
  function scattered(count: number): string[] {
    return Array.from({ length: count }, (_, i) => `write -P 0x${(1 + (serial++ % 250)).toString(16)} ${Math.floor(((i + 0.5) * SIZE) / count / 4096) * 4096} 4096`);
  }

  async function snapshotSha(): Promise<string> {
    const copy = join(dir, `copy-${++copies}.qcow2`);
    const raw = join(dir, `copy-${copies}.raw`);
    await copyFile(image, copy);
    await convertToRaw(copy, raw);
    const sha = await sha256File(raw);
    await Promise.all([rm(copy), rm(raw)]);
    return sha;
  }

  async function backupExact(): Promise<string> {
    const sha = await snapshotSha();
    const r = await backupOk(repo, `kvm:${image}`, VM);
    expected.set(r.point, sha);
    expect(await restoreSha(repo, r.point, dir)).toBe(sha);
    return r.point;
  }

  async function latestToken(): Promise<string> {
    const points = await listPoints(repo, ['--vm', VM]);
    return points.at(-1)!['changeToken'] as string;
  }

  /**
   * An in-process backup whose source calls `fault` once `afterReads` reads have
   * completed (the rest of the plan is still to be read); resolves with its error.
   */
  async function failingBackup(workDir: string, afterReads: number, fault: () => Promise<void>): Promise<unknown> {
    const r = await Repository.open(repo);
    const inner = new KvmImageFrontEnd(image, { workDir });
    let reads = 0;
    const frontEnd: FrontEnd = {
      diskName: inner.diskName,
      plan: async (ctx) => {
        const plan = await inner.plan(ctx);
        const source: BlockSource = {
          sizeBytes: plan.source.sizeBytes,
          describe: () => plan.source.describe(),
          close: () => plan.source.close(),
          readInto: async (target, offset) => {
            await plan.source.readInto(target, offset);
            if (++reads === afterReads) await fault();
          },
        };
        return { ...plan, source };
      },
    };
    try {
      await runBackupJob({ repo: r, frontEnd, vm: VM });
      return null;
    } catch (err) {
      return err;
    } finally {
      await r.close();
    }
  }

  /** After a failed run: no new point, the parent's bitmap alone and enabled, nothing left behind. */
  async function expectRolledBack(pointsBefore: number, token: string, workDir: string): Promise<void> {
    expect((await listPoints(repo, ['--vm', VM])).length).toBe(pointsBefore);
    expect(await imageBitmaps(image)).toEqual([{ name: token, flags: ['auto'] }]);
    expect(await leftoverTemporaries(repo)).toEqual([]);
    expect(await readdir(workDir)).toEqual([]);
  }

  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('kvm-faults');
    repo = join(dir, 'repo');
    image = join(dir, 'disk.qcow2');
    trigger = join(dir, 'fail-reads');
    const base = join(dir, 'base.raw');
    await writeFile(base, randomBytes(SIZE));
    // One thread: qemu-nbd is killed below with reads queued (see NBDKIT_ONE_THREAD).
    nbdkit = await startNbdkit({ dir }, [
      NBDKIT_ONE_THREAD, '--filter=error', '--filter=delay', 'file', base,
      'rdelay=5ms', 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`,
    ]);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', nbdkit.uri, '-F', 'raw', image, String(SIZE)]);
    await qemuIo(image, 'qcow2', ['write -P 0xaa 0 4M', 'write -z 64M 8M', ...scattered(16)]);
    await initRepo(repo, ['--chunk-size', '256K']);
  });

  afterAll(async () => {
    await nbdkit?.stop();
    await removeTempDir(dir);
  });

  it('backs up exactly through the delay filter (full, then incremental)', async () => {
    await backupExact();
    await qemuIo(image, 'qcow2', scattered(10));
    await backupExact();
  });

  it('commits nothing on EIO mid-backup, merges the bitmap back, and the next backup has every change', async () => {
    const token = await latestToken();
    const before = (await listPoints(repo, ['--vm', VM])).length;
    await qemuIo(image, 'qcow2', scattered(64));
    const work = join(dir, 'work-eio');
    await mkdir(work);
    const err = await failingBackup(work, 8, () => writeFile(trigger, ''));
    await rm(trigger);
    // qemu-nbd 7.2 answers a failed read with an error reply and then drops the
    // connection; the client retries on fresh connections, then gives up.
    const failed = isChunkvaultError(err, 'REMOTE_ERROR') || isChunkvaultError(err, 'CONNECT_FAILED');
    expect(failed, String(err)).toBe(true);
    await expectRolledBack(before, token, work);
    await qemuIo(image, 'qcow2', scattered(8));
    const point = await backupExact();
    expect((await listPoints(repo, ['--vm', VM])).find((p) => p.id === point)?.mode).toBe('incremental');
  });

  it('commits nothing when qemu-nbd is killed mid-backup, and the next backup has every change', async () => {
    const token = await latestToken();
    const before = (await listPoints(repo, ['--vm', VM])).length;
    await qemuIo(image, 'qcow2', scattered(64));
    const work = join(dir, 'work-kill');
    await mkdir(work);
    let killed = 0;
    const err = await failingBackup(work, 8, async () => {
      const [sub] = await readdir(work);
      killed = Number((await readFile(join(work, sub!, 'qemu-nbd.pid'), 'utf8')).trim());
      process.kill(killed, 'SIGKILL');
    });
    expect(killed).toBeGreaterThan(0);
    expect(isChunkvaultError(err, 'CONNECT_FAILED'), String(err)).toBe(true);
    expect(isRunning(killed)).toBe(false);
    await expectRolledBack(before, token, work);
    await qemuIo(image, 'qcow2', scattered(8));
    await backupExact();
  });

  it('stops cleanly on SIGTERM: exit 130, qemu-nbd gone, work directory removed, bitmaps as before', async () => {
    const token = await latestToken();
    const before = (await listPoints(repo, ['--vm', VM])).length;
    await qemuIo(image, 'qcow2', scattered(16));
    const tmp = join(dir, 'tmp-cli');
    await mkdir(tmp);
    // A full read of the whole disk through the delay filter: long enough to interrupt.
    const args = ['backup', `kvm:${image}`, '--repo', repo, '--vm', VM, '--full', '--json'];
    const cliRun = startCli(args, { env: { TMPDIR: tmp } });
    let pid = 0;
    await waitFor(async () => {
      const [sub] = await readdir(tmp);
      if (!sub) return false;
      const text = await readFile(join(tmp, sub, 'qemu-nbd.pid'), 'utf8').catch(() => '');
      pid = Number(text.trim());
      return pid > 0;
    }, 30_000, 5);
    cliRun.child.kill('SIGTERM');
    const r = await cliRun.result;
    expectCliError(r, 'INTERRUPTED', args);
    expect(isRunning(pid)).toBe(false);
    await expectRolledBack(before, token, tmp);
    await backupExact();
  });

  it('leaves a repository that verifies, every point restoring exactly', async () => {
    await checkRepo(repo);
    for (const [id, sha] of expected) expect(await restoreSha(repo, id, dir), `restore of ${id}`).toBe(sha);
  });
});

