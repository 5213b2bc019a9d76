/**
 * One NBD connection: dial, handshake, then pipelined requests until closed.
 *
 * Terms:
 * - dial: the TCP or unix-socket connect (CONNECT_FAILED on refusal, TIMEOUT past the
 *   connect deadline, which also bounds the whole handshake).
 * - transmission: requests go out as soon as asked, any number in flight, each keyed
 *   by its cookie in the in-flight table; replies come back in any order and the reply
 *   parser frames them however the segments split.
 * - dead: after the socket closed, a protocol error or a request timeout, every pending
 *   request has been rejected and the connection refuses new ones. A dropped
 *   connection rejects with CONNECT_FAILED (`details.reason = 'connection-lost'`), which
 *   the client retries on a fresh connection; PROTOCOL_ERROR is not retried.
 * - close: the polite end. Waits for pending requests, sends NBD_CMD_DISC, ends TLS
 *   and the socket.
 */
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { ChunkvaultError, toChunkvaultError } from '../../engine/errors.js';
import { HandshakeChannel } from './channel.js';
import { type HandshakeIo, type NegotiatedExport, negotiate } from './handshake.js';
import { InflightTable, type StatusReply } from './inflight.js';
import { CMD, ESHUTDOWN, OPT, U32_MAX, encodeOption, encodeRequest, errnoName } from './protocol.js';
import { ReplyParser } from './reply-parser.js';
import { upgradeToTls } from './tls.js';
import { type NbdAddress, type NbdUri, formatNbdUri } from './uri.js';

export interface ConnectionOptions {
  readonly uri: NbdUri;
  /** Contexts to select with NBD_OPT_SET_META_CONTEXT. */
  readonly metaContexts: readonly string[];
  /** Fail the handshake when one of `metaContexts` is missing. */
  readonly requireMetaContexts: boolean;
  /** Bounds the dial plus the whole handshake. */
  readonly connectTimeoutMs: number;
  /** Bounds each request from send to its final reply. */
  readonly requestTimeoutMs: number;
}

function describeAddress(address: NbdAddress): string {
  return address.transport === 'tcp' ? `${address.host}:${address.port}` : address.path;
}

function dial(address: NbdAddress, timeoutMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket =
      address.transport === 'tcp'
        ? netConnect({ host: address.host, port: address.port })
        : netConnect({ path: address.path });
    const where = describeAddress(address);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ChunkvaultError('TIMEOUT', `NBD connect to ${where} timed out after ${timeoutMs} ms`, { details: { address: where } }));
    }, timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new ChunkvaultError('CONNECT_FAILED', `cannot connect to NBD server ${where}: ${err.message}`, {
          cause: err,
          details: { address: where, errno: err.code ?? null },
        }),
      );
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
  });
}

/** A sticky sink for late socket errors so none is ever unhandled. */
function ignoreErrors(stream: Duplex): void {
  stream.on('error', () => undefined);
}

interface Handshaken {
  readonly stream: Duplex;
  readonly negotiated: NegotiatedExport;
  readonly leftover: Buffer;
}

/** Option-level refusals leave the stream healthy: end it with NBD_OPT_ABORT. */
function abandon(stream: Duplex, error: unknown): void {
  const polite = error instanceof ChunkvaultError && ['INVALID_ARGUMENT', 'SOURCE_NOT_FOUND', 'REMOTE_ERROR'].includes(error.code);
  if (polite && stream.writable) {
    stream.end(encodeOption(OPT.ABORT));
    setTimeout(() => stream.destroy(), 1000).unref();
  } else {
    stream.destroy();
  }
}

async function handshake(socket: Socket, options: ConnectionOptions): Promise<Handshaken> {
  ignoreErrors(socket);
  const channel = new HandshakeChannel();
  channel.attach(socket);
  let stream: Duplex = socket;
  const { uri } = options;
  const io: HandshakeIo = {
    read: (n) => channel.read(n),
    write: (bytes) => channel.write(bytes),
    startTls: async () => {
      if (channel.detach().byteLength > 0) {
        throw new ChunkvaultError('PROTOCOL_ERROR', 'NBD handshake: server sent data before the TLS handshake');
      }
      const host = uri.address.transport === 'tcp' ? uri.address.host : undefined;
      const tlsSocket = await upgradeToTls(socket, uri.tls ?? {}, host);
      ignoreErrors(tlsSocket);
      stream = tlsSocket;
      channel.attach(tlsSocket);
    },
  };
  const work = negotiate(io, {
    exportName: uri.exportName,
    tls: uri.tls !== null,
    metaContexts: options.metaContexts,
    requireMetaContexts: options.requireMetaContexts,
  });
  work.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const where = formatNbdUri(uri);
      reject(new ChunkvaultError('TIMEOUT', `NBD handshake with ${where} timed out after ${options.connectTimeoutMs} ms`));
    }, options.connectTimeoutMs);
  });
  try {
    const negotiated = await Promise.race([work, deadline]);
    return { stream, negotiated, leftover: channel.detach(true) };
  } catch (err) {
    channel.detach();
    abandon(stream, err);
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

export class NbdConnection {
  /** What the handshake settled (size, flags, block sizes, contexts). */
  readonly export: NegotiatedExport;
  private readonly table: InflightTable;
  private readonly parser: ReplyParser;
  private readonly pending = new Set<Promise<unknown>>();
  private dead: ChunkvaultError | null = null;
  private closing: Promise<void> | null = null;
  private readonly closed: Promise<void>;

  private constructor(
    private readonly stream: Duplex,
    negotiated: NegotiatedExport,
    private readonly options: ConnectionOptions,
  ) {
    this.export = negotiated;
    this.table = new InflightTable({
      structured: negotiated.structuredReplies,
      contextIds: new Set(negotiated.metaContexts.values()),
      timeoutMs: options.requestTimeoutMs,
      onTimeout: (error) => this.abort(this.lost('a request timed out', error)),
    });
    this.parser = new ReplyParser(this.table);
    this.closed = new Promise<void>((resolve) => stream.once('close', resolve));
    stream.on('data', (segment: Buffer) => this.onData(segment));
    stream.on('error', (err) => this.abort(this.lost(err.message, err)));
    stream.on('end', () => this.abort(this.lost('the server closed the connection')));
    stream.on('close', () => this.abort(this.lost('the connection closed')));
    stream.resume(); // paused since the handshake ended
  }

  /** Dials and negotiates. Rejects with CONNECT_FAILED, TIMEOUT, TLS_FAILED, SOURCE_NOT_FOUND, ... */
  static async open(options: ConnectionOptions): Promise<NbdConnection> {
    const socket = await dial(options.uri.address, options.connectTimeoutMs);
    const { stream, negotiated, leftover } = await handshake(socket, options);
    const connection = new NbdConnection(stream, negotiated, options);
    if (leftover.byteLength > 0) connection.onData(leftover);
    return connection;
  }

  /** True once the connection can take no more requests. */
  get isDead(): boolean {
    return this.dead !== null || this.closing !== null;
  }

  /** Requests sent and not yet answered. */
  get inFlight(): number {
    return this.table.size;
  }

  /** Reads `target.length` bytes at `offset` into `target` (one request). */
  async read(target: Uint8Array, offset: number): Promise<void> {
    this.checkRequest(offset, target.byteLength);
    const { cookie, done } = this.table.addRead(offset, target);
    this.send(CMD.READ, cookie, offset, target.byteLength);
    return this.track(done);
  }

  /** One NBD_CMD_BLOCK_STATUS; descriptors by context id (may cover less than asked). */
  async blockStatus(offset: number, length: number): Promise<StatusReply> {
    if (this.export.metaContexts.size === 0) {
      throw new ChunkvaultError('INVALID_ARGUMENT', 'NBD block status needs a negotiated metadata context');
    }
    this.checkRequest(offset, length);
    const { cookie, done } = this.table.addBlockStatus(offset, length);
    this.send(CMD.BLOCK_STATUS, cookie, offset, length);
    return this.track(done);
  }

  /** Soft disconnect: waits for pending requests, sends NBD_CMD_DISC. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    if (this.dead === null) {
      this.stream.end(encodeRequest({ flags: 0, type: CMD.DISC, cookie: 0n, offset: 0, length: 0 }));
      const grace = new Promise<void>((resolve) => setTimeout(resolve, 2000).unref());
      await Promise.race([this.closed, grace]);
    }
    this.abort(new ChunkvaultError('CONNECT_FAILED', 'NBD connection closed', { details: { reason: 'closed' } }));
  }

  private checkRequest(offset: number, length: number): void {
    if (this.dead) throw this.dead;
    if (this.closing) throw new ChunkvaultError('CONNECT_FAILED', 'NBD connection is closing', { details: { reason: 'closed' } });
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isInteger(length) || length < 1 || length > U32_MAX) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `bad NBD request range offset ${offset} length ${length}`, {
        details: { offset, length },
      });
    }
    if (offset + length > this.export.size) {
      throw new ChunkvaultError('INVALID_ARGUMENT', 'NBD request beyond the end of the export', {
        details: { offset, length, size: this.export.size },
      });
    }
  }

  private send(type: number, cookie: bigint, offset: number, length: number): void {
    this.stream.write(encodeRequest({ flags: 0, type, cookie, offset, length }));
  }

  private track<T>(done: Promise<T>): Promise<T> {
    const tracked = done.catch((err: unknown) => {
      // The spec asks a client that sees ESHUTDOWN to disconnect politely.
      if (err instanceof ChunkvaultError && err.details['errno'] === errnoName(ESHUTDOWN)) void this.close();
      throw err;
    });
    this.pending.add(tracked);
    const forget = (): void => void this.pending.delete(tracked);
    tracked.then(forget, forget);
    return tracked;
  }

  private onData(segment: Buffer): void {
    if (this.dead) return;
    try {
      this.parser.push(segment);
    } catch (err) {
      this.abort(toChunkvaultError(err, 'NBD reply'));
    }
  }

  private lost(why: string, cause?: unknown): ChunkvaultError {
    return new ChunkvaultError('CONNECT_FAILED', `NBD connection to ${formatNbdUri(this.options.uri)} lost: ${why}`, {
      cause,
      details: { reason: 'connection-lost' },
    });
  }

  /** Marks the connection dead, rejects every pending request with `error`, drops the socket. */
  private abort(error: ChunkvaultError): void {
    if (this.dead) return;
    this.dead = error;
    this.table.failAll(error);
    this.stream.destroy();
  }
}
