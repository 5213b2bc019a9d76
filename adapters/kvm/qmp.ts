/**
 * A small QMP (QEMU Machine Protocol) client: JSON messages over a unix socket.
 *
 * Terms (from QEMU's docs/interop/qmp-spec):
 * - greeting: the first message the server sends, `{"QMP": {version, capabilities}}`.
 *   The client must answer with `qmp_capabilities` before any other command.
 * - command: `{"execute": NAME, "arguments": {...}, "id": N}`; its reply carries the
 *   same `id` and either `return` or `error: {class, desc}`. Replies come in order, but
 *   we match by id anyway.
 * - event: `{"event": NAME, "data": {...}, "timestamp": {...}}`, unsolicited; kept in a
 *   bounded list for `waitEvent`, otherwise ignored.
 *
 * Error mapping (all `ChunkvaultError`): cannot connect -> CONNECT_FAILED; no reply in
 * time -> TIMEOUT; an `error` reply -> REMOTE_ERROR with `details.qmpClass` (QEMU's
 * error class, e.g. `GenericError`, `DeviceNotFound`) and `details.command`; the
 * connection closed with commands pending -> CONNECT_FAILED; anything that is not a
 * QMP message -> PROTOCOL_ERROR. Once a connection has failed, every later call fails
 * with the same error (sticky).
 */
import { connect, type Socket } from 'node:net';
import { ChunkvaultError } from '../../engine/errors.js';

/** One QMP event as the server sent it. */
export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
}

export interface QmpOptions {
  /** Connect + greeting + capabilities negotiation (default 10 000 ms). */
  readonly connectTimeoutMs?: number;
  /** Default per-command timeout (default 30 000 ms). */
  readonly commandTimeoutMs?: number;
}

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: ChunkvaultError) => void;
  readonly timer: NodeJS.Timeout;
}

interface EventWaiter {
  readonly match: (e: QmpEvent) => boolean;
  readonly resolve: (e: QmpEvent) => void;
}

/** Events kept for `waitEvent`: enough for one backup's job and export events. */
const MAX_EVENTS = 256;
/** A QMP reply larger than this is not QMP (query replies are a few hundred KiB at most). */
const MAX_LINE = 64 * 1024 * 1024;

export class QmpClient {
  private buffered = '';
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly waiters = new Set<EventWaiter>();
  private readonly kept: QmpEvent[] = [];
  private failure: ChunkvaultError | null = null;
  private greeted: (() => void) | null = null;
  private hasGreeting = false;
  private onFailure: ((err: ChunkvaultError) => void) | null = null;

  private constructor(
    private readonly socket: Socket,
    private readonly path: string,
    private readonly commandTimeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.onData(text));
    socket.on('error', (err: NodeJS.ErrnoException) => this.fail(this.lost(err.message, err)));
    socket.on('close', () => this.fail(this.lost('connection closed')));
  }

  /**
   * Connects to the QMP socket at `path`, reads the greeting and leaves negotiation
   * mode. Rejects with CONNECT_FAILED, TIMEOUT or PROTOCOL_ERROR.
   */
  static async connect(path: string, options: QmpOptions = {}): Promise<QmpClient> {
    const connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    const socket = await dial(path, connectTimeoutMs);
    const client = new QmpClient(socket, path, options.commandTimeoutMs ?? 30_000);
    try {
      await client.greeting(connectTimeoutMs);
      await client.execute('qmp_capabilities', undefined, { timeoutMs: connectTimeoutMs });
      return client;
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** Events received so far and not yet taken by `waitEvent` (oldest first). */
  get events(): readonly QmpEvent[] {
    return this.kept;
  }

  /**
   * Runs one command; resolves with its `return` value. Rejects with REMOTE_ERROR
   * (`details: {command, qmpClass}`) when QEMU answers with an error.
   */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, o: { timeoutMs?: number } = {}): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const timeoutMs = o.timeoutMs ?? this.commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ChunkvaultError('TIMEOUT', `QMP ${command} got no reply within ${timeoutMs} ms`, { details: { command, socket: this.path } }));
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject, timer });
      this.socket.write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n');
    });
  }

  /**
   * Resolves with the first event (already received, or arriving within `timeoutMs`)
   * that `match` accepts, and removes it from `events`. Rejects with TIMEOUT.
   */
  waitEvent(match: (e: QmpEvent) => boolean, timeoutMs = this.commandTimeoutMs): Promise<QmpEvent> {
    const at = this.kept.findIndex(match);
    if (at >= 0) return Promise.resolve(this.kept.splice(at, 1)[0] as QmpEvent);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<QmpEvent>((resolve, reject) => {
      const waiter: EventWaiter = {
        match,
        resolve: (e) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new ChunkvaultError('TIMEOUT', `no matching QMP event within ${timeoutMs} ms`, { details: { socket: this.path } }));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  /** Closes the socket; pending commands fail with CONNECT_FAILED. Idempotent. */
  close(): void {
    this.fail(this.lost('client closed'));
    this.socket.destroy();
  }

  /** Waits for the greeting; a failure of the connection meanwhile rejects at once. */
  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => settle(new ChunkvaultError('TIMEOUT', `no QMP greeting from ${this.path} within ${timeoutMs} ms (QEMU serves one client per QMP monitor: is another one connected?)`, { details: { socket: this.path } })), timeoutMs);
      const settle = (err?: ChunkvaultError): void => {
        clearTimeout(timer);
        this.greeted = null;
        this.onFailure = null;
        if (err) reject(err);
        else resolve();
      };
      this.greeted = () => settle();
      this.onFailure = settle;
      if (this.hasGreeting) settle();
      else if (this.failure) settle(this.failure);
    });
  }

  private onData(text: string): void {
    this.buffered += text;
    if (this.buffered.length > MAX_LINE) {
      this.fail(new ChunkvaultError('PROTOCOL_ERROR', `QMP message from ${this.path} exceeds ${MAX_LINE} bytes`, { details: { socket: this.path } }));
      this.socket.destroy();
      return;
    }
    for (let nl = this.buffered.indexOf('\n'); nl >= 0 && !this.failure; nl = this.buffered.indexOf('\n')) {
      const line = this.buffered.slice(0, nl).trim();
      this.buffered = this.buffered.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
      if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) throw new TypeError('not an object');
    } catch (err) {
      this.fail(new ChunkvaultError('PROTOCOL_ERROR', `QMP peer ${this.path} sent a non-JSON message`, { cause: err, details: { socket: this.path, line: line.slice(0, 200) } }));
      this.socket.destroy();
      return;
    }
    if ('QMP' in msg) {
      this.hasGreeting = true;
      this.greeted?.();
    }
    else if (typeof msg['event'] === 'string') this.onEvent({ event: msg['event'], data: (msg['data'] ?? {}) as Record<string, unknown> });
    else this.onReply(msg);
  }

  private onEvent(e: QmpEvent): void {
    for (const waiter of this.waiters) {
      if (waiter.match(e)) {
        waiter.resolve(e);
        return;
      }
    }
    this.kept.push(e);
    if (this.kept.length > MAX_EVENTS) this.kept.shift();
  }

  private onReply(msg: Record<string, unknown>): void {
    const id = msg['id'];
    const pending = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (!pending) return; // a reply to a command that timed out: nobody waits for it
    this.pending.delete(id as number);
    clearTimeout(pending.timer);
    const error = msg['error'] as { class?: unknown; desc?: unknown } | undefined;
    if (error) {
      const qmpClass = typeof error.class === 'string' ? error.class : 'GenericError';
      const desc = typeof error.desc === 'string' ? error.desc : JSON.stringify(error);
      pending.reject(new ChunkvaultError('REMOTE_ERROR', `QMP ${pending.command} failed: ${desc}`, { details: { command: pending.command, qmpClass, socket: this.path } }));
    } else if ('return' in msg) {
      pending.resolve(msg['return']);
    } else {
      pending.reject(new ChunkvaultError('PROTOCOL_ERROR', `QMP reply to ${pending.command} has neither return nor error`, { details: { command: pending.command, socket: this.path } }));
    }
  }

  private lost(reason: string, cause?: unknown): ChunkvaultError {
    return new ChunkvaultError('CONNECT_FAILED', `QMP connection to ${this.path} lost: ${reason}`, {
      ...(cause === undefined ? {} : { cause }),
      details: { socket: this.path, reason: 'connection-lost' },
    });
  }

  private fail(err: ChunkvaultError): void {
    if (this.failure) return;
    this.failure = err;
    this.onFailure?.(err);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }
}

function dial(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = connect({ path });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ChunkvaultError('TIMEOUT', `QMP connect to ${path} timed out after ${timeoutMs} ms`, { details: { socket: path } }));
    }, timeoutMs);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new ChunkvaultError('CONNECT_FAILED', `cannot connect to QMP socket ${path}: ${err.message}`, { cause: err, details: { socket: path, errno: err.code ?? null } }));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
  });
}
