/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of VHDX headers,
 * region tables and log entries (MS-VHDX 2.2.2). Table-driven, one byte per step:
 * the structures it covers are at most 64 KiB and are read once per open.
 */

const TABLE: Uint32Array = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/**
 * CRC-32C of `data`, continuing from `previous` (the result of an earlier call over the
 * preceding bytes; 0 to start). Returns an unsigned 32-bit value.
 */
export function crc32c(data: Uint8Array, previous = 0): number {
  let crc = ~previous >>> 0;
  for (let i = 0; i < data.length; i++) crc = (TABLE[(crc ^ (data[i] as number)) & 0xff] as number) ^ (crc >>> 8);
  return ~crc >>> 0;
}

/**
 * CRC-32C of a structure whose own 4-byte checksum field sits at `fieldOffset`: the
 * field counts as zero (MS-VHDX: "computed over the entire structure with the checksum
 * field set to zero"). `data` is not modified.
 */
export function crc32cWithZeroField(data: Uint8Array, fieldOffset: number): number {
  let crc = crc32c(data.subarray(0, fieldOffset));
  crc = crc32c(new Uint8Array(4), crc);
  return crc32c(data.subarray(fieldOffset + 4), crc);
}
