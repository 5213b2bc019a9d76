// QmpClient against a small QMP speaker on a unix socket in a temp dir: the happy
// path as QEMU's docs describe it, then every failure mode mapped to its code. The
// real QEMU is exercised by test/kvm/live.integ.test.ts.
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/index.js';
import { QmpClient } from './qmp.js';

type Handler = (msg: { execute: string; arguments?: Record<string, unknown>; id?: unknown }, reply: (obj: unknown) => void, socket: Socket) => void;

const GREETING = { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: ['oob'] } };

let dir: string;
let server: Server | null;
const sockets = new Set<Socket>();

async function serve(handler: Handler, o: { greeting?: boolean } = {}): Promise<string> {
  const path = join(dir, 'qmp.sock');
  server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    const send = (obj: unknown): void => void socket.write(JSON.stringify(obj) + '\r\n');
    if (o.greeting !== false) send(GREETING);
    let buffered = '';
    socket.on('data', (b) => {
      buffered += b.toString();
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const msg = JSON.parse(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        if (msg.execute === 'qmp_capabilities') send({ return: {}, id: msg.id });
        else handler(msg, send, socket);
      }
    });
  });
  await new Promise<void>((resolve) => server!.listen(path, resolve));
  return path;
}

async function failure(p: Promise<unknown>): Promise<{ code: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (isChunkvaultError(err)) return { code: err.code, details: err.details };
    return { code: `not a ChunkvaultError: ${String(err)}`, details: {} };
  }
  return { code: 'resolved', details: {} };
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chunkvault-qmp-'));
});

afterEach(async () => {
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = null;
  await rm(dir, { recursive: true, force: true });
});

describe('QmpClient', () => {
  it('negotiates, runs commands matched by id, and keeps events for waitEvent', async () => {
    const path = await serve((msg, send) => {
      send({ event: 'JOB_STATUS_CHANGE', data: { id: 'j', status: 'running' }, timestamp: { seconds: 1, microseconds: 0 } });
      send({ return: { echo: msg.arguments ?? null }, id: msg.id });
    });
    const qmp = await QmpClient.connect(path);
    try {
      const [a, b] = await Promise.all([qmp.execute('x', { n: 1 }), qmp.execute('y')]);
      expect(a).toEqual({ echo: { n: 1 } });
      expect(b).toEqual({ echo: null });
      expect(qmp.events.length).toBe(2);
      const e = await qmp.waitEvent((ev) => ev.event === 'JOB_STATUS_CHANGE');
      expect(e.data).toEqual({ id: 'j', status: 'running' });
      expect(qmp.events.length).toBe(1);
    } finally {
      qmp.close();
    }
  });

  it('maps an error reply to REMOTE_ERROR with the QMP class', async () => {
    const path = await serve((msg, send) => send({ error: { class: 'DeviceNotFound', desc: "Node 'x' not found" }, id: msg.id }));
    const qmp = await QmpClient.connect(path);
    try {
      const f = await failure(qmp.execute('blockdev-del', { 'node-name': 'x' }));
      expect(f.code).toBe('REMOTE_ERROR');
      expect(f.details).toMatchObject({ command: 'blockdev-del', qmpClass: 'DeviceNotFound' });
      // The connection stays usable after an error reply.
      expect(await failure(qmp.execute('again'))).toMatchObject({ code: 'REMOTE_ERROR' });
    } finally {
      qmp.close();
    }
  });

  it('times out a command that gets no reply', async () => {
    const path = await serve(() => undefined);
    const qmp = await QmpClient.connect(path, { commandTimeoutMs: 100 });
    try {
      expect((await failure(qmp.execute('silent'))).code).toBe('TIMEOUT');
    } finally {
      qmp.close();
    }
  });

  it('fails pending commands with CONNECT_FAILED when QEMU goes away, and stays failed', async () => {
    const path = await serve((_msg, _send, socket) => socket.destroy());
    const qmp = await QmpClient.connect(path);
    expect((await failure(qmp.execute('quit'))).code).toBe('CONNECT_FAILED');
    expect((await failure(qmp.execute('more'))).code).toBe('CONNECT_FAILED');
    qmp.close();
  });

  it('refuses a peer that does not speak QMP', async () => {
    const path = await serve((_msg, _send, socket) => void socket.write('this is not json\n'));
    const qmp = await QmpClient.connect(path);
    expect((await failure(qmp.execute('x'))).code).toBe('PROTOCOL_ERROR');
    qmp.close();
  });

  it('reports a missing socket as CONNECT_FAILED and a silent one as TIMEOUT', async () => {
    expect((await failure(QmpClient.connect(join(dir, 'none.sock')))).code).toBe('CONNECT_FAILED');
    const path = await serve(() => undefined, { greeting: false });
    expect((await failure(QmpClient.connect(path, { connectTimeoutMs: 150 }))).code).toBe('TIMEOUT');
  });
});
