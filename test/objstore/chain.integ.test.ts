/**
 * One chain-of-backups suite (test/objstore/_chain.ts) run on both back ends: a local
 * directory and an s3:// repository on a real Ceph RGW started once for this file
 * (skipped without Ceph locally, a failure under CI=true).
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { ensureBuilt, makeTempDir, removeTempDir } from '../helpers/cli.js';
import { describeWithPeersHint } from '../fixtures/peers.js';
import { CEPH_BINARIES, CEPH_INSTALL } from '../storage/_rgw.js';
import { localBackend, rgwBackend, type RgwBackend } from './_backends.js';
import { chainSuite } from './_chain.js';

describe('chain of backups on a local directory', () => {
  let dir: string;
  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('objstore-local');
  });
  afterAll(async () => removeTempDir(dir));
  chainSuite(() => localBackend(() => dir), () => dir);
});

describeWithPeersHint('chain of backups on Ceph RGW (s3://)', CEPH_BINARIES, CEPH_INSTALL, () => {
  let dir: string;
  let rgw: RgwBackend;
  beforeAll(async () => {
    ensureBuilt();
    dir = await makeTempDir('objstore-rgw');
    rgw = await rgwBackend(dir);
  });
  afterAll(async () => {
    await rgw?.stop();
    await removeTempDir(dir);
  });
  chainSuite(() => rgw, () => dir);
});
