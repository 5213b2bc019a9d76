// NBD over TLS against a real nbdkit (`--tls=require`), with certificates made by openssl
// at test time: verified by CA file or by pinned fingerprint; a wrong CA, a wrong pin, a
// wrong host name, and plain NBD to a TLS-only server are all TLS_FAILED.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  type RunningServer,
  describeWithPeers,
  freePort,
  makeTempDir,
  selfDescribing,
  startNbdkit,
} from '../../test/fixtures/peers.js';
import { type TestPki, makeTestPki } from '../../test/fixtures/tls.js';
import { NbdClient } from './index.js';

const SIZE = 4 * 1024 * 1024;

describeWithPeers('NbdClient over TLS against nbdkit', ['nbdkit', 'openssl'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  let pki: TestPki;
  let otherPki: TestPki;
  let data: Buffer;
  let tcp: RunningServer;
  let unix: RunningServer;
  let plain: RunningServer;
  const clients: NbdClient[] = [];

  async function client(uri: string): Promise<NbdClient> {
    const connected = await NbdClient.connect({ uri, connectTimeoutMs: 5000 });
    clients.push(connected);
    return connected;
  }

  function hostPort(server: RunningServer): string {
    return `127.0.0.1:${server.port}`;
  }

  beforeAll(async () => {
    dir = await makeTempDir();
    [pki, otherPki] = await Promise.all([
      makeTestPki(join(dir.path, 'pki')),
      makeTestPki(join(dir.path, 'other-pki'), 'some other CA'),
    ]);
    data = selfDescribing(SIZE, 0x7171n);
    const image = join(dir.path, 'disk.img');
    await writeFile(image, data);
    const tlsArgs = ['--tls=require', `--tls-certificates=${pki.dir}`, 'file', image];
    tcp = await startNbdkit({ dir: dir.path, port: await freePort(), tls: true }, tlsArgs);
    unix = await startNbdkit({ dir: dir.path, tls: true }, tlsArgs);
    plain = await startNbdkit({ dir: dir.path, port: await freePort() }, ['--tls=off', 'file', image]);
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await Promise.allSettled([tcp, unix, plain].map((s) => s?.stop()));
    await dir?.remove();
  });

  it('reads over TLS verified by a CA file', async () => {
    const nbd = await client(`nbds://${hostPort(tcp)}/?tls-ca=${pki.caFile}`);
    expect(nbd.info.tls).toBe(true);
    const target = new Uint8Array(SIZE);
    await nbd.readInto(target, 0);
    expect(Buffer.compare(Buffer.from(target), data)).toBe(0);
    expect(nbd.describe()).toBe(`nbds://${hostPort(tcp)}/`);
  });

  it('reads over TLS verified by a pinned certificate, on TCP and on a unix socket', async () => {
    const pin = `sha256:${pki.serverPin.toUpperCase().replace(/(..)(?!$)/g, '$1:')}`;
    const overTcp = await client(`nbds://${hostPort(tcp)}/?tls-pin=${pin}`);
    const overUnix = await client(`nbds+unix:///?socket=${unix.socketPath}&tls-pin=sha256:${pki.serverPin}`);
    for (const nbd of [overTcp, overUnix]) {
      const target = new Uint8Array(65536);
      await nbd.readInto(target, 1_000_000);
      expect(Buffer.compare(Buffer.from(target), data.subarray(1_000_000, 1_065_536))).toBe(0);
    }
  });

  it('refuses a server whose certificate another CA signed', async () => {
    await expect(NbdClient.connect(`nbds://${hostPort(tcp)}/?tls-ca=${otherPki.caFile}`)).rejects.toMatchObject({
      code: 'TLS_FAILED',
    });
  });

  it('refuses a server whose certificate does not match the pin', async () => {
    const error = await NbdClient.connect(`nbds://${hostPort(tcp)}/?tls-pin=sha256:${otherPki.serverPin}`).catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: 'TLS_FAILED',
      details: { expected: `sha256:${otherPki.serverPin}`, actual: `sha256:${pki.serverPin}` },
    });
  });

  it('refuses a certificate that does not name the host', async () => {
    await expect(
      NbdClient.connect(`nbds://${hostPort(tcp)}/?tls-ca=${pki.caFile}&tls-hostname=nbd.example.com`),
    ).rejects.toMatchObject({ code: 'TLS_FAILED' });
  });

  it('plain NBD to a TLS-only server is TLS_FAILED (server requires TLS)', async () => {
    await expect(NbdClient.connect(`nbd://${hostPort(tcp)}/`)).rejects.toMatchObject({ code: 'TLS_FAILED' });
  });

  it('TLS to a server without TLS is TLS_FAILED (STARTTLS refused), never a plain fallback', async () => {
    await expect(NbdClient.connect(`nbds://${hostPort(plain)}/?tls-ca=${pki.caFile}`)).rejects.toMatchObject({
      code: 'TLS_FAILED',
    });
  });

  it('a missing CA file is INVALID_ARGUMENT', async () => {
    await expect(NbdClient.connect(`nbds://${hostPort(tcp)}/?tls-ca=${dir.path}/absent.pem`)).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});
