/**
 * The in-flight table of one connection: every request sent and not yet answered,
 * keyed by cookie, and the assembly of its reply.
 *
 * Terms:
 * - read assembly: a structured read reply arrives as data chunks (copied straight into
 *   the caller's view) and hole chunks (zero-filled) in any order; the request succeeds
 *   only when they cover the requested range exactly once and no error chunk came.
 * - status assembly: a block status reply carries one descriptor list per negotiated
 *   context id.
 * - settle: a request's promise resolves or rejects exactly once, then its cookie leaves
 *   the table; a reply for a cookie not in the table is a protocol error.
 *
 * Every reply that breaks the protocol (unknown cookie, a chunk outside its request,
 * overlapping chunks, a chunk type the request cannot have) throws PROTOCOL_ERROR out
 * of the sink method, which stops the parser: the connection must then be dropped. A
 * server error (errno) is REMOTE_ERROR for that request only. A request that outlives
 * its timeout rejects with TIMEOUT and the owner is told (it drops the connection, so
 * no late reply can write into a buffer whose promise already settled).
 */
import { ChunkvaultError, type ErrorDetails } from '../../engine/errors.js';
import {
  type ChunkHeader,
  type ReplyChunk,
  type StatusDescriptor,
  REPLY_FLAG,
  errnoName,
} from './protocol.js';
import type { ReplySink } from './reply-parser.js';

/** Descriptor lists of one block status reply, by context id. */
export type StatusReply = ReadonlyMap<number, readonly StatusDescriptor[]>;

export interface InflightOptions {
  /** Structured replies were negotiated. */
  readonly structured: boolean;
  /** Context ids negotiated with NBD_OPT_SET_META_CONTEXT. */
  readonly contextIds: ReadonlySet<number>;
  readonly timeoutMs: number;
  /** Called after a request timed out (its promise has already rejected). */
  readonly onTimeout: (error: ChunkvaultError) => void;
}

interface Base {
  readonly cookie: bigint;
  readonly offset: number;
  readonly length: number;
  timer: NodeJS.Timeout | undefined;
  error: ChunkvaultError | null;
}

interface ReadEntry extends Base {
  readonly kind: 'read';
  readonly target: Uint8Array;
  readonly covered: Coverage;
  readonly resolve: () => void;
  readonly reject: (error: ChunkvaultError) => void;
}

interface StatusEntry extends Base {
  readonly kind: 'status';
  readonly contexts: Map<number, readonly StatusDescriptor[]>;
  readonly resolve: (reply: StatusReply) => void;
  readonly reject: (error: ChunkvaultError) => void;
}

type Entry = ReadEntry | StatusEntry;

function protocolError(message: string, details: ErrorDetails = {}): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `NBD protocol: ${message}`, { details });
}

/** Disjoint half-open ranges, sorted; detects overlap on insert. */
export class Coverage {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  total = 0;

  /** Adds `[start, end)`; false (and no change) if it overlaps a range already there. */
  add(start: number, end: number): boolean {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.starts[mid] as number) < start) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0 && (this.ends[lo - 1] as number) > start) return false;
    if (lo < this.starts.length && (this.starts[lo] as number) < end) return false;
    this.starts.splice(lo, 0, start);
    this.ends.splice(lo, 0, end);
    this.total += end - start;
    return true;
  }
}

export class InflightTable implements ReplySink {
  private readonly entries = new Map<bigint, Entry>();
  private nextCookie = 1n;

  constructor(private readonly options: InflightOptions) {}

  get size(): number {
    return this.entries.size;
  }

  /** Registers a read of `target.length` bytes at `offset`; returns its cookie and outcome. */
  addRead(offset: number, target: Uint8Array): { cookie: bigint; done: Promise<void> } {
    const cookie = this.nextCookie++;
    const done = new Promise<void>((resolve, reject) => {
      this.insert({
        kind: 'read',
        cookie,
        offset,
        length: target.byteLength,
        target,
        covered: new Coverage(),
        timer: undefined,
        error: null,
        resolve,
        reject,
      });
    });
    return { cookie, done };
  }

  /** Registers a block status query of `[offset, offset + length)`. */
  addBlockStatus(offset: number, length: number): { cookie: bigint; done: Promise<StatusReply> } {
    const cookie = this.nextCookie++;
    const done = new Promise<StatusReply>((resolve, reject) => {
      this.insert({ kind: 'status', cookie, offset, length, contexts: new Map(), timer: undefined, error: null, resolve, reject });
    });
    return { cookie, done };
  }

  /** Rejects every pending request with `error` (the connection is gone). */
  failAll(error: ChunkvaultError): void {
    for (const entry of [...this.entries.values()]) this.settle(entry, error);
  }

  // --- ReplySink ---------------------------------------------------------------

  simpleReply(cookie: bigint, errno: number): Uint8Array | null {
    const entry = this.lookup(cookie);
    if (errno !== 0) {
      entry.error = this.remoteError(entry, errno, '', null);
      return null;
    }
    if (entry.kind === 'status') throw protocolError('successful simple reply to a block status request');
    if (this.options.structured) throw protocolError('simple reply to a read after structured replies were agreed');
    return entry.target;
  }

  simpleReplyDone(cookie: bigint, _errno: number): void {
    const entry = this.lookup(cookie);
    this.settle(entry, entry.error);
  }

  dataTarget(header: ChunkHeader, offset: number, length: number): Uint8Array {
    const entry = this.lookupStructured(header.cookie);
    if (entry.kind !== 'read') throw protocolError('data chunk in reply to a block status request');
    this.claim(entry, offset, length, 'data');
    const at = offset - entry.offset;
    return entry.target.subarray(at, at + length);
  }

  chunk(header: ChunkHeader, chunk: ReplyChunk): void {
    const entry = this.lookupStructured(header.cookie);
    switch (chunk.kind) {
      case 'data':
        break;
      case 'hole':
        this.acceptHole(entry, chunk.offset, chunk.length);
        break;
      case 'block-status':
        this.acceptStatus(entry, chunk.contextId, chunk.descriptors);
        break;
      case 'error':
        this.acceptError(entry, chunk);
        break;
      case 'none':
        if ((header.flags & REPLY_FLAG.DONE) === 0) throw protocolError('NONE chunk without the DONE flag');
        break;
    }
    if ((header.flags & REPLY_FLAG.DONE) !== 0) this.finish(entry);
  }

  // --- internals ---------------------------------------------------------------

  private insert(entry: Entry): void {
    entry.timer = setTimeout(() => this.expire(entry), this.options.timeoutMs);
    this.entries.set(entry.cookie, entry);
  }

  private expire(entry: Entry): void {
    const error = new ChunkvaultError(
      'TIMEOUT',
      `NBD ${entry.kind === 'read' ? 'read' : 'block status'} got no reply within ${this.options.timeoutMs} ms`,
      { details: { offset: entry.offset, length: entry.length, timeoutMs: this.options.timeoutMs } },
    );
    this.settle(entry, error);
    this.options.onTimeout(error);
  }

  private settle(entry: Entry, error: ChunkvaultError | null): void {
    if (this.entries.get(entry.cookie) !== entry) return;
    this.entries.delete(entry.cookie);
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else if (entry.kind === 'read') entry.resolve();
    else entry.resolve(entry.contexts);
  }

  private lookup(cookie: bigint): Entry {
    const entry = this.entries.get(cookie);
    if (!entry) throw protocolError(`reply for unknown cookie ${cookie}`, { cookie: cookie.toString() });
    return entry;
  }

  private lookupStructured(cookie: bigint): Entry {
    if (!this.options.structured) throw protocolError('structured reply chunk without structured replies agreed');
    return this.lookup(cookie);
  }

  /** Checks that `[offset, offset+length)` lies inside the read and overlaps no earlier chunk. */
  private claim(entry: ReadEntry, offset: number, length: number, what: string): void {
    const end = offset + length;
    if (offset < entry.offset || end > entry.offset + entry.length) {
      throw protocolError(`${what} chunk [${offset}, ${end}) lies outside the request`, {
        chunkOffset: offset,
        chunkLength: length,
        offset: entry.offset,
        length: entry.length,
      });
    }
    if (!entry.covered.add(offset, end)) {
      throw protocolError(`${what} chunk [${offset}, ${end}) overlaps an earlier chunk`, {
        chunkOffset: offset,
        chunkLength: length,
      });
    }
  }

  private acceptHole(entry: Entry, offset: number, length: number): void {
    if (entry.kind !== 'read') throw protocolError('hole chunk in reply to a block status request');
    this.claim(entry, offset, length, 'hole');
    const at = offset - entry.offset;
    entry.target.fill(0, at, at + length);
  }

  private acceptStatus(entry: Entry, contextId: number, descriptors: readonly StatusDescriptor[]): void {
    if (entry.kind !== 'status') throw protocolError('block status chunk in reply to a read');
    if (!this.options.contextIds.has(contextId)) {
      throw protocolError(`block status for context id ${contextId}, which was not negotiated`, { contextId });
    }
    if (entry.contexts.has(contextId)) throw protocolError(`two block status chunks for context id ${contextId}`);
    entry.contexts.set(contextId, clampDescriptors(descriptors, entry.length));
  }

  private acceptError(entry: Entry, chunk: Extract<ReplyChunk, { kind: 'error' }>): void {
    if (chunk.offset !== null && (chunk.offset < entry.offset || chunk.offset >= entry.offset + entry.length)) {
      throw protocolError(`error offset ${chunk.offset} lies outside the request`, { errorOffset: chunk.offset });
    }
    entry.error ??= this.remoteError(entry, chunk.errno, chunk.message, chunk.offset);
  }

  private finish(entry: Entry): void {
    if (entry.error) return this.settle(entry, entry.error);
    if (entry.kind === 'read' && entry.covered.total !== entry.length) {
      return this.settle(
        entry,
        protocolError(`read reply covered ${entry.covered.total} of ${entry.length} bytes`, {
          offset: entry.offset,
          length: entry.length,
          covered: entry.covered.total,
        }),
      );
    }
    if (entry.kind === 'status') {
      const missing = [...this.options.contextIds].filter((id) => !entry.contexts.has(id));
      if (missing.length > 0) {
        return this.settle(entry, protocolError(`block status reply lacks context ids ${missing.join(', ')}`));
      }
    }
    this.settle(entry, null);
  }

  private remoteError(entry: Entry, errno: number, message: string, errorOffset: number | null): ChunkvaultError {
    const name = errnoName(errno);
    const what = entry.kind === 'read' ? 'read' : 'block status';
    const details: ErrorDetails = { offset: entry.offset, length: entry.length, errno: name };
    if (errorOffset !== null) details['errorOffset'] = errorOffset;
    if (message) details['message'] = message;
    const at = errorOffset ?? entry.offset;
    return new ChunkvaultError('REMOTE_ERROR', `NBD server failed a ${what} at offset ${at}: ${name}${message ? ` (${message})` : ''}`, {
      details,
    });
  }
}

/**
 * Descriptors may not add up to more than the request; some servers let the last one
 * run past the end, so that one is cut. Any earlier overrun is a protocol error.
 */
function clampDescriptors(descriptors: readonly StatusDescriptor[], length: number): StatusDescriptor[] {
  const out: StatusDescriptor[] = [];
  let sum = 0;
  for (const [i, descriptor] of descriptors.entries()) {
    if (sum >= length) throw protocolError('block status descriptors run past the request', { index: i });
    const cut = Math.min(descriptor.length, length - sum);
    if (cut < descriptor.length && i !== descriptors.length - 1) {
      throw protocolError('block status descriptors run past the request', { index: i });
    }
    out.push(cut === descriptor.length ? descriptor : { length: cut, flags: descriptor.flags });
    sum += cut;
  }
  return out;
}
