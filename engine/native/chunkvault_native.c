/*
 * chunkvault's native hot path (engine/native.ts is its only caller).
 *
 * prepareSlots: for the listed slots of one window slab (engine/_window-slab.ts),
 * in one call: the all-zero check, SHA-256 (the identity), XXH64 of the raw bytes
 * (the check hash), LZ4 with an acceleration setting, XXH64 of the payload. One call
 * per worker task replaces five JavaScript-to-native calls and three allocations per
 * chunk, and exposes LZ4_compress_fast's acceleration, which the `lz4` package's
 * binding does not.
 *
 * lz4Compress / lz4Decompress: one LZ4 block into caller memory, for the paths that
 * do not go through a slab.
 *
 * readSlots: pread of a task's slots into the slab (sources the workers read
 * themselves); adviseWillNeed: the kernel read-ahead hint for a range; adviseHugePages:
 * transparent huge pages for large buffers.
 *
 * Sources: LZ4 and its XXH64 are compiled from the `lz4` package's bundled liblz4
 * (binding.gyp finds it); SHA-256 is the OpenSSL that Node itself links and exports,
 * so this uses the same SHA-NI code as node:crypto.
 *
 * Every index and length is checked against the sizes of the views passed in before
 * any memory is touched: a bad argument is a RangeError, never a stray write.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

#include "lz4.h"
#include "xxhash.h"

#define FLAG_HASH 1u
#define FLAG_LZ4 2u

/* Per-thread state: each worker thread has its own LZ4 state and digest context. */
static __thread void *lz4_state;
static __thread EVP_MD_CTX *md_ctx;
static __thread EVP_MD *md_sha256;

typedef struct {
  uint8_t *data;
  size_t length; /* in elements */
} view_t;

static napi_value throw_range(napi_env env, const char *message) {
  napi_throw_range_error(env, "INVALID_ARGUMENT", message);
  return NULL;
}

/* Reads argument `v` as a typed array of `type`; false (with a pending exception) if not. */
static int get_view(napi_env env, napi_value v, napi_typedarray_type type, view_t *out, const char *what) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) {
    napi_throw_type_error(env, "INVALID_ARGUMENT", what);
    return 0;
  }
  napi_typedarray_type t;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &t, &length, &data, NULL, NULL) != napi_ok || t != type) {
    napi_throw_type_error(env, "INVALID_ARGUMENT", what);
    return 0;
  }
  out->data = (uint8_t *)data;
  out->length = length;
  return 1;
}

static int get_u32(napi_env env, napi_value v, uint32_t *out, const char *what) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "INVALID_ARGUMENT", what);
    return 0;
  }
  return 1;
}

static int ensure_lz4_state(napi_env env) {
  if (!lz4_state) lz4_state = calloc(1, (size_t)LZ4_sizeofState());
  if (!lz4_state) {
    napi_throw_error(env, "INTERNAL", "out of memory for the LZ4 state");
    return 0;
  }
  return 1;
}

static int ensure_sha256(napi_env env) {
  if (!md_sha256) md_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (!md_ctx) md_ctx = EVP_MD_CTX_new();
  if (!md_sha256 || !md_ctx) {
    napi_throw_error(env, "INTERNAL", "OpenSSL SHA-256 is unavailable");
    return 0;
  }
  return 1;
}

static int sha256(const uint8_t *data, size_t length, uint8_t *digest) {
  unsigned int n = 0;
  return EVP_DigestInit_ex2(md_ctx, md_sha256, NULL) == 1 && EVP_DigestUpdate(md_ctx, data, length) == 1 &&
         EVP_DigestFinal_ex(md_ctx, digest, &n) == 1 && n == 32;
}

static int all_zero(const uint8_t *p, size_t n) {
  size_t i = 0;
  /* 64 bytes per step, or-reduced: the common non-zero chunk exits in the first step. */
  for (; i + 64 <= n; i += 64) {
    uint64_t w[8];
    memcpy(w, p + i, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return 0;
  }
  for (; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

/*
 * Compresses src into dst (dst_cap bytes) as a chunkvault LZ4 payload: u32 LE raw
 * length, then one LZ4 block. Returns the payload length, 0 when it does not fit.
 */
static size_t lz4_payload(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_cap, int accel) {
  if (dst_cap < 4 || n > (size_t)LZ4_MAX_INPUT_SIZE) return 0;
  size_t cap = dst_cap - 4;
  if (cap > (size_t)INT32_MAX) cap = INT32_MAX;
  int block = LZ4_compress_fast_extState(lz4_state, (const char *)src, (char *)dst + 4, (int)n, (int)cap, accel);
  if (block <= 0) return 0;
  uint32_t len = (uint32_t)n;
  dst[0] = (uint8_t)len;
  dst[1] = (uint8_t)(len >> 8);
  dst[2] = (uint8_t)(len >> 16);
  dst[3] = (uint8_t)(len >> 24);
  return 4 + (size_t)block;
}

/*
 * prepareSlots(raw, out, digest, check, payloadHash, length, payloadLength, zero, codec,
 *              slots, chunkSize, outStride, flags, acceleration, minSavingShift,
 *              lz4Codec, noneCodec) -> number of slots prepared
 */
static napi_value prepare_slots(napi_env env, napi_callback_info info) {
  size_t argc = 17;
  napi_value a[17];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 17) return throw_range(env, "prepareSlots takes 17 arguments");
  view_t raw, out, digest, check, phash, length, plength, zero, codec, slots;
  uint32_t chunk, stride, flags, accel, shift, lz4_id, none_id;
  if (!get_view(env, a[0], napi_uint8_array, &raw, "raw must be a Uint8Array") ||
      !get_view(env, a[1], napi_uint8_array, &out, "out must be a Uint8Array") ||
      !get_view(env, a[2], napi_uint8_array, &digest, "digest must be a Uint8Array") ||
      !get_view(env, a[3], napi_biguint64_array, &check, "check must be a BigUint64Array") ||
      !get_view(env, a[4], napi_biguint64_array, &phash, "payloadHash must be a BigUint64Array") ||
      !get_view(env, a[5], napi_uint32_array, &length, "length must be a Uint32Array") ||
      !get_view(env, a[6], napi_uint32_array, &plength, "payloadLength must be a Uint32Array") ||
      !get_view(env, a[7], napi_uint8_array, &zero, "zero must be a Uint8Array") ||
      !get_view(env, a[8], napi_uint8_array, &codec, "codec must be a Uint8Array") ||
      !get_view(env, a[9], napi_uint32_array, &slots, "slots must be a Uint32Array") ||
      !get_u32(env, a[10], &chunk, "chunkSize") || !get_u32(env, a[11], &stride, "outStride") ||
      !get_u32(env, a[12], &flags, "flags") || !get_u32(env, a[13], &accel, "acceleration") ||
      !get_u32(env, a[14], &shift, "minSavingShift") || !get_u32(env, a[15], &lz4_id, "lz4Codec") ||
      !get_u32(env, a[16], &none_id, "noneCodec"))
    return NULL;
  /* The slab's shape: every per-slot area holds the same number of slots. */
  size_t w = zero.length;
  if (chunk == 0 || stride < chunk || shift > 31 || check.length != w || phash.length != w || length.length != w ||
      plength.length != w || codec.length != w || digest.length != w * 32 || raw.length / chunk < w ||
      out.length / stride < w)
    return throw_range(env, "slab views disagree on their slot count");
  if ((flags & FLAG_LZ4) && !ensure_lz4_state(env)) return NULL;
  if ((flags & FLAG_HASH) && !ensure_sha256(env)) return NULL;
  const uint32_t *slot = (const uint32_t *)slots.data;
  uint32_t *lens = (uint32_t *)length.data, *plens = (uint32_t *)plength.data;
  uint64_t *checks = (uint64_t *)check.data, *phashes = (uint64_t *)phash.data;
  for (size_t k = 0; k < slots.length; k++) {
    uint32_t i = slot[k];
    if (i >= w || lens[i] > chunk) return throw_range(env, "slot index or length out of range");
  }
  for (size_t k = 0; k < slots.length; k++) {
    uint32_t i = slot[k];
    const uint8_t *src = raw.data + (size_t)i * chunk;
    size_t n = lens[i];
    if (flags & FLAG_HASH) {
      if (all_zero(src, n)) {
        zero.data[i] = 1;
        continue;
      }
      zero.data[i] = 0;
      if (!sha256(src, n, digest.data + (size_t)i * 32)) {
        napi_throw_error(env, "INTERNAL", "SHA-256 failed");
        return NULL;
      }
      checks[i] = XXH64(src, n, 0);
    }
    if ((flags & FLAG_LZ4) && zero.data[i] == 0) {
      uint8_t *dst = out.data + (size_t)i * stride;
      size_t limit = n - (n >> shift);
      size_t m = lz4_payload(src, n, dst, stride, (int)accel);
      if (m > 0 && m < limit) {
        codec.data[i] = (uint8_t)lz4_id;
      } else {
        memcpy(dst, src, n);
        m = n;
        codec.data[i] = (uint8_t)none_id;
      }
      plens[i] = (uint32_t)m;
      phashes[i] = XXH64(dst, m, 0);
    }
  }
  napi_value result;
  napi_create_uint32(env, (uint32_t)slots.length, &result);
  return result;
}

/* lz4Compress(src, dst, acceleration) -> payload length (prefix + block), 0 if it does not fit */
static napi_value lz4_compress(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  view_t src, dst;
  uint32_t accel;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 3) return throw_range(env, "lz4Compress takes 3 arguments");
  if (!get_view(env, a[0], napi_uint8_array, &src, "src must be a Uint8Array") ||
      !get_view(env, a[1], napi_uint8_array, &dst, "dst must be a Uint8Array") || !get_u32(env, a[2], &accel, "acceleration"))
    return NULL;
  if (!ensure_lz4_state(env)) return NULL;
  napi_value result;
  napi_create_uint32(env, (uint32_t)lz4_payload(src.data, src.length, dst.data, dst.length, (int)accel), &result);
  return result;
}

/* lz4Decompress(block, dst) -> bytes written, or a negative number for a malformed block */
static napi_value lz4_decompress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value a[2];
  view_t src, dst;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 2) return throw_range(env, "lz4Decompress takes 2 arguments");
  if (!get_view(env, a[0], napi_uint8_array, &src, "block must be a Uint8Array") ||
      !get_view(env, a[1], napi_uint8_array, &dst, "dst must be a Uint8Array"))
    return NULL;
  if (src.length > INT32_MAX || dst.length > INT32_MAX) return throw_range(env, "LZ4 block too large");
  int n = LZ4_decompress_safe((const char *)src.data, (char *)dst.data, (int)src.length, (int)dst.length);
  napi_value result;
  napi_create_int32(env, n < 0 ? -1 : n, &result);
  return result;
}

/* lz4Bound(n) -> bytes a payload of n raw bytes may take (prefix included) */
static napi_value lz4_bound(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  uint32_t n;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 1 || !get_u32(env, a[0], &n, "n")) return NULL;
  napi_value result;
  napi_create_uint32(env, 4u + (uint32_t)LZ4_compressBound((int)n), &result);
  return result;
}

/*
 * readSlots(fd, raw, chunkSize, slots, offsets, length, status) -> bytes read, or -1
 *
 * Reads the listed slots of a slab from a file descriptor (pread, so threads share one
 * descriptor): slot slots[k] gets length[slots[k]] bytes from disk offset offsets[k],
 * at raw + slots[k] x chunkSize. Slots adjacent both in the slab and on disk are read
 * as one run. On failure status[0] is the errno (0 when the file ended early) and
 * status[1] the disk offset of the failed read, and the result is -1.
 */
static napi_value read_slots(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value a[7];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 7) return throw_range(env, "readSlots takes 7 arguments");
  int32_t fd;
  uint32_t chunk;
  view_t raw, slots, offsets, length, status;
  if (napi_get_value_int32(env, a[0], &fd) != napi_ok) {
    napi_throw_type_error(env, "INVALID_ARGUMENT", "fd must be a number");
    return NULL;
  }
  if (!get_view(env, a[1], napi_uint8_array, &raw, "raw must be a Uint8Array") || !get_u32(env, a[2], &chunk, "chunkSize") ||
      !get_view(env, a[3], napi_uint32_array, &slots, "slots must be a Uint32Array") ||
      !get_view(env, a[4], napi_float64_array, &offsets, "offsets must be a Float64Array") ||
      !get_view(env, a[5], napi_uint32_array, &length, "length must be a Uint32Array") ||
      !get_view(env, a[6], napi_float64_array, &status, "status must be a Float64Array"))
    return NULL;
  const uint32_t *slot = (const uint32_t *)slots.data, *lens = (const uint32_t *)length.data;
  const double *off = (const double *)offsets.data;
  double *st = (double *)status.data;
  if (chunk == 0 || offsets.length != slots.length || status.length < 2) return throw_range(env, "readSlots: views disagree");
  for (size_t k = 0; k < slots.length; k++) {
    uint32_t i = slot[k];
    if (i >= length.length || lens[i] > chunk || (size_t)i >= raw.length / chunk || !(off[k] >= 0) || off[k] > 9007199254740991.0)
      return throw_range(env, "readSlots: slot, length or offset out of range");
  }
  double total = 0;
  for (size_t k = 0; k < slots.length;) {
    /* A run: following slots that continue it in the slab and on disk (all but its last full). */
    size_t e = k + 1;
    size_t n = lens[slot[k]];
    while (e < slots.length && slot[e] == slot[e - 1] + 1 && lens[slot[e - 1]] == chunk && off[e] == off[e - 1] + chunk) n += lens[slot[e++]];
    uint8_t *dst = raw.data + (size_t)slot[k] * chunk;
    off_t at = (off_t)off[k];
    for (size_t done = 0; done < n;) {
      ssize_t r = pread(fd, dst + done, n - done, at + (off_t)done);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        st[0] = r < 0 ? (double)errno : 0;
        st[1] = (double)(at + (off_t)done);
        napi_value fail;
        napi_create_int32(env, -1, &fail);
        return fail;
      }
      done += (size_t)r;
    }
    total += (double)n;
    k = e;
  }
  napi_value result;
  napi_create_double(env, total, &result);
  return result;
}

/*
 * adviseWillNeed(fd, offset, length): starts the kernel's read-ahead of a range
 * (posix_fadvise WILLNEED), so worker threads that pread it soon find it cached.
 * Advisory: errors are ignored.
 */
static napi_value advise_will_need(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value a[3];
  int32_t fd;
  double offset, len;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 3 || napi_get_value_int32(env, a[0], &fd) != napi_ok ||
      napi_get_value_double(env, a[1], &offset) != napi_ok || napi_get_value_double(env, a[2], &len) != napi_ok) {
    napi_throw_type_error(env, "INVALID_ARGUMENT", "adviseWillNeed(fd, offset, length) takes three numbers");
    return NULL;
  }
#if defined(POSIX_FADV_WILLNEED)
  if (offset >= 0 && len > 0) (void)posix_fadvise(fd, (off_t)offset, (off_t)len, POSIX_FADV_WILLNEED);
#endif
  return NULL;
}

/*
 * adviseHugePages(view) -> bytes advised: asks the kernel to back the whole 2 MiB pages
 * inside `view` with transparent huge pages (madvise MADV_HUGEPAGE; Linux only). First
 * touching fresh memory otherwise costs one page fault per 4 KiB, which on a virtual
 * machine is a costly trap. Advisory: 0 when not available or refused, never an error.
 */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value a[1];
  view_t v;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc != 1 || !get_view(env, a[0], napi_uint8_array, &v, "view: Uint8Array")) return NULL;
  double advised = 0;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = (uintptr_t)2 << 20;
  uintptr_t start = ((uintptr_t)v.data + huge - 1) & ~(huge - 1);
  uintptr_t end = ((uintptr_t)v.data + v.length) & ~(huge - 1);
  if (end > start && madvise((void *)start, end - start, MADV_HUGEPAGE) == 0) advised = (double)(end - start);
#endif
  napi_value result;
  napi_create_double(env, advised, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"prepareSlots", NULL, prepare_slots, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lz4Compress", NULL, lz4_compress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lz4Decompress", NULL, lz4_decompress, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lz4Bound", NULL, lz4_bound, NULL, NULL, NULL, napi_enumerable, NULL},
      {"adviseHugePages", NULL, advise_huge_pages, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readSlots", NULL, read_slots, NULL, NULL, NULL, napi_enumerable, NULL},
      {"adviseWillNeed", NULL, advise_will_need, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
