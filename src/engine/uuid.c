/*
 * uuid.c - the UUID of a recorded call, derived from what names it on the
 * tape: the recording process's pid, the call's process-local thread index
 * and its wall start in ns.  Nothing is stored for it: the recorder (at the
 * call, for the logs and results files of @calltape.timer) and the reader
 * (Call.uuid) compute the same text from the same three numbers.
 *
 * Invariants: the layout is RFC 9562's version 8 (custom): version nibble
 * 8, variant bits 10; the other 122 bits are MurmurHash3 x64 128 of the 24
 * little-endian bytes pid, thread index, start.  Changing any of this
 * changes every recorded call's UUID: do not.
 */
#include "engine.h"

void call_uuid(int64_t pid, uint64_t thread_index, int64_t start_wall_ns, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t key[24], h[WIRE_HASH_BYTES];
    wire_put_le64(key, (uint64_t)pid);
    wire_put_le64(key + 8, thread_index);
    wire_put_le64(key + 16, (uint64_t)start_wall_ns);
    hash128(key, sizeof key, h);
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x80); /* version 8 */
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80); /* variant 10 */
    char *q = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *q++ = '-';
        *q++ = hex[h[i] >> 4];
        *q++ = hex[h[i] & 15];
    }
    *q = 0;
}
