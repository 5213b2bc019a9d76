// NbdClient against a tiny fake NBD server (net.createServer, unix socket in a temp dir)
// that completes the handshake and then answers however each test says: malformed
// replies, silence, out-of-order replies, simple replies, block size limits, the
// EXPORT_NAME fallback. Every failure must be a typed error, and nothing may hang.
import { type Server, type Socket, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../../test/fixtures/peers.js';
import { HandshakeChannel } from './channel.js';
import { NbdClient, type NbdClientOptions } from './index.js';
import {
  CMD,
  HANDSHAKE_FLAG,
  OPT,
  REP,
  REPLY_FLAG,
  REQUEST_BYTES,
  TRANSMISSION_FLAG,
  type ReplyChunk,
  type Request,
  decodeClientFlags,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeRequest,
  encodeChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeSimpleReply,
} from './protocol.js';

const SIZE = 1024 * 1024;
const DONE = REPLY_FLAG.DONE;

/** Byte i of the fake export. */
function byteAt(offset: number): number {
  return (offset * 7 + 3) & 0xff;
}

function dataOf(offset: number, length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => byteAt(offset + i));
}

interface Peer {
  /** 0-based index of this connection on the server. */
  readonly index: number;
  readonly socket: Socket;
  send(bytes: Uint8Array): void;
}

interface FakeOptions {
  readonly structured?: boolean;
  readonly go?: boolean;
  readonly noZeroes?: boolean;
  readonly greeting?: Uint8Array;
  readonly blockSize?: { minimum: number; preferred: number; maximum: number };
  /** Called for each request in the transmission phase. */
  readonly onRequest?: (request: Request, peer: Peer) => void;
}

/** A good structured reply to `request`, one data chunk. */
function goodRead(request: Request, peer: Peer): void {
  peer.send(encodeChunk(DONE, request.cookie, { kind: 'data', offset: request.offset, data: dataOf(request.offset, request.length) }));
}

async function serveOptions(channel: HandshakeChannel, peer: Peer, options: FakeOptions): Promise<void> {
  for (;;) {
    const header = decodeOptionHeader(await channel.read(16));
    const data = header.length ? await channel.read(header.length) : new Uint8Array(0);
    if (header.option === OPT.STRUCTURED_REPLY) {
      peer.send(encodeOptionReply(header.option, options.structured === false ? REP.ERR_UNSUP : REP.ACK));
    } else if (header.option === OPT.SET_META_CONTEXT) {
      if (decodeMetaContextRequest(data).queries.includes('base:allocation')) {
        peer.send(encodeOptionReply(header.option, REP.META_CONTEXT, encodeMetaContextReply({ contextId: 7, name: 'base:allocation' })));
      }
      peer.send(encodeOptionReply(header.option, REP.ACK));
    } else if (header.option === OPT.GO && options.go !== false) {
      const flags = TRANSMISSION_FLAG.HAS_FLAGS | TRANSMISSION_FLAG.READ_ONLY;
      peer.send(encodeOptionReply(header.option, REP.INFO, encodeInfoReply({ type: 'export', size: SIZE, transmissionFlags: flags })));
      if (options.blockSize) {
        peer.send(encodeOptionReply(header.option, REP.INFO, encodeInfoReply({ type: 'block-size', ...options.blockSize })));
      }
      peer.send(encodeOptionReply(header.option, REP.ACK));
      return;
    } else if (header.option === OPT.EXPORT_NAME) {
      peer.send(encodeExportNameReply({ size: SIZE, transmissionFlags: TRANSMISSION_FLAG.HAS_FLAGS }, options.noZeroes !== false));
      return;
    } else {
      peer.send(encodeOptionReply(header.option, REP.ERR_UNSUP));
    }
  }
}

async function serveConnection(socket: Socket, index: number, options: FakeOptions): Promise<void> {
  socket.on('error', () => undefined);
  const channel = new HandshakeChannel();
  channel.attach(socket);
  const peer: Peer = { index, socket, send: (bytes) => socket.write(bytes) };
  const flags = HANDSHAKE_FLAG.FIXED_NEWSTYLE | (options.noZeroes === false ? 0 : HANDSHAKE_FLAG.NO_ZEROES);
  socket.write(options.greeting ?? encodeGreeting(flags));
  if (options.greeting) return;
  decodeClientFlags(await channel.read(4));
  await serveOptions(channel, peer, options);
  for (;;) {
    const request = decodeRequest(await channel.read(REQUEST_BYTES));
    if (request.type === CMD.DISC) return void socket.end();
    (options.onRequest ?? goodRead)(request, peer);
  }
}

class FakeServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  readonly requests: Request[] = [];
  connections = 0;

  constructor(
    readonly path: string,
    private readonly options: FakeOptions,
  ) {}

  get uri(): string {
    return `nbd+unix:///?socket=${this.path}`;
  }

  async start(): Promise<void> {
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      const options = { ...this.options, onRequest: this.record(this.options.onRequest ?? goodRead) };
      serveConnection(socket, this.connections++, options).catch(() => socket.destroy());
    });
    await new Promise<void>((resolve) => this.server?.listen(this.path, resolve));
  }

  private record(handler: (request: Request, peer: Peer) => void): (request: Request, peer: Peer) => void {
    return (request, peer) => {
      this.requests.push(request);
      handler(request, peer);
    };
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

const context = {
  dir: null as { path: string; remove: () => Promise<void> } | null,
  servers: [] as FakeServer[],
  clients: [] as NbdClient[],
  serial: 0,
};

beforeAll(async () => {
  context.dir = await makeTempDir();
});

afterAll(async () => {
  await Promise.allSettled(context.clients.map((c) => c.close()));
  await Promise.allSettled(context.servers.map((s) => s.stop()));
  await context.dir?.remove();
});

async function fake(options: FakeOptions): Promise<FakeServer> {
  const server = new FakeServer(join(context.dir?.path ?? '.', `fake-${++context.serial}.sock`), options);
  await server.start();
  context.servers.push(server);
  return server;
}

async function connect(server: FakeServer, options: Partial<NbdClientOptions> = {}): Promise<NbdClient> {
  const client = await NbdClient.connect({ uri: server.uri, requestTimeoutMs: 2000, retryDelayMs: 5, ...options });
  context.clients.push(client);
  return client;
}

/** A server whose reply to every read is `reply(request)`. */
async function replying(reply: (request: Request) => Uint8Array | Uint8Array[]): Promise<NbdClient> {
  const server = await fake({ onRequest: (request, peer) => [reply(request)].flat().forEach((b) => peer.send(b)) });
  return connect(server);
}

function chunk(request: Request, body: ReplyChunk, flags = DONE): Uint8Array {
  return encodeChunk(flags, request.cookie, body);
}

async function readError(client: NbdClient, length = 4096, offset = 0): Promise<unknown> {
  return client.readInto(new Uint8Array(length), offset).then(
    () => null,
    (err: unknown) => err,
  );
}

describe('NbdClient against a fake server: malformed replies', () => {
  it('reads data, holes and out-of-order, coalesced replies correctly', async () => {
    const pending: Request[] = [];
    const server = await fake({
      onRequest: (request, peer) => {
        pending.push(request);
        if (pending.length < 4) return;
        // Answer all four at once, last first, each as hole + data chunks.
        const bytes = pending.reverse().flatMap((r) => {
          const half = r.length / 2;
          return [
            encodeChunk(0, r.cookie, { kind: 'data', offset: r.offset + half, data: dataOf(r.offset + half, half) }),
            encodeChunk(0, r.cookie, { kind: 'hole', offset: r.offset, length: half }),
            encodeChunk(DONE, r.cookie, { kind: 'none' }),
          ];
        });
        pending.length = 0;
        peer.send(Buffer.concat(bytes));
      },
    });
    const client = await connect(server, { maxRequestBytes: 64 * 1024, maxInFlight: 4 });
    const target = new Uint8Array(256 * 1024).fill(0xff);
    await client.readInto(target, 0);
    for (let piece = 0; piece < 4; piece++) {
      const base = piece * 64 * 1024;
      expect(target.subarray(base, base + 32 * 1024).every((b) => b === 0)).toBe(true);
      expect(Buffer.compare(target.subarray(base + 32 * 1024, base + 64 * 1024), dataOf(base + 32 * 1024, 32 * 1024))).toBe(0);
    }
  });

  it('a bad reply magic is PROTOCOL_ERROR, not retried', async () => {
    const client = await replying(() => Uint8Array.from([0xde, 0xad, 0xbe, 0xef, ...new Uint8Array(40)]));
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR' });
    expect(client.stats.retries).toBe(0);
  });

  it('a reply for an unknown cookie is PROTOCOL_ERROR', async () => {
    const client = await replying((r) => encodeChunk(DONE, r.cookie + 1000n, { kind: 'data', offset: r.offset, data: dataOf(r.offset, r.length) }));
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR', message: expect.stringMatching(/unknown cookie/) });
  });

  it('a data chunk beyond the request is PROTOCOL_ERROR', async () => {
    const client = await replying((r) => chunk(r, { kind: 'data', offset: r.offset + 1, data: dataOf(r.offset, r.length) }));
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR', message: expect.stringMatching(/outside the request/) });
  });

  it('overlapping chunks are PROTOCOL_ERROR', async () => {
    const client = await replying((r) => [
      chunk(r, { kind: 'hole', offset: r.offset, length: r.length }, 0),
      chunk(r, { kind: 'data', offset: r.offset, data: dataOf(r.offset, 512) }),
    ]);
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR', message: expect.stringMatching(/overlaps/) });
  });

  it('a reply that does not cover the request is PROTOCOL_ERROR', async () => {
    const client = await replying((r) => chunk(r, { kind: 'data', offset: r.offset, data: dataOf(r.offset, r.length / 2) }));
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR', message: expect.stringMatching(/covered/) });
  });

  it('a hole chunk of the wrong length is PROTOCOL_ERROR', async () => {
    const client = await replying((r) => {
      const bytes = chunk(r, { kind: 'hole', offset: r.offset, length: r.length });
      const view = new DataView(bytes.buffer, bytes.byteOffset);
      view.setUint32(16, 16); // header says 16 bytes of payload, hole chunks have 12
      return [bytes, new Uint8Array(4)];
    });
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR' });
  });

  it('a simple reply to a read after structured replies were agreed is PROTOCOL_ERROR', async () => {
    const client = await replying((r) => [encodeSimpleReply({ errno: 0, cookie: r.cookie }), dataOf(r.offset, r.length)]);
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR' });
  });

  it('an ERROR_OFFSET chunk is REMOTE_ERROR with the errno name, offset and message', async () => {
    const client = await replying((r) => chunk(r, { kind: 'error', errno: 5, message: 'disk on fire', offset: r.offset + 100 }));
    expect(await readError(client, 8192, 4096)).toMatchObject({
      code: 'REMOTE_ERROR',
      details: { offset: 4096, length: 8192, errno: 'EIO', errorOffset: 4196, message: 'disk on fire' },
    });
    expect(client.stats.retries).toBe(0);
  });

  it('garbage after a good reply fails later requests with PROTOCOL_ERROR', async () => {
    let first = true;
    const client = await replying((r) => {
      if (!first) return new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n\r\n');
      first = false;
      return chunk(r, { kind: 'data', offset: r.offset, data: dataOf(r.offset, r.length) });
    });
    await client.readInto(new Uint8Array(100), 0);
    expect(await readError(client)).toMatchObject({ code: 'PROTOCOL_ERROR' });
  });

});

describe('NbdClient against a fake server: silence, drops and protocol variants', () => {
  it('a server that never answers gives TIMEOUT after bounded retries, without hanging', async () => {
    const server = await fake({ onRequest: () => undefined });
    const client = await connect(server, { requestTimeoutMs: 150, retries: 2 });
    const started = Date.now();
    expect(await readError(client)).toMatchObject({ code: 'TIMEOUT', details: { timeoutMs: 150 } });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(client.stats.retries).toBe(2);
    expect(server.connections).toBe(3);
  });

  it('a server that hangs up mid-reply is retried on a new connection', async () => {
    const server = await fake({
      onRequest: (request, peer) => {
        if (peer.index > 0) return goodRead(request, peer);
        const bytes = encodeChunk(DONE, request.cookie, { kind: 'data', offset: request.offset, data: dataOf(request.offset, request.length) });
        peer.socket.end(bytes.subarray(0, 100));
      },
    });
    const client = await connect(server);
    const target = new Uint8Array(4096);
    await client.readInto(target, 8192);
    expect(Buffer.compare(target, dataOf(8192, 4096))).toBe(0);
    expect(client.stats).toEqual({ reconnects: 1, retries: 1 });
  });

  it('ESHUTDOWN is retried on a new connection', async () => {
    const server = await fake({
      onRequest: (request, peer) => {
        if (peer.index > 0) return goodRead(request, peer);
        peer.send(encodeChunk(DONE, request.cookie, { kind: 'error', errno: 108, message: '', offset: null }));
      },
    });
    const client = await connect(server);
    await client.readInto(new Uint8Array(512), 0);
    expect(client.stats.retries).toBe(1);
  });

  it('works with simple replies when the server has no structured replies', async () => {
    const server = await fake({
      structured: false,
      onRequest: (request, peer) => {
        if (request.offset >= SIZE / 2) return peer.send(encodeSimpleReply({ errno: 22, cookie: request.cookie }));
        peer.send(Buffer.concat([encodeSimpleReply({ errno: 0, cookie: request.cookie }), dataOf(request.offset, request.length)]));
      },
    });
    const client = await connect(server);
    expect(client.info.structuredReplies).toBe(false);
    expect(client.info.metaContexts).toEqual([]);
    const target = new Uint8Array(10_000);
    await client.readInto(target, 1000);
    expect(Buffer.compare(target, dataOf(1000, 10_000))).toBe(0);
    expect(await readError(client, 100, SIZE / 2)).toMatchObject({ code: 'REMOTE_ERROR', details: { errno: 'EINVAL' } });
    // Without base:allocation every byte counts as allocated.
    const extents = [];
    for await (const extent of client.allocatedExtents()) extents.push(extent);
    expect(extents).toEqual([{ offset: 0, length: SIZE }]);
  });

  it('falls back to NBD_OPT_EXPORT_NAME when GO is unsupported, with and without NO_ZEROES', async () => {
    for (const noZeroes of [true, false]) {
      const server = await fake({ go: false, noZeroes });
      const client = await connect(server);
      expect(client.size).toBe(SIZE);
      const target = new Uint8Array(300);
      await client.readInto(target, 77);
      expect(Buffer.compare(target, dataOf(77, 300))).toBe(0);
    }
  });

  it('honours the minimum and maximum block sizes', async () => {
    const server = await fake({ blockSize: { minimum: 512, preferred: 4096, maximum: 64 * 1024 } });
    const client = await connect(server);
    expect(client.blockSize).toEqual({ minimum: 512, preferred: 4096, maximum: 64 * 1024 });
    expect(client.info.maxRequestBytes).toBe(64 * 1024);
    const target = new Uint8Array(200_001);
    await client.readInto(target, 333);
    expect(Buffer.compare(target, dataOf(333, 200_001))).toBe(0);
    const reads = server.requests.filter((r) => r.type === CMD.READ);
    expect(reads.length).toBeGreaterThanOrEqual(4);
    for (const r of reads) {
      expect(r.offset % 512).toBe(0);
      expect(r.length % 512).toBe(0);
      expect(r.length).toBeLessThanOrEqual(64 * 1024);
    }
  });

  it('loops on short block status replies and cuts an overlong last descriptor', async () => {
    const server = await fake({
      onRequest: (request, peer) => {
        // At most 100 KiB per reply, in two descriptors; the last runs 1 MiB too far.
        const first = Math.min(request.length, 60 * 1024);
        const descriptors = [{ length: first, flags: (request.offset / 1024) % 3 }];
        if (request.length > first) descriptors.push({ length: 40 * 1024 + SIZE, flags: 1 });
        peer.send(encodeChunk(DONE, request.cookie, { kind: 'block-status', contextId: 7, descriptors }));
      },
    });
    const client = await connect(server);
    const extents = [];
    for await (const extent of client.blockStatus('base:allocation', 10, SIZE - 20)) extents.push(extent);
    expect(extents[0]).toMatchObject({ offset: 10 });
    const last = extents[extents.length - 1] as { offset: number; length: number };
    expect(last.offset + last.length).toBe(SIZE - 10);
    for (let i = 1; i < extents.length; i++) {
      const previous = extents[i - 1] as { offset: number; length: number };
      expect((extents[i] as { offset: number }).offset).toBe(previous.offset + previous.length);
    }
  });

  it('a bad greeting is PROTOCOL_ERROR; an oldstyle server is refused', async () => {
    const bad = await fake({ greeting: new TextEncoder().encode('SSH-2.0-OpenSSH_9.2\r\n') });
    await expect(NbdClient.connect(bad.uri)).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
    const old = new Uint8Array(152);
    const view = new DataView(old.buffer);
    view.setBigUint64(0, 0x4e42444d41474943n);
    view.setBigUint64(8, 0x00420281861253n);
    const oldstyle = await fake({ greeting: old });
    await expect(NbdClient.connect(oldstyle.uri)).rejects.toMatchObject({
      code: 'PROTOCOL_ERROR',
      message: expect.stringMatching(/oldstyle/),
    });
  });

  it('a server silent during the handshake gives TIMEOUT', async () => {
    const silent = await fake({ greeting: new Uint8Array(4) });
    await expect(NbdClient.connect({ uri: silent.uri, connectTimeoutMs: 200 })).rejects.toMatchObject({ code: 'TIMEOUT' });
  });
});
