// NbdClient against a real nbdkit: file and memory plugins, the error and delay filters,
// several connections, unaligned reads, and block status checked against nbdinfo --map.
import { randomInt } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  type RunningServer,
  coalesceMap,
  describeWithPeers,
  freePort,
  makeTempDir,
  nbdinfoMap,
  selfDescribing,
  startNbdkit,
} from '../../test/fixtures/peers.js';
import { NbdClient, type BlockStatusExtent } from './index.js';

const MIB = 1024 * 1024;
const SIZE = 32 * MIB;
/** Data regions of the sparse test image; everything else is a hole. */
const DATA = [
  { offset: 1 * MIB, length: 2 * MIB },
  { offset: 10 * MIB + 64 * 1024, length: 128 * 1024 },
  { offset: SIZE - 64 * 1024, length: 64 * 1024 },
];

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

describeWithPeers('NbdClient against nbdkit', ['nbdkit', 'nbdinfo'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  let image: string;
  let expected: Buffer;
  const servers: RunningServer[] = [];
  const clients: NbdClient[] = [];

  async function server(args: string[], tcp = false): Promise<RunningServer> {
    const started = await startNbdkit({ dir: dir.path, ...(tcp ? { port: await freePort() } : {}) }, args);
    servers.push(started);
    return started;
  }

  async function client(options: Parameters<typeof NbdClient.connect>[0]): Promise<NbdClient> {
    const connected = await NbdClient.connect(options);
    clients.push(connected);
    return connected;
  }

  beforeAll(async () => {
    dir = await makeTempDir();
    image = join(dir.path, 'sparse.img');
    expected = Buffer.alloc(SIZE);
    const pattern = selfDescribing(SIZE, 0x5a5a5a5a5a5a5a5an);
    const handle = await open(image, 'w');
    await handle.truncate(SIZE);
    for (const region of DATA) {
      pattern.copy(expected, region.offset, region.offset, region.offset + region.length);
      await handle.write(expected, region.offset, region.length, region.offset);
    }
    await handle.close();
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await Promise.allSettled(servers.map((s) => s.stop()));
    await dir?.remove();
  });

  it('reads a file export byte-exact over a unix socket, in many requests', async () => {
    const peer = await server(['file', image]);
    const nbd = await client({ uri: peer.uri, maxRequestBytes: 256 * 1024 });
    expect(nbd.sizeBytes).toBe(SIZE);
    expect(nbd.info.structuredReplies).toBe(true);
    expect(nbd.info.metaContexts).toContain('base:allocation');
    expect(nbd.info.maxRequestBytes).toBe(256 * 1024);
    const target = new Uint8Array(SIZE).fill(0xee);
    await nbd.readInto(target, 0);
    expect(Buffer.compare(Buffer.from(target), expected)).toBe(0);
    expect(nbd.describe()).toMatch(/^nbd\+unix:\/\/\//);
  });

  it('reads over TCP with several connections and many requests in flight', async () => {
    const peer = await server(['file', image], true);
    const nbd = await client({ uri: peer.uri, connections: 3, maxInFlight: 12, maxRequestBytes: 128 * 1024 });
    const target = new Uint8Array(SIZE);
    await Promise.all([nbd.readInto(target.subarray(0, SIZE / 2), 0), nbd.readInto(target.subarray(SIZE / 2), SIZE / 2)]);
    expect(Buffer.compare(Buffer.from(target), expected)).toBe(0);
  });

  it('reads unaligned ranges', async () => {
    const peer = await server(['file', image]);
    const nbd = await client({ uri: peer.uri, maxRequestBytes: 64 * 1024 });
    for (let i = 0; i < 40; i++) {
      const length = randomInt(1, 300_000);
      const offset = randomInt(0, SIZE - length);
      const target = new Uint8Array(length);
      await nbd.readInto(target, offset);
      expect(Buffer.compare(Buffer.from(target), expected.subarray(offset, offset + length))).toBe(0);
    }
    await expect(nbd.readInto(new Uint8Array(2), SIZE - 1)).rejects.toMatchObject({ code: 'SOURCE_TRUNCATED' });
  });

  it('block status matches nbdinfo --map, and allocatedExtents gives the data regions', async () => {
    const peer = await server(['file', image]);
    const nbd = await client(peer.uri);
    const ours: BlockStatusExtent[] = await collect(nbd.blockStatus('base:allocation'));
    const oracle = await nbdinfoMap(peer.uri);
    expect(coalesceMap(ours.map((e) => ({ offset: e.offset, length: e.length, type: e.flags })))).toEqual(coalesceMap(oracle));
    expect(await collect(nbd.allocatedExtents())).toEqual(DATA);
    // A window that starts and ends inside extents is cut to the window.
    const window = await collect(nbd.blockStatus('base:allocation', 1 * MIB - 100, 300));
    expect(window).toEqual([
      { offset: 1 * MIB - 100, length: 100, flags: 3 },
      { offset: 1 * MIB, length: 200, flags: 0 },
    ]);
  });

  it('a context the export lacks is INVALID_ARGUMENT naming the ones it offers', async () => {
    const peer = await server(['memory', '1M']);
    const error = await NbdClient.connect({ uri: peer.uri, metaContexts: ['qemu:dirty-bitmap:nope'] }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'INVALID_ARGUMENT', details: { missing: ['qemu:dirty-bitmap:nope'] } });
    expect((error as { details: { available: string[] } }).details.available).toContain('base:allocation');
  });

  it('an EIO from the error filter is REMOTE_ERROR {offset, length, errno} and is not retried', async () => {
    const trigger = join(dir.path, 'trigger');
    const peer = await server([
      '--filter=error', 'file', image, 'error-pread=EIO', 'error-pread-rate=100%', `error-pread-file=${trigger}`,
    ]);
    const nbd = await client({ uri: peer.uri, maxRequestBytes: 1 * MIB });
    const target = new Uint8Array(64 * 1024);
    await nbd.readInto(target, 1 * MIB);
    await writeFile(trigger, '');
    const error = await nbd.readInto(new Uint8Array(3 * MIB), 2 * MIB).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'REMOTE_ERROR', details: { errno: 'EIO' } });
    const details = (error as { details: { offset: number; length: number } }).details;
    expect(details.offset).toBeGreaterThanOrEqual(2 * MIB);
    expect(details.length).toBeLessThanOrEqual(1 * MIB);
    expect(nbd.stats.retries).toBe(0);
    expect(nbd.stats.reconnects).toBe(0);
  });

  it('a silent server makes the request TIMEOUT after bounded retries', async () => {
    const peer = await server(['--filter=delay', 'memory', '1M', 'rdelay=10']);
    const nbd = await client({ uri: peer.uri, requestTimeoutMs: 300, retries: 1, retryDelayMs: 10 });
    const started = Date.now();
    await expect(nbd.readInto(new Uint8Array(4096), 0)).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(nbd.stats.retries).toBe(1);
  });

  it('keeps requests in flight at once on a slow server', async () => {
    const peer = await server(['--filter=delay', 'file', image, 'rdelay=300ms']);
    const nbd = await client({ uri: peer.uri, maxRequestBytes: 64 * 1024, maxInFlight: 8 });
    const target = new Uint8Array(8 * 64 * 1024);
    const started = Date.now();
    await nbd.readInto(target, 1 * MIB);
    // Eight requests one after another would take 2.4 s.
    expect(Date.now() - started).toBeLessThan(1500);
    expect(Buffer.compare(Buffer.from(target), expected.subarray(1 * MIB, 1 * MIB + target.byteLength))).toBe(0);
  });

  it('close is idempotent and later use is refused', async () => {
    const peer = await server(['memory', '1M']);
    const nbd = await NbdClient.connect(peer.uri);
    await Promise.all([nbd.close(), nbd.close()]);
    await nbd.close();
    await expect(nbd.readInto(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('the image on disk is what we compared against', async () => {
    expect(Buffer.compare(await readFile(image), expected)).toBe(0);
  });
});
