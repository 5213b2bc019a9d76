/**
 * Framing of the server's transmission-phase byte stream into replies.
 *
 * Terms:
 * - segment: whatever one socket `data` event delivers. A reply may be split across
 *   many segments and one segment may hold many replies; `push` accepts any split.
 * - sink: the owner of the requests (the in-flight table). The parser only frames;
 *   the sink decides where read data goes and whether a reply is legal.
 *
 * Read data (simple-reply payloads and OFFSET_DATA chunks) is copied once, straight
 * from the segments into the view the sink returns, so a 32 MiB read never sits in an
 * intermediate buffer. Every other chunk payload is buffered whole (bounded by
 * MAX_CHUNK_PAYLOAD_BYTES) and decoded by `protocol.ts`.
 *
 * The first error (a malformed message, or one the sink rejects) is sticky: the parser
 * refuses further input, because the stream can no longer be framed.
 *
 *   magic(4) --simple--> header(16) [--> data fill] --> magic
 *            \-structured-> header(20) --OFFSET_DATA--> offset(8) --> data fill --> magic
 *                                       \-other------> payload(length) ----------> magic
 */
import { ChunkvaultError } from '../../engine/errors.js';
import {
  type ChunkHeader,
  type ReplyChunk,
  MAX_CHUNK_PAYLOAD_BYTES,
  REPLY_TYPE,
  SIMPLE_REPLY_BYTES,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_HEADER_BYTES,
  STRUCTURED_REPLY_MAGIC,
  decodeChunkHeader,
  decodeChunkPayload,
  decodeSimpleReplyHeader,
  readU64,
} from './protocol.js';

/** Receives framed replies. Throwing from any method fails the stream. */
export interface ReplySink {
  /** A simple reply header arrived: return the view its payload fills, or null if it has none. */
  simpleReply(cookie: bigint, errno: number): Uint8Array | null;
  /** The simple reply's payload (if any) has been copied in. */
  simpleReplyDone(cookie: bigint, errno: number): void;
  /** An OFFSET_DATA chunk begins: return the view of exactly `length` bytes its data fills. */
  dataTarget(header: ChunkHeader, offset: number, length: number): Uint8Array;
  /** A whole chunk; for OFFSET_DATA after its data was copied into the target. */
  chunk(header: ChunkHeader, chunk: ReplyChunk): void;
}

type State =
  | { readonly kind: 'magic' }
  | { readonly kind: 'simple' }
  | { readonly kind: 'structured' }
  | { readonly kind: 'data-offset'; readonly header: ChunkHeader }
  | { readonly kind: 'payload'; readonly header: ChunkHeader }
  | { readonly kind: 'fill'; readonly target: Uint8Array; filled: number; readonly done: () => void }
  | { readonly kind: 'failed'; readonly error: unknown };

/** A queue of segments read without copying until a message spans two of them. */
class SegmentQueue {
  private segments: Uint8Array[] = [];
  private head = 0;
  length = 0;

  push(segment: Uint8Array): void {
    if (segment.byteLength === 0) return;
    this.segments.push(segment);
    this.length += segment.byteLength;
  }

  peekU32(): number {
    const bytes = this.peek(4);
    return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
  }

  /** The first `n` bytes (a view when they lie in one segment), without consuming them. */
  peek(n: number): Uint8Array {
    const first = this.segments[0] as Uint8Array;
    if (first.byteLength - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = new Uint8Array(n);
    this.copyOut(out, false);
    return out;
  }

  take(n: number): Uint8Array {
    const bytes = this.peek(n);
    this.skip(n);
    return bytes;
  }

  /** Copies as much as is queued (up to `target.length`) into `target`; returns the count. */
  drainInto(target: Uint8Array): number {
    return this.copyOut(target, true);
  }

  private copyOut(target: Uint8Array, consume: boolean): number {
    let copied = 0;
    let index = 0;
    let head = this.head;
    while (copied < target.byteLength && index < this.segments.length) {
      const segment = this.segments[index] as Uint8Array;
      const n = Math.min(segment.byteLength - head, target.byteLength - copied);
      target.set(segment.subarray(head, head + n), copied);
      copied += n;
      head += n;
      if (head === segment.byteLength) {
        index++;
        head = 0;
      }
    }
    if (consume) this.skip(copied);
    return copied;
  }

  private skip(n: number): void {
    this.length -= n;
    let left = n;
    while (left > 0) {
      const first = this.segments[0] as Uint8Array;
      const available = first.byteLength - this.head;
      if (available > left) {
        this.head += left;
        return;
      }
      left -= available;
      this.segments.shift();
      this.head = 0;
    }
  }
}

export class ReplyParser {
  private readonly queue = new SegmentQueue();
  private state: State = { kind: 'magic' };

  constructor(private readonly sink: ReplySink) {}

  /** True once a framing or sink error stopped the parser. */
  get failed(): boolean {
    return this.state.kind === 'failed';
  }

  /** Bytes received but not yet framed (a partial message). */
  get buffered(): number {
    return this.queue.length;
  }

  /** Feeds one segment; throws the first error (and every later call rethrows it). */
  push(segment: Uint8Array): void {
    if (this.state.kind === 'failed') throw this.state.error;
    this.queue.push(segment);
    try {
      while (this.step());
    } catch (err) {
      this.state = { kind: 'failed', error: err };
      throw err;
    }
  }

  /** Advances by one message part; false when more bytes are needed. */
  private step(): boolean {
    switch (this.state.kind) {
      case 'magic':
        return this.readMagic();
      case 'simple':
        return this.readSimple();
      case 'structured':
        return this.readStructured();
      case 'data-offset':
        return this.readDataOffset(this.state.header);
      case 'payload':
        return this.readPayload(this.state.header);
      case 'fill':
        return this.fill(this.state);
      case 'failed':
        return false;
    }
  }

  private readMagic(): boolean {
    if (this.queue.length < 4) return false;
    const magic = this.queue.peekU32();
    if (magic === SIMPLE_REPLY_MAGIC) this.state = { kind: 'simple' };
    else if (magic === STRUCTURED_REPLY_MAGIC) this.state = { kind: 'structured' };
    else {
      throw new ChunkvaultError('PROTOCOL_ERROR', `NBD protocol: bad reply magic 0x${magic.toString(16)}`, {
        details: { magic },
      });
    }
    return true;
  }

  private readSimple(): boolean {
    if (this.queue.length < SIMPLE_REPLY_BYTES) return false;
    const { cookie, errno } = decodeSimpleReplyHeader(this.queue.take(SIMPLE_REPLY_BYTES));
    const target = this.sink.simpleReply(cookie, errno);
    const done = (): void => this.sink.simpleReplyDone(cookie, errno);
    this.startFill(target, done);
    return true;
  }

  private readStructured(): boolean {
    if (this.queue.length < STRUCTURED_HEADER_BYTES) return false;
    const header = decodeChunkHeader(this.queue.take(STRUCTURED_HEADER_BYTES));
    if (header.type === REPLY_TYPE.OFFSET_DATA) {
      if (header.length < 9) {
        throw new ChunkvaultError('PROTOCOL_ERROR', 'NBD protocol: OFFSET_DATA chunk shorter than 9 bytes', {
          details: { length: header.length },
        });
      }
      this.state = { kind: 'data-offset', header };
    } else {
      if (header.length > MAX_CHUNK_PAYLOAD_BYTES) {
        throw new ChunkvaultError('PROTOCOL_ERROR', `NBD protocol: chunk payload of ${header.length} bytes`, {
          details: { length: header.length, type: header.type },
        });
      }
      this.state = { kind: 'payload', header };
    }
    return true;
  }

  private readDataOffset(header: ChunkHeader): boolean {
    if (this.queue.length < 8) return false;
    const bytes = this.queue.take(8);
    const offset = readU64(new DataView(bytes.buffer, bytes.byteOffset, 8), 0, 'data offset');
    const length = header.length - 8;
    const target = this.sink.dataTarget(header, offset, length);
    if (target.byteLength !== length) {
      throw new ChunkvaultError('INTERNAL', 'NBD reply sink returned a target of the wrong size');
    }
    this.startFill(target, () => this.sink.chunk(header, { kind: 'data', offset, data: target }));
    return true;
  }

  private readPayload(header: ChunkHeader): boolean {
    if (this.queue.length < header.length) return false;
    const payload = header.length === 0 ? new Uint8Array(0) : this.queue.take(header.length);
    this.state = { kind: 'magic' };
    this.sink.chunk(header, decodeChunkPayload(header.type, payload));
    return true;
  }

  private startFill(target: Uint8Array | null, done: () => void): void {
    if (target === null || target.byteLength === 0) {
      this.state = { kind: 'magic' };
      done();
      return;
    }
    this.state = { kind: 'fill', target, filled: 0, done };
  }

  private fill(state: Extract<State, { kind: 'fill' }>): boolean {
    if (this.queue.length === 0) return false;
    state.filled += this.queue.drainInto(state.target.subarray(state.filled));
    if (state.filled < state.target.byteLength) return false;
    this.state = { kind: 'magic' };
    state.done();
    return true;
  }
}
