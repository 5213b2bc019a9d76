import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  CLISERV_MAGIC,
  IHAVEOPT,
  NBD_MAGIC,
  OPTION_REPLY_MAGIC,
  REP,
  REPLY_TYPE,
  REQUEST_MAGIC,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  type InfoReply,
  type ReplyChunk,
  chunkType,
  decodeChunkHeader,
  decodeChunkPayload,
  decodeClientFlags,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfoReply,
  decodeInfoRequest,
  decodeMetaContextReply,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeRequest,
  decodeSimpleReplyHeader,
  encodeChunkHeader,
  encodeChunkPayload,
  encodeClientFlags,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoReply,
  encodeInfoRequest,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeOption,
  encodeOptionReply,
  encodeRequest,
  encodeSimpleReply,
  errnoName,
  replyTypeName,
} from './protocol.js';

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const offset = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const name = fc.string({ maxLength: 64 });

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

function expectProtocolError(fn: () => unknown): void {
  expect(fn).toThrow(expect.objectContaining({ code: 'PROTOCOL_ERROR' }));
}

describe('protocol constants', () => {
  it('pins the magic numbers of the NBD protocol', () => {
    expect(NBD_MAGIC).toBe(BigInt('0x' + Buffer.from('NBDMAGIC').toString('hex')));
    expect(IHAVEOPT).toBe(BigInt('0x' + Buffer.from('IHAVEOPT').toString('hex')));
    expect(CLISERV_MAGIC).toBe(0x00420281861253n);
    expect(OPTION_REPLY_MAGIC).toBe(0x3e889045565a9n);
    expect(REQUEST_MAGIC).toBe(0x25609513);
    expect(SIMPLE_REPLY_MAGIC).toBe(0x67446698);
    expect(STRUCTURED_REPLY_MAGIC).toBe(0x668e33ef);
    expect(REP.ERR_UNSUP).toBe(2 ** 31 + 1);
    expect(REPLY_TYPE.ERROR_OFFSET).toBe(2 ** 15 + 2);
  });

  it('names errnos and reply types', () => {
    expect(errnoName(5)).toBe('EIO');
    expect(errnoName(108)).toBe('ESHUTDOWN');
    expect(errnoName(999)).toBe('ERRNO_999');
    expect(replyTypeName(REP.ERR_TLS_REQD)).toBe('ERR_TLS_REQD');
  });
});

describe('handshake codecs', () => {
  it('round-trips the greeting, client flags and options', () => {
    fc.assert(
      fc.property(u16, u32, u32, fc.uint8Array({ maxLength: 64 }), (flags, clientFlags, option, data) => {
        expect(decodeGreeting(encodeGreeting(flags))).toEqual({ handshakeFlags: flags });
        expect(decodeClientFlags(encodeClientFlags(clientFlags))).toBe(clientFlags);
        const encoded = encodeOption(option, data);
        expect(decodeOptionHeader(encoded.subarray(0, 16))).toEqual({ option, length: data.byteLength });
        expect(encoded.subarray(16)).toEqual(data);
      }),
    );
  });

  it('round-trips option replies, GO requests and meta context requests', () => {
    fc.assert(
      fc.property(u32, u32, fc.uint8Array({ maxLength: 64 }), name, fc.array(u16, { maxLength: 8 }), fc.array(name, { maxLength: 5 }),
        (option, type, data, exportName, infos, queries) => {
          const reply = encodeOptionReply(option, type, data);
          expect(decodeOptionReplyHeader(reply.subarray(0, 20))).toEqual({ option, type, length: data.byteLength });
          expect(decodeInfoRequest(encodeInfoRequest({ exportName, infos }))).toEqual({ exportName, infos });
          expect(decodeMetaContextRequest(encodeMetaContextRequest({ exportName, queries }))).toEqual({ exportName, queries });
        }),
    );
  });

  it('round-trips info and meta context replies', () => {
    const info: fc.Arbitrary<InfoReply> = fc.oneof(
      fc.record({ type: fc.constant('export' as const), size: offset, transmissionFlags: u16 }),
      fc.record({ type: fc.constant('block-size' as const), minimum: u32, preferred: u32, maximum: u32 }),
      fc.record({ type: fc.constant('name' as const), name }),
      fc.record({ type: fc.constant('description' as const), description: name }),
      fc.record({ type: fc.constant('unknown' as const), infoType: fc.integer({ min: 4, max: 0xffff }) }),
    );
    fc.assert(
      fc.property(info, u32, name.filter((n) => n.length > 0), (reply, contextId, contextName) => {
        expect(decodeInfoReply(encodeInfoReply(reply))).toEqual(reply);
        expect(decodeMetaContextReply(encodeMetaContextReply({ contextId, name: contextName }))).toEqual({
          contextId,
          name: contextName,
        });
      }),
    );
  });

  it('round-trips the EXPORT_NAME reply with and without the 124 zeroes', () => {
    fc.assert(
      fc.property(offset, u16, fc.boolean(), (size, transmissionFlags, noZeroes) => {
        const encoded = encodeExportNameReply({ size, transmissionFlags }, noZeroes);
        expect(encoded.byteLength).toBe(noZeroes ? 10 : 134);
        expect(decodeExportNameReply(encoded, noZeroes)).toEqual({ size, transmissionFlags });
      }),
    );
  });

  it('rejects malformed handshake messages with PROTOCOL_ERROR', () => {
    expectProtocolError(() => decodeGreeting(new Uint8Array(17)));
    expectProtocolError(() => decodeGreeting(new Uint8Array(18)));
    const oldstyle = encodeGreeting(0);
    new DataView(oldstyle.buffer).setBigUint64(8, CLISERV_MAGIC);
    expect(() => decodeGreeting(oldstyle)).toThrow(/oldstyle/);
    expectProtocolError(() => decodeOptionReplyHeader(new Uint8Array(20)));
    const huge = encodeOptionReply(7, 3);
    new DataView(huge.buffer).setUint32(16, 10_000_000);
    expectProtocolError(() => decodeOptionReplyHeader(huge));
    expectProtocolError(() => decodeInfoReply(bytes(0, 0, 1)));
    expectProtocolError(() => decodeInfoReply(bytes(0)));
    expectProtocolError(() => decodeInfoReply(bytes(0, 3, 0, 0, 0, 1)));
    expectProtocolError(() => decodeMetaContextReply(bytes(0, 0, 0, 1)));
    expectProtocolError(() => decodeMetaContextReply(bytes(0, 0, 0, 1, 0xff)));
    expectProtocolError(() => decodeMetaContextRequest(bytes(0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9)));
    expectProtocolError(() => decodeInfoRequest(bytes(0, 0, 0, 9, 0, 0)));
    expectProtocolError(() => decodeExportNameReply(new Uint8Array(10), false));
    const tooBig = encodeExportNameReply({ size: 0, transmissionFlags: 0 }, true);
    new DataView(tooBig.buffer).setBigUint64(0, 2n ** 60n);
    expectProtocolError(() => decodeExportNameReply(tooBig, true));
  });
});

const descriptor = fc.record({ length: fc.integer({ min: 1, max: 0xffffffff }), flags: u32 });
const chunkArb: fc.Arbitrary<ReplyChunk> = fc.oneof(
  fc.constant({ kind: 'none' as const }),
  fc.record({ kind: fc.constant('data' as const), offset, data: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({ kind: fc.constant('hole' as const), offset, length: fc.integer({ min: 1, max: 0xffffffff }) }),
  fc.record({ kind: fc.constant('block-status' as const), contextId: u32, descriptors: fc.array(descriptor, { minLength: 1, maxLength: 8 }) }),
  fc.record({
    kind: fc.constant('error' as const),
    errno: fc.integer({ min: 1, max: 0xffffffff }),
    message: fc.string({ maxLength: 40 }),
    offset: fc.option(offset, { nil: null }),
  }),
);

describe('transmission codecs', () => {
  it('round-trips requests, simple replies and chunk headers', () => {
    fc.assert(
      fc.property(u16, u16, u64, offset, u32, u32, (flags, type, cookie, at, length, errno) => {
        const request = { flags, type, cookie, offset: at, length };
        expect(decodeRequest(encodeRequest(request))).toEqual(request);
        expect(decodeSimpleReplyHeader(encodeSimpleReply({ errno, cookie }))).toEqual({ errno, cookie });
        const header = { flags, type, cookie, length };
        expect(decodeChunkHeader(encodeChunkHeader(header))).toEqual(header);
      }),
    );
  });

  it('round-trips every chunk payload', () => {
    fc.assert(
      fc.property(chunkArb, (chunk) => {
        expect(decodeChunkPayload(chunkType(chunk), encodeChunkPayload(chunk))).toEqual(chunk);
      }),
    );
  });

  it('decodes an unknown error-class chunk type as an error', () => {
    const payload = encodeChunkPayload({ kind: 'error', errno: 5, message: 'x', offset: null });
    expect(decodeChunkPayload(REPLY_TYPE.ERROR + 40, payload)).toMatchObject({ kind: 'error', errno: 5, message: 'x' });
  });

  it('rejects malformed transmission messages with PROTOCOL_ERROR', () => {
    expectProtocolError(() => decodeSimpleReplyHeader(new Uint8Array(16)));
    expectProtocolError(() => decodeChunkHeader(new Uint8Array(20)));
    expectProtocolError(() => decodeRequest(new Uint8Array(27)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.NONE, bytes(1)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.OFFSET_DATA, new Uint8Array(8)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.OFFSET_HOLE, new Uint8Array(11)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.OFFSET_HOLE, new Uint8Array(12)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.BLOCK_STATUS, new Uint8Array(8)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.BLOCK_STATUS, new Uint8Array(16)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.BLOCK_STATUS, bytes(0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.ERROR, bytes(0, 0, 0, 5, 0, 9, 65)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.ERROR, bytes(0, 0, 0, 0, 0, 0)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.ERROR_OFFSET, bytes(0, 0, 0, 5, 0, 0, 0, 0, 0, 0)));
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.ERROR_OFFSET, new Uint8Array(20).fill(1)));
    expectProtocolError(() => decodeChunkPayload(77, new Uint8Array(0)));
    const farHole = new Uint8Array(12);
    new DataView(farHole.buffer).setBigUint64(0, 2n ** 63n);
    new DataView(farHole.buffer).setUint32(8, 1);
    expectProtocolError(() => decodeChunkPayload(REPLY_TYPE.OFFSET_HOLE, farHole));
  });

  it('never throws anything but a typed error on random payloads', () => {
    fc.assert(
      fc.property(u16, fc.uint8Array({ maxLength: 48 }), (type, payload) => {
        try {
          decodeChunkPayload(type, payload);
        } catch (err) {
          expect(err).toMatchObject({ code: 'PROTOCOL_ERROR' });
        }
      }),
    );
  });
});
