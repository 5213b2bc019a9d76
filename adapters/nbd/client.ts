/**
 * `NbdClient`: a read-only NBD disk as a `BlockSource`, over one or more connections.
 *
 * Terms:
 * - piece: one NBD request. A `readInto` is cut into pieces of at most the max request
 *   size (the server's maximum block size, capped by `maxRequestBytes`, default 32 MiB)
 *   on boundaries that are multiples of it; reads not aligned to the server's minimum
 *   block size go through a bounce buffer covering the aligned range.
 * - in flight: pieces sent and not answered, at most `maxInFlight` over the whole
 *   client; each goes to the connection with the fewest in flight. Several connections
 *   are safe even without NBD_FLAG_CAN_MULTI_CONN because this client never writes:
 *   that flag only promises cache coherence between writers and readers.
 * - retry: a piece that failed because its connection dropped (CONNECT_FAILED), timed
 *   out (TIMEOUT) or the server is shutting down (ESHUTDOWN) is sent again on a fresh
 *   connection, up to `retries` times with doubling delays from `retryDelayMs`. Reads
 *   and block status are idempotent, so this is safe. A server error (EIO, ...) is
 *   REMOTE_ERROR and is never retried; neither is PROTOCOL_ERROR or TLS_FAILED.
 * - reconnect: a dead connection is replaced the next time its slot is used; the new
 *   one must show the same export size, else PROTOCOL_ERROR.
 *
 * A `readInto` settles only after every one of its pieces has settled, so no late
 * reply writes into the caller's buffer afterwards (the BlockSource contract).
 */
import { ChunkvaultError, type ErrorDetails } from '../../engine/errors.js';
import type { BlockSource, Extent } from '../../engine/source.js';
import { NbdConnection, type ConnectionOptions } from './connection.js';
import type { BlockSizeInfo } from './handshake.js';
import {
  CONTEXT_BASE_ALLOCATION,
  CONTEXT_DIRTY_BITMAP_PREFIX,
  STATE,
  STATE_DIRTY,
  TRANSMISSION_FLAG,
  type StatusDescriptor,
  errnoName,
  ESHUTDOWN,
} from './protocol.js';
import { type NbdUri, formatNbdUri, parseNbdUri } from './uri.js';

export interface NbdClientOptions {
  /** `nbd://`, `nbds://`, `nbd+unix://`, `nbds+unix://` URI, or one already parsed. */
  readonly uri: string | NbdUri;
  /**
   * Metadata contexts to select, e.g. `['base:allocation', 'qemu:dirty-bitmap:bk1']`.
   * Each one listed must exist on the export (else INVALID_ARGUMENT at connect).
   * Default: `base:allocation` if the server has it.
   */
  readonly metaContexts?: readonly string[];
  /** Connections to open (default 1). Reads are spread over them. */
  readonly connections?: number;
  /** Requests in flight over the whole client (default 16). */
  readonly maxInFlight?: number;
  /** Per-request timeout (default 30 000 ms). */
  readonly requestTimeoutMs?: number;
  /** Connect + handshake timeout (default 30 000 ms). */
  readonly connectTimeoutMs?: number;
  /** Largest request sent (default 32 MiB; the server's maximum wins if smaller). */
  readonly maxRequestBytes?: number;
  /** Retries of a piece after a dropped connection or timeout (default 3). */
  readonly retries?: number;
  /** First retry delay, doubled each time (default 100 ms). */
  readonly retryDelayMs?: number;
}

/** What the server told us about the export. */
export interface NbdExportInfo {
  readonly exportName: string;
  readonly size: number;
  readonly transmissionFlags: number;
  readonly readOnly: boolean;
  readonly canMultiConn: boolean;
  readonly blockSize: BlockSizeInfo;
  /** Largest request this client sends. */
  readonly maxRequestBytes: number;
  readonly structuredReplies: boolean;
  /** Names of the selected metadata contexts. */
  readonly metaContexts: readonly string[];
  readonly tls: boolean;
}

/** One block status extent: `[offset, offset + length)` with the context's flags. */
export interface BlockStatusExtent extends Extent {
  readonly flags: number;
}

/** Counters for logs and tests. */
export interface NbdClientStats {
  /** Connections opened to replace dropped ones. */
  readonly reconnects: number;
  /** Pieces sent again after a retryable failure. */
  readonly retries: number;
}

interface Settings {
  readonly uri: NbdUri;
  readonly metaContexts: readonly string[];
  readonly requireMetaContexts: boolean;
  readonly connections: number;
  readonly maxInFlight: number;
  readonly requestTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly maxRequestBytes: number;
  readonly retries: number;
  readonly retryDelayMs: number;
}

const MIB = 1024 * 1024;
/** Largest block status query: descriptor lists stay small and u32 lengths never overflow. */
const MAX_STATUS_BYTES = 2 ** 31;

function positiveInt(name: string, value: number | undefined, fallback: number, minimum = 1): number {
  const result = value ?? fallback;
  if (!Number.isSafeInteger(result) || result < minimum) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `NbdClient option ${name} must be an integer >= ${minimum}`, {
      details: { option: name, value: String(value) },
    });
  }
  return result;
}

function settingsFrom(input: string | NbdClientOptions): Settings {
  const options: NbdClientOptions = typeof input === 'string' ? { uri: input } : input;
  const uri = typeof options.uri === 'string' ? parseNbdUri(options.uri) : options.uri;
  return {
    uri,
    metaContexts: options.metaContexts ?? [CONTEXT_BASE_ALLOCATION],
    requireMetaContexts: options.metaContexts !== undefined,
    connections: positiveInt('connections', options.connections, 1),
    maxInFlight: positiveInt('maxInFlight', options.maxInFlight, 16),
    requestTimeoutMs: positiveInt('requestTimeoutMs', options.requestTimeoutMs, 30_000),
    connectTimeoutMs: positiveInt('connectTimeoutMs', options.connectTimeoutMs, 30_000),
    maxRequestBytes: Math.min(positiveInt('maxRequestBytes', options.maxRequestBytes, 32 * MIB), 0xffffffff),
    retries: positiveInt('retries', options.retries, 3, 0),
    retryDelayMs: positiveInt('retryDelayMs', options.retryDelayMs, 100, 0),
  };
}

/** Largest request: the server's maximum capped by ours, kept a multiple of min (and preferred when possible). */
export function maxRequestFor(blockSize: BlockSizeInfo, cap: number): number {
  const limit = Math.min(blockSize.maximum, cap);
  const unit = limit >= blockSize.preferred ? blockSize.preferred : blockSize.minimum;
  return Math.max(blockSize.minimum, Math.floor(limit / unit) * unit);
}

/** Cuts `[offset, offset + length)` at multiples of `max`. */
export function splitRange(offset: number, length: number, max: number): Extent[] {
  const pieces: Extent[] = [];
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const next = Math.min(end, (Math.floor(pos / max) + 1) * max);
    pieces.push({ offset: pos, length: next - pos });
    pos = next;
  }
  return pieces;
}

/** Yields maximal runs of adjacent extents whose flags satisfy `keep`. */
export async function* mergeExtents(
  source: AsyncIterable<BlockStatusExtent>,
  keep: (flags: number) => boolean,
): AsyncGenerator<Extent> {
  let run: { offset: number; length: number } | null = null;
  for await (const extent of source) {
    if (!keep(extent.flags)) {
      if (run) yield run;
      run = null;
    } else if (run && run.offset + run.length === extent.offset) {
      run.length += extent.length;
    } else {
      if (run) yield run;
      run = { offset: extent.offset, length: extent.length };
    }
  }
  if (run) yield run;
}

function isRetryable(err: unknown): boolean {
  if (!(err instanceof ChunkvaultError)) return false;
  if (err.code === 'CONNECT_FAILED' || err.code === 'TIMEOUT') return true;
  return err.code === 'REMOTE_ERROR' && err.details['errno'] === errnoName(ESHUTDOWN);
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A counting semaphore; a released permit passes straight to the next waiter. */
class Limiter {
  private active = 0;
  private readonly waiters: Array<() => void> = [];

  constructor(private readonly limit: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.limit) this.active++;
    else await new Promise<void>((resolve) => this.waiters.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.active--;
    }
  }
}

/** One connection position: the live connection, or the reconnect under way. */
interface Slot {
  connection: NbdConnection | null;
  opening: Promise<NbdConnection> | null;
  active: number;
}

export class NbdClient implements BlockSource {
  private readonly slots: Slot[];
  private readonly limiter: Limiter;
  private readonly first: NbdConnection;
  private readonly counters = { reconnects: 0, retries: 0 };
  private closing: Promise<void> | null = null;
  /** The export as the first connection saw it. */
  readonly info: NbdExportInfo;

  private constructor(
    private readonly settings: Settings,
    first: NbdConnection,
  ) {
    this.first = first;
    this.slots = Array.from({ length: settings.connections }, (_, i) => ({
      connection: i === 0 ? first : null,
      opening: null,
      active: 0,
    }));
    this.limiter = new Limiter(settings.maxInFlight);
    this.info = exportInfo(first, settings.maxRequestBytes);
  }

  /**
   * Opens the client: connects and negotiates every connection. Rejects with
   * INVALID_ARGUMENT (bad URI or options, missing context), CONNECT_FAILED, TIMEOUT,
   * TLS_FAILED, SOURCE_NOT_FOUND (no such export) or PROTOCOL_ERROR. Not retried.
   */
  static async connect(uriOrOptions: string | NbdClientOptions): Promise<NbdClient> {
    const settings = settingsFrom(uriOrOptions);
    const first = await NbdConnection.open(connectionOptions(settings));
    const client = new NbdClient(settings, first);
    try {
      await Promise.all(client.slots.slice(1).map((slot) => client.connectionOf(slot, false)));
    } catch (err) {
      await client.close();
      throw err;
    }
    return client;
  }

  /** Export size in bytes. */
  get size(): number {
    return this.info.size;
  }

  get sizeBytes(): number {
    return this.info.size;
  }

  get blockSize(): BlockSizeInfo {
    return this.info.blockSize;
  }

  get stats(): NbdClientStats {
    return { ...this.counters };
  }

  describe(): string {
    return formatNbdUri(this.settings.uri);
  }

  /**
   * Fills `target` with the export's bytes from `offset`. Rejects with
   * SOURCE_TRUNCATED past the end, REMOTE_ERROR (`details: {offset, length, errno}`)
   * on a server error, TIMEOUT / CONNECT_FAILED once retries are spent.
   */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    this.checkRange(offset, target.byteLength);
    if (target.byteLength === 0) return;
    const { minimum } = this.info.blockSize;
    if (offset % minimum === 0 && target.byteLength % minimum === 0) return this.readAligned(target, offset);
    const start = offset - (offset % minimum);
    const end = Math.min(this.size, Math.ceil((offset + target.byteLength) / minimum) * minimum);
    const bounce = new Uint8Array(end - start);
    await this.readAligned(bounce, start);
    target.set(bounce.subarray(offset - start, offset - start + target.byteLength));
  }

  /**
   * Block status of `[offset, offset + length)` (default: the whole export) in the
   * named context, as consecutive extents covering the range exactly. The context
   * must have been selected at connect (INVALID_ARGUMENT otherwise).
   */
  async *blockStatus(context: string, offset = 0, length = this.size - offset): AsyncGenerator<BlockStatusExtent> {
    this.checkRange(offset, length);
    if (!this.info.metaContexts.includes(context)) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `NBD metadata context ${context} was not negotiated`, {
        details: { context, negotiated: [...this.info.metaContexts] },
      });
    }
    const { minimum } = this.info.blockSize;
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const start = pos - (pos % minimum);
      const stop = Math.min(this.size, Math.ceil(end / minimum) * minimum, start + MAX_STATUS_BYTES);
      const descriptors = await this.withRetry((connection) => statusOf(connection, context, start, stop - start));
      let at = start;
      for (const descriptor of descriptors) {
        const from = Math.max(at, pos);
        const to = Math.min(at + descriptor.length, end);
        if (to > from) yield { offset: from, length: to - from, flags: descriptor.flags };
        at += descriptor.length;
        if (at >= end) break;
      }
      if (at <= pos) throw noProgress(context, pos);
      pos = at;
    }
  }

  /**
   * Allocated data extents (base:allocation: neither hole nor zero), adjacent ones
   * merged. When the server offers no base:allocation, the whole range is one extent:
   * everything must be read.
   */
  async *allocatedExtents(offset = 0, length = this.size - offset): AsyncGenerator<Extent> {
    if (!this.info.metaContexts.includes(CONTEXT_BASE_ALLOCATION)) {
      this.checkRange(offset, length);
      if (length > 0) yield { offset, length };
      return;
    }
    const status = this.blockStatus(CONTEXT_BASE_ALLOCATION, offset, length);
    yield* mergeExtents(status, (flags) => (flags & (STATE.HOLE | STATE.ZERO)) === 0);
  }

  /**
   * Dirty extents of the qemu dirty bitmap `bitmap` (context `qemu:dirty-bitmap:NAME`,
   * which must be in `metaContexts` at connect), adjacent ones merged.
   */
  async *dirtyExtents(bitmap: string, offset = 0, length = this.size - offset): AsyncGenerator<Extent> {
    const status = this.blockStatus(`${CONTEXT_DIRTY_BITMAP_PREFIX}${bitmap}`, offset, length);
    yield* mergeExtents(status, (flags) => (flags & STATE_DIRTY) !== 0);
  }

  /** Waits for requests in flight, then disconnects every connection (NBD_CMD_DISC). Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.closeAll();
    return this.closing;
  }

  private async closeAll(): Promise<void> {
    const connections = await Promise.allSettled(this.slots.map((slot) => slot.opening ?? Promise.resolve(slot.connection)));
    const open = connections.flatMap((result) => (result.status === 'fulfilled' && result.value ? [result.value] : []));
    await Promise.allSettled([this.first, ...open].map((connection) => connection.close()));
  }

  private checkRange(offset: number, length: number): void {
    if (this.closing) throw new ChunkvaultError('INVALID_ARGUMENT', 'NbdClient is closed');
    const details: ErrorDetails = { offset, length, size: this.size };
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `bad NBD range offset ${offset} length ${length}`, { details });
    }
    if (offset + length > this.size) {
      throw new ChunkvaultError('SOURCE_TRUNCATED', `NBD export ends at ${this.size}, before ${offset + length}`, {
        details,
      });
    }
  }

  private async readAligned(target: Uint8Array, offset: number): Promise<void> {
    let firstError: unknown = null;
    const pieces = splitRange(offset, target.byteLength, this.info.maxRequestBytes);
    await Promise.allSettled(
      pieces.map((piece) =>
        this.limiter.run(async () => {
          if (firstError !== null) return; // the read failed already: skip what was queued
          const at = piece.offset - offset;
          const view = target.subarray(at, at + piece.length);
          try {
            await this.withRetry((connection) => connection.read(view, piece.offset));
          } catch (err) {
            firstError ??= err;
          }
        }),
      ),
    );
    if (firstError !== null) throw firstError;
  }

  private async withRetry<T>(operation: (connection: NbdConnection) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const slot = this.pickSlot();
      slot.active++;
      try {
        return await operation(await this.connectionOf(slot, true));
      } catch (err) {
        if (this.closing || attempt >= this.settings.retries || !isRetryable(err)) throw err;
        this.counters.retries++;
      } finally {
        slot.active--;
      }
      await delay(this.settings.retryDelayMs * 2 ** attempt);
    }
  }

  private pickSlot(): Slot {
    let best = this.slots[0] as Slot;
    for (const slot of this.slots) if (slot.active < best.active) best = slot;
    return best;
  }

  private connectionOf(slot: Slot, reconnect: boolean): Promise<NbdConnection> {
    if (slot.connection && !slot.connection.isDead) return Promise.resolve(slot.connection);
    slot.opening ??= this.open(slot, reconnect).finally(() => {
      slot.opening = null;
    });
    return slot.opening;
  }

  private async open(slot: Slot, reconnect: boolean): Promise<NbdConnection> {
    const connection = await NbdConnection.open(connectionOptions(this.settings));
    if (this.closing || connection.export.size !== this.size) {
      await connection.close();
      if (this.closing) throw new ChunkvaultError('INVALID_ARGUMENT', 'NbdClient is closed');
      throw new ChunkvaultError('PROTOCOL_ERROR', 'NBD export size changed across connections', {
        details: { expected: this.size, actual: connection.export.size },
      });
    }
    if (reconnect) this.counters.reconnects++;
    slot.connection = connection;
    return connection;
  }
}

function connectionOptions(settings: Settings): ConnectionOptions {
  return {
    uri: settings.uri,
    metaContexts: settings.metaContexts,
    requireMetaContexts: settings.requireMetaContexts,
    connectTimeoutMs: settings.connectTimeoutMs,
    requestTimeoutMs: settings.requestTimeoutMs,
  };
}

function exportInfo(connection: NbdConnection, cap: number): NbdExportInfo {
  const negotiated = connection.export;
  return {
    exportName: negotiated.exportName,
    size: negotiated.size,
    transmissionFlags: negotiated.transmissionFlags,
    readOnly: (negotiated.transmissionFlags & TRANSMISSION_FLAG.READ_ONLY) !== 0,
    canMultiConn: (negotiated.transmissionFlags & TRANSMISSION_FLAG.CAN_MULTI_CONN) !== 0,
    blockSize: negotiated.blockSize,
    maxRequestBytes: maxRequestFor(negotiated.blockSize, cap),
    structuredReplies: negotiated.structuredReplies,
    metaContexts: [...negotiated.metaContexts.keys()],
    tls: negotiated.tls,
  };
}

async function statusOf(
  connection: NbdConnection,
  context: string,
  offset: number,
  length: number,
): Promise<readonly StatusDescriptor[]> {
  const id = connection.export.metaContexts.get(context);
  if (id === undefined) {
    throw new ChunkvaultError('PROTOCOL_ERROR', `NBD metadata context ${context} vanished after a reconnect`, {
      details: { context },
    });
  }
  const reply = await connection.blockStatus(offset, length);
  return reply.get(id) ?? [];
}

function noProgress(context: string, offset: number): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `NBD block status for ${context} made no progress at ${offset}`, {
    details: { context, offset },
  });
}
