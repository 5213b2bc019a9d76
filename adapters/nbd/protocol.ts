/**
 * The NBD wire protocol: every constant, and pure encoders and decoders for the
 * messages of both phases (facts from the NBD protocol document, `doc/proto.md`).
 *
 * Terms:
 * - handshake: the fixed-newstyle negotiation before data moves. The server greets with
 *   `NBDMAGIC` + `IHAVEOPT` + handshake flags; the client answers with client flags and
 *   then sends options (`IHAVEOPT`, option number, length, data), each answered by one or
 *   more option replies (reply magic, option, reply type, length, data).
 * - transmission: after `NBD_OPT_GO` (or `NBD_OPT_EXPORT_NAME`), the client sends
 *   28-byte requests; the server answers each with one simple reply (16 bytes, plus the
 *   data of a read when structured replies are off) or with structured reply chunks
 *   (20-byte header + payload), the last one flagged DONE.
 * - cookie: the 64-bit value (the spec's "handle") a client puts in a request and the
 *   server copies into every reply to it.
 * - context: a metadata context (`base:allocation`, `qemu:dirty-bitmap:NAME`) chosen by
 *   `NBD_OPT_SET_META_CONTEXT`; the server numbers each one with a context id.
 *
 * Every integer is big-endian. Offsets travel as u64 but are decoded to JS numbers and
 * rejected above 2^53. Every decoder checks its input length and rejects malformed
 * input with a PROTOCOL_ERROR; server-side encoders exist for tests and fake servers.
 *
 * DO NOT CHANGE the numbers below: they are the protocol.
 */
import { ChunkvaultError } from '../../engine/errors.js';

/** `NBDMAGIC`, first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** `IHAVEOPT`: second greeting word (newstyle) and prefix of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Second greeting word of the withdrawn oldstyle handshake (refused). */
export const CLISERV_MAGIC = 0x00420281861253n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const DEFAULT_PORT = 10809;
export const GREETING_BYTES = 18;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_BYTES = 28;
export const SIMPLE_REPLY_BYTES = 16;
export const STRUCTURED_HEADER_BYTES = 20;
/** Reserved zeroes after an NBD_OPT_EXPORT_NAME reply unless NO_ZEROES was agreed. */
export const EXPORT_NAME_ZEROES = 124;
/** Longest string the protocol allows (export names, messages, context names). */
export const MAX_STRING_BYTES = 4096;
/** Our cap on one option reply: they carry a few strings at most. */
export const MAX_OPTION_REPLY_BYTES = 64 * 1024;
/** Our cap on a non-data chunk payload (block status lists, error messages). */
export const MAX_CHUNK_PAYLOAD_BYTES = 16 * 1024 * 1024;
/** Largest value of a u32 field (request lengths, block sizes). */
export const U32_MAX = 0xffffffff;

export const HANDSHAKE_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;
export const CLIENT_FLAG = { FIXED_NEWSTYLE: 1 << 0, NO_ZEROES: 1 << 1 } as const;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

const REP_ERR_BIT = 0x80000000;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: REP_ERR_BIT + 1,
  ERR_POLICY: REP_ERR_BIT + 2,
  ERR_INVALID: REP_ERR_BIT + 3,
  ERR_PLATFORM: REP_ERR_BIT + 4,
  ERR_TLS_REQD: REP_ERR_BIT + 5,
  ERR_UNKNOWN: REP_ERR_BIT + 6,
  ERR_SHUTDOWN: REP_ERR_BIT + 7,
  ERR_BLOCK_SIZE_REQD: REP_ERR_BIT + 8,
  ERR_TOO_BIG: REP_ERR_BIT + 9,
  ERR_EXT_HEADER_REQD: REP_ERR_BIT + 10,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags (16 bits, sent with the export size). */
export const TRANSMISSION_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STAT_PAYLOAD: 1 << 12,
} as const;

export const CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

export const CMD_FLAG = { FUA: 1 << 0, NO_HOLE: 1 << 1, DF: 1 << 2, REQ_ONE: 1 << 3, FAST_ZERO: 1 << 4 } as const;

export const REPLY_FLAG = { DONE: 1 << 0 } as const;

const REPLY_TYPE_ERR_BIT = 1 << 15;
export const REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: REPLY_TYPE_ERR_BIT + 1,
  ERROR_OFFSET: REPLY_TYPE_ERR_BIT + 2,
} as const;

/** `base:allocation` flags. */
export const STATE = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;
/** `qemu:dirty-bitmap:NAME` flag. */
export const STATE_DIRTY = 1 << 0;

export const CONTEXT_BASE_ALLOCATION = 'base:allocation';
export const CONTEXT_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

/** The errno values the protocol defines for replies. */
export const ERRNO: Readonly<Record<number, string>> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'ENOTSUP',
  108: 'ESHUTDOWN',
};
export const ESHUTDOWN = 108;

/** Symbolic name of a protocol errno, e.g. `EIO`; unknown values as `ERRNO_<n>`. */
export function errnoName(errno: number): string {
  return ERRNO[errno] ?? `ERRNO_${errno}`;
}

/** Symbolic name of an option reply type, e.g. `ERR_UNSUP`. */
export function replyTypeName(type: number): string {
  const entry = Object.entries(REP).find(([, value]) => value === type);
  return entry ? entry[0] : `REP_${type >>> 0}`;
}

/** Symbolic name of an option, e.g. `GO`. */
export function optionName(option: number): string {
  const entry = Object.entries(OPT).find(([, value]) => value === option);
  return entry ? entry[0] : `OPT_${option}`;
}

export function isOptionReplyError(type: number): boolean {
  return (type & REP_ERR_BIT) !== 0;
}

export function isErrorChunkType(type: number): boolean {
  return (type & REPLY_TYPE_ERR_BIT) !== 0;
}

// ---------------------------------------------------------------------------
// Byte helpers

function protocolError(message: string, details: Record<string, string | number> = {}): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `NBD protocol: ${message}`, { details });
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function expectLength(what: string, bytes: Uint8Array, expected: number): DataView {
  if (bytes.byteLength !== expected) {
    throw protocolError(`${what} must be ${expected} bytes, got ${bytes.byteLength}`, {
      message: what,
      expected,
      actual: bytes.byteLength,
    });
  }
  return view(bytes);
}

function expectAtLeast(what: string, bytes: Uint8Array, minimum: number): DataView {
  if (bytes.byteLength < minimum) {
    throw protocolError(`${what} must be at least ${minimum} bytes, got ${bytes.byteLength}`, {
      message: what,
      minimum,
      actual: bytes.byteLength,
    });
  }
  return view(bytes);
}

/** Reads a u64 that must fit a JS number (offsets and sizes). */
export function readU64(dv: DataView, at: number, what: string): number {
  const value = dv.getBigUint64(at);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw protocolError(`${what} ${value} exceeds 2^53`, { field: what, value: value.toString() });
  }
  return Number(value);
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export function encodeString(text: string): Uint8Array {
  const bytes = utf8.encode(text);
  if (bytes.byteLength > MAX_STRING_BYTES) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `NBD string longer than ${MAX_STRING_BYTES} bytes`, {
      details: { length: bytes.byteLength },
    });
  }
  return bytes;
}

function decodeString(bytes: Uint8Array, what: string): string {
  if (bytes.byteLength > MAX_STRING_BYTES) throw protocolError(`${what} longer than ${MAX_STRING_BYTES} bytes`);
  try {
    return utf8Strict.decode(bytes);
  } catch (err) {
    throw new ChunkvaultError('PROTOCOL_ERROR', `NBD protocol: ${what} is not valid UTF-8`, { cause: err });
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.byteLength, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  view(out).setUint32(0, value);
  return out;
}

function u16(value: number): Uint8Array {
  const out = new Uint8Array(2);
  view(out).setUint16(0, value);
  return out;
}

function lengthPrefixed(text: string): Uint8Array {
  const bytes = encodeString(text);
  return concat([u32(bytes.byteLength), bytes]);
}

// ---------------------------------------------------------------------------
// Handshake

export interface Greeting {
  readonly handshakeFlags: number;
}

/** Server side: `NBDMAGIC`, `IHAVEOPT`, handshake flags. */
export function encodeGreeting(handshakeFlags: number): Uint8Array {
  const out = new Uint8Array(GREETING_BYTES);
  const dv = view(out);
  dv.setBigUint64(0, NBD_MAGIC);
  dv.setBigUint64(8, IHAVEOPT);
  dv.setUint16(16, handshakeFlags);
  return out;
}

export function decodeGreeting(bytes: Uint8Array): Greeting {
  const dv = expectLength('greeting', bytes, GREETING_BYTES);
  if (dv.getBigUint64(0) !== NBD_MAGIC) throw protocolError('bad greeting magic (not an NBD server)');
  const second = dv.getBigUint64(8);
  if (second === CLISERV_MAGIC) throw protocolError('server uses the oldstyle handshake, which is not supported');
  if (second !== IHAVEOPT) throw protocolError('bad newstyle magic in greeting');
  return { handshakeFlags: dv.getUint16(16) };
}

export function encodeClientFlags(flags: number): Uint8Array {
  return u32(flags);
}

export function decodeClientFlags(bytes: Uint8Array): number {
  return expectLength('client flags', bytes, 4).getUint32(0);
}

export interface OptionHeader {
  readonly option: number;
  readonly length: number;
}

/** Client side: one option with its data. */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const header = new Uint8Array(OPTION_HEADER_BYTES);
  const dv = view(header);
  dv.setBigUint64(0, IHAVEOPT);
  dv.setUint32(8, option);
  dv.setUint32(12, data.byteLength);
  return concat([header, data]);
}

export function decodeOptionHeader(bytes: Uint8Array): OptionHeader {
  const dv = expectLength('option header', bytes, OPTION_HEADER_BYTES);
  if (dv.getBigUint64(0) !== IHAVEOPT) throw protocolError('bad option magic');
  return { option: dv.getUint32(8), length: dv.getUint32(12) };
}

export interface OptionReplyHeader {
  readonly option: number;
  readonly type: number;
  readonly length: number;
}

/** Server side: one option reply. */
export function encodeOptionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const header = new Uint8Array(OPTION_REPLY_HEADER_BYTES);
  const dv = view(header);
  dv.setBigUint64(0, OPTION_REPLY_MAGIC);
  dv.setUint32(8, option);
  dv.setUint32(12, type);
  dv.setUint32(16, data.byteLength);
  return concat([header, data]);
}

export function decodeOptionReplyHeader(bytes: Uint8Array): OptionReplyHeader {
  const dv = expectLength('option reply header', bytes, OPTION_REPLY_HEADER_BYTES);
  if (dv.getBigUint64(0) !== OPTION_REPLY_MAGIC) throw protocolError('bad option reply magic');
  const header = { option: dv.getUint32(8), type: dv.getUint32(12), length: dv.getUint32(16) };
  if (header.length > MAX_OPTION_REPLY_BYTES) {
    throw protocolError(`option reply of ${header.length} bytes is too long`, { length: header.length });
  }
  return header;
}

export interface InfoRequest {
  readonly exportName: string;
  readonly infos: readonly number[];
}

/** Data of NBD_OPT_GO / NBD_OPT_INFO: export name, then the info types wanted. */
export function encodeInfoRequest(request: InfoRequest): Uint8Array {
  return concat([lengthPrefixed(request.exportName), u16(request.infos.length), ...request.infos.map(u16)]);
}

export function decodeInfoRequest(bytes: Uint8Array): InfoRequest {
  const dv = expectAtLeast('info request', bytes, 6);
  const nameLength = dv.getUint32(0);
  if (4 + nameLength + 2 > bytes.byteLength) throw protocolError('info request name overruns the option');
  const exportName = decodeString(bytes.subarray(4, 4 + nameLength), 'export name');
  const count = dv.getUint16(4 + nameLength);
  const rest = 4 + nameLength + 2;
  expectLength('info request list', bytes.subarray(rest), count * 2);
  const infos = Array.from({ length: count }, (_, i) => dv.getUint16(rest + i * 2));
  return { exportName, infos };
}

export interface MetaContextRequest {
  readonly exportName: string;
  readonly queries: readonly string[];
}

/** Data of NBD_OPT_SET_META_CONTEXT / NBD_OPT_LIST_META_CONTEXT. */
export function encodeMetaContextRequest(request: MetaContextRequest): Uint8Array {
  return concat([
    lengthPrefixed(request.exportName),
    u32(request.queries.length),
    ...request.queries.map(lengthPrefixed),
  ]);
}

/** Reads `count` length-prefixed strings starting at `at`; must end exactly at the end. */
function decodeStringList(bytes: Uint8Array, at: number, count: number, what: string): string[] {
  const dv = view(bytes);
  const out: string[] = [];
  let pos = at;
  for (let i = 0; i < count; i++) {
    if (pos + 4 > bytes.byteLength) throw protocolError(`${what} list truncated`);
    const length = dv.getUint32(pos);
    if (pos + 4 + length > bytes.byteLength) throw protocolError(`${what} overruns the option`);
    out.push(decodeString(bytes.subarray(pos + 4, pos + 4 + length), what));
    pos += 4 + length;
  }
  if (pos !== bytes.byteLength) throw protocolError(`${bytes.byteLength - pos} trailing bytes after ${what} list`);
  return out;
}

export function decodeMetaContextRequest(bytes: Uint8Array): MetaContextRequest {
  const dv = expectAtLeast('meta context request', bytes, 8);
  const nameLength = dv.getUint32(0);
  if (4 + nameLength + 4 > bytes.byteLength) throw protocolError('meta context request name overruns the option');
  const exportName = decodeString(bytes.subarray(4, 4 + nameLength), 'export name');
  const count = dv.getUint32(4 + nameLength);
  return { exportName, queries: decodeStringList(bytes, 8 + nameLength, count, 'meta context query') };
}

/** Payload of NBD_REP_INFO. */
export type InfoReply =
  | { readonly type: 'export'; readonly size: number; readonly transmissionFlags: number }
  | { readonly type: 'block-size'; readonly minimum: number; readonly preferred: number; readonly maximum: number }
  | { readonly type: 'name'; readonly name: string }
  | { readonly type: 'description'; readonly description: string }
  | { readonly type: 'unknown'; readonly infoType: number };

export function encodeInfoReply(info: InfoReply): Uint8Array {
  switch (info.type) {
    case 'export': {
      const out = new Uint8Array(12);
      const dv = view(out);
      dv.setUint16(0, INFO.EXPORT);
      dv.setBigUint64(2, BigInt(info.size));
      dv.setUint16(10, info.transmissionFlags);
      return out;
    }
    case 'block-size':
      return concat([u16(INFO.BLOCK_SIZE), u32(info.minimum), u32(info.preferred), u32(info.maximum)]);
    case 'name':
      return concat([u16(INFO.NAME), encodeString(info.name)]);
    case 'description':
      return concat([u16(INFO.DESCRIPTION), encodeString(info.description)]);
    case 'unknown':
      return u16(info.infoType);
  }
}

export function decodeInfoReply(bytes: Uint8Array): InfoReply {
  const dv = expectAtLeast('info reply', bytes, 2);
  const infoType = dv.getUint16(0);
  switch (infoType) {
    case INFO.EXPORT:
      expectLength('NBD_INFO_EXPORT', bytes, 12);
      return { type: 'export', size: readU64(dv, 2, 'export size'), transmissionFlags: dv.getUint16(10) };
    case INFO.BLOCK_SIZE:
      expectLength('NBD_INFO_BLOCK_SIZE', bytes, 14);
      return { type: 'block-size', minimum: dv.getUint32(2), preferred: dv.getUint32(6), maximum: dv.getUint32(10) };
    case INFO.NAME:
      return { type: 'name', name: decodeString(bytes.subarray(2), 'export name') };
    case INFO.DESCRIPTION:
      return { type: 'description', description: decodeString(bytes.subarray(2), 'export description') };
    default:
      return { type: 'unknown', infoType };
  }
}

export interface MetaContextReply {
  readonly contextId: number;
  readonly name: string;
}

export function encodeMetaContextReply(reply: MetaContextReply): Uint8Array {
  return concat([u32(reply.contextId), encodeString(reply.name)]);
}

export function decodeMetaContextReply(bytes: Uint8Array): MetaContextReply {
  const dv = expectAtLeast('meta context reply', bytes, 5);
  return { contextId: dv.getUint32(0), name: decodeString(bytes.subarray(4), 'meta context name') };
}

/** Text of an option error reply (may be empty). */
export function decodeOptionErrorMessage(bytes: Uint8Array): string {
  try {
    return decodeString(bytes.subarray(0, MAX_STRING_BYTES), 'option error message');
  } catch {
    return '';
  }
}

export interface ExportNameReply {
  readonly size: number;
  readonly transmissionFlags: number;
}

/** Reply length of NBD_OPT_EXPORT_NAME: 10 bytes, plus 124 zeroes unless NO_ZEROES. */
export function exportNameReplyBytes(noZeroes: boolean): number {
  return noZeroes ? 10 : 10 + EXPORT_NAME_ZEROES;
}

export function encodeExportNameReply(reply: ExportNameReply, noZeroes: boolean): Uint8Array {
  const out = new Uint8Array(exportNameReplyBytes(noZeroes));
  const dv = view(out);
  dv.setBigUint64(0, BigInt(reply.size));
  dv.setUint16(8, reply.transmissionFlags);
  return out;
}

export function decodeExportNameReply(bytes: Uint8Array, noZeroes: boolean): ExportNameReply {
  const dv = expectLength('export name reply', bytes, exportNameReplyBytes(noZeroes));
  return { size: readU64(dv, 0, 'export size'), transmissionFlags: dv.getUint16(8) };
}

// ---------------------------------------------------------------------------
// Transmission

export interface Request {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offset: number;
  readonly length: number;
}

export function encodeRequest(request: Request): Uint8Array {
  const out = new Uint8Array(REQUEST_BYTES);
  const dv = view(out);
  dv.setUint32(0, REQUEST_MAGIC);
  dv.setUint16(4, request.flags);
  dv.setUint16(6, request.type);
  dv.setBigUint64(8, request.cookie);
  dv.setBigUint64(16, BigInt(request.offset));
  dv.setUint32(24, request.length);
  return out;
}

export function decodeRequest(bytes: Uint8Array): Request {
  const dv = expectLength('request', bytes, REQUEST_BYTES);
  if (dv.getUint32(0) !== REQUEST_MAGIC) throw protocolError('bad request magic');
  return {
    flags: dv.getUint16(4),
    type: dv.getUint16(6),
    cookie: dv.getBigUint64(8),
    offset: readU64(dv, 16, 'request offset'),
    length: dv.getUint32(24),
  };
}

export interface SimpleReplyHeader {
  readonly errno: number;
  readonly cookie: bigint;
}

export function encodeSimpleReply(reply: SimpleReplyHeader): Uint8Array {
  const out = new Uint8Array(SIMPLE_REPLY_BYTES);
  const dv = view(out);
  dv.setUint32(0, SIMPLE_REPLY_MAGIC);
  dv.setUint32(4, reply.errno);
  dv.setBigUint64(8, reply.cookie);
  return out;
}

export function decodeSimpleReplyHeader(bytes: Uint8Array): SimpleReplyHeader {
  const dv = expectLength('simple reply', bytes, SIMPLE_REPLY_BYTES);
  if (dv.getUint32(0) !== SIMPLE_REPLY_MAGIC) throw protocolError('bad simple reply magic');
  return { errno: dv.getUint32(4), cookie: dv.getBigUint64(8) };
}

export interface ChunkHeader {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly length: number;
}

export function encodeChunkHeader(header: ChunkHeader): Uint8Array {
  const out = new Uint8Array(STRUCTURED_HEADER_BYTES);
  const dv = view(out);
  dv.setUint32(0, STRUCTURED_REPLY_MAGIC);
  dv.setUint16(4, header.flags);
  dv.setUint16(6, header.type);
  dv.setBigUint64(8, header.cookie);
  dv.setUint32(16, header.length);
  return out;
}

export function decodeChunkHeader(bytes: Uint8Array): ChunkHeader {
  const dv = expectLength('structured reply header', bytes, STRUCTURED_HEADER_BYTES);
  if (dv.getUint32(0) !== STRUCTURED_REPLY_MAGIC) throw protocolError('bad structured reply magic');
  return { flags: dv.getUint16(4), type: dv.getUint16(6), cookie: dv.getBigUint64(8), length: dv.getUint32(16) };
}

/** One block status descriptor: `length` bytes with the context's `flags`. */
export interface StatusDescriptor {
  readonly length: number;
  readonly flags: number;
}

/** A decoded structured reply chunk payload. */
export type ReplyChunk =
  | { readonly kind: 'none' }
  | { readonly kind: 'data'; readonly offset: number; readonly data: Uint8Array }
  | { readonly kind: 'hole'; readonly offset: number; readonly length: number }
  | { readonly kind: 'block-status'; readonly contextId: number; readonly descriptors: readonly StatusDescriptor[] }
  | {
      readonly kind: 'error';
      readonly errno: number;
      readonly message: string;
      /** Set for ERROR_OFFSET. */
      readonly offset: number | null;
    };

/** The chunk type number that carries `chunk`. */
export function chunkType(chunk: ReplyChunk): number {
  switch (chunk.kind) {
    case 'none':
      return REPLY_TYPE.NONE;
    case 'data':
      return REPLY_TYPE.OFFSET_DATA;
    case 'hole':
      return REPLY_TYPE.OFFSET_HOLE;
    case 'block-status':
      return REPLY_TYPE.BLOCK_STATUS;
    case 'error':
      return chunk.offset === null ? REPLY_TYPE.ERROR : REPLY_TYPE.ERROR_OFFSET;
  }
}

function u64(value: number): Uint8Array {
  const out = new Uint8Array(8);
  view(out).setBigUint64(0, BigInt(value));
  return out;
}

export function encodeChunkPayload(chunk: ReplyChunk): Uint8Array {
  switch (chunk.kind) {
    case 'none':
      return new Uint8Array(0);
    case 'data':
      return concat([u64(chunk.offset), chunk.data]);
    case 'hole':
      return concat([u64(chunk.offset), u32(chunk.length)]);
    case 'block-status':
      return concat([u32(chunk.contextId), ...chunk.descriptors.flatMap((d) => [u32(d.length), u32(d.flags)])]);
    case 'error': {
      const message = encodeString(chunk.message);
      const tail = chunk.offset === null ? [] : [u64(chunk.offset)];
      return concat([u32(chunk.errno), u16(message.byteLength), message, ...tail]);
    }
  }
}

/** A whole structured reply chunk, header and payload (server side). */
export function encodeChunk(flags: number, cookie: bigint, chunk: ReplyChunk): Uint8Array {
  const payload = encodeChunkPayload(chunk);
  return concat([encodeChunkHeader({ flags, type: chunkType(chunk), cookie, length: payload.byteLength }), payload]);
}

function decodeErrorChunk(type: number, bytes: Uint8Array): ReplyChunk {
  const dv = expectAtLeast('error chunk', bytes, 6);
  const errno = dv.getUint32(0);
  const messageLength = dv.getUint16(4);
  const tail = type === REPLY_TYPE.ERROR_OFFSET ? 8 : 0;
  if (6 + messageLength + tail > bytes.byteLength) {
    throw protocolError('error chunk message overruns the chunk', { messageLength, length: bytes.byteLength });
  }
  if (type === REPLY_TYPE.ERROR_OFFSET && 6 + messageLength + tail !== bytes.byteLength) {
    throw protocolError('ERROR_OFFSET chunk has a wrong length', { messageLength, length: bytes.byteLength });
  }
  if (errno === 0) throw protocolError('error chunk with errno 0');
  const message = decodeOptionErrorMessage(bytes.subarray(6, 6 + messageLength));
  const offset = tail ? readU64(dv, 6 + messageLength, 'error offset') : null;
  return { kind: 'error', errno, message, offset };
}

function decodeBlockStatusChunk(bytes: Uint8Array): ReplyChunk {
  const dv = expectAtLeast('block status chunk', bytes, 12);
  if ((bytes.byteLength - 4) % 8 !== 0) {
    throw protocolError('block status chunk length is not 4 + 8n', { length: bytes.byteLength });
  }
  const descriptors: StatusDescriptor[] = [];
  for (let at = 4; at < bytes.byteLength; at += 8) {
    const length = dv.getUint32(at);
    if (length === 0) throw protocolError('block status descriptor of length 0');
    descriptors.push({ length, flags: dv.getUint32(at + 4) });
  }
  return { kind: 'block-status', contextId: dv.getUint32(0), descriptors };
}

/**
 * Decodes one chunk payload. OFFSET_DATA's `data` is a view into `bytes`. An unknown
 * type with the error bit set decodes as an error (the spec says such a reply is
 * errored); any other unknown type is a PROTOCOL_ERROR.
 */
export function decodeChunkPayload(type: number, bytes: Uint8Array): ReplyChunk {
  switch (type) {
    case REPLY_TYPE.NONE:
      expectLength('NONE chunk', bytes, 0);
      return { kind: 'none' };
    case REPLY_TYPE.OFFSET_DATA: {
      const dv = expectAtLeast('OFFSET_DATA chunk', bytes, 9);
      return { kind: 'data', offset: readU64(dv, 0, 'data offset'), data: bytes.subarray(8) };
    }
    case REPLY_TYPE.OFFSET_HOLE: {
      const dv = expectLength('OFFSET_HOLE chunk', bytes, 12);
      const length = dv.getUint32(8);
      if (length === 0) throw protocolError('hole of length 0');
      return { kind: 'hole', offset: readU64(dv, 0, 'hole offset'), length };
    }
    case REPLY_TYPE.BLOCK_STATUS:
      return decodeBlockStatusChunk(bytes);
    default:
      if (isErrorChunkType(type)) return decodeErrorChunk(type, bytes);
      throw protocolError(`unknown structured reply type ${type}`, { type });
  }
}
