/**
 * The NBD adapter's public surface: a read-only NBD client (`NbdClient`) that is a
 * `BlockSource`, and the URI parser. Everything else in this folder is internal.
 *
 * Error codes callers may see (all `ChunkvaultError`):
 * - INVALID_ARGUMENT: bad URI or option, a context not offered or not negotiated, use
 *   after close.
 * - CONNECT_FAILED: the server cannot be reached, or a connection dropped and retries
 *   were spent (`details.reason`).
 * - TIMEOUT: connect, handshake or a request took longer than its limit.
 * - TLS_FAILED: TLS refused, required but not asked, or the certificate did not verify.
 * - SOURCE_NOT_FOUND: the server has no such export.
 * - SOURCE_TRUNCATED: a read past the end of the export.
 * - REMOTE_ERROR: the server failed a request (`details: {offset, length, errno}`).
 * - PROTOCOL_ERROR: the server broke the protocol; its connection is dropped.
 */
export {
  NbdClient,
  mergeExtents,
  type BlockStatusExtent,
  type NbdClientOptions,
  type NbdClientStats,
  type NbdExportInfo,
} from './client.js';
export type { BlockSizeInfo } from './handshake.js';
export { CONTEXT_BASE_ALLOCATION, CONTEXT_DIRTY_BITMAP_PREFIX, DEFAULT_PORT, STATE, STATE_DIRTY } from './protocol.js';
export type { TlsSettings } from './tls.js';
export { formatNbdUri, parseNbdUri, type NbdAddress, type NbdUri } from './uri.js';
export { NbdFrontEnd, type NbdFrontEndOptions } from './front-end.js';
