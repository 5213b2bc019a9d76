// NbdClient against a real qemu-nbd: a qcow2 with data, zero clusters and a persistent
// dirty bitmap, served over a unix socket and over TCP. Data is checked against
// `qemu-img convert` to raw; block status and the bitmap against `nbdinfo --map`.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  type MapEntry,
  type RunningServer,
  coalesceMap,
  describeWithPeers,
  freePort,
  makeTempDir,
  nbdinfoMap,
  run,
  startQemuNbd,
} from '../../test/fixtures/peers.js';
import { type BlockStatusExtent, NbdClient } from './index.js';

const MIB = 1024 * 1024;
const KIB = 1024;
const SIZE = 64 * MIB;

async function collect<T>(source: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of source) out.push(item);
  return out;
}

function asMap(extents: readonly BlockStatusExtent[]): MapEntry[] {
  return extents.map((e) => ({ offset: e.offset, length: e.length, type: e.flags }));
}

/** Oracle entries whose type passes `keep`, adjacent ones merged, as plain extents. */
function runsOf(entries: readonly MapEntry[], keep: (type: number) => boolean): { offset: number; length: number }[] {
  const marked = entries.map((e) => ({ ...e, type: keep(e.type) ? 1 : 0 }));
  return coalesceMap(marked)
    .filter((e) => e.type === 1)
    .map(({ offset, length }) => ({ offset, length }));
}

describeWithPeers('NbdClient against qemu-nbd', ['qemu-nbd', 'qemu-img', 'qemu-io', 'nbdinfo'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  let raw: Buffer;
  let unix: RunningServer;
  let tcp: RunningServer;
  const clients: NbdClient[] = [];

  async function client(options: Parameters<typeof NbdClient.connect>[0]): Promise<NbdClient> {
    const connected = await NbdClient.connect(options);
    clients.push(connected);
    return connected;
  }

  beforeAll(async () => {
    dir = await makeTempDir();
    const image = join(dir.path, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(SIZE)]);
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xaa 0 4M', '-c', 'write -P 0x11 20M 3M', image]);
    await run('qemu-img', ['bitmap', '--add', '-f', 'qcow2', image, 'bk1']);
    await run('qemu-io', [
      '-f', 'qcow2', '-c', 'write -P 0xcc 1M 64k', '-c', 'write -P 0xdd 40M 4k', '-c', 'write -z 21M 1M', image,
    ]);
    const rawPath = join(dir.path, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, rawPath]);
    raw = await readFile(rawPath);
    unix = await startQemuNbd({ dir: dir.path }, { image, format: 'qcow2', bitmap: 'bk1', shared: 8 });
    tcp = await startQemuNbd({ dir: dir.path, port: await freePort() }, { image, format: 'qcow2', bitmap: 'bk1', shared: 8 });
  });

  afterAll(async () => {
    await Promise.allSettled(clients.map((c) => c.close()));
    await Promise.allSettled([unix?.stop(), tcp?.stop()]);
    await dir?.remove();
  });

  it('reads the whole disk over a unix socket, equal to qemu-img convert', async () => {
    const nbd = await client(unix.uri);
    expect(nbd.sizeBytes).toBe(SIZE);
    expect(nbd.info.exportName).toBe('disk');
    expect(nbd.info.readOnly).toBe(true);
    expect(nbd.info.structuredReplies).toBe(true);
    expect(nbd.blockSize.maximum).toBeGreaterThanOrEqual(nbd.blockSize.preferred);
    const target = new Uint8Array(SIZE).fill(0x77);
    await nbd.readInto(target, 0);
    expect(Buffer.compare(Buffer.from(target), raw)).toBe(0);
  });

  it('reads over TCP on 127.0.0.1 with two connections', async () => {
    const nbd = await client({ uri: tcp.uri, connections: 2, maxRequestBytes: 1 * MIB });
    const target = new Uint8Array(SIZE);
    await nbd.readInto(target, 0);
    expect(Buffer.compare(Buffer.from(target), raw)).toBe(0);
    const odd = new Uint8Array(5000);
    await nbd.readInto(odd, 1 * MIB - 17);
    expect(Buffer.compare(Buffer.from(odd), raw.subarray(1 * MIB - 17, 1 * MIB - 17 + 5000))).toBe(0);
  });

  it('base:allocation matches nbdinfo --map; zero and hole ranges are not allocated', async () => {
    const nbd = await client({ uri: unix.uri, metaContexts: ['base:allocation', 'qemu:dirty-bitmap:bk1'] });
    const oracle = await nbdinfoMap(unix.uri);
    const ours = await collect(nbd.blockStatus('base:allocation'));
    expect(coalesceMap(asMap(ours))).toEqual(coalesceMap(oracle));
    const allocated = await collect(nbd.allocatedExtents());
    expect(allocated).toEqual(runsOf(oracle, (type) => (type & 3) === 0));
    // The zero-written megabyte inside the 3 MiB data run is not allocated data.
    expect(allocated).toContainEqual({ offset: 20 * MIB, length: 1 * MIB });
    expect(allocated).toContainEqual({ offset: 22 * MIB, length: 1 * MIB });
  });

  it('dirtyExtents matches nbdinfo --map=qemu:dirty-bitmap:bk1', async () => {
    const nbd = await client({ uri: tcp.uri, metaContexts: ['qemu:dirty-bitmap:bk1'] });
    const oracle = await nbdinfoMap(tcp.uri, 'qemu:dirty-bitmap:bk1');
    const dirty = await collect(nbd.dirtyExtents('bk1'));
    expect(dirty).toEqual(runsOf(oracle, (type) => (type & 1) === 1));
    expect(dirty).toEqual([
      { offset: 1 * MIB, length: 64 * KIB },
      { offset: 21 * MIB, length: 1 * MIB },
      { offset: 40 * MIB, length: 64 * KIB },
    ]);
    const raw = await collect(nbd.blockStatus('qemu:dirty-bitmap:bk1', 0, SIZE));
    expect(coalesceMap(asMap(raw))).toEqual(coalesceMap(oracle));
  });

  it('a bitmap that was not negotiated, or does not exist, is INVALID_ARGUMENT', async () => {
    const nbd = await client(unix.uri);
    await expect(collect(nbd.dirtyExtents('bk1'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(NbdClient.connect({ uri: unix.uri, metaContexts: ['qemu:dirty-bitmap:bk9'] })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      details: { missing: ['qemu:dirty-bitmap:bk9'] },
    });
  });

  it('an export the server does not have is SOURCE_NOT_FOUND', async () => {
    const uri = tcp.uri.replace(/\/disk$/, '/nope');
    await expect(NbdClient.connect(uri)).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND' });
  });

  it('nothing listening is CONNECT_FAILED', async () => {
    const port = await freePort();
    await expect(NbdClient.connect(`nbd://127.0.0.1:${port}/disk`)).rejects.toMatchObject({ code: 'CONNECT_FAILED' });
    const socket = join(dir.path, 'absent.sock');
    await expect(NbdClient.connect(`nbd+unix:///disk?socket=${socket}`)).rejects.toMatchObject({ code: 'CONNECT_FAILED' });
  });
});
