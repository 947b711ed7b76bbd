/*
 * transpose.c - the byte transpose of segment format 6's shuffled value
 * columns (segment.c): a matrix of `rows` rows of `cols` bytes becomes
 * `cols` rows of `rows` bytes.  Shuffling a column of n calls of `share`
 * bytes each is transposing n x share; putting it back is transposing
 * share x n.
 *
 * Blocks of 8 x 8 bytes are transposed in eight 64-bit words (three rounds
 * of masked swaps: the 4 x 4 blocks, the 2 x 2 blocks, the bytes), eight
 * loads and eight stores instead of 64 of each; the edges that do not fill
 * a block go a byte at a time.  Words are read and written little-endian
 * whatever the CPU, so the bytes are the same everywhere (the tape format
 * depends on them).
 *
 * Invariant: reads only the rows * cols bytes of src and writes only the
 * rows * cols bytes of dst; src and dst do not overlap.
 */
#include "engine.h"

/* One masked swap of the 8 x 8 transpose: the `bits`-wide fields of *a
 * that `keep` does not select trade places with those it selects in *b. */
__attribute__((always_inline)) static inline void swap_fields(uint64_t *a, uint64_t *b, int bits,
                                                              uint64_t keep)
{
    uint64_t x = *a, y = *b;
    *a = (x & keep) | (y & keep) << bits;
    *b = (x >> bits & keep) | (y & ~keep);
}

/* Transposes the 8 x 8 bytes at `src` (rows `src_stride` apart) to `dst`
 * (rows `dst_stride` apart). */
static void transpose8(uint8_t *dst, size_t dst_stride, const uint8_t *src, size_t src_stride)
{
    /* the 4 x 4 blocks off the diagonal, then the 2 x 2 ones, then the bytes */
    static const struct {
        int step, bits;
        uint64_t keep;
    } rounds[3] = {
        {4, 32, 0x00000000ffffffffull},
        {2, 16, 0x0000ffff0000ffffull},
        {1, 8, 0x00ff00ff00ff00ffull},
    };
    uint64_t x[8]; /* in registers: the loops are unrolled */
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        x[i] = wire_get_le64(src + (size_t)i * src_stride); /* byte j of x[i]: row i, column j */
#pragma GCC unroll 3
    for (int k = 0; k < 3; k++)
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++)
            if (!(i & rounds[k].step))
                swap_fields(&x[i], &x[i + rounds[k].step], rounds[k].bits, rounds[k].keep);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        wire_put_le64(dst + (size_t)i * dst_stride, x[i]); /* byte j of x[i]: row j, column i */
}

void bytes_transpose(uint8_t *restrict dst, const uint8_t *restrict src, size_t rows, size_t cols)
{
    /* the whole 8 x 8 blocks, then the rest a column at a time (written
     * in order): the rows below the blocks, and all rows of the columns
     * right of them */
    size_t block_rows = rows / 8 * 8, block_cols = cols / 8 * 8;
    for (size_t r = 0; r < block_rows; r += 8)
        for (size_t c = 0; c < block_cols; c += 8)
            transpose8(dst + c * rows + r, rows, src + r * cols + c, cols);
    for (size_t c = 0; c < cols; c++) {
        size_t i = c < block_cols ? block_rows : 0;
        size_t at = i * cols + c; /* an offset, not a pointer: it may pass the end */
        uint8_t *to = dst + c * rows;
        for (; i + 4 <= rows; i += 4, at += 4 * cols) { /* four at a time */
            to[i] = src[at];
            to[i + 1] = src[at + cols];
            to[i + 2] = src[at + 2 * cols];
            to[i + 3] = src[at + 3 * cols];
        }
        for (; i < rows; i++, at += cols)
            to[i] = src[at];
    }
}
