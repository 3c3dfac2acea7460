/* Unpadded base64 as Matrix uses it (standard alphabet; padded input is also accepted when decoding). */
#ifndef MXKEYS_BASE64_H
#define MXKEYS_BASE64_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Encoded length (without NUL) of `n` bytes. */
size_t mx_base64_encoded_len(size_t n);
/** Encodes into `out` (at least mx_base64_encoded_len(n)+1 bytes, NUL-terminated). */
void mx_base64_encode(const uint8_t *in, size_t n, char *out);
/**
 * Decodes unpadded (or padded) standard base64. Returns the decoded length, or -1 on any invalid character, bad length
 * or output overflow; `out` is zeroed on failure.
 */
long mx_base64_decode(const char *in, size_t len, uint8_t *out, size_t outcap) __attribute__((warn_unused_result));
/** True when `s` decodes to exactly `n` bytes. */
bool mx_base64_is_key(const char *s, size_t n);

#endif
