/**
 * The XenServer / XCP-ng front-end (`xen://USER@HOST/VM`, `xens://...`): a VM's disks
 * backed up with XenAPI changed block tracking, read over NBD with TLS or over HTTP
 * (export_raw_vdi). See front-end.ts for the snapshot life cycle; everything not
 * exported here is internal.
 *
 * The XenAPI client is our own (JSON-RPC with an XML-RPC fallback and a small codec)
 * rather than the `xen-api` package: it needs a dozen calls, maps XenAPI errors to our
 * typed errors directly, and adds no dependency.
 *
 * Error codes callers may see (all `ChunkvaultError`), besides the NBD client's:
 * - INVALID_ARGUMENT: a malformed source URI, no password, two VMs with the name.
 * - SOURCE_NOT_FOUND: no such VM, a VM without disks, transport=nbd without NBD.
 * - CONNECT_FAILED: the pool master cannot be reached, or the login was refused
 *   (`details.xenCode` SESSION_AUTHENTICATION_FAILED).
 * - REMOTE_ERROR: a XenAPI call failed (`details: {xenCode, params, method}`).
 * - TIMEOUT, PROTOCOL_ERROR: no answer, or not a XenAPI answer.
 * - TLS_FAILED: the NBD server does not hold the certificate XAPI returned.
 * - SOURCE_READ_FAILED: export_raw_vdi refused a range read.
 *
 * A broken CBT chain is not an error: the disk is read in full (allocated data) and
 * the point records why in `meta.fullReason`.
 */
export { XenVmFrontEnd, type XenVmFrontEndOptions } from './front-end.js';
export { isXenSource, parseXenSource, XEN_PASSWORD_ENV, type DiskNaming, type XenSource, type XenTransport } from './source.js';
export { XapiClient, toInt, xenCode, type XapiEndpoint, type XapiLogin, type XapiProtocol } from './xapi.js';
export { bitmapToExtents, blocksToBitmap, cbtBlockCount, CBT_BLOCK_SIZE, decodeChangedBlocks } from './bitmap.js';
export { decodeCall, decodeResponse, encodeCall, encodeFault, encodeResponse, encodeValue, type XmlRpcValue } from './xmlrpc.js';
export { HttpVdiSource, type HttpVdiOptions } from './http-source.js';
