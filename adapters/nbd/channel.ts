/**
 * The handshake channel: exact-length reads and writes over a socket during option
 * haggling, on a socket that may be swapped for a TLS socket mid-stream (STARTTLS).
 *
 * Terms:
 * - attach / detach: start and stop consuming a stream's `data` events. STARTTLS
 *   detaches the plain socket (nothing may be left unread: the server speaks TLS next),
 *   then attaches the TLS socket wrapped around it.
 * - leftover: bytes received past the last handshake read; after the handshake they
 *   belong to the transmission phase and are handed to the reply parser.
 *
 * The first failure (server closed, socket error, deadline) is sticky and rejects the
 * pending read and every later one.
 */
import type { Duplex } from 'node:stream';
import { ChunkvaultError } from '../../engine/errors.js';

interface Waiter {
  readonly n: number;
  readonly resolve: (bytes: Uint8Array) => void;
  readonly reject: (error: ChunkvaultError) => void;
}

export class HandshakeChannel {
  private segments: Buffer[] = [];
  private queued = 0;
  private waiter: Waiter | null = null;
  private failure: ChunkvaultError | null = null;
  private stream: Duplex | null = null;

  private readonly onData = (segment: Buffer): void => {
    this.segments.push(segment);
    this.queued += segment.byteLength;
    this.wake();
  };
  private readonly onEnd = (): void => {
    this.fail(new ChunkvaultError('CONNECT_FAILED', 'NBD server closed the connection during the handshake'));
  };
  private readonly onError = (err: Error): void => {
    this.fail(
      new ChunkvaultError('CONNECT_FAILED', `NBD connection failed during the handshake: ${err.message}`, {
        cause: err,
        details: { errno: (err as NodeJS.ErrnoException).code ?? null },
      }),
    );
  };

  attach(stream: Duplex): void {
    this.stream = stream;
    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('close', this.onEnd);
    stream.on('error', this.onError);
  }

  /**
   * Stops reading the stream; returns the bytes received but not read. With `pause`,
   * the stream is paused too, so nothing arriving before the next reader attaches is
   * lost (not for STARTTLS: the TLS socket must drive the plain one).
   */
  detach(pause = false): Buffer {
    const stream = this.stream;
    if (stream) {
      if (pause) stream.pause();
      stream.off('data', this.onData);
      stream.off('end', this.onEnd);
      stream.off('close', this.onEnd);
      stream.off('error', this.onError);
    }
    this.stream = null;
    const leftover = Buffer.concat(this.segments, this.queued);
    this.segments = [];
    this.queued = 0;
    return leftover;
  }

  write(bytes: Uint8Array): void {
    if (this.failure) throw this.failure;
    this.stream?.write(bytes);
  }

  /** Resolves with exactly `n` bytes. One read at a time. */
  read(n: number): Promise<Uint8Array> {
    if (this.waiter) return Promise.reject(new ChunkvaultError('INTERNAL', 'concurrent handshake reads'));
    return new Promise<Uint8Array>((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.wake();
    });
  }

  /** Fails the pending and every later read with `error` (first failure wins). */
  fail(error: ChunkvaultError): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const waiter = this.waiter;
    if (!waiter) return;
    if (this.queued >= waiter.n) {
      this.waiter = null;
      waiter.resolve(this.take(waiter.n));
    } else if (this.failure) {
      this.waiter = null;
      waiter.reject(this.failure);
    }
  }

  private take(n: number): Uint8Array {
    const all = this.segments.length === 1 ? (this.segments[0] as Buffer) : Buffer.concat(this.segments, this.queued);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.segments = rest.byteLength > 0 ? [rest] : [];
    this.queued = rest.byteLength;
    return out;
  }
}
