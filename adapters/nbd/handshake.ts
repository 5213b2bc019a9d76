/**
 * Option haggling: the client's half of the fixed-newstyle handshake, written against
 * a small I/O interface so it runs over any transport (and in tests, over none).
 *
 * Order, each step only when the server can take it:
 *
 *   greeting -> client flags -> STARTTLS (nbds) -> STRUCTURED_REPLY
 *            -> SET_META_CONTEXT (contexts asked) -> GO {EXPORT, BLOCK_SIZE}
 *                                                   \-- ERR_UNSUP --> EXPORT_NAME
 *
 * Terms:
 * - required context: one the caller named; if the server does not select it, the
 *   handshake fails (INVALID_ARGUMENT) naming the contexts the export does offer.
 * - block size: minimum (alignment every request must keep), preferred (efficient
 *   granularity), maximum (largest request). Asking for NBD_INFO_BLOCK_SIZE promises
 *   the server we honour them; when none is sent the spec's defaults apply.
 *
 * Error codes: an export the server does not have is SOURCE_NOT_FOUND; TLS refused or
 * required is TLS_FAILED; a server shutting down is CONNECT_FAILED (worth a retry);
 * other option errors are REMOTE_ERROR; a malformed reply is PROTOCOL_ERROR.
 */
import { ChunkvaultError, type ErrorCode } from '../../engine/errors.js';
import {
  CLIENT_FLAG,
  GREETING_BYTES,
  HANDSHAKE_FLAG,
  INFO,
  OPT,
  OPTION_REPLY_HEADER_BYTES,
  REP,
  type InfoReply,
  U32_MAX,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOptionErrorMessage,
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeString,
  exportNameReplyBytes,
  isOptionReplyError,
  optionName,
  replyTypeName,
} from './protocol.js';

/** The transport as the handshake sees it. */
export interface HandshakeIo {
  /** Resolves with exactly `n` bytes. */
  read(n: number): Promise<Uint8Array>;
  write(bytes: Uint8Array): void;
  /** Upgrades the transport to TLS; resolves once the server is verified. */
  startTls(): Promise<void>;
}

export interface HandshakeOptions {
  readonly exportName: string;
  readonly tls: boolean;
  readonly metaContexts: readonly string[];
  /** Fail when a listed context is not selected (otherwise it is just absent). */
  readonly requireMetaContexts: boolean;
}

export interface BlockSizeInfo {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** What the handshake settled. */
export interface NegotiatedExport {
  readonly exportName: string;
  readonly size: number;
  readonly transmissionFlags: number;
  readonly blockSize: BlockSizeInfo;
  /** False when the server sent no NBD_INFO_BLOCK_SIZE (defaults apply). */
  readonly blockSizeAdvertised: boolean;
  readonly structuredReplies: boolean;
  /** Selected context names and their ids. */
  readonly metaContexts: ReadonlyMap<string, number>;
  readonly tls: boolean;
  readonly via: 'go' | 'export-name';
}

/** The spec's defaults when the server sends no block size: 1 / 4 KiB / 32 MiB. */
export const DEFAULT_BLOCK_SIZE: BlockSizeInfo = { minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 };

interface OptionReply {
  readonly type: number;
  readonly data: Uint8Array;
}

function protocolError(message: string): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `NBD handshake: ${message}`);
}

function request(io: HandshakeIo, option: number, data?: Uint8Array): void {
  io.write(encodeOption(option, data));
}

async function readReply(io: HandshakeIo, option: number): Promise<OptionReply> {
  const header = decodeOptionReplyHeader(await io.read(OPTION_REPLY_HEADER_BYTES));
  if (header.option !== option) {
    throw protocolError(`reply for option ${optionName(header.option)} while waiting for ${optionName(option)}`);
  }
  const data = header.length === 0 ? new Uint8Array(0) : await io.read(header.length);
  return { type: header.type, data };
}

/** Maps an option error reply to a typed error. */
export function optionError(option: number, reply: OptionReply, exportName: string): ChunkvaultError {
  const message = decodeOptionErrorMessage(reply.data);
  const details = { option: optionName(option), reply: replyTypeName(reply.type), message, exportName };
  const suffix = message ? `: ${message}` : '';
  const map: Record<number, [ErrorCode, string]> = {
    [REP.ERR_TLS_REQD]: ['TLS_FAILED', 'the server requires TLS (use an nbds:// URI)'],
    [REP.ERR_UNKNOWN]: ['SOURCE_NOT_FOUND', `the server has no export "${exportName}"`],
    [REP.ERR_SHUTDOWN]: ['CONNECT_FAILED', 'the server is shutting down'],
  };
  const [code, text] = map[reply.type] ?? ['REMOTE_ERROR', `the server refused ${optionName(option)} with ${details.reply}`];
  return new ChunkvaultError(code, `NBD handshake: ${text}${suffix}`, { details });
}

function unexpected(option: number, reply: OptionReply): ChunkvaultError {
  return protocolError(`unexpected reply ${replyTypeName(reply.type)} to ${optionName(option)}`);
}

async function startTls(io: HandshakeIo, exportName: string): Promise<void> {
  request(io, OPT.STARTTLS);
  const reply = await readReply(io, OPT.STARTTLS);
  if (reply.type === REP.ACK) return io.startTls();
  if (!isOptionReplyError(reply.type)) throw unexpected(OPT.STARTTLS, reply);
  const refused = optionError(OPT.STARTTLS, reply, exportName);
  throw new ChunkvaultError('TLS_FAILED', `NBD handshake: the server refused STARTTLS (${replyTypeName(reply.type)})`, {
    cause: refused,
    details: refused.details,
  });
}

async function negotiateStructured(io: HandshakeIo, exportName: string): Promise<boolean> {
  request(io, OPT.STRUCTURED_REPLY);
  const reply = await readReply(io, OPT.STRUCTURED_REPLY);
  if (reply.type === REP.ACK) return true;
  if (reply.type === REP.ERR_TLS_REQD) throw optionError(OPT.STRUCTURED_REPLY, reply, exportName);
  if (isOptionReplyError(reply.type)) return false;
  throw unexpected(OPT.STRUCTURED_REPLY, reply);
}

/** Sends a (SET|LIST)_META_CONTEXT and collects the named contexts until ACK. */
async function metaContextExchange(
  io: HandshakeIo,
  option: number,
  exportName: string,
  queries: readonly string[],
): Promise<Map<string, number> | OptionReply> {
  request(io, option, encodeMetaContextRequest({ exportName, queries }));
  const contexts = new Map<string, number>();
  for (;;) {
    const reply = await readReply(io, option);
    if (reply.type === REP.ACK) return contexts;
    if (isOptionReplyError(reply.type)) return reply;
    if (reply.type !== REP.META_CONTEXT) throw unexpected(option, reply);
    const { contextId, name } = decodeMetaContextReply(reply.data);
    contexts.set(name, contextId);
  }
}

/** Names of every context the export offers, for error messages; empty if unknown. */
async function listContexts(io: HandshakeIo, exportName: string): Promise<string[]> {
  const listed = await metaContextExchange(io, OPT.LIST_META_CONTEXT, exportName, []);
  return listed instanceof Map ? [...listed.keys()].sort() : [];
}

function missingContexts(wanted: readonly string[], exportName: string, available: string[]): ChunkvaultError {
  return new ChunkvaultError(
    'INVALID_ARGUMENT',
    `NBD export "${exportName}" has no metadata context ${wanted.join(', ')}` +
      (available.length ? ` (it offers ${available.join(', ')})` : ''),
    { details: { exportName, missing: [...wanted], available } },
  );
}

async function negotiateContexts(
  io: HandshakeIo,
  options: HandshakeOptions,
  structured: boolean,
): Promise<Map<string, number>> {
  const wanted = options.metaContexts;
  if (wanted.length === 0) return new Map();
  if (!structured) {
    if (!options.requireMetaContexts) return new Map();
    throw missingContexts(wanted, options.exportName, []);
  }
  const result = await metaContextExchange(io, OPT.SET_META_CONTEXT, options.exportName, wanted);
  if (!(result instanceof Map)) {
    if (!options.requireMetaContexts) return new Map();
    if (result.type === REP.ERR_TLS_REQD) throw optionError(OPT.SET_META_CONTEXT, result, options.exportName);
    throw missingContexts(wanted, options.exportName, []);
  }
  const missing = wanted.filter((name) => !result.has(name));
  if (missing.length > 0 && options.requireMetaContexts) {
    throw missingContexts(missing, options.exportName, await listContexts(io, options.exportName));
  }
  return result;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

/** Rejects block sizes that break the spec's rules (they would make us misbehave). */
export function checkBlockSize(info: BlockSizeInfo): BlockSizeInfo {
  const { minimum, preferred, maximum } = info;
  const ok =
    isPowerOfTwo(minimum) &&
    minimum <= 65536 &&
    isPowerOfTwo(preferred) &&
    preferred >= minimum &&
    maximum >= minimum &&
    (maximum === U32_MAX || maximum % minimum === 0);
  if (!ok) throw protocolError(`invalid block sizes min ${minimum} / preferred ${preferred} / max ${maximum}`);
  return { minimum, preferred, maximum };
}

interface GoResult {
  size: number;
  transmissionFlags: number;
  blockSize: BlockSizeInfo | null;
}

function applyInfo(result: Partial<GoResult>, info: InfoReply): void {
  if (info.type === 'export') {
    result.size = info.size;
    result.transmissionFlags = info.transmissionFlags;
  } else if (info.type === 'block-size') {
    result.blockSize = checkBlockSize(info);
  }
}

/** NBD_OPT_GO; null when the server does not know GO (use EXPORT_NAME). */
async function go(io: HandshakeIo, exportName: string): Promise<GoResult | null> {
  request(io, OPT.GO, encodeInfoRequest({ exportName, infos: [INFO.EXPORT, INFO.BLOCK_SIZE] }));
  const result: Partial<GoResult> = { blockSize: null };
  for (;;) {
    const reply = await readReply(io, OPT.GO);
    if (reply.type === REP.INFO) applyInfo(result, decodeInfoReply(reply.data));
    else if (reply.type === REP.ACK) break;
    else if (reply.type === REP.ERR_UNSUP) return null;
    else if (isOptionReplyError(reply.type)) throw optionError(OPT.GO, reply, exportName);
    else throw unexpected(OPT.GO, reply);
  }
  if (result.size === undefined || result.transmissionFlags === undefined) {
    throw protocolError('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
  }
  return result as GoResult;
}

async function exportName(io: HandshakeIo, name: string, noZeroes: boolean): Promise<GoResult> {
  encodeString(name);
  request(io, OPT.EXPORT_NAME, new TextEncoder().encode(name));
  let bytes: Uint8Array;
  try {
    bytes = await io.read(exportNameReplyBytes(noZeroes));
  } catch (err) {
    if (!(err instanceof ChunkvaultError) || err.code !== 'CONNECT_FAILED') throw err;
    // The server may only hang up on an export it will not serve.
    throw new ChunkvaultError('SOURCE_NOT_FOUND', `NBD server closed the connection on export "${name}"`, {
      cause: err,
      details: { exportName: name },
    });
  }
  return { ...decodeExportNameReply(bytes, noZeroes), blockSize: null };
}

/** Runs the whole handshake; on success the transport is in the transmission phase. */
export async function negotiate(io: HandshakeIo, options: HandshakeOptions): Promise<NegotiatedExport> {
  const { handshakeFlags } = decodeGreeting(await io.read(GREETING_BYTES));
  const fixed = (handshakeFlags & HANDSHAKE_FLAG.FIXED_NEWSTYLE) !== 0;
  const noZeroes = (handshakeFlags & HANDSHAKE_FLAG.NO_ZEROES) !== 0;
  io.write(encodeClientFlags((fixed ? CLIENT_FLAG.FIXED_NEWSTYLE : 0) | (noZeroes ? CLIENT_FLAG.NO_ZEROES : 0)));
  if (!fixed && options.tls) {
    throw new ChunkvaultError('TLS_FAILED', 'NBD handshake: the server cannot negotiate TLS (no fixed newstyle)');
  }
  if (options.tls) await startTls(io, options.exportName);
  const structured = fixed && (await negotiateStructured(io, options.exportName));
  const metaContexts = fixed ? await negotiateContexts(io, options, structured) : new Map<string, number>();
  if (!fixed && options.requireMetaContexts && options.metaContexts.length > 0) {
    throw missingContexts(options.metaContexts, options.exportName, []);
  }
  const viaGo = fixed ? await go(io, options.exportName) : null;
  const result = viaGo ?? (await exportName(io, options.exportName, noZeroes));
  return {
    exportName: options.exportName,
    size: result.size,
    transmissionFlags: result.transmissionFlags,
    blockSize: result.blockSize ?? DEFAULT_BLOCK_SIZE,
    blockSizeAdvertised: result.blockSize !== null,
    structuredReplies: structured,
    metaContexts,
    tls: options.tls,
    via: viaGo ? 'go' : 'export-name',
  };
}
