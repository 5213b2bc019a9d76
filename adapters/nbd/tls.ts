/**
 * The TLS upgrade after NBD_OPT_STARTTLS, and how the server's certificate is checked.
 *
 * Terms:
 * - CA file (`tls-ca`): PEM certificates the server's chain must lead to; the server's
 *   name (`tls-hostname`, else the URI host) must match its certificate's SAN.
 * - pin (`tls-pin=sha256:HEX`): SHA-256 of the server certificate's DER bytes. With a
 *   pin and no CA file, the pin alone authenticates the server (self-signed servers,
 *   XAPI's `VDI.get_nbd_info` certificate); with both, both must hold.
 * - neither: the system's default CAs and the host name are checked.
 *
 * Every failure to set up or verify TLS is TLS_FAILED; it is never retried.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { ChunkvaultError } from '../../engine/errors.js';

export interface TlsSettings {
  /** PEM file of trusted CA certificates. */
  readonly caFile?: string;
  /** Lower-case hex SHA-256 of the server certificate (DER), 64 digits. */
  readonly pinSha256?: string;
  /** Name to check the certificate against, and to send as SNI when not an IP. */
  readonly hostname?: string;
}

async function readCa(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new ChunkvaultError('INVALID_ARGUMENT', `cannot read the TLS CA file ${file}`, {
      cause: err,
      details: { path: file },
    });
  }
}

function tlsError(message: string, cause?: unknown): ChunkvaultError {
  const reason = (cause as NodeJS.ErrnoException | undefined)?.code ?? null;
  return new ChunkvaultError('TLS_FAILED', `NBD TLS: ${message}`, { cause, details: { reason } });
}

/** SHA-256 (lower-case hex) of the peer certificate's DER bytes. */
export function peerFingerprint(socket: TLSSocket): string | null {
  const cert = socket.getPeerCertificate();
  if (!cert || !cert.raw) return null;
  return createHash('sha256').update(cert.raw).digest('hex');
}

function waitSecure(socket: TLSSocket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onClose = (): void => reject(tlsError('the server closed the connection during the TLS handshake'));
    socket.once('secureConnect', () => {
      socket.off('close', onClose);
      resolve();
    });
    socket.once('error', (err) => reject(tlsError(err.message, err)));
    socket.once('close', onClose);
  });
}

/**
 * Wraps `socket` in TLS as the client and verifies the server. `defaultHost` is the
 * URI's host (absent for unix sockets). Resolves once the server is authenticated;
 * on failure the TLS socket is destroyed.
 */
export async function upgradeToTls(socket: Socket, settings: TlsSettings, defaultHost?: string): Promise<TLSSocket> {
  const ca = settings.caFile === undefined ? undefined : await readCa(settings.caFile);
  const host = settings.hostname ?? defaultHost ?? 'localhost';
  const pinOnly = settings.pinSha256 !== undefined && ca === undefined;
  const tlsSocket = tlsConnect({
    socket,
    host,
    ...(isIP(host) ? {} : { servername: host }),
    ...(ca === undefined ? {} : { ca }),
    rejectUnauthorized: !pinOnly,
    minVersion: 'TLSv1.2',
  });
  try {
    await waitSecure(tlsSocket);
    if (settings.pinSha256 !== undefined) {
      const actual = peerFingerprint(tlsSocket);
      if (actual !== settings.pinSha256) {
        throw new ChunkvaultError('TLS_FAILED', 'NBD TLS: the server certificate does not match the pinned fingerprint', {
          details: { expected: `sha256:${settings.pinSha256}`, actual: actual === null ? null : `sha256:${actual}` },
        });
      }
    }
    return tlsSocket;
  } catch (err) {
    tlsSocket.destroy();
    throw err;
  }
}
