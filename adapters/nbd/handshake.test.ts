// Option haggling against a scripted server: the server's bytes are queued up front and
// the client's writes are decoded and checked.
import { describe, expect, it } from 'vitest';
import { ChunkvaultError } from '../../engine/errors.js';
import { type HandshakeIo, checkBlockSize, negotiate } from './handshake.js';
import {
  HANDSHAKE_FLAG,
  INFO,
  OPT,
  REP,
  TRANSMISSION_FLAG,
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
} from './protocol.js';

const FIXED = HANDSHAKE_FLAG.FIXED_NEWSTYLE | HANDSHAKE_FLAG.NO_ZEROES;
const FLAGS = TRANSMISSION_FLAG.HAS_FLAGS | TRANSMISSION_FLAG.READ_ONLY;

class ScriptedIo implements HandshakeIo {
  private incoming: Buffer;
  readonly written: Buffer[] = [];
  tlsStarted = 0;

  constructor(...server: Uint8Array[]) {
    this.incoming = Buffer.concat(server);
  }

  async read(n: number): Promise<Uint8Array> {
    if (this.incoming.byteLength < n) throw new ChunkvaultError('CONNECT_FAILED', 'script ran out');
    const out = this.incoming.subarray(0, n);
    this.incoming = this.incoming.subarray(n);
    return out;
  }

  write(bytes: Uint8Array): void {
    this.written.push(Buffer.from(bytes));
  }

  async startTls(): Promise<void> {
    this.tlsStarted++;
  }

  /** The options the client sent, after its 4-byte flags. */
  options(): Array<{ option: number; data: Uint8Array }> {
    return this.written.slice(1).map((bytes) => ({ option: decodeOptionHeader(bytes.subarray(0, 16)).option, data: bytes.subarray(16) }));
  }
}

const goReplies = (size = 1 << 20): Uint8Array[] => [
  encodeOptionReply(OPT.GO, REP.INFO, encodeInfoReply({ type: 'export', size, transmissionFlags: FLAGS })),
  encodeOptionReply(OPT.GO, REP.INFO, encodeInfoReply({ type: 'block-size', minimum: 512, preferred: 4096, maximum: 1 << 25 })),
  encodeOptionReply(OPT.GO, REP.INFO, encodeInfoReply({ type: 'name', name: 'disk' })),
  encodeOptionReply(OPT.GO, REP.ACK),
];

const base = { exportName: 'disk', tls: false, metaContexts: ['base:allocation'], requireMetaContexts: true };

describe('negotiate', () => {
  it('walks STRUCTURED_REPLY, SET_META_CONTEXT and GO', async () => {
    const io = new ScriptedIo(
      encodeGreeting(FIXED),
      encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ACK),
      encodeOptionReply(OPT.SET_META_CONTEXT, REP.META_CONTEXT, encodeMetaContextReply({ contextId: 5, name: 'base:allocation' })),
      encodeOptionReply(OPT.SET_META_CONTEXT, REP.ACK),
      ...goReplies(),
    );
    const result = await negotiate(io, base);
    expect(result).toMatchObject({
      size: 1 << 20,
      transmissionFlags: FLAGS,
      blockSize: { minimum: 512, preferred: 4096, maximum: 1 << 25 },
      blockSizeAdvertised: true,
      structuredReplies: true,
      via: 'go',
      tls: false,
    });
    expect([...result.metaContexts]).toEqual([['base:allocation', 5]]);
    expect(decodeClientFlags(io.written[0] as Buffer)).toBe(3);
    const sent = io.options();
    expect(sent.map((o) => o.option)).toEqual([OPT.STRUCTURED_REPLY, OPT.SET_META_CONTEXT, OPT.GO]);
    expect(decodeMetaContextRequest(sent[1]?.data as Uint8Array)).toEqual({ exportName: 'disk', queries: ['base:allocation'] });
    expect(decodeInfoRequest(sent[2]?.data as Uint8Array)).toEqual({ exportName: 'disk', infos: [INFO.EXPORT, INFO.BLOCK_SIZE] });
  });

  it('starts TLS first when asked, and fails with TLS_FAILED when refused', async () => {
    const ok = new ScriptedIo(encodeGreeting(FIXED), encodeOptionReply(OPT.STARTTLS, REP.ACK), encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ACK), ...goReplies());
    await negotiate(ok, { ...base, tls: true, metaContexts: [] });
    expect(ok.tlsStarted).toBe(1);
    expect(ok.options()[0]?.option).toBe(OPT.STARTTLS);
    const refused = new ScriptedIo(encodeGreeting(FIXED), encodeOptionReply(OPT.STARTTLS, REP.ERR_POLICY));
    await expect(negotiate(refused, { ...base, tls: true })).rejects.toMatchObject({ code: 'TLS_FAILED' });
    expect(refused.tlsStarted).toBe(0);
  });

  it('names the contexts the export offers when a required one is missing', async () => {
    const io = new ScriptedIo(
      encodeGreeting(FIXED),
      encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ACK),
      encodeOptionReply(OPT.SET_META_CONTEXT, REP.ACK),
      encodeOptionReply(OPT.LIST_META_CONTEXT, REP.META_CONTEXT, encodeMetaContextReply({ contextId: 0, name: 'qemu:dirty-bitmap:b2' })),
      encodeOptionReply(OPT.LIST_META_CONTEXT, REP.META_CONTEXT, encodeMetaContextReply({ contextId: 0, name: 'base:allocation' })),
      encodeOptionReply(OPT.LIST_META_CONTEXT, REP.ACK),
    );
    await expect(negotiate(io, { ...base, metaContexts: ['qemu:dirty-bitmap:b1'] })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      details: { missing: ['qemu:dirty-bitmap:b1'], available: ['base:allocation', 'qemu:dirty-bitmap:b2'] },
    });
  });

  it('tolerates a missing optional context and a server without structured replies', async () => {
    const io = new ScriptedIo(encodeGreeting(FIXED), encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ERR_UNSUP), ...goReplies());
    const result = await negotiate(io, { ...base, requireMetaContexts: false });
    expect(result.structuredReplies).toBe(false);
    expect(result.metaContexts.size).toBe(0);
    expect(io.options().map((o) => o.option)).toEqual([OPT.STRUCTURED_REPLY, OPT.GO]);
  });

  it('maps GO errors to typed codes and falls back to EXPORT_NAME on ERR_UNSUP', async () => {
    const prefix = [encodeGreeting(FIXED), encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ACK)];
    const options = { ...base, metaContexts: [] };
    const unknown = new ScriptedIo(...prefix, encodeOptionReply(OPT.GO, REP.ERR_UNKNOWN, new TextEncoder().encode('no such export')));
    await expect(negotiate(unknown, options)).rejects.toMatchObject({
      code: 'SOURCE_NOT_FOUND',
      details: { option: 'GO', reply: 'ERR_UNKNOWN', message: 'no such export' },
    });
    const shutdown = new ScriptedIo(...prefix, encodeOptionReply(OPT.GO, REP.ERR_SHUTDOWN));
    await expect(negotiate(shutdown, options)).rejects.toMatchObject({ code: 'CONNECT_FAILED' });
    const policy = new ScriptedIo(...prefix, encodeOptionReply(OPT.GO, REP.ERR_POLICY));
    await expect(negotiate(policy, options)).rejects.toMatchObject({ code: 'REMOTE_ERROR' });
    const fallback = new ScriptedIo(
      ...prefix,
      encodeOptionReply(OPT.GO, REP.ERR_UNSUP),
      encodeExportNameReply({ size: 4096, transmissionFlags: FLAGS }, true),
    );
    expect(await negotiate(fallback, options)).toMatchObject({ size: 4096, via: 'export-name', blockSizeAdvertised: false });
  });

  it('speaks plain newstyle to a server without FIXED_NEWSTYLE', async () => {
    const io = new ScriptedIo(encodeGreeting(0), encodeExportNameReply({ size: 512, transmissionFlags: FLAGS }, false));
    const result = await negotiate(io, { ...base, metaContexts: [], requireMetaContexts: false });
    expect(result).toMatchObject({ size: 512, via: 'export-name', structuredReplies: false });
    expect(decodeClientFlags(io.written[0] as Buffer)).toBe(0);
    expect(io.options().map((o) => o.option)).toEqual([OPT.EXPORT_NAME]);
    await expect(negotiate(new ScriptedIo(encodeGreeting(0)), { ...base, tls: true })).rejects.toMatchObject({ code: 'TLS_FAILED' });
  });

  it('rejects malformed option replies with PROTOCOL_ERROR', async () => {
    const wrongOption = new ScriptedIo(encodeGreeting(FIXED), encodeOptionReply(OPT.GO, REP.ACK));
    await expect(negotiate(wrongOption, base)).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
    const noExport = new ScriptedIo(encodeGreeting(FIXED), encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ACK), encodeOptionReply(OPT.GO, REP.ACK));
    await expect(negotiate(noExport, { ...base, metaContexts: [] })).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
    const badSizes = new ScriptedIo(
      encodeGreeting(FIXED),
      encodeOptionReply(OPT.STRUCTURED_REPLY, REP.ACK),
      encodeOptionReply(OPT.GO, REP.INFO, encodeInfoReply({ type: 'block-size', minimum: 3, preferred: 4096, maximum: 1 << 20 })),
    );
    await expect(negotiate(badSizes, { ...base, metaContexts: [] })).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
    const oddReply = new ScriptedIo(encodeGreeting(FIXED), encodeOptionReply(OPT.STRUCTURED_REPLY, REP.SERVER));
    await expect(negotiate(oddReply, base)).rejects.toMatchObject({ code: 'PROTOCOL_ERROR' });
  });
});

describe('checkBlockSize', () => {
  it('accepts the spec shapes and refuses broken ones', () => {
    expect(checkBlockSize({ minimum: 1, preferred: 4096, maximum: 0xffffffff })).toEqual({ minimum: 1, preferred: 4096, maximum: 0xffffffff });
    for (const bad of [
      { minimum: 0, preferred: 4096, maximum: 4096 },
      { minimum: 1 << 17, preferred: 1 << 17, maximum: 1 << 20 },
      { minimum: 4096, preferred: 512, maximum: 1 << 20 },
      { minimum: 512, preferred: 4096, maximum: 256 },
      { minimum: 512, preferred: 4096, maximum: 1000 },
    ]) {
      expect(() => checkBlockSize(bad)).toThrow(expect.objectContaining({ code: 'PROTOCOL_ERROR' }));
    }
  });
});
