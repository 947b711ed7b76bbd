/*
 * test_engine.c - tests of the plain-C engine, without Python: the value
 * format, segments (their checksum and the older format without one), the
 * content hash, CRC-32C, and the engine end to end onto a real
 * SQLite tape (append, flush, fork-free reopen, read back), the energy
 * bounds of a search, self time (the table, and the totals per session),
 * named spans (a test's time: the records, rows, a search within them),
 * and a final round asked while the process exits.
 * Prints "N passed, N failed" and exits non-zero on any failure.
 */
#include "engine.h"
#include "engine_impl.h" /* selftime.c's table */
#include "store.h"
#include "store_sqlite.h" /* sq_db: to lower SQLite's limits */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

/* wire_copy at every size up to past its longest short copy: exactly the
 * bytes asked for, nothing either side. */
static void test_wire_copy(void)
{
    uint8_t src[80], dst[96];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)(i * 7 + 1);
    int ok = 1;
    for (size_t n = 0; n <= 72; n++) {
        memset(dst, 0xee, sizeof dst);
        wire_copy(dst + 8, src + 3, n);
        ok &= memcmp(dst + 8, src + 3, n) == 0;
        for (size_t i = 0; i < sizeof dst; i++)
            ok &= (i >= 8 && i < 8 + n) || dst[i] == 0xee;
    }
    CHECK(ok);
}

static void test_varint_and_skip(void)
{
    wbuf b;
    wbuf_init(&b, NULL, 0);
    wire_int(&b, -5);
    wire_float(&b, 1.5);
    wire_tagged_bytes(&b, WIRE_STR, "abc", 3);
    wbuf_byte(&b, WIRE_LIST);
    wbuf_varint(&b, 2);
    wbuf_byte(&b, WIRE_NONE);
    wire_int(&b, 1ll << 40);
    CHECK(!b.failed);
    const uint8_t *p = b.data, *end = b.data + b.len;
    int n = 0;
    while (p && p < end) {
        p = wire_skip(p, end);
        n++;
    }
    CHECK(p == end);
    CHECK(n == 4);
    /* a truncated value is rejected, never read past */
    CHECK(wire_skip(b.data, b.data + 1) == NULL);
    wbuf out;
    wbuf_init(&out, NULL, 0);
    p = b.data;
    while (p < end) {
        p = wire_preview(p, end, &out, 100);
        wbuf_byte(&out, ' ');
    }
    wbuf_byte(&out, 0);
    CHECK(strcmp((char *)out.data, "-5 1.5 'abc' [None, 1099511627776] ") == 0);
    wbuf_free(&out);
    wbuf_free(&b);
}

static void test_preview_bounded(void)
{
    wbuf b, out;
    wbuf_init(&b, NULL, 0);
    wbuf_init(&out, NULL, 0);
    char big[1000];
    memset(big, 'x', sizeof big);
    wire_tagged_bytes(&b, WIRE_STR, big, sizeof big);
    wire_preview(b.data, b.data + b.len, &out, 50);
    CHECK(out.len <= 53);
    CHECK(memcmp(out.data + out.len - 3, "...", 3) == 0);
    wbuf_free(&out);
    wbuf_free(&b);
}

/* wire_next: each tag's own fields and how many children follow it. */
static void test_tokenizer(void)
{
    wbuf b;
    wbuf_init(&b, NULL, 0);
    wbuf_byte(&b, WIRE_DICT); /* {'k': [-3, 2.5]} */
    wbuf_varint(&b, 1);
    wire_tagged_bytes(&b, WIRE_STR, "k", 1);
    wbuf_byte(&b, WIRE_LIST);
    wbuf_varint(&b, 2);
    wire_int(&b, -3);
    wire_float(&b, 2.5);
    wbuf_byte(&b, WIRE_CODEC); /* name, data */
    wire_sized(&b, "np", 2);
    wire_sized(&b, "xyz", 3);
    wbuf_byte(&b, WIRE_OBJECT); /* shop.Point, plain, 1 dict pair, 0 slots */
    wire_sized(&b, "shop", 4);
    wire_sized(&b, "Point", 5);
    wbuf_byte(&b, WIRE_KIND_PLAIN);
    wbuf_varint(&b, 1);
    wbuf_varint(&b, 0);
    wire_tagged_bytes(&b, WIRE_STR, "x", 1);
    wire_int(&b, 7);
    wbuf_byte(&b, WIRE_REF);
    wbuf_varint(&b, 1);
    CHECK(!b.failed);
    const uint8_t *p = b.data, *end = b.data + b.len;
    wire_tok t;
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_DICT && t.u == 1 && t.children == 2);
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_STR && t.n == 1 && t.s[0] == 'k' && t.children == 0);
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_LIST && t.u == 2 && t.children == 2);
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_INT && unzigzag(t.u) == -3);
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_FLOAT && t.d == 2.5);
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_CODEC && t.n == 2 && memcmp(t.s, "np", 2) == 0 && t.n2 == 3 &&
          memcmp(t.s2, "xyz", 3) == 0);
    const uint8_t *object = p;
    p = wire_next(p, end, &t);
    CHECK(p && t.tag == WIRE_OBJECT && t.kind == WIRE_KIND_PLAIN && t.u == 1 && t.u2 == 0 &&
          t.children == 2 && t.n == 4 && t.n2 == 5 && memcmp(t.s2, "Point", 5) == 0);
    CHECK(wire_skip(object, end) == end - 2); /* the object ends before the REF */
    CHECK(wire_memo_count(object, end - 2) == 1);
    p = wire_skip(object, end);
    p = wire_next(p, end, &t);
    CHECK(p == end && t.tag == WIRE_REF && t.u == 1);
    /* malformed: an unknown tag, a cut payload, more children than bytes */
    uint8_t unknown = 0x7f, cut[] = {WIRE_STR, 5, 'a'}, many[] = {WIRE_LIST, 9, WIRE_NONE};
    CHECK(wire_next(&unknown, &unknown + 1, &t) == NULL);
    CHECK(wire_next(cut, cut + sizeof cut, &t) == NULL);
    CHECK(wire_next(many, many + sizeof many, &t) == NULL);
    CHECK(wire_next(end, end, &t) == NULL);
    wbuf_free(&b);
}

/* The quoting and float repr that previews and literals share. */
static void test_quote_and_float_repr(void)
{
    static const struct {
        double d;
        const char *repr;
    } floats[] = {{0.1, "0.1"},
                  {2.0, "2.0"},
                  {-0.0, "-0.0"},
                  {1e15, "1000000000000000.0"},
                  {1e16, "1e+16"},
                  {1.5e-5, "1.5e-05"},
                  {0.00015, "0.00015"},
                  {123456789.125, "123456789.125"},
                  {1.0 / 3, "0.3333333333333333"}};
    char buf[WIRE_FLOAT_REPR_MAX];
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        size_t n = wire_float_repr(floats[i].d, buf);
        CHECK(n == strlen(floats[i].repr) && strcmp(buf, floats[i].repr) == 0);
    }
    wire_float_repr(-1.0 / 0.0, buf);
    CHECK(strcmp(buf, "-inf") == 0);
    /* the short path (few decimals) gives what the general path gives:
     * checked against "%.17g" read back, and digit for digit on samples */
    static const struct {
        double d;
        const char *repr;
    } few[] = {{0.5, "0.5"},         {-2.25, "-2.25"},
               {1234.5, "1234.5"},   {0.05, "0.05"},
               {0.0001, "0.0001"},   {123456.000001, "123456.000001"},
               {0.00015, "0.00015"}, {9.5e15, "9500000000000000.0"}};
    for (size_t i = 0; i < sizeof few / sizeof few[0]; i++) {
        size_t n = wire_float_repr(few[i].d, buf);
        CHECK(n == strlen(few[i].repr) && strcmp(buf, few[i].repr) == 0);
    }
    for (int64_t i = -300000; i < 300000; i += 7) {
        double d = (double)i / 8.0 + (double)i * 1e9;
        wire_float_repr(d, buf);
        CHECK(strtod(buf, NULL) == d);
    }
    wbuf out;
    wbuf_init(&out, NULL, 0);
    /* control characters, C1, a lone surrogate; then not UTF-8 */
    const char *text = "a'\\\r\x01\xc2\x85\xc3\xa9\xed\xa0\x80";
    CHECK(wire_quote(&out, (const uint8_t *)text, strlen(text), 0, SIZE_MAX) == 0);
    wbuf_byte(&out, 0);
    CHECK(strcmp((char *)out.data, "'a\\'\\\\\\r\\x01\\x85\xc3\xa9\\ud800'") == 0);
    out.len = 0;
    CHECK(wire_quote(&out, (const uint8_t *)"\xff", 1, 0, SIZE_MAX) < 0);
    out.len = 0;
    CHECK(wire_quote(&out, (const uint8_t *)"\xff", 1, WIRE_QUOTE_LENIENT, SIZE_MAX) == 0);
    CHECK(out.len == 6 && memcmp(out.data, "'\\xff'", 6) == 0);
    out.len = 0;
    CHECK(wire_quote(&out, (const uint8_t *)"\xff", 1, WIRE_QUOTE_BYTES, SIZE_MAX) == 0);
    CHECK(out.len == 7 && memcmp(out.data, "b'\\xff'", 7) == 0);
    /* stops once past `stop`, without the closing quote */
    out.len = 0;
    CHECK(wire_quote(&out, (const uint8_t *)"abcdefgh", 8, 0, 3) == 0);
    CHECK(out.len == 4 && memcmp(out.data, "'abc", 4) == 0);
    wbuf_free(&out);
}

/* The literal of the value built by `fill`, or "" when it has none. */
static void literal_of(const wbuf *b, char *buf, size_t n)
{
    wbuf out;
    wbuf_init(&out, NULL, 0);
    const uint8_t *end = wire_literal(b->data, b->data + b->len, &out);
    snprintf(buf, n, "%.*s", end ? (int)out.len : 0, end ? (const char *)out.data : "");
    CHECK(end == NULL || end == b->data + b->len);
    wbuf_free(&out);
}

static void test_literals(void)
{
    char lit[256];
    wbuf b;
    wbuf_init(&b, NULL, 0);
    wbuf_byte(&b, WIRE_LIST);
    wbuf_varint(&b, 6);
    wire_int(&b, -7);
    wire_float(&b, 0.1);
    wire_float(&b, 2.0);
    wire_tagged_bytes(&b, WIRE_STR, "it's\n\xc3\xa9", 7);
    wire_tagged_bytes(&b, WIRE_BYTES, "\x00\xff", 2);
    wbuf_byte(&b, WIRE_TUPLE);
    wbuf_varint(&b, 1);
    wbuf_byte(&b, WIRE_NONE);
    literal_of(&b, lit, sizeof lit);
    CHECK(strcmp(lit, "[-7, 0.1, 2.0, 'it\\'s\\n\xc3\xa9', b'\\x00\\xff', (None,)]") == 0);
    /* a big int: -2**64 as 9 little-endian two's complement bytes */
    b.len = 0;
    uint8_t big[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff};
    wire_tagged_bytes(&b, WIRE_BIGINT, big, 9);
    literal_of(&b, lit, sizeof lit);
    CHECK(strcmp(lit, "-18446744073709551616") == 0);
    /* sets, frozensets and dicts, empty and not */
    b.len = 0;
    wbuf_byte(&b, WIRE_DICT);
    wbuf_varint(&b, 2);
    wbuf_byte(&b, WIRE_FROZENSET);
    wbuf_varint(&b, 0);
    wbuf_byte(&b, WIRE_SET);
    wbuf_varint(&b, 1);
    wire_int(&b, 1);
    wire_tagged_bytes(&b, WIRE_STR, "k", 1);
    wbuf_byte(&b, WIRE_DEFAULT);
    wbuf_byte(&b, WIRE_TRUE);
    literal_of(&b, lit, sizeof lit);
    CHECK(strcmp(lit, "{frozenset(): {1}, 'k': True}") == 0);
    /* no literal: a pickled value inside a list; a STR that is not UTF-8 */
    b.len = 0;
    wbuf_byte(&b, WIRE_LIST);
    wbuf_varint(&b, 1);
    wire_tagged_bytes(&b, WIRE_PICKLE, "x", 1);
    literal_of(&b, lit, sizeof lit);
    CHECK(lit[0] == 0);
    b.len = 0;
    wire_tagged_bytes(&b, WIRE_STR, "\xff", 1);
    literal_of(&b, lit, sizeof lit);
    CHECK(lit[0] == 0);
    /* a lone surrogate (kept by surrogatepass) is an escape */
    b.len = 0;
    wire_tagged_bytes(&b, WIRE_STR, "a\xed\xa0\x80", 4);
    literal_of(&b, lit, sizeof lit);
    CHECK(strcmp(lit, "'a\\ud800'") == 0);
    /* floats are written as their repr; nan and infinities as calls */
    b.len = 0;
    wbuf_byte(&b, WIRE_TUPLE);
    wbuf_varint(&b, 3);
    wire_float(&b, 1e15);
    wire_float(&b, 1e-7);
    wire_float(&b, -1.0 / 0.0);
    literal_of(&b, lit, sizeof lit);
    CHECK(strcmp(lit, "(1000000000000000.0, 1e-07, -float('inf'))") == 0);
    /* malformed: a list that promises more than it holds */
    b.len = 0;
    wbuf_byte(&b, WIRE_LIST);
    wbuf_varint(&b, 3);
    wire_int(&b, 1);
    literal_of(&b, lit, sizeof lit);
    CHECK(lit[0] == 0);
    wbuf_free(&b);
}

/* Locals and globals ride after the result: in REC_CALL (flags become a
 * varint, unchanged bytes below 0x80) and in the segment's result column. */
static void test_locals_globals_roundtrip(void)
{
    uint8_t result[2] = {WIRE_INT, 6};
    uint8_t locals[6] = {WIRE_DICT, 1, WIRE_STR, 1, 'x', WIRE_TRUE};
    uint8_t globals[7] = {WIRE_DICT, 1, WIRE_STR, 1, 'g', WIRE_INT, 2};
    uint8_t yields[4] = {WIRE_LIST, 1, WIRE_INT, 8};
    call_rec in;
    memset(&in, 0, sizeof in);
    in.fn = 1;
    in.seq = 7;
    in.flags = REC_HAS_RESULT | REC_HAS_LOCALS | REC_HAS_GLOBALS | REC_HAS_YIELDS;
    in.value[VALUE_RESULT].data = result;
    in.value[VALUE_RESULT].len = sizeof result;
    in.value[VALUE_LOCALS].data = locals;
    in.value[VALUE_LOCALS].len = sizeof locals;
    in.value[VALUE_GLOBALS].data = globals;
    in.value[VALUE_GLOBALS].len = sizeof globals;
    in.value[VALUE_YIELDS].data = yields;
    in.value[VALUE_YIELDS].len = sizeof yields;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    rec_put_call(&b, &in);
    wreader r;
    wreader_init(&r, b.data, b.len);
    uint64_t n = wreader_varint(&r);
    CHECK(n == (uint64_t)(r.end - r.p) && *r.p == REC_CALL);
    call_rec out;
    CHECK(rec_parse_call(r.p + 1, (size_t)n - 1, &out) == 0);
    CHECK(out.flags == in.flags && out.seq == 7);
    CHECK(out.value[VALUE_RESULT].len == sizeof result &&
          memcmp(out.value[VALUE_RESULT].data, result, sizeof result) == 0);
    CHECK(out.value[VALUE_LOCALS].len == sizeof locals &&
          memcmp(out.value[VALUE_LOCALS].data, locals, sizeof locals) == 0);
    CHECK(out.value[VALUE_GLOBALS].len == sizeof globals &&
          memcmp(out.value[VALUE_GLOBALS].data, globals, sizeof globals) == 0);
    CHECK(out.value[VALUE_YIELDS].len == sizeof yields &&
          memcmp(out.value[VALUE_YIELDS].data, yields, sizeof yields) == 0);
    /* the fixed head: every field at its place, whatever its size */
    b.len = 0;
    in.flags = REC_HAS_RESULT | REC_ASYNC;
    in.fn = 0xfffffffeu;
    in.thread = 3;
    in.depth = 70000;
    in.parent = 1ull << 40;
    in.start = UINT64_MAX - 5;
    in.duration = 1;
    in.outcome = OUTCOME_RAISED;
    rec_put_call(&b, &in);
    wreader_init(&r, b.data, b.len);
    n = wreader_varint(&r);
    CHECK(n == 1 + REC_CALL_HEAD + 1 + sizeof result);
    const uint8_t *head = r.p + 1;
    CHECK(head[REC_CALL_FLAGS_AT] == (uint8_t)in.flags &&
          head[REC_CALL_FLAGS_AT + 1] == (uint8_t)(in.flags >> 8) && head[46] == OUTCOME_RAISED);
    CHECK(rec_parse_call(head, (size_t)n - 1, &out) == 0 && out.value[VALUE_LOCALS].data == NULL);
    CHECK(out.fn == in.fn && out.thread == 3 && out.depth == 70000 && out.seq == 7 &&
          out.parent == in.parent && out.start == in.start && out.duration == 1 &&
          out.outcome == OUTCOME_RAISED && out.flags == in.flags);
    /* a body shorter than the head, or with bytes after its values, is refused */
    CHECK(rec_parse_call(head, REC_CALL_HEAD - 1, &out) < 0);
    CHECK(rec_parse_call(head, (size_t)n - 2, &out) < 0);

    /* segments: calls with and without locals/globals, interleaved */
    seg_builder s;
    seg_builder_init(&s);
    for (int i = 0; i < 10; i++) {
        seg_call c = {0};
        c.id = i + 1;
        c.start = 1000 + i;
        c.flags = REC_HAS_RESULT | (i % 2 ? REC_HAS_LOCALS : 0) | (i % 3 ? 0 : REC_HAS_GLOBALS);
        c.value[VALUE_RESULT].data = result;
        c.value[VALUE_RESULT].len = sizeof result;
        c.value[VALUE_LOCALS].data = locals;
        c.value[VALUE_LOCALS].len = sizeof locals;
        c.value[VALUE_GLOBALS].data = globals;
        c.value[VALUE_GLOBALS].len = sizeof globals;
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    wbuf seg;
    wbuf_init(&seg, NULL, 0);
    CHECK(seg_builder_finish(&s, &seg, NULL) == 0);
    seg_reader sr;
    CHECK(seg_reader_open(&sr, seg.data, seg.len) == 0);
    seg_call c;
    int i = 0, ok = 1;
    while (seg_reader_next(&sr, &c) == 1) {
        ok &= c.value[VALUE_RESULT].len == sizeof result &&
              memcmp(c.value[VALUE_RESULT].data, result, sizeof result) == 0;
        ok &= (i % 2) ? c.value[VALUE_LOCALS].len == sizeof locals &&
                            memcmp(c.value[VALUE_LOCALS].data, locals, sizeof locals) == 0
                      : c.value[VALUE_LOCALS].data == NULL;
        ok &= (i % 3) ? c.value[VALUE_GLOBALS].data == NULL
                      : c.value[VALUE_GLOBALS].len == sizeof globals &&
                            memcmp(c.value[VALUE_GLOBALS].data, globals, sizeof globals) == 0;
        ok &= c.flags ==
              (REC_HAS_RESULT | (i % 2 ? REC_HAS_LOCALS : 0) | (i % 3 ? 0 : REC_HAS_GLOBALS));
        i++;
    }
    CHECK(ok && i == 10);
    seg_reader_close(&sr);
    /* a search passing over calls skips their locals and globals too */
    CHECK(seg_reader_open(&sr, seg.data, seg.len) == 0);
    int found = 0;
    ok = 1;
    while (seg_reader_next_within(&sr, &c, 1005, 1009, 0, INT64_MAX) == 1) {
        ok &= c.start == 1005 + found && c.id == 6 + found;
        ok &= c.value[VALUE_RESULT].len == sizeof result &&
              memcmp(c.value[VALUE_RESULT].data, result, sizeof result) == 0;
        ok &= (c.flags & REC_HAS_LOCALS)
                  ? memcmp(c.value[VALUE_LOCALS].data, locals, sizeof locals) == 0
                  : 1;
        found++;
    }
    CHECK(ok && found == 5);
    seg_reader_close(&sr);
    wbuf_free(&seg);
    seg_builder_free(&s);
    wbuf_free(&b);
}

/* Every value slot, and some of them, through the record builder and
 * parser and then a segment's builder and reader, checked slot by slot by
 * enum value_slot (absent slots come back {NULL, 0}). */
static int slots_match(const value_bytes *got, const value_bytes *want, uint16_t flags)
{
    int ok = 1;
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        if (flags & value_flag((enum value_slot)i))
            ok &= got[i].len == want[i].len && memcmp(got[i].data, want[i].data, want[i].len) == 0;
        else
            ok &= got[i].data == NULL && got[i].len == 0;
    }
    return ok;
}

static void test_value_slots_roundtrip(void)
{
    static const uint8_t bytes[VALUE_NSLOTS][8] = {
        [VALUE_ARGS] = {WIRE_INT, 1, WIRE_INT, 2},
        [VALUE_RESULT] = {WIRE_INT, 3},
        [VALUE_LOCALS] = {WIRE_DICT, 1, WIRE_STR, 1, 'x', WIRE_TRUE},
        [VALUE_GLOBALS] = {WIRE_DICT, 1, WIRE_STR, 1, 'g', WIRE_INT, 2},
        [VALUE_YIELDS] = {WIRE_LIST, 1, WIRE_INT, 8},
    };
    static const size_t lens[VALUE_NSLOTS] = {4, 2, 6, 7, 4};
    value_bytes want[VALUE_NSLOTS];
    uint16_t all = 0;
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        want[i].data = bytes[i];
        want[i].len = lens[i];
        CHECK((all & value_flag((enum value_slot)i)) == 0); /* one flag per slot */
        all |= value_flag((enum value_slot)i);
    }
    CHECK(all ==
          (REC_HAS_ARGS | REC_HAS_RESULT | REC_HAS_LOCALS | REC_HAS_GLOBALS | REC_HAS_YIELDS));
    const uint16_t cases[] = {all, 0, REC_HAS_ARGS | REC_HAS_GLOBALS,
                              REC_HAS_RESULT | REC_HAS_YIELDS, REC_HAS_LOCALS};
    const int ncases = (int)(sizeof cases / sizeof cases[0]);
    seg_builder s;
    seg_builder_init(&s);
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (int k = 0; k < ncases; k++) {
        call_rec in = {0};
        in.fn = 1;
        in.seq = (uint64_t)k + 1;
        in.flags = cases[k];
        for (int i = 0; i < VALUE_NSLOTS; i++)
            in.value[i] = want[i]; /* unflagged slots must not be written */
        b.len = 0;
        rec_put_call(&b, &in);
        wreader r;
        wreader_init(&r, b.data, b.len);
        uint64_t n = wreader_varint(&r);
        CHECK(n == (uint64_t)(r.end - r.p) && *r.p == REC_CALL);
        call_rec out;
        CHECK(rec_parse_call(r.p + 1, (size_t)n - 1, &out) == 0);
        CHECK(out.flags == cases[k] && out.seq == in.seq);
        CHECK(slots_match(out.value, want, cases[k]));
        seg_call c = {0};
        c.id = k + 1;
        c.start = 1000 + k;
        c.flags = out.flags;
        memcpy(c.value, out.value, sizeof c.value);
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    wbuf seg;
    wbuf_init(&seg, NULL, 0);
    CHECK(seg_builder_finish(&s, &seg, NULL) == 0);
    seg_reader sr;
    CHECK(seg_reader_open(&sr, seg.data, seg.len) == 0);
    seg_call c;
    int k = 0, ok = 1;
    while (seg_reader_next(&sr, &c) == 1) {
        ok &= k < ncases && c.flags == cases[k] && slots_match(c.value, want, cases[k]);
        k++;
    }
    CHECK(ok && k == ncases);
    seg_reader_close(&sr);
    /* passing over calls skips every slot: the last one still decodes */
    CHECK(seg_reader_open(&sr, seg.data, seg.len) == 0);
    k = 0;
    while (seg_reader_next_within(&sr, &c, 1000 + ncases - 1, INT64_MAX, 0, INT64_MAX) == 1)
        k++;
    CHECK(k == 1 && c.flags == cases[ncases - 1] && slots_match(c.value, want, cases[ncases - 1]));
    seg_reader_close(&sr);
    wbuf_free(&seg);
    wbuf_free(&b);
    seg_builder_free(&s);
}

static void test_hash(void)
{
    uint8_t a[WIRE_HASH_BYTES], b[WIRE_HASH_BYTES], c[WIRE_HASH_BYTES];
    hash128("hello world", 11, a);
    hash128("hello world", 11, b);
    hash128("hello worle", 11, c);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
}

static void test_segment_roundtrip(void)
{
    seg_builder s;
    seg_builder_init(&s);
    uint8_t args[3] = {WIRE_INT, 4, WIRE_NONE};
    for (int i = 0; i < 1000; i++) {
        seg_call c = {0};
        c.id = 100 + i * 3;
        c.parent = i ? 100 + (i - 1) * 3 : 0;
        c.depth = i % 5;
        c.thread = 1;
        c.start = 1700000000000000000ll + i * 150;
        c.duration = 90 + i % 7;
        c.outcome = (uint8_t)(i % 10 == 0 ? OUTCOME_RAISED : OUTCOME_RETURNED);
        c.flags = REC_HAS_ARGS | (i % 2 ? REC_HAS_CPU : 0);
        c.cpu_ns = i;
        c.value[VALUE_ARGS].data = args;
        c.value[VALUE_ARGS].len = sizeof args;
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    CHECK(s.n == 1000 && s.n_raised == 100);
    wbuf out;
    wbuf_init(&out, NULL, 0);
    CHECK(seg_builder_finish(&s, &out, NULL) == 0);
    CHECK(out.len < 1000 * 16); /* compact: under 16 bytes a call with 4 bytes of values */
    seg_reader r;
    CHECK(seg_reader_open(&r, out.data, out.len) == 0);
    seg_call c;
    int i = 0, ok = 1;
    while (seg_reader_next(&r, &c) == 1) {
        ok &= c.id == 100 + i * 3 && c.parent == (i ? 100 + (i - 1) * 3 : 0);
        ok &= c.start == 1700000000000000000ll + i * 150 && c.duration == 90 + i % 7;
        ok &= c.value[VALUE_ARGS].len == 3 && memcmp(c.value[VALUE_ARGS].data, args, 3) == 0;
        ok &= (c.flags & REC_HAS_CPU) ? c.cpu_ns == i : 1;
        i++;
    }
    CHECK(ok);
    CHECK(i == 1000);
    seg_reader_close(&r);
    /* seg_reader_has_id reads the id column only and leaves the reader where it is */
    CHECK(seg_reader_open(&r, out.data, out.len) == 0);
    CHECK(seg_reader_has_id(&r, 100) == 1 && seg_reader_has_id(&r, 100 + 999 * 3) == 1);
    CHECK(seg_reader_has_id(&r, 101) == 0 && seg_reader_has_id(&r, 99) == 0);
    CHECK(r.verified == 1u && seg_reader_next(&r, &c) == 1 && c.id == 100);
    CHECK(seg_reader_has_id(&r, 100) == 0 && seg_reader_has_id(&r, 103) == 1);
    seg_reader_close(&r);
    /* a changed format byte fails the checksum; a segment of another
     * format (its own checksum, say) is newer or malformed */
    out.data[0] = 99;
    CHECK(seg_reader_open(&r, out.data, out.len) == SEG_CHECKSUM);
    out.data[out.len - 4 * SEG_CHECKSUMS] ^= 1; /* its header checksum, as another format's */
    CHECK(seg_reader_open(&r, out.data, out.len) == SEG_NEWER);
    out.data[0] = 0;
    CHECK(seg_reader_open(&r, out.data, out.len) == SEG_MALFORMED);
    wbuf_free(&out);
    seg_builder_free(&s);
}

/* The bitwise definition of CRC-32C, to check the sliced tables against. */
static uint32_t crc32c_bitwise(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void test_crc32c(void)
{
    /* published vectors: the check value, and RFC 3720 B.4 */
    CHECK(crc32c(0, "", 0) == 0);
    CHECK(crc32c(0, "123456789", 9) == 0xe3069283u);
    uint8_t buf[48];
    memset(buf, 0, 32);
    CHECK(crc32c(0, buf, 32) == 0x8a9136aau);
    memset(buf, 0xff, 32);
    CHECK(crc32c(0, buf, 32) == 0x62a8ab43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    CHECK(crc32c(0, buf, 32) == 0x46dd794eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    CHECK(crc32c(0, buf, 32) == 0x113fdb5cu);
    static const uint8_t iscsi[48] = {0x01, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,    0, 0, 0, 0,
                                      0x14, 0,    0, 0, 0, 0, 4, 0, 0, 0, 0, 0x14, 0, 0, 0, 0x18,
                                      0x28, 0,    0, 0, 0, 0, 0, 0, 2, 0, 0, 0,    0, 0, 0, 0};
    CHECK(crc32c(0, iscsi, sizeof iscsi) == 0xd9963a56u);
    /* every length and alignment of random bytes, and in two parts */
    uint8_t *rnd = malloc(4096 + 16);
    if (!rnd)
        return;
    uint32_t x = 12345;
    for (size_t i = 0; i < 4096 + 16; i++) {
        x = x * 1103515245u + 12345u;
        rnd[i] = (uint8_t)(x >> 16);
    }
    /* crc32c (the CPU's instruction where there is one) and crc32c_sw */
    int same = 1, same_sw = 1, parts = 1, parts_sw = 1;
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; n <= 200; n++) {
            uint32_t want = crc32c_bitwise(rnd + off, n);
            same &= crc32c(0, rnd + off, n) == want;
            same_sw &= crc32c_sw(0, rnd + off, n) == want;
        }
    same &= crc32c(0, rnd, 4096) == crc32c_bitwise(rnd, 4096);
    same_sw &= crc32c_sw(0, rnd, 4096) == crc32c_bitwise(rnd, 4096);
    for (size_t cut = 0; cut <= 100; cut++) {
        parts &= crc32c(crc32c(0, rnd, cut), rnd + cut, 100 - cut) == crc32c(0, rnd, 100);
        parts_sw &= crc32c_sw(crc32c(0, rnd, cut), rnd + cut, 100 - cut) == crc32c(0, rnd, 100);
    }
    CHECK(crc32c_sw(0, "123456789", 9) == 0xe3069283u);
    CHECK(crc32c_sw(0, iscsi, sizeof iscsi) == 0xd9963a56u);
    CHECK(same);
    CHECK(same_sw);
    CHECK(parts);
    CHECK(parts_sw);
    free(rnd);
}

/* Reads the segment whole; 0 at its end, or the seg_status met. */
static int read_whole(const uint8_t *data, size_t n)
{
    seg_reader r;
    seg_call c;
    int rc = seg_reader_open(&r, data, n);
    while (rc == 0 && (rc = seg_reader_next(&r, &c)) == 1)
        rc = 0;
    seg_reader_close(&r);
    return rc;
}

/* Format 4 keeps every flag and the capture of each call, in one byte of
 * the flags column for a call with arguments and a result. */
static void test_segment_capture(void)
{
    static const uint16_t flags[] = {
        REC_HAS_ARGS | REC_HAS_RESULT,
        REC_HAS_ARGS | REC_HAS_RESULT | REC_HAS_CPU | REC_UNBOUND | REC_HAS_YIELDS,
        0,
        REC_HAS_RESULT | REC_ASYNC | REC_HAS_LOCALS | REC_HAS_GLOBALS | REC_HAS_MEMORY,
    };
    uint8_t val[2] = {WIRE_INT, 4};
    seg_builder s;
    seg_builder_init(&s);
    int n = 0;
    for (int cap = CAPTURE_UNKNOWN; cap <= CAPTURE_LAST; cap++)
        for (size_t k = 0; k < sizeof flags / sizeof *flags; k++) {
            seg_call c = {0};
            c.id = 1 + n;
            c.start = 1000 + n;
            c.outcome = (uint8_t)(n % 3);
            c.flags = flags[k] | rec_capture_flags((enum rec_capture)cap);
            for (int i = 0; i < VALUE_NSLOTS; i++)
                if (c.flags & value_flag((enum value_slot)i)) {
                    c.value[i].data = val;
                    c.value[i].len = sizeof val;
                }
            CHECK(seg_builder_add(&s, &c) == 0);
            n++;
        }
    wbuf out;
    wbuf_init(&out, NULL, 0);
    CHECK(seg_builder_finish(&s, &out, NULL) == 0);
    seg_reader r;
    seg_call c;
    CHECK(seg_reader_open(&r, out.data, out.len) == 0);
    int i = 0, ok = 1;
    while (seg_reader_next(&r, &c) == 1) {
        int cap = i / (int)(sizeof flags / sizeof *flags);
        uint16_t want = flags[i % (int)(sizeof flags / sizeof *flags)];
        ok &= c.flags == (want | rec_capture_flags((enum rec_capture)cap)) &&
              rec_capture_of(c.flags) == (enum rec_capture)cap && c.outcome == i % 3;
        i++;
    }
    CHECK(ok && i == n);
    seg_reader_close(&r);
    CHECK(rec_capture_of(rec_capture_flags(CAPTURE_TIMER) | REC_HAS_BLOBS) == CAPTURE_TIMER);

    /* a decorator's call with arguments and a result: one byte of flags */
    seg_builder_reset(&s);
    seg_call one = {.id = 7, .start = 5, .flags = flags[0] | rec_capture_flags(CAPTURE_DECORATOR)};
    one.value[VALUE_ARGS] = (value_bytes){val, sizeof val};
    one.value[VALUE_RESULT] = (value_bytes){val, sizeof val};
    CHECK(seg_builder_add(&s, &one) == 0);
    out.len = 0;
    CHECK(seg_builder_finish(&s, &out, NULL) == 0);
    wreader h;
    wreader_init(&h, out.data + 1, out.len - 1);
    for (int k = 0; k < 4; k++)
        wreader_varint(&h); /* n, first id, first start, the packing mask */
    for (int col = 0; col < 6; col++)
        wreader_take(&h, wreader_varint(&h));
    CHECK(wreader_varint(&h) == 1);
    wbuf_free(&out);
    seg_builder_free(&s);
}

/* Gives the segment of format 2 or later at `data` the format byte
 * `format` and the header checksum that goes with it, as a writer of that
 * format would have written the same bytes. */
static void as_format(uint8_t *data, size_t n, uint8_t format)
{
    data[0] = format;
    size_t body = n - SEG_CHECKSUMS * 4;
    wreader h;
    wreader_init(&h, data + 1, body - 1);
    /* n, first id, first start, the packing mask (and the shuffling mask) */
    for (int k = 0; k < (format >= 6 ? 5 : 4); k++)
        wreader_varint(&h);
    uint32_t head = crc32c(0, data, (size_t)(h.p - data));
    for (int i = 0; i < 10; i++) {
        const uint8_t *at = h.p;
        uint64_t len = wreader_varint(&h);
        head = crc32c(head, at, (size_t)(h.p - at));
        wreader_take(&h, len);
    }
    memcpy(data + body, &head, 4); /* little-endian host, as the engine */
}

/* The format-6 segment of `n` bytes at `data`, none of whose columns is
 * shuffled, as format 5 wrote it (the same without the shuffling mask);
 * returns its new length. */
static size_t as_format_5(uint8_t *data, size_t n)
{
    wreader h;
    wreader_init(&h, data + 1, n - 1);
    for (int k = 0; k < 4; k++) /* n, first id, first start, the packing mask */
        wreader_varint(&h);
    size_t at = (size_t)(h.p - data);
    CHECK(data[0] == 6 && data[at] == 0);
    memmove(data + at, data + at + 1, n - at - 1);
    as_format(data, n - 1, 5);
    return n - 1;
}

/* Format 2 segments end with CRC-32Cs of the header and of each column:
 * any flipped byte is SEG_CHECKSUM by the time the segment is read whole,
 * and the start/duration test sees either the undamaged answer or the
 * damage; format 1 (the same without them) is still read; a wrong count
 * or bytes left in a column are malformed. */
static void test_segment_checksum_and_format_1(void)
{
    seg_builder s;
    seg_builder_init(&s);
    uint8_t args[3] = {WIRE_INT, 4, WIRE_NONE};
    for (int i = 0; i < 50; i++) {
        seg_call c = {0};
        c.id = 10 + i;
        c.start = 1000 + i;
        c.duration = 5;
        c.flags = REC_HAS_ARGS;
        c.value[VALUE_ARGS].data = args;
        c.value[VALUE_ARGS].len = sizeof args;
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    wbuf out;
    wbuf_init(&out, NULL, 0);
    CHECK(seg_builder_finish(&s, &out, NULL) == 0);
    CHECK(out.data[0] == CALLTAPE_SEGMENT_FORMAT && CALLTAPE_SEGMENT_FORMAT == 6);
    seg_reader r;
    seg_call c;
    CHECK(seg_reader_open(&r, out.data, out.len) == 0);
    CHECK(read_whole(out.data, out.len) == 0);
    int all_caught = 1, within_ok = 1, within_caught = 0;
    for (size_t i = 0; i < out.len; i++)
        for (int bit = 0; bit < 8; bit++) {
            out.data[i] ^= (uint8_t)(1 << bit);
            all_caught &= read_whole(out.data, out.len) == SEG_CHECKSUM;
            int any = seg_has_call_within(out.data, out.len, 1010, 1010, 0, INT64_MAX);
            within_ok &= any == 1 || any == SEG_CHECKSUM;
            within_caught += any == SEG_CHECKSUM;
            out.data[i] ^= (uint8_t)(1 << bit);
        }
    CHECK(all_caught);
    CHECK(within_ok);
    CHECK(within_caught > 8 * 100); /* the header and the start and duration columns */
    CHECK(read_whole(out.data, out.len - 1) == SEG_CHECKSUM); /* truncated */
    CHECK(seg_reader_open(&r, out.data, 3) == SEG_CHECKSUM);  /* cut before its checksums */
    CHECK(strcmp(seg_strerror(SEG_CHECKSUM), "fails its checksum") == 0);

    /* format 5 (no shuffling mask), and 4 (the bookkeeping columns never
     * packed), read as they were */
    out.len = as_format_5(out.data, out.len);
    CHECK(seg_reader_open(&r, out.data, out.len) == 0 && r.format == 5);
    CHECK(read_whole(out.data, out.len) == 0);
    uint8_t *four = malloc(out.len);
    if (!four)
        return;
    memcpy(four, out.data, out.len);
    as_format(four, out.len, 4);
    CHECK(seg_reader_open(&r, four, out.len) == 0 && r.format == 4);
    int n4 = 0, ok4 = 1;
    while (seg_reader_next(&r, &c) == 1) {
        ok4 &= c.id == 10 + n4 && c.start == 1000 + n4 && c.duration == 5 &&
               c.flags == REC_HAS_ARGS && c.value[VALUE_ARGS].len == 3;
        n4++;
    }
    CHECK(ok4 && n4 == 50);
    free(four);

    /* format 1: no packing mask, no checksums, read as before */
    uint8_t *old = malloc(out.len);
    if (!old)
        return;
    wreader h;
    wreader_init(&h, out.data + 1, out.len - 1);
    for (int k = 0; k < 3; k++)
        wreader_varint(&h); /* n, first id, first start: then the mask, one byte */
    size_t at = (size_t)(h.p - out.data);
    CHECK(out.data[at] == 0); /* nothing packed: 200 bytes of values */
    size_t n1 = out.len - 4 * SEG_CHECKSUMS - 1;
    memcpy(old, out.data, at);
    memcpy(old + at, out.data + at + 1, n1 - at);
    old[0] = 1;
    /* and the flags column as before format 4: REC_HAS_ARGS << 2, not 1 << 2 */
    wreader_init(&h, old + at, n1 - at);
    for (int col = 0; col < 6; col++)
        wreader_take(&h, wreader_varint(&h));
    uint64_t flags_len = wreader_varint(&h);
    uint8_t *flags_col = old + (h.p - old);
    CHECK(flags_len == 50 && flags_col[0] == 1 << 2);
    for (uint64_t k = 0; k < flags_len; k++)
        flags_col[k] = (uint8_t)(REC_HAS_ARGS << 2);
    CHECK(seg_reader_open(&r, old, n1) == 0);
    int i = 0, ok = 1;
    while (seg_reader_next(&r, &c) == 1) {
        ok &= c.id == 10 + i && c.start == 1000 + i && c.value[VALUE_ARGS].len == 3;
        i++;
    }
    CHECK(ok && i == 50);
    CHECK(seg_reader_next(&r, &c) == 0);
    CHECK(seg_has_call_within(old, n1, 1049, 1049, 0, INT64_MAX) == 1);
    /* a count one too small leaves bytes in every column: malformed at the end */
    CHECK(old[1] == 50);
    old[1] = 49;
    CHECK(seg_reader_open(&r, old, n1) == 0);
    int rc;
    while ((rc = seg_reader_next(&r, &c)) == 1)
        ;
    CHECK(rc == SEG_MALFORMED);
    CHECK(seg_reader_open(&r, old, n1) == 0);
    while ((rc = seg_reader_next_within(&r, &c, 2000, 3000, 0, INT64_MAX)) == 1)
        ;
    CHECK(rc == SEG_MALFORMED);
    /* a count larger than the id column can hold */
    old[1] = 0x7f;
    CHECK(seg_reader_open(&r, old, n1) == SEG_MALFORMED);
    free(old);
    wbuf_free(&out);
    seg_builder_free(&s);
}

/* seg_reader_next_within gives exactly the calls a full decode filtered by
 * start and duration gives, whatever mix of flags the calls carry. */
static void test_segment_next_within(void)
{
    seg_builder s;
    seg_builder_init(&s);
    uint8_t args[3] = {WIRE_INT, 4, WIRE_NONE}, result[2] = {WIRE_INT, 8};
    unsigned seed = 12345;
    for (int i = 0; i < 3000; i++) {
        seed = seed * 1103515245u + 12345u;
        seg_call c = {0};
        c.id = 10 + i;
        c.parent = i % 3 ? 9 + i : 0;
        c.depth = i % 4;
        c.thread = i % 3;
        c.start = 5000 + i * 10 - (int64_t)(seed % 7); /* not quite in order */
        c.duration = (int64_t)((seed >> 8) % 1000);
        c.flags = (uint8_t)((seed >> 4) & (REC_HAS_CPU | REC_HAS_MEMORY | REC_HAS_ENERGY |
                                           REC_HAS_ARGS | REC_HAS_RESULT));
        c.cpu_ns = i;
        c.rss_before = c.rss_after = c.rss_peak = 4096 * i;
        c.energy_pkg = i;
        c.energy_dram = i + 1;
        c.value[VALUE_ARGS].data = args;
        c.value[VALUE_ARGS].len = sizeof args;
        c.value[VALUE_RESULT].data = result;
        c.value[VALUE_RESULT].len = sizeof result;
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    wbuf out;
    wbuf_init(&out, NULL, 0);
    CHECK(seg_builder_finish(&s, &out, NULL) == 0);
    const int64_t windows[][4] = {
        {INT64_MIN, INT64_MAX, 0, INT64_MAX},   /* everything */
        {INT64_MIN, INT64_MAX, 990, INT64_MAX}, /* rare slow calls */
        {9000, 12000, 100, 300},
        {40000, INT64_MAX, 0, 10},
        {0, 10, 0, INT64_MAX}, /* nothing */
    };
    for (size_t w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        const int64_t *b = windows[w];
        seg_reader all, some;
        CHECK(seg_reader_open(&all, out.data, out.len) == 0);
        CHECK(seg_reader_open(&some, out.data, out.len) == 0);
        seg_call x, y;
        int same = 1, n = 0, rc;
        while (seg_reader_next(&all, &x) == 1) {
            if (x.start < b[0] || x.start > b[1] || x.duration < b[2] || x.duration > b[3])
                continue;
            rc = seg_reader_next_within(&some, &y, b[0], b[1], b[2], b[3]);
            same &= rc == 1 && x.id == y.id && x.parent == y.parent && x.depth == y.depth &&
                    x.thread == y.thread && x.start == y.start && x.duration == y.duration &&
                    x.flags == y.flags && x.cpu_ns == y.cpu_ns && x.rss_peak == y.rss_peak &&
                    x.energy_pkg == y.energy_pkg && x.energy_dram == y.energy_dram &&
                    x.value[VALUE_ARGS].len == y.value[VALUE_ARGS].len &&
                    x.value[VALUE_RESULT].len == y.value[VALUE_RESULT].len;
            n++;
        }
        CHECK(same);
        CHECK(seg_reader_next_within(&some, &y, b[0], b[1], b[2], b[3]) == 0);
        seg_reader_close(&all);
        seg_reader_close(&some);
        CHECK(w != 0 || n == 3000);
        CHECK(w != 4 || n == 0);
        CHECK(w != 1 || (n > 0 && n < 100));
    }
    /* a truncated column is reported, not read past */
    seg_reader r;
    seg_call c;
    CHECK(seg_reader_open(&r, out.data, out.len - 5) < 0 ||
          seg_reader_next_within(&r, &c, INT64_MAX, INT64_MAX, 0, 0) < 0);
    seg_reader_close(&r);
    wbuf_free(&out);
    seg_builder_free(&s);
}

/* Appends the record of function `id`, mod.`name` (file mod.py, line 7). */
static void append_function_named(engine *e, uint64_t id, const char *name)
{
    wbuf b, body;
    wbuf_init(&b, NULL, 0);
    wbuf_init(&body, NULL, 0);
    wbuf_byte(&body, REC_FUNCTION);
    wbuf_varint(&body, id);
    const char *fields[3] = {"mod", name, "mod.py"};
    for (int i = 0; i < 3; i++) {
        wbuf_varint(&body, strlen(fields[i]));
        wbuf_put(&body, fields[i], strlen(fields[i]));
    }
    wbuf_varint(&body, 7);
    uint8_t sig[] = {WIRE_LIST, 0};
    wbuf_varint(&body, sizeof sig);
    wbuf_put(&body, sig, sizeof sig);
    wbuf_varint(&b, body.len);
    wbuf_put(&b, body.data, body.len);
    CHECK(engine_append(e, b.data, b.len) == ENGINE_APPENDED);
    wbuf_free(&b);
    wbuf_free(&body);
}

static void append_function(engine *e)
{
    append_function_named(e, 1, "f");
}

/* Fills `path` (64 bytes) with the name of a file that does not exist yet,
 * /tmp/calltape-<what>-XXXXXX made unique by mkstemp. */
static void fresh_path(char path[64], const char *what)
{
    snprintf(path, 64, "/tmp/calltape-%s-XXXXXX", what);
    int fd = mkstemp(path);
    if (fd >= 0)
        close(fd);
    unlink(path);
}

/* A search's filter that lets every call through (no limit set: 0). */
static query_filter any_filter(void)
{
    query_filter f = {0};
    f.thread = -1;
    f.since = INT64_MIN;
    f.until = INT64_MAX;
    f.max_duration = INT64_MAX;
    f.outcome = -1;
    return f;
}

/* Removes the tape `path` and its -wal and -shm files. */
static void remove_tape(const char *path)
{
    char side[300];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

/* An engine for `path` whose process-local function 1 is defined; NULL
 * (counted as a failure) when it cannot be made. */
static engine *start_engine(const char *path, size_t chunk_bytes, size_t max_buffer_bytes)
{
    engine_options o = {0};
    o.path = path;
    o.chunk_bytes = chunk_bytes;
    o.max_buffer_bytes = max_buffer_bytes;
    o.mpi_rank = -1;
    char err[256];
    engine *e = engine_new(&o, err, sizeof err);
    CHECK(e != NULL);
    if (e)
        append_function(e);
    return e;
}

/* Appends a record as the binding does: on ENGINE_FULL, waits for room
 * with `gil` (the lock producers append under, or NULL) released, and
 * appends again.  Returns the last engine_append_result. */
static int append_waiting(engine *e, const wbuf *b, pthread_mutex_t *gil)
{
    int rc;
    while ((rc = engine_append(e, b->data, b->len)) == ENGINE_FULL) {
        if (gil)
            pthread_mutex_unlock(gil);
        engine_wait_room(e, b->len);
        if (gil)
            pthread_mutex_lock(gil);
    }
    return rc;
}

/* Appends a call of function 1 with no values (as append_waiting); 1 when
 * appended. */
static int append_bare_call(engine *e, wbuf *b, uint64_t seq, pthread_mutex_t *gil)
{
    call_rec c = {0};
    c.fn = 1;
    c.seq = seq;
    b->len = 0;
    rec_put_call(b, &c);
    return append_waiting(e, b, gil) == ENGINE_APPENDED;
}

static int64_t query_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW)
            v = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    sqlite3_close(db);
    return v;
}

static void test_engine_end_to_end(void)
{
    char path[64];
    fresh_path(path, "engine-test");
    engine *e = start_engine(path, 4096 /* many chunk hand-offs */, 1 << 16);
    if (!e)
        return;
    char err[256];
    wbuf b;
    wbuf_init(&b, NULL, 0);
    uint8_t args[2] = {WIRE_INT, 2};
    const int N = 50000;
    int appended = 0;
    for (int i = 1; i <= N; i++) {
        call_rec c = {0};
        c.fn = 1;
        c.seq = (uint64_t)i;
        c.start = 1000 + (uint64_t)i * 100;
        c.duration = 50;
        c.flags = REC_HAS_ARGS;
        c.value[VALUE_ARGS].data = args;
        c.value[VALUE_ARGS].len = sizeof args;
        b.len = 0;
        rec_put_call(&b, &c);
        appended += append_waiting(e, &b, NULL) == ENGINE_APPENDED;
    }
    CHECK(appended == N);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.written_calls == (uint64_t)N);
    CHECK(s.dropped_calls == 0);
    CHECK(s.session_id == 1);
    /* a parked engine writes again at its next append, in the same session */
    engine_park(e, 10000000000ull);
    for (int i = N + 1; i <= N + 10; i++)
        appended += append_bare_call(e, &b, (uint64_t)i, NULL);
    CHECK(appended == N + 10);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_get_stats(e, &s);
    CHECK(s.written_calls == (uint64_t)N + 10);
    CHECK(s.session_id == 1);
    engine_free(e);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK(query_int(path, "SELECT sum(n) FROM segments") == N + 10);
    CHECK(query_int(path, "SELECT calls FROM functions WHERE qualname = 'f'") == N + 10);
    CHECK(query_int(path, "SELECT total_ns FROM functions") == 50ll * N);
    CHECK(query_int(path, "PRAGMA user_version") == CALLTAPE_SCHEMA_VERSION);
    /* a read-only open of a tape works; of garbage, fails with a message */
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    store_close(st);
    char bad[] = "/tmp/calltape-engine-bad-XXXXXX";
    int fd = mkstemp(bad);
    CHECK(write(fd, "not a database at all, just some text.....", 42) == 42);
    close(fd);
    CHECK(store_open_read(bad, err, sizeof err) == NULL);
    CHECK(strstr(err, bad) != NULL);
    unlink(bad);
    CHECK(store_open_read("/nonexistent/tape.db", err, sizeof err) == NULL);
    CHECK(strstr(err, "no tape at /nonexistent/tape.db") != NULL);
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
    unlink(path);
    wbuf_free(&b);
}

/* A producer appending while the main thread parks the engine again and
 * again; `gil` stands for the GIL: appends and engine_trim hold it,
 * engine_park runs without it (as configure(tape=...) does). */
typedef struct park_producer {
    engine *e;
    pthread_mutex_t *gil;
    int n, appended;
} park_producer;

static void *park_produce(void *arg)
{
    park_producer *p = arg;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (int i = 1; i <= p->n; i++) {
        if (i % 64 == 1)
            pthread_mutex_lock(p->gil);
        p->appended += append_bare_call(p->e, &b, (uint64_t)i, p->gil);
        if (i % 64 == 0 || i == p->n)
            pthread_mutex_unlock(p->gil);
    }
    wbuf_free(&b);
    return NULL;
}

static void test_park_while_a_producer_appends(void)
{
    char path[64];
    fresh_path(path, "park-test");
    engine *e = start_engine(path, 4096, 1 << 16);
    if (!e)
        return;
    pthread_mutex_t gil = PTHREAD_MUTEX_INITIALIZER;
    park_producer p = {e, &gil, 300000, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, park_produce, &p) == 0);
    for (int k = 0; k < 40; k++) {
        engine_park(e, 10000000000ull);
        pthread_mutex_lock(&gil);
        engine_trim(e);
        pthread_mutex_unlock(&gil);
    }
    pthread_join(t, NULL);
    CHECK(p.appended == p.n);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.dropped_calls == 0);
    CHECK(s.written_calls == (uint64_t)p.n);
    CHECK(s.written_functions == 1);
    engine_free(e);
    CHECK(query_int(path, "SELECT sum(n) FROM segments") == p.n);
    /* the checkpoint at shutdown left the log empty: the file alone holds it */
    char wal[300];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat sb;
    CHECK(stat(wal, &sb) != 0 || sb.st_size == 0);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path);
    unlink(wal);
    unlink(path);
}

typedef struct room_waiter {
    engine *e;
    size_t n;
    atomic_int done;
} room_waiter;

static void *wait_for_room(void *arg)
{
    room_waiter *w = arg;
    engine_wait_room(w->e, w->n);
    atomic_store(&w->done, 1);
    return NULL;
}

/* Back-pressure: while the writer cannot commit (another connection holds
 * the tape's write lock), a call that does not fit is not kept but answered
 * ENGINE_FULL at once; engine_wait_room returns once the writer made room,
 * and nothing is lost. */
static void test_back_pressure_answers_full(void)
{
    char path[64];
    fresh_path(path, "full-test");
    engine *e = start_engine(path, 4096, 1 << 16);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    int appended = append_bare_call(e, &b, 1, NULL);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    sqlite3 *lock = NULL;
    CHECK(sqlite3_open(path, &lock) == SQLITE_OK &&
          sqlite3_exec(lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK);
    int rc = ENGINE_APPENDED;
    uint64_t seq = 2;
    for (; seq < 1000000 && rc == ENGINE_APPENDED; seq++) {
        call_rec c = {0};
        c.fn = 1;
        c.seq = seq;
        b.len = 0;
        rec_put_call(&b, &c);
        rc = engine_append(e, b.data, b.len);
        appended += rc == ENGINE_APPENDED;
    }
    CHECK(rc == ENGINE_FULL);
    room_waiter w = {e, b.len, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wait_for_room, &w) == 0);
    struct timespec pause = {0, 200000000};
    nanosleep(&pause, NULL);
    CHECK(atomic_load(&w.done) == 0); /* the writer is still locked out */
    CHECK(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL) == SQLITE_OK);
    pthread_join(t, NULL);
    CHECK(atomic_load(&w.done) == 1);
    CHECK(engine_append(e, b.data, b.len) == ENGINE_APPENDED); /* the call refused above */
    appended++;
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.dropped_calls == 0 && s.written_calls == (uint64_t)appended);
    engine_free(e);
    sqlite3_close(lock);
    CHECK(query_int(path, "SELECT sum(n) FROM segments") == appended);
    remove_tape(path);
    wbuf_free(&b);
}

typedef struct big_appender {
    engine *e;
    const wbuf *b;
    atomic_int rc; /* -1 until appended */
} big_appender;

static void *append_big(void *arg)
{
    big_appender *a = arg;
    atomic_store(&a->rc, append_waiting(a->e, a->b, NULL));
    return NULL;
}

/* A call larger than the whole backlog bound (here max_buffer_bytes): it
 * can never fit beside other chunks, so it is let in alone once the writer
 * drained the rest, instead of waiting forever; the calls after it wait
 * for it and are written too. */
static void test_a_call_larger_than_the_backlog_is_written(void)
{
    char path[64];
    fresh_path(path, "big-test");
    engine *e = start_engine(path, 4096, 1 << 16);
    if (!e)
        return;
    wbuf b, v;
    wbuf_init(&b, NULL, 0);
    wbuf_init(&v, NULL, 0);
    size_t n = 300000; /* 4.6 x max_buffer_bytes */
    wbuf_byte(&v, WIRE_BYTES);
    wbuf_varint(&v, n);
    CHECK(wbuf_reserve(&v, n) == 0);
    memset(v.data + v.len, 'x', n);
    v.len += n;
    int appended = append_bare_call(e, &b, 1, NULL);
    for (uint64_t seq = 2; seq <= 3; seq++) {
        call_rec c = {0};
        c.fn = 1;
        c.seq = seq;
        c.flags = REC_HAS_ARGS;
        c.value[VALUE_ARGS].data = v.data;
        c.value[VALUE_ARGS].len = v.len;
        b.len = 0;
        rec_put_call(&b, &c);
        big_appender a = {e, &b, -1};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, append_big, &a) == 0);
        for (int i = 0; i < 1000 && atomic_load(&a.rc) == -1; i++) {
            struct timespec pause = {0, 10000000};
            nanosleep(&pause, NULL);
        }
        CHECK(atomic_load(&a.rc) == ENGINE_APPENDED);
        if (atomic_load(&a.rc) == -1)
            return; /* (stuck: leave it, the failure is reported) */
        pthread_join(t, NULL);
        appended++;
    }
    appended += append_bare_call(e, &b, 4, NULL);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.dropped_calls == 0 && s.written_calls == 4 && appended == 4);
    engine_free(e);
    CHECK(query_int(path, "SELECT sum(n) FROM segments") == 4);
    remove_tape(path);
    wbuf_free(&b);
    wbuf_free(&v);
}

/* A tape deleted under a running engine: noticed, the calls that were on
 * it counted as dropped, the tape made again for the calls after. */
static void test_deleted_tape_is_noticed(void)
{
    char path[64];
    fresh_path(path, "deleted-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (int i = 1; i <= 100; i++)
        append_bare_call(e, &b, (uint64_t)i, NULL);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    char side[300];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    for (int i = 101; i <= 150; i++)
        append_bare_call(e, &b, (uint64_t)i, NULL);
    CHECK(engine_flush(e, 10000000000ull) == -1);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.dropped_calls == 100 && s.written_calls == 50);
    CHECK(strstr(s.last_error, "deleted") != NULL);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    CHECK(query_int(path, "SELECT sum(n) FROM segments") == 50);
    CHECK(query_int(path, "SELECT dropped FROM sessions") == 100);
    unlink(side);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    unlink(path);
    wbuf_free(&b);
}

static void test_unwritable_tape_drops_and_counts(void)
{
    engine *e = start_engine("/proc/calltape-cannot-exist/tape.db", 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    append_bare_call(e, &b, 1, NULL);
    CHECK(engine_flush(e, 5000000000ull) == -1);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.dropped_calls == 1);
    CHECK(s.write_errors >= 1);
    CHECK(strstr(s.last_error, "cannot write the tape") != NULL);
    char msg[256];
    CHECK(engine_take_errors(e, msg, sizeof msg) >= 1);
    CHECK(engine_take_errors(e, msg, sizeof msg) == 0);
    engine_free(e);
    wbuf_free(&b);
}

/* Counts the calls of `st` a query with these energy bounds returns. */
static int count_energy(store *st, int bounds, int64_t pkg, int64_t dram)
{
    query_filter f = any_filter();
    f.limit = -1;
    f.energy_bounds = bounds;
    f.max_energy_pkg = pkg;
    f.max_energy_dram = dram;
    char err[256];
    query *q = query_open(st, &f, err, sizeof err);
    CHECK(q != NULL);
    if (!q)
        return -1;
    seg_call c;
    int64_t session, function;
    int n = 0;
    while (query_next(q, &c, &session, &function) == 1)
        n++;
    query_close(q);
    return n;
}

/* The energy bounds of a search: calls of pkg 10..100 uJ (dram 5..50, the
 * even ones only), two calls without energy. */
static void test_query_energy(void)
{
    char path[64];
    fresh_path(path, "energy-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (int i = 1; i <= 12; i++) {
        call_rec c = {0};
        c.fn = 1;
        c.seq = (uint64_t)i;
        c.start = 1000 + (uint64_t)i;
        if (i <= 10) {
            c.flags = REC_HAS_ENERGY;
            c.energy_pkg = (uint64_t)i * 10;
            c.energy_dram = i % 2 ? ENERGY_DRAM_NONE : (uint64_t)i * 5 + 1;
        }
        b.len = 0;
        rec_put_call(&b, &c);
        CHECK(engine_append(e, b.data, b.len) == ENGINE_APPENDED);
    }
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    if (st) {
        CHECK(count_energy(st, 0, 0, 0) == 12);
        CHECK(count_energy(st, QUERY_MAX_PKG, 30, 0) == 3);
        CHECK(count_energy(st, QUERY_MAX_PKG, INT64_MAX, 0) == 10); /* no reading: no match */
        CHECK(count_energy(st, QUERY_MAX_DRAM, 0, 20) == 2);        /* dram 10 and 20 */
        CHECK(count_energy(st, QUERY_MAX_DRAM, 0, INT64_MAX) == 5); /* odd ones: no dram */
        CHECK(count_energy(st, QUERY_MAX_PKG | QUERY_MAX_DRAM, 60, 50) == 3);
        store_close(st);
    }
    remove_tape(path);
}

/* A search in any order (the Chrome export's): every call of two
 * functions recorded in turn (overlapping segments, several flushes) comes
 * back exactly once, each segment's calls in start order; a limit stops
 * it; closing it half read releases what it holds (LeakSanitizer). */
static void test_query_any_order(void)
{
    char path[64];
    fresh_path(path, "any-order-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    append_function_named(e, 2, "g");
    wbuf b;
    wbuf_init(&b, NULL, 0);
    enum { N = 600 };
    for (int i = 1; i <= N; i++) {
        call_rec c = {0};
        c.fn = 1 + (uint64_t)(i % 2);
        c.seq = (uint64_t)i;
        c.start = 1000 + 10 * (uint64_t)i;
        c.duration = 5;
        b.len = 0;
        rec_put_call(&b, &c);
        CHECK(engine_append(e, b.data, b.len) == ENGINE_APPENDED);
        if (i % 100 == 0)
            CHECK(engine_flush(e, 10000000000ull) == 0);
    }
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    for (int64_t limit = -1; st && limit <= 7; limit += 8) {
        query_filter f = any_filter();
        f.limit = limit;
        f.any_order = 1;
        query *q = query_open(st, &f, err, sizeof err);
        CHECK(q != NULL);
        static unsigned char seen[N + 2];
        memset(seen, 0, sizeof seen);
        seg_call c;
        int64_t session, function, last_fn = -1, last_start = 0;
        int n = 0, out_of_order = 0, runs = 0, twice = 0;
        while (q && query_next(q, &c, &session, &function) == 1) {
            if (function != last_fn)
                runs++;
            else if (c.start <= last_start)
                out_of_order++;
            last_fn = function;
            last_start = c.start;
            int64_t i = (c.start - 1000) / 10;
            if (i >= 1 && i <= N)
                twice += seen[i]++ > 0;
            n++;
        }
        query_close(q);
        CHECK(n == (limit < 0 ? N : (int)limit));
        CHECK(twice == 0);
        if (limit < 0) /* merged, the two functions would alternate at every call */
            CHECK(out_of_order == 0 && runs >= 2 && runs <= 2 * (N / 100 + 1));
    }
    if (st) { /* closed after three calls: its segment is released */
        query_filter f = any_filter();
        f.limit = -1;
        f.any_order = 1;
        query *q = query_open(st, &f, err, sizeof err);
        seg_call c;
        int64_t session, function;
        for (int i = 0; q && i < 3; i++)
            CHECK(query_next(q, &c, &session, &function) == 1);
        query_close(q);
        store_close(st);
    }
    remove_tape(path);
}

/* The background writer: buffers submitted in turn reach the file whole and
 * in order (the producer's storage swapped, never copied); a failing fd's
 * errno comes back from the submits and the finish, and nothing more is
 * written after it. */
static void test_bgwrite(void)
{
    char path[64];
    fresh_path(path, "bgwrite-test");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    bgwrite w;
    bgw_init(&w, fd);
    wbuf b;
    wbuf_init(&b, NULL, 0);
    size_t total = 0;
    for (int k = 0; k < 40; k++) {
        for (int i = 0; i < 1000 + 37 * k; i++)
            wbuf_byte(&b, (uint8_t)('a' + (k + i) % 26));
        total += b.len;
        CHECK(bgw_submit(&w, &b) == 0);
        CHECK(b.len == 0);
    }
    wbuf_byte(&b, '!'); /* left in the producer's buffer: not written */
    CHECK(bgw_finish(&w) == 0);
    wbuf_free(&b);
    close(fd);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    size_t at = 0, wrong = 0;
    for (int k = 0; f && k < 40; k++)
        for (int i = 0; i < 1000 + 37 * k; i++, at++)
            wrong += fgetc(f) != 'a' + (k + i) % 26;
    CHECK(wrong == 0 && at == total);
    CHECK(f && fgetc(f) == EOF);
    if (f)
        fclose(f);
    unlink(path);

    bgw_init(&w, -1); /* not a file: EBADF, then every call says so */
    wbuf_init(&b, NULL, 0);
    int errs = 0;
    for (int k = 0; k < 3; k++) {
        wbuf_put(&b, "xyz", 3);
        errs += bgw_submit(&w, &b) == EBADF;
    }
    CHECK(errs >= 2); /* the first may still be in flight */
    CHECK(bgw_finish(&w) == EBADF);
    wbuf_free(&b);
}

/* A segment's parent ids become the children index's ranges: sorted,
 * the roots apart, each range at most SEG_LINK_SPAN ids wide, counted. */
static void test_segment_links(void)
{
    seg_builder s;
    seg_builder_init(&s);
    const int64_t parents[] = {0, 9000, 5, 3, 4110, 3, 0, 20000, 0, 4100, 15288, 12488, 12548};
    for (size_t i = 0; i < sizeof parents / sizeof *parents; i++) {
        seg_call c = {0};
        c.id = 30000 + (int64_t)i;
        c.parent = parents[i];
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    CHECK(seg_builder_links(&s) == 6);
    const seg_link *k = (const seg_link *)(const void *)s.links.data;
    CHECK(k[0].lo == 0 && k[0].hi == 0 && k[0].n == 3);
    /* 3 and 5: the block 0 - 4095; 4100 and 4110: the block 4096 - 8191 */
    CHECK(k[1].lo == 3 && k[1].hi == 5 && k[1].n == 3);
    CHECK(k[1].parents[0] == ((1u << 0) | (1u << 2))); /* 3 + 0 and 3 + 2 */
    CHECK(k[2].lo == 4100 && k[2].hi == 4110 && k[2].n == 2);
    CHECK(k[2].parents[0] == 1 && k[2].parents[1] == 1u << 2); /* 4100 + 0 and 4100 + 10 */
    CHECK(k[3].lo == 9000 && k[3].hi == 9000 && k[3].n == 1);
    /* 12488, 12548 and 15288 (12288 + 200, + 260 and + 3000): a bitmap moved
     * by 200 bits, bit 260 carried across a word to bit 60 */
    CHECK(k[4].lo == 12488 && k[4].hi == 15288 && k[4].n == 3);
    int set = 0;
    for (size_t j = 0; j < SEG_LINK_BYTES; j++)
        set += __builtin_popcount(k[4].parents[j]);
    CHECK(set == 3 && k[4].parents[0] == 1 && k[4].parents[60 / 8] == 1u << 60 % 8 &&
          k[4].parents[2800 / 8] == 1);
    CHECK(k[5].lo == 20000 && k[5].hi == 20000 && k[5].n == 1);
    seg_builder_reset(&s);
    CHECK(seg_builder_links(&s) == 0);
    seg_builder_free(&s);
}

/* Opens a query of the children of `parent` (or roots: minus the session). */
static query *children_query(store *st, int64_t session, int64_t parent, int64_t limit)
{
    query_filter f = {0};
    f.session = session;
    f.thread = -1;
    f.since = INT64_MIN;
    f.until = INT64_MAX;
    f.max_duration = INT64_MAX;
    f.outcome = -1;
    f.limit = limit;
    f.parent = parent;
    f.parent_end = INT64_MAX;
    char err[256];
    query *q = query_open(st, &f, err, sizeof err);
    CHECK(q != NULL);
    return q;
}

/* A root with 3000 children (two segments of them), each with one child,
 * and a second root: the children index finds a call's children and a
 * session's roots in start order, and counts them without reading. */
static void test_children_index(void)
{
    char path[64];
    fresh_path(path, "children-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    enum { KIDS = 3000 };
    for (int i = 0; i < 2 * KIDS + 2; i++) {
        call_rec c = {0};
        c.fn = 1;
        if (i < 2 * KIDS) { /* child k (seq 2 + 2k) and its grandchild (seq 3 + 2k) */
            int k = i / 2;
            c.seq = (uint64_t)(2 + 2 * k + (i % 2 == 0));
            c.parent = i % 2 == 0 ? c.seq - 1 : 1;
            c.depth = i % 2 == 0 ? 2 : 1;
            c.start = 1000 + (uint64_t)(2 * k + (i % 2 == 0));
            c.duration = 1;
        } else if (i == 2 * KIDS) { /* the first root ends after its calls */
            c.seq = 1;
            c.start = 999;
            c.duration = 100000;
        } else {
            c.seq = 2 + 2 * KIDS;
            c.start = 200000;
        }
        b.len = 0;
        rec_put_call(&b, &c);
        CHECK(append_waiting(e, &b, NULL) == ENGINE_APPENDED);
    }
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    CHECK(query_int(path, "SELECT count(*) FROM children") < 20);
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    seg_call c;
    int64_t session, function, n = -1, root = 0, child = 0, t0 = 0;
    query *q = children_query(st, 1, -1, -1);
    CHECK(q && query_next(q, &c, &session, &function) == 1 && c.parent == 0);
    root = c.id;
    t0 = c.start - 999; /* starts are stored as wall-clock times */
    CHECK(q && query_next(q, &c, &session, &function) == 1 && c.start == t0 + 200000);
    CHECK(q && query_next(q, &c, &session, &function) == 0);
    query_close(q);
    q = children_query(st, 1, root, 5);
    for (int i = 0; q && i < 5; i++) {
        CHECK(query_next(q, &c, &session, &function) == 1 && c.parent == root);
        CHECK(c.start == t0 + 1000 + 2 * i);
        if (i == 1)
            child = c.id;
    }
    CHECK(q && query_next(q, &c, &session, &function) == 0);
    query_close(q);
    q = children_query(st, 1, root, -1);
    CHECK(q && query_count(q, &n) == 0 && n == KIDS);
    query_close(q);
    q = children_query(st, 1, child, -1);
    CHECK(q && query_next(q, &c, &session, &function) == 1 && c.parent == child);
    CHECK(q && query_next(q, &c, &session, &function) == 0);
    query_close(q);
    q = children_query(st, 1, child, -1);
    CHECK(q && query_count(q, &n) == 0 && n == 1);
    query_close(q);
    q = children_query(st, 1, -1, -1);
    CHECK(q && query_count(q, &n) == 0 && n == 2);
    query_close(q);
    store_close(st);
    remove_tape(path);
}

/* Runs `sql` on the tape at `path` as a writer would not: to damage it. */
static void damage_with(const char *path, const char *sql)
{
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
}

/* Flips the lowest bit of byte `at` of segment `id`'s data. */
static void flip_segment_byte(const char *path, int64_t id, int at)
{
    sqlite3 *db;
    sqlite3_stmt *q = NULL;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "SELECT data FROM segments WHERE id = ?", -1, &q, NULL) ==
          SQLITE_OK);
    sqlite3_bind_int64(q, 1, id);
    uint8_t data[4096];
    int n = 0;
    if (sqlite3_step(q) == SQLITE_ROW) {
        n = sqlite3_column_bytes(q, 0);
        CHECK(n > at && n <= (int)sizeof data);
        memcpy(data, sqlite3_column_blob(q, 0), (size_t)n);
    }
    sqlite3_finalize(q);
    data[at] ^= 1;
    CHECK(sqlite3_prepare_v2(db, "UPDATE segments SET data = ? WHERE id = ?", -1, &q, NULL) ==
          SQLITE_OK);
    sqlite3_bind_blob(q, 1, data, n, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, id);
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* Runs a query over the whole tape (or from `since` on): 1 when it read
 * to the end, 0 when it failed (*segment is then the damaged segment, 0
 * for another error, *status its seg_status, or else the store_err kind). */
static int query_all(store *st, int64_t since, int64_t *segment, int *status)
{
    query_filter f = {0};
    f.thread = -1;
    f.since = since;
    f.until = INT64_MAX;
    f.max_duration = INT64_MAX;
    f.outcome = -1;
    f.limit = -1;
    char err[256];
    *segment = 0;
    *status = 0;
    query *q = query_open(st, &f, err, sizeof err);
    if (!q)
        return 0;
    seg_call c;
    int64_t session, function;
    int rc;
    while ((rc = query_next(q, &c, &session, &function)) == 1)
        ;
    if (rc < 0 && !query_error_segment(q, segment, &function, status))
        *status = query_error_store(q)->kind;
    query_close(q);
    return rc == 0;
}

/* A search reports a segment that fails its checksum, a row whose call
 * count disagrees with its segment, and a listing that holds fewer calls
 * than the function table counts (rows an index hides). */
static void test_query_reports_damage(void)
{
    char path[64];
    fresh_path(path, "damage-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (uint64_t i = 1; i <= 20; i++) {
        call_rec c = {0};
        c.fn = 1;
        c.seq = i;
        c.start = 1000 + i;
        b.len = 0;
        rec_put_call(&b, &c);
        CHECK(engine_append(e, b.data, b.len) == ENGINE_APPENDED);
        if (i == 10)
            CHECK(engine_flush(e, 10000000000ull) == 0); /* two segments */
    }
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    CHECK(query_int(path, "SELECT count(*) FROM segments") == 2);
    char err[256];
    int64_t segment;
    int status;
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st && query_all(st, INT64_MIN, &segment, &status) == 1);
    store_close(st);
    /* a flipped byte in the second segment */
    flip_segment_byte(path, 2, 5);
    st = store_open_read(path, err, sizeof err);
    CHECK(st && query_all(st, INT64_MIN, &segment, &status) == 0);
    CHECK(segment == 2 && status == SEG_CHECKSUM);
    store_close(st);
    damage_with(path, "UPDATE segments SET data = (SELECT data FROM segments WHERE id = 1),"
                      " n = n + 1 WHERE id = 2");
    st = store_open_read(path, err, sizeof err);
    CHECK(st && query_all(st, INT64_MIN, &segment, &status) == 0);
    CHECK(segment == 2 && status == SEG_COUNT);
    store_close(st);
    /* rows missing from the listing: only a listing of everything can tell */
    damage_with(path, "DELETE FROM segments WHERE id = 2");
    st = store_open_read(path, err, sizeof err);
    CHECK(st && query_all(st, INT64_MIN, &segment, &status) == 0);
    CHECK(segment == 0 && status == STORE_DAMAGED);
    CHECK(st && query_all(st, 0, &segment, &status) == 1);
    store_close(st);
    remove_tape(path);
}

/* lz.c: round trips of repetitive, random and tiny inputs, and a
 * decompressor that never leaves its bounds on damaged or hostile blocks. */
static void test_lz(void)
{
    static uint8_t src[70000], packed[80000], back[70000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof src; i++) { /* a repetitive half, then noise */
        x = x * 1103515245u + 12345u;
        src[i] = i < 35000 ? (uint8_t)("recorded call values "[i % 21]) : (uint8_t)(x >> 16);
    }
    const size_t sizes[] = {0, 1, 5, 12, 13, 100, 4096, 35000, sizeof src};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        size_t m = lz_compress(src, n, packed, sizeof packed, NULL);
        CHECK(m > 0 && m <= lz_bound(n));
        CHECK(lz_decompress(packed, m, back, n) == 0 && memcmp(back, src, n) == 0);
        if (n)
            CHECK(lz_decompress(packed, m, back, n - 1) == -1); /* the size is part of it */
    }
    /* a kept table gives the bytes a fresh one gives, input after input,
     * and across the wrap of its positions */
    static uint8_t again[80000];
    lz_table kept = {NULL, 0};
    int same = 1;
    for (int round = 0; round < 3; round++)
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[(k + (size_t)round) % (sizeof sizes / sizeof sizes[0])];
            size_t a = lz_compress(src + (size_t)round, n - (n ? (size_t)round : 0), packed,
                                   sizeof packed, NULL);
            if (round == 2)
                kept.base = UINT32_MAX - 50; /* the next input wraps: cleared */
            size_t b = lz_compress(src + (size_t)round, n - (n ? (size_t)round : 0), again,
                                   sizeof again, &kept);
            same &= a == b && memcmp(packed, again, a) == 0;
        }
    CHECK(same);
    lz_table_free(&kept);
    size_t m = lz_compress(src, 35000, packed, sizeof packed, NULL);
    CHECK(m < 35000 / 20);                               /* repeats pack well */
    CHECK(lz_compress(src, 100, packed, 50, NULL) == 0); /* too small an output */
    int safe = 1;
    for (int trial = 0; trial < 2000; trial++) { /* damaged blocks */
        size_t n = 1 + (size_t)trial % 200;
        memcpy(back, packed, m);
        x = x * 1103515245u + 12345u;
        back[x % m] ^= (uint8_t)(1 + (x >> 24) % 255);
        uint8_t out[40000];
        int rc = lz_decompress(back, trial % 2 ? m : n, out, sizeof out);
        safe &= rc == 0 || rc == -1;
    }
    CHECK(safe);
    /* matches that end at every byte of a word, and at the input's end:
     * 40-byte records repeating with the byte at `at` changed each time */
    int whole = 1, packs = 1;
    for (size_t at = 0; at < 40; at++) {
        static uint8_t rec[4000];
        for (size_t i = 0; i < sizeof rec; i++)
            rec[i] = i % 40 == at ? (uint8_t)(i / 40)
                                  : (uint8_t) "a repeated call record of forty bytes..."[i % 40];
        size_t r = lz_compress(rec, sizeof rec, packed, sizeof packed, NULL);
        whole &= r > 0 && lz_decompress(packed, r, back, sizeof rec) == 0 &&
                 memcmp(back, rec, sizeof rec) == 0;
        packs &= r < sizeof rec / 4;
    }
    CHECK(whole);
    CHECK(packs);
}

/* Format 3 packs a large arguments column and reads it back unpacked;
 * format 5 packs the bookkeeping columns too (never start and duration),
 * and a reader unpacks only the columns it reads. */
static void test_segment_packed(void)
{
    seg_builder s;
    seg_builder_init(&s);
    uint8_t args[40];
    memset(args, 0, sizeof args);
    args[0] = WIRE_STR;
    args[1] = 38;
    memcpy(args + 2, "the same self, call after call .......", 38);
    for (int i = 0; i < 500; i++) {
        seg_call c = {0};
        c.id = 1 + i;
        c.start = 1000 + i;
        c.flags = REC_HAS_ARGS;
        c.value[VALUE_ARGS].data = args;
        c.value[VALUE_ARGS].len = sizeof args;
        CHECK(seg_builder_add(&s, &c) == 0);
    }
    wbuf out;
    wbuf_init(&out, NULL, 0);
    CHECK(seg_builder_finish(&s, &out, NULL) == 0);
    CHECK(out.len < 500 * 40 / 5); /* packed */
    seg_reader r;
    seg_call c;
    CHECK(seg_reader_open(&r, out.data, out.len) == 0);
    unsigned bookkeeping = 1u << 0 | 1u << 1 | 1u << 2 | 1u << 3 | 1u << 6; /* id ... flags */
    CHECK((r.packed & bookkeeping) == bookkeeping && (r.packed & (1u << 4 | 1u << 5)) == 0);
    CHECK((r.packed & 1u << 8) != 0); /* the args */
    CHECK(seg_has_call_within(out.data, out.len, 1200, 1200, 0, INT64_MAX) == 1);
    /* a scan of start and duration unpacks nothing; an id lookup its column */
    CHECK(seg_reader_any_within(&r, 1200, 1200, 0, INT64_MAX) == 1);
    CHECK(r.unpacked == NULL && (r.packed & bookkeeping) == bookkeeping);
    seg_reader_close(&r);
    CHECK(seg_reader_open(&r, out.data, out.len) == 0);
    CHECK(seg_reader_has_id(&r, 321) == 1 && seg_reader_has_id(&r, 501) == 0);
    CHECK(!(r.packed & 1u << 0) && (r.packed & 1u << 8));
    int n = 0, ok = 1;
    while (seg_reader_next(&r, &c) == 1) {
        ok &= c.id == 1 + n && c.start == 1000 + n && c.parent == 0 &&
              c.value[VALUE_ARGS].len == sizeof args &&
              memcmp(c.value[VALUE_ARGS].data, args, sizeof args) == 0;
        n++;
    }
    CHECK(ok && n == 500 && r.unpacked != NULL && r.packed == 0);
    uint8_t *kept = seg_reader_detach(&r);
    CHECK(kept != NULL && r.unpacked == NULL);
    free(kept);
    int caught = 1;
    for (size_t i = 0; i < out.len; i += 7) {
        out.data[i] ^= 0x20;
        caught &= read_whole(out.data, out.len) < 0;
        out.data[i] ^= 0x20;
    }
    CHECK(caught);
    /* a segment of an older format never held packed bookkeeping: one that
     * says so is malformed (its checksums made anew, as a writer would) */
    CHECK(out.data[0] == 6);
    as_format(out.data, out.len, 4);
    CHECK(seg_reader_open(&r, out.data, out.len) == SEG_CHECKSUM);
    wbuf_free(&out);
    seg_builder_free(&s);
}

/* Rewrites the checksums of the segment of `n` bytes at `data` (format 6)
 * for its bytes as they are now: what a writer with a bug would store. */
static void rechecksum(uint8_t *data, size_t n)
{
    as_format(data, n, data[0]);
    size_t body = n - SEG_CHECKSUMS * 4;
    wreader h;
    wreader_init(&h, data + 1, body - 1);
    for (int k = 0; k < 5; k++)
        wreader_varint(&h);
    for (int i = 0; i < 10; i++) {
        uint64_t len = wreader_varint(&h);
        const uint8_t *col = wreader_take(&h, len);
        uint32_t crc = crc32c(0, col, (size_t)len);
        memcpy(data + body + 4 * (size_t)(i + 1), &crc, 4);
    }
}

/* bytes_transpose against the definition, for shapes around its 8 x 8
 * blocks (rows and columns below, at and past multiples of 8), and back. */
static void test_bytes_transpose(void)
{
    static const size_t sizes[] = {0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 64, 100};
    const size_t nsizes = sizeof sizes / sizeof *sizes;
    uint8_t *src = malloc(100 * 100), *dst = malloc(100 * 100 + 1), *back = malloc(100 * 100);
    CHECK(src && dst && back);
    for (size_t i = 0; i < 100 * 100; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    for (size_t a = 0; a < nsizes; a++) {
        for (size_t b = 0; b < nsizes; b++) {
            size_t rows = sizes[a], cols = sizes[b];
            memset(dst, 0xee, 100 * 100 + 1);
            bytes_transpose(dst, src, rows, cols);
            int ok = dst[rows * cols] == 0xee; /* nothing written past the end */
            for (size_t r = 0; r < rows; r++)
                for (size_t c = 0; c < cols; c++)
                    ok &= dst[c * rows + r] == src[r * cols + c];
            bytes_transpose(back, dst, cols, rows);
            CHECK(ok && memcmp(back, src, rows * cols) == 0);
        }
    }
    free(src);
    free(dst);
    free(back);
}

/* The arguments of call i of test_segment_shuffled: one layout, a few
 * bytes that change (an int, a float's high bytes), the rest the same. */
static void shuffled_args(int i, uint8_t args[16])
{
    double b = i * 0.5;
    args[0] = WIRE_INT;
    args[1] = (uint8_t)(0x80 | (i * 2 & 0x7f));
    args[2] = (uint8_t)(i * 2 >> 7);
    args[3] = WIRE_FLOAT;
    memcpy(args + 4, &b, 8);
    args[12] = WIRE_STR;
    args[13] = 2;
    args[14] = 'a';
    args[15] = 'b';
}

/* Format 6: an args column whose calls each take the same bytes is
 * shuffled before packing (smaller than the same calls packed as they
 * are) and reads back exactly; one call of another size leaves it as it
 * is; a shuffled column whose size is not a multiple of the calls, or
 * whose packed bytes do not unpack, is malformed even when its checksums
 * match (never other values). */
static void test_segment_shuffled(void)
{
    size_t sizes[2] = {0, 0};
    for (int uneven = 0; uneven < 2; uneven++) {
        seg_builder s;
        seg_builder_init(&s);
        for (int i = 0; i < 1000; i++) {
            uint8_t args[16];
            shuffled_args(i, args);
            seg_call c = {0};
            c.id = 1 + i;
            c.start = 1000 + 10 * i;
            c.duration = 3;
            c.flags = REC_HAS_ARGS;
            c.value[VALUE_ARGS].data = args;
            c.value[VALUE_ARGS].len = uneven && i == 500 ? 15 : 16;
            CHECK(seg_builder_add(&s, &c) == 0);
        }
        wbuf out;
        wbuf_init(&out, NULL, 0);
        CHECK(seg_builder_finish(&s, &out, NULL) == 0);
        sizes[uneven] = out.len;
        seg_reader r;
        seg_call c;
        CHECK(seg_reader_open(&r, out.data, out.len) == 0 && (r.packed & 1u << 8));
        CHECK(uneven ? r.shuffled == 0 : r.shuffled == 1u << 8);
        int n = 0, ok = 1;
        while (seg_reader_next(&r, &c) == 1) {
            uint8_t args[16];
            shuffled_args(n, args);
            size_t len = uneven && n == 500 ? 15 : 16;
            ok &= c.id == 1 + n && c.start == 1000 + 10 * n && c.value[VALUE_ARGS].len == len &&
                  memcmp(c.value[VALUE_ARGS].data, args, len) == 0;
            n++;
        }
        CHECK(ok && n == 1000);
        seg_reader_close(&r);
        if (!uneven) {
            /* the args column: a varint raw size, then the lz block */
            wreader h;
            wreader_init(&h, out.data + 1, out.len - 1);
            for (int k = 0; k < 5; k++)
                wreader_varint(&h);
            for (int i = 0; i < 8; i++)
                wreader_take(&h, wreader_varint(&h));
            wreader_varint(&h);
            uint8_t *raw = (uint8_t *)(uintptr_t)h.p;
            CHECK(raw[0] == (uint8_t)(0x80 | (17000 & 0x7f)) && raw[1] == 17000 >> 7);
            raw[0] = (uint8_t)(0x80 | (16999 & 0x7f)); /* one byte short of 1000 shares of 17 */
            rechecksum(out.data, out.len);
            CHECK(read_whole(out.data, out.len) == SEG_MALFORMED);
            raw[0] = (uint8_t)(0x80 | (17000 & 0x7f));
            rechecksum(out.data, out.len);
            CHECK(read_whole(out.data, out.len) == 0);
            raw[2] ^= 0xf0; /* the first token: far more literals than there are */
            rechecksum(out.data, out.len);
            CHECK(read_whole(out.data, out.len) == SEG_MALFORMED);
        }
        wbuf_free(&out);
        seg_builder_free(&s);
    }
    CHECK(sizes[0] * 3 < sizes[1]); /* shuffled: far smaller, start and duration alike */
}

/* A segment as calltape's format-5 writer stored it (50 calls of one
 * function: args (i % 7, "ab"), result i * 3), read by today's reader. */
static void test_segment_format_5_as_written(void)
{
    static const uint8_t five[] = {
        0x05, 0x32, 0xd0, 0x0f, 0x80, 0x80, 0xd0, 0xe2, 0xc6, 0xbf, 0xce, 0x97, 0x2f, 0x80, 0x02,
        0x32, 0x00, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
        0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
        0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
        0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x32, 0x00, 0x04, 0x06, 0x08, 0x0a, 0x0c, 0x0e, 0x10,
        0x12, 0x14, 0x16, 0x18, 0x1a, 0x1c, 0x1e, 0x20, 0x22, 0x24, 0x26, 0x28, 0x2a, 0x2c, 0x2e,
        0x30, 0x32, 0x34, 0x36, 0x38, 0x3a, 0x3c, 0x3e, 0x40, 0x42, 0x44, 0x46, 0x48, 0x4a, 0x4c,
        0x4e, 0x50, 0x52, 0x54, 0x56, 0x58, 0x5a, 0x5c, 0x5e, 0x60, 0x62, 0x64, 0x32, 0x00, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
        0x01, 0x01, 0x01, 0x32, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x00, 0xd0, 0x0f, 0xd0, 0x0f,
        0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0,
        0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f,
        0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0,
        0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f,
        0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0,
        0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f, 0xd0, 0x0f,
        0xd0, 0x0f, 0xd0, 0x0f, 0x64, 0xc8, 0x01, 0xc9, 0x01, 0xca, 0x01, 0xcb, 0x01, 0xcc, 0x01,
        0xcd, 0x01, 0xce, 0x01, 0xcf, 0x01, 0xd0, 0x01, 0xd1, 0x01, 0xd2, 0x01, 0xd3, 0x01, 0xd4,
        0x01, 0xd5, 0x01, 0xd6, 0x01, 0xd7, 0x01, 0xd8, 0x01, 0xd9, 0x01, 0xda, 0x01, 0xdb, 0x01,
        0xdc, 0x01, 0xdd, 0x01, 0xde, 0x01, 0xdf, 0x01, 0xe0, 0x01, 0xe1, 0x01, 0xe2, 0x01, 0xe3,
        0x01, 0xe4, 0x01, 0xe5, 0x01, 0xe6, 0x01, 0xe7, 0x01, 0xe8, 0x01, 0xe9, 0x01, 0xea, 0x01,
        0xeb, 0x01, 0xec, 0x01, 0xed, 0x01, 0xee, 0x01, 0xef, 0x01, 0xf0, 0x01, 0xf1, 0x01, 0xf2,
        0x01, 0xf3, 0x01, 0xf4, 0x01, 0xf5, 0x01, 0xf6, 0x01, 0xf7, 0x01, 0xf8, 0x01, 0xf9, 0x01,
        0x32, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c,
        0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c,
        0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c,
        0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x0c, 0x00, 0x29, 0xde, 0x02, 0xa2, 0x06, 0x03, 0x00, 0x06,
        0x02, 0x61, 0x62, 0x06, 0x03, 0x02, 0x07, 0x00, 0x12, 0x04, 0x07, 0x00, 0x12, 0x06, 0x07,
        0x00, 0x12, 0x08, 0x07, 0x00, 0x12, 0x0a, 0x07, 0x00, 0x12, 0x0c, 0x07, 0x00, 0x0f, 0x31,
        0x00, 0xff, 0x19, 0x00, 0xb2, 0x01, 0x02, 0x03, 0x00, 0x02, 0x03, 0x06, 0x02, 0x03, 0x0c,
        0x02, 0x03, 0x12, 0x02, 0x03, 0x18, 0x02, 0x03, 0x1e, 0x02, 0x03, 0x24, 0x02, 0x03, 0x2a,
        0x02, 0x03, 0x30, 0x02, 0x03, 0x36, 0x02, 0x03, 0x3c, 0x02, 0x03, 0x42, 0x02, 0x03, 0x48,
        0x02, 0x03, 0x4e, 0x02, 0x03, 0x54, 0x02, 0x03, 0x5a, 0x02, 0x03, 0x60, 0x02, 0x03, 0x66,
        0x02, 0x03, 0x6c, 0x02, 0x03, 0x72, 0x02, 0x03, 0x78, 0x02, 0x03, 0x7e, 0x03, 0x03, 0x84,
        0x01, 0x03, 0x03, 0x8a, 0x01, 0x03, 0x03, 0x90, 0x01, 0x03, 0x03, 0x96, 0x01, 0x03, 0x03,
        0x9c, 0x01, 0x03, 0x03, 0xa2, 0x01, 0x03, 0x03, 0xa8, 0x01, 0x03, 0x03, 0xae, 0x01, 0x03,
        0x03, 0xb4, 0x01, 0x03, 0x03, 0xba, 0x01, 0x03, 0x03, 0xc0, 0x01, 0x03, 0x03, 0xc6, 0x01,
        0x03, 0x03, 0xcc, 0x01, 0x03, 0x03, 0xd2, 0x01, 0x03, 0x03, 0xd8, 0x01, 0x03, 0x03, 0xde,
        0x01, 0x03, 0x03, 0xe4, 0x01, 0x03, 0x03, 0xea, 0x01, 0x03, 0x03, 0xf0, 0x01, 0x03, 0x03,
        0xf6, 0x01, 0x03, 0x03, 0xfc, 0x01, 0x03, 0x03, 0x82, 0x02, 0x03, 0x03, 0x88, 0x02, 0x03,
        0x03, 0x8e, 0x02, 0x03, 0x03, 0x94, 0x02, 0x03, 0x03, 0x9a, 0x02, 0x03, 0x03, 0xa0, 0x02,
        0x03, 0x03, 0xa6, 0x02, 0x9e, 0x80, 0x33, 0x6d, 0x92, 0x9c, 0xcf, 0x4b, 0x4f, 0x83, 0x23,
        0xf5, 0x9a, 0x85, 0x11, 0xf5, 0x62, 0x8d, 0x5b, 0x9f, 0xbd, 0x14, 0xe3, 0xca, 0x84, 0xcf,
        0x1f, 0xaf, 0x08, 0xb4, 0x5e, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x59, 0xd0, 0x80, 0x17, 0x4f,
        0xbc, 0xfd, 0x69,
    };
    CHECK(five[0] == 5);
    seg_reader r;
    seg_call c;
    CHECK(seg_reader_open(&r, five, sizeof five) == 0 && r.format == 5 && (r.packed & 1u << 8));
    int n = 0, ok = 1;
    while (seg_reader_next(&r, &c) == 1) {
        uint8_t args[6] = {WIRE_INT, (uint8_t)((n % 7) * 2), WIRE_STR, 2, 'a', 'b'};
        uint8_t res[3] = {WIRE_INT, (uint8_t)((n * 6) & 0x7f), 0};
        size_t rn = 2;
        if (n * 6 >= 0x80) {
            res[1] |= 0x80;
            res[2] = (uint8_t)((n * 6) >> 7);
            rn = 3;
        }
        ok &= c.id == 1000 + n && c.parent == (n ? 999 : 0) && c.depth == (n ? 1 : 0) &&
              c.start == 1700000000000000000LL + 1000 * n && c.duration == 200 + n &&
              c.outcome == OUTCOME_RETURNED && c.flags == (REC_HAS_ARGS | REC_HAS_RESULT) &&
              c.value[VALUE_ARGS].len == 6 && memcmp(c.value[VALUE_ARGS].data, args, 6) == 0 &&
              c.value[VALUE_RESULT].len == rn && memcmp(c.value[VALUE_RESULT].data, res, rn) == 0;
        n++;
    }
    CHECK(ok && n == 50);
    seg_reader_close(&r);
    CHECK(seg_has_call_within(five, sizeof five, 1700000000000049000LL, INT64_MAX, 249, 249) == 1);
}

/* Reads back through every reading call of store.h (store.h's contract,
 * whatever the store): counts, function and session rows, a call found by
 * id, a missing blob, a listing and its loads. */
static void test_store_reader(void)
{
    char path[64];
    fresh_path(path, "store-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (uint64_t i = 1; i <= 30; i++)
        CHECK(append_bare_call(e, &b, i, NULL));
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    store_err se;
    store_counts n;
    CHECK(store_totals(st, &n, &se) == 0 && n.calls == 30 && n.functions == 1 && n.sessions == 1);
    int64_t count = 0, calls = 0;
    CHECK(store_function_count(st, &count, &se) == 0 && count == 1);
    store_row row;
    store_cursor *c = store_read_functions(st, &se);
    CHECK(c && store_next(c, &row, &se) == 1);
    int64_t fid = c ? row.function.id : 0;
    CHECK(c && row.function.calls == 30 && row.function.line == 7 && row.function.min_ns == 0 &&
          row.function.qualname.n == 1 && memcmp(row.function.qualname.p, "f", 1) == 0);
    CHECK(c && store_next(c, &row, &se) == 0 && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    CHECK(store_call_total(st, &fid, 1, &calls, &se) == 0 && calls == 30);
    c = store_read_sessions(st, &se);
    CHECK(c && store_next(c, &row, &se) == 1 && row.session.mpi_rank == STORE_NONE &&
          row.session.end_ns != STORE_NONE && row.session.pid == getpid());
    store_cursor_close(c);
    /* call 5 by id: a segment whose bytes hold it; no segment for 999 */
    c = store_find_call(st, 5, &se);
    CHECK(c && store_next(c, &row, &se) == 1 && row.segment.function == fid && row.segment.data);
    seg_reader r;
    seg_call call;
    int found = 0;
    if (c && row.segment.data && seg_reader_open(&r, row.segment.data, row.segment.len) == 0) {
        while (seg_reader_next(&r, &call) == 1)
            found += call.id == 5;
        seg_reader_close(&r);
    }
    CHECK(found == 1);
    store_cursor_close(c);
    c = store_find_call(st, 999, &se);
    CHECK(c && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    uint8_t hash[WIRE_HASH_BYTES] = {0};
    c = store_read_blob(st, hash, &se);
    CHECK(c && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    /* the listing of every segment covers every call; each one loads */
    store_segment_filter f = {&fid, 1, 0, INT64_MIN, INT64_MAX, 0, INT64_MAX, -1, 0};
    c = store_list_segments(st, &f, &se);
    int64_t listed = 0;
    while (c && store_next(c, &row, &se) == 1) {
        store_segment g;
        listed += row.segment.n;
        CHECK(row.segment.data == NULL);
        CHECK(store_load_listed(c, row.segment.id, &g, &se) == 1 && g.n == row.segment.n);
        free((void *)g.data);
    }
    CHECK(listed == 30);
    store_segment g;
    CHECK(c && store_load_listed(c, 999999, &g, &se) == 0);
    store_cursor_close(c);
    store_close(st);
    remove_tape(path);
}

/* Finding a call by id reads the id index around the id, as wide as the
 * newest segments are: a call in an older, wider segment is still found
 * (the rest of the index), and a call in no segment is not. */
static void test_find_call_in_a_wide_old_segment(void)
{
    char path[64];
    fresh_path(path, "wide-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    /* the first segment holds calls 1 and 600; then 299 segments of two */
    CHECK(append_bare_call(e, &b, 1, NULL) && append_bare_call(e, &b, 600, NULL));
    CHECK(engine_flush(e, 10000000000ull) == 0);
    for (uint64_t i = 2; i < 600; i += 2) {
        CHECK(append_bare_call(e, &b, i, NULL) && append_bare_call(e, &b, i + 1, NULL));
        CHECK(engine_flush(e, 10000000000ull) == 0);
    }
    engine_free(e);
    wbuf_free(&b);
    CHECK(query_int(path, "SELECT count(*) FROM segments") == 300);
    CHECK(query_int(path, "SELECT id_max - id_min FROM segments WHERE id = 1") == 599);
    int64_t base =
        query_int(path, "SELECT id_min FROM segments WHERE id = 1") - 1; /* id of seq 0 */
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    int64_t wanted[] = {base + 600, base + 1, base + 301, base + 600, base + 599};
    for (size_t k = 0; k < sizeof wanted / sizeof wanted[0]; k++) {
        store_err se;
        store_row row;
        store_cursor *c = store_find_call(st, wanted[k], &se);
        int found = 0;
        while (c && !found && store_next(c, &row, &se) == 1) {
            seg_reader r;
            if (seg_reader_open(&r, row.segment.data, row.segment.len) == 0)
                found = seg_reader_has_id(&r, wanted[k]) == 1;
            seg_reader_close(&r);
        }
        CHECK(found);
        store_cursor_close(c);
    }
    store_err se;
    store_row row;
    store_cursor *c = store_find_call(st, base + 601, &se);
    CHECK(c && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    store_close(st);
    remove_tape(path);
}

/* The self-time table: many parents open at once (it grows), taken back
 * in any order (removals keep every other entry findable). */
static void test_selftime_table(void)
{
    selftime t = {0};
    const uint64_t n = 5000;
    for (uint64_t seq = 1; seq <= n; seq++) {
        selftime_add(&t, seq * 7, (int64_t)seq);
        selftime_add(&t, seq * 7, 1);
    }
    CHECK(t.n + t.depth == n && t.depth > 0 && t.n > 0);
    int ok = 1;
    for (int64_t seq = (int64_t)n - 1; seq >= 1; seq -= 2) /* odd ones, from the end */
        ok &= selftime_take(&t, (uint64_t)seq * 7) == seq + 1;
    for (uint64_t seq = 2; seq <= n; seq += 2)
        ok &= selftime_take(&t, seq * 7) == (int64_t)seq + 1;
    CHECK(ok);
    CHECK(t.n == 0 && t.depth == 0 && selftime_take(&t, 7) == 0 && selftime_take(&t, 12345) == 0);
    selftime_free(&t);
}

/* The self-time stack in the orders calls end in: nested on one thread
 * (recursion deeper than the stack), two threads interleaved, a child that
 * outlived its parent, and a parent that gets children on both the stack
 * and the table; every parent takes back exactly its children's sum. */
static void test_selftime_orders(void)
{
    selftime t = {0};
    /* a comb deeper than the stack: node k (seq 2k) calls a leaf (seq
     * 2k + 1, 1 ns), then node k + 1; each node lasts 100 ns */
    const int64_t nodes = 3 * SELFTIME_STACK;
    int ok = 1;
    for (int64_t k = 1; k <= nodes; k++)
        selftime_add(&t, (uint64_t)(2 * k), 1);
    CHECK(t.n > 0); /* the stack overflowed into the table */
    for (int64_t k = nodes; k >= 1; k--) {
        ok &= selftime_take(&t, (uint64_t)(2 * k)) == 1 + (k < nodes ? 100 : 0);
        if (k > 1)
            selftime_add(&t, (uint64_t)(2 * k - 2), 100);
    }
    CHECK(ok && t.n == 0 && t.depth == 0);
    /* two threads: 10 <- 11, 20 <- 21 <- 22, their ends interleaved */
    selftime_add(&t, 10, 5);
    selftime_add(&t, 21, 7);
    selftime_add(&t, 20, 1);
    CHECK(selftime_take(&t, 10) == 5); /* below the top */
    selftime_add(&t, 20, 2);
    CHECK(selftime_take(&t, 21) == 7 && selftime_take(&t, 20) == 3);
    /* 30's child ended after 30 did: an entry nobody takes, then more calls */
    CHECK(selftime_take(&t, 30) == 0);
    selftime_add(&t, 30, 4);
    selftime_add(&t, 40, 1);
    selftime_add(&t, 35, 2); /* below the top: onto the table */
    selftime_add(&t, 35, 3);
    CHECK(selftime_take(&t, 40) == 1);
    selftime_add(&t, 35, 4); /* now on the stack too */
    CHECK(selftime_take(&t, 35) == 9 && selftime_take(&t, 35) == 0);
    CHECK(t.n == 0 && t.depth == 1); /* 30's orphan */
    selftime_free(&t);
}

/* Appends a call of function 1: seq, parent seq, duration (ns). */
static int append_timed_call(engine *e, wbuf *b, uint64_t seq, uint64_t parent, uint64_t dur)
{
    call_rec c = {0};
    c.fn = 1;
    c.seq = seq;
    c.parent = parent;
    c.depth = parent ? 1 : 0;
    c.duration = dur;
    b->len = 0;
    rec_put_call(b, &c);
    return append_waiting(e, b, NULL) == ENGINE_APPENDED;
}

/* Self time onto a tape: a parent (100 ns) whose two children (30, 20 ns)
 * ended, and were appended, before it; tape-wide and for its session. */
static void test_self_time_totals(void)
{
    char path[64];
    fresh_path(path, "selftime-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    CHECK(append_timed_call(e, &b, 2, 1, 30) && append_timed_call(e, &b, 3, 1, 20) &&
          append_timed_call(e, &b, 1, 0, 100));
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    store_err se;
    store_row row;
    store_cursor *c = store_read_functions(st, &se);
    CHECK(c && store_next(c, &row, &se) == 1 && row.function.calls == 3 &&
          row.function.total_ns == 150 && row.function.self_ns == 30 + 20 + 50);
    store_cursor_close(c);
    int64_t sessions[2] = {1, 999};
    c = store_read_session_functions(st, sessions, 2, &se);
    CHECK(c && store_next(c, &row, &se) == 1 && row.function.calls == 3 &&
          row.function.total_ns == 150 && row.function.self_ns == 100 &&
          row.function.min_ns == 20 && row.function.max_ns == 100);
    CHECK(c && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    c = store_read_session_functions(st, sessions + 1, 1, &se); /* no such session */
    CHECK(c && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    store_segment_filter f = {NULL, 0, 0, INT64_MIN, INT64_MAX, 0, INT64_MAX, -1, 0};
    f.sessions = sessions;
    f.nsessions = 2;
    c = store_list_segments(st, &f, &se);
    int64_t listed = 0;
    while (c && store_next(c, &row, &se) == 1)
        listed += row.segment.n;
    CHECK(listed == 3);
    store_cursor_close(c);
    f.sessions = sessions + 1;
    f.nsessions = 1;
    c = store_list_segments(st, &f, &se);
    CHECK(c && store_next(c, &row, &se) == 0);
    store_cursor_close(c);
    store_close(st);
    char side[300];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
}

/* retain.c: sizes, ages and whole policies, and what each refuses. */
static void test_retain_parse(void)
{
    int64_t v = 0;
    CHECK(retain_parse_size("2GB", &v) == 0 && v == 2000000000);
    CHECK(retain_parse_size("500 MiB", &v) == 0 && v == 500LL * 1048576);
    CHECK(retain_parse_size("1.5gib", &v) == 0 && v == 1610612736);
    CHECK(retain_parse_size("4096", &v) == 0 && v == 4096);
    CHECK(retain_parse_size("5XB", &v) < 0 && retain_parse_size("", &v) < 0 &&
          retain_parse_size("-1GB", &v) < 0 && retain_parse_size("1.2.3MB", &v) < 0 &&
          retain_parse_size("1e99TB", &v) < 0 && retain_parse_size(".", &v) < 0);
    CHECK(retain_parse_age("7d", &v) == 0 && v == 7 * 86400000000000LL);
    CHECK(retain_parse_age("1.5h", &v) == 0 && v == 5400000000000LL);
    CHECK(retain_parse_age("7", &v) < 0 && retain_parse_age("7y", &v) < 0 &&
          retain_parse_age("7dd", &v) < 0);
    retain_policy p;
    char err[200];
    CHECK(retain_parse("older_than=7d, max_size=2GB,keep_sessions=10", &p, err, sizeof err) == 0 &&
          p.older_than_ns == 7 * 86400000000000LL && p.max_bytes == 2000000000 &&
          p.keep_sessions == 10);
    CHECK(retain_parse("max_size=1MiB", &p, err, sizeof err) == 0 && p.max_bytes == 1048576 &&
          p.older_than_ns == -1 && p.keep_sessions == -1);
    CHECK(retain_parse("max_size=big", &p, err, sizeof err) < 0 &&
          strstr(err, "cannot read the size big of max_size") != NULL);
    CHECK(retain_parse("ttl=3d", &p, err, sizeof err) < 0 &&
          strstr(err, "unknown retention rule ttl") != NULL);
    CHECK(retain_parse("7d", &p, err, sizeof err) < 0 && strstr(err, "older_than=7d") != NULL);
    CHECK(retain_parse("", &p, err, sizeof err) < 0 && strstr(err, "no retention rule") != NULL);
    CHECK(retain_parse("keep_sessions=-2", &p, err, sizeof err) < 0);
}

/* store_copy: a tape copied twice onto another keeps its calls' totals,
 * self time included (carried over from the per-session totals), under
 * fresh ids; a tape copied onto itself is refused. */
static void test_store_copy(void)
{
    char path[64], copy[64], err[256];
    fresh_path(path, "copy-src");
    fresh_path(copy, "copy-dst");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    CHECK(append_timed_call(e, &b, 2, 1, 30) && append_timed_call(e, &b, 3, 1, 20) &&
          append_timed_call(e, &b, 1, 0, 100));
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    wbuf_free(&b);
    int64_t sessions = 0, calls = 0;
    CHECK(store_copy(path, path, &sessions, &calls, err, sizeof err) < 0 &&
          strstr(err, "the same tape") != NULL);
    for (int i = 0; i < 2; i++)
        CHECK(store_copy(path, copy, &sessions, &calls, err, sizeof err) == 0 && sessions == 1 &&
              calls == 3);
    store *st = store_open_read(copy, err, sizeof err);
    CHECK(st != NULL);
    if (st) {
        store_err se;
        store_row row;
        store_counts n;
        CHECK(store_totals(st, &n, &se) == 0 && n.calls == 6 && n.sessions == 2);
        store_cursor *c = store_read_functions(st, &se);
        CHECK(c && store_next(c, &row, &se) == 1 && row.function.calls == 6 &&
              row.function.total_ns == 300 && row.function.self_ns == 200);
        store_cursor_close(c);
        store_close(st);
    }
    remove_tape(path);
    remove_tape(copy);
}

/* A bind SQLite refuses (a value over its length limit) fails the
 * statement with the store's error, unrun, and leaves it usable; on the
 * reader's side the cursor is not made. */
static void test_store_bind_failure(void)
{
    char path[] = "/tmp/calltape-engine-bind-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    char err[256];
    store *sto = store_open_write(path, err, sizeof err);
    CHECK(sto != NULL);
    if (!sto)
        return;
    sqlite3 *db = sq_db(sto);
    uint8_t hash[WIRE_HASH_BYTES] = {1}, data[200] = {0};
    int64_t id = 0;
    CHECK(store_begin(sto) == 0);
    sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 100);
    CHECK(store_put_blob(sto, hash, data, sizeof data) < 0);
    CHECK(strstr(store_errmsg(sto), "cannot store a blob: ") == store_errmsg(sto));
    CHECK(strstr(store_errmsg(sto), "too big") != NULL);
    char name[150];
    memset(name, 'f', sizeof name);
    CHECK(store_function(sto, "m", 1, name, sizeof name, "m.py", 4, 1, (const uint8_t *)"", 0,
                         &id) < 0);
    CHECK(strstr(store_errmsg(sto), "cannot look up a function: ") == store_errmsg(sto));
    /* the next statement binds afresh: nothing of the failed one is left */
    CHECK(store_put_blob(sto, hash, data, 10) == 0);
    CHECK(store_function(sto, "m", 1, "f", 1, "m.py", 4, 1, (const uint8_t *)"", 0, &id) == 0);
    CHECK(id > 0);
    CHECK(store_commit(sto) == 0);
    store_close(sto);
    CHECK(query_int(path, "SELECT count(*) FROM blobs") == 1);
    CHECK(query_int(path, "SELECT size FROM blobs") == 10);
    sto = store_open_read(path, err, sizeof err);
    CHECK(sto != NULL);
    if (sto) {
        store_err se;
        sqlite3_limit(sq_db(sto), SQLITE_LIMIT_LENGTH, WIRE_HASH_BYTES - 1);
        CHECK(store_read_blob(sto, hash, &se) == NULL);
        CHECK(se.kind == STORE_FAILED && strstr(se.msg, "too big") != NULL);
        store_close(sto);
    }
    remove_tape(path);
}

/* Appends a REC_CONTEXT of kind "test" (as append_waiting); 1 when appended. */
static int append_span(engine *e, wbuf *b, uint64_t id, const char *name, uint64_t start,
                       uint64_t end)
{
    context_rec c = {id, start,       end, (const uint8_t *)"test", (const uint8_t *)name,
                     4,  strlen(name)};
    b->len = 0;
    rec_put_context(b, &c);
    return append_waiting(e, b, NULL) == ENGINE_APPENDED;
}

/* Appends a call of function 1 at monotonic `start`, lasting 10 ns. */
static int append_call_at(engine *e, wbuf *b, uint64_t seq, uint64_t start)
{
    call_rec c = {0};
    c.fn = 1;
    c.seq = seq;
    c.start = start;
    c.duration = 10;
    b->len = 0;
    rec_put_call(b, &c);
    return append_waiting(e, b, NULL) == ENGINE_APPENDED;
}

/* The calls a search within `spans` finds (oldest or newest first): their
 * starts minus `base` into `out` (up to `cap`); returns how many, or -1.
 * The query's count must agree. */
static int span_search(store *st, const query_span *spans, size_t n, int64_t session, int newest,
                       int64_t base, int64_t *out, int cap)
{
    query_filter f = any_filter();
    f.limit = -1;
    f.newest_first = newest;
    f.session = session;
    f.spans = spans;
    f.nspans = n;
    char err[256];
    query *q = query_open(st, &f, err, sizeof err);
    CHECK(q != NULL);
    if (!q)
        return -1;
    seg_call c;
    int64_t sid, fid;
    int found = 0;
    while (query_next(q, &c, &sid, &fid) == 1) {
        if (found < cap)
            out[found] = c.start - base;
        found++;
    }
    query_close(q);
    int64_t counted = -1;
    q = query_open(st, &f, err, sizeof err);
    CHECK(q && query_count(q, &counted) == 0 && counted == found);
    query_close(q);
    return found;
}

/* Reads the "test" spans `name` (NULL: all) of `session` (0: all) from
 * id `from` on into `rows` (up to `cap`, names not kept); returns how many. */
static int read_spans(store *st, const char *name, int64_t session, int64_t from,
                      store_context *rows, int cap)
{
    store_context_filter f = {{(const uint8_t *)"test", 4},
                              {(const uint8_t *)name, name ? strlen(name) : 0},
                              session,
                              from};
    store_err se;
    store_cursor *c = store_read_contexts(st, &f, &se);
    CHECK(c != NULL);
    store_row row;
    int n = 0;
    while (c && store_next(c, &row, &se) == 1) {
        if (n < cap) {
            rows[n] = row.context;
            rows[n].name.p = NULL;
        }
        n++;
    }
    store_cursor_close(c);
    return n;
}

/* Named spans (a pytest test's time in its session): REC_CONTEXT records
 * through the engine, rows of the store (one per span: the closing record
 * replaces the opening one's end), a search within spans that finds
 * exactly the calls started in them across segments and sessions, and a
 * tape of schema 4 (no spans) that reads, then upgrades. */
static void test_contexts(void)
{
    /* the record: round trip; id 0 and trailing bytes are malformed */
    wbuf b;
    wbuf_init(&b, NULL, 0);
    context_rec in = {7, 100, 0, (const uint8_t *)"test", (const uint8_t *)"t.py::a", 4, 7}, out;
    rec_put_context(&b, &in);
    wreader r;
    wreader_init(&r, b.data, b.len);
    uint64_t len = wreader_varint(&r);
    CHECK(len == (uint64_t)(r.end - r.p) && *r.p == REC_CONTEXT);
    CHECK(rec_parse_context(r.p + 1, (size_t)len - 1, &out) == 0 && out.id == 7 &&
          out.start == 100 && out.end == 0 && out.name_len == 7 &&
          memcmp(out.name, "t.py::a", 7) == 0);
    CHECK(rec_parse_context(r.p + 1, (size_t)len - 2, &out) == -1);
    in.id = 0;
    b.len = 0;
    rec_put_context(&b, &in);
    CHECK(rec_parse_context(b.data + 2, b.len - 2, &out) == -1);

    char path[64];
    fresh_path(path, "contexts-test");
    engine *e = start_engine(path, 0, 0);
    if (!e)
        return;
    /* session 1: a call before any test, t::a (5,000 calls over three
     * segments, the span around 200 of them), a call between, t::b open */
    int ok = append_call_at(e, &b, 1, 1000);
    for (uint64_t i = 0; i < 5000; i++) {
        if (i == 2100)
            ok += append_span(e, &b, 1, "t::a", 2000 + i * 10 - 5, 0);
        ok += append_call_at(e, &b, 2 + i, 2000 + i * 10);
        if (i == 2299)
            ok += append_span(e, &b, 1, "t::a", 2000 + 2100 * 10 - 5, 2000 + i * 10 + 5);
    }
    ok += append_span(e, &b, 2, "t::b", 90000, 0);
    ok += append_call_at(e, &b, 6000, 90001);
    CHECK(ok == 1 + 5000 + 3 + 1);
    CHECK(engine_flush(e, 10000000000ull) == 0);
    engine_free(e);
    /* session 2: its own span 1, named t::a too */
    e = start_engine(path, 0, 0);
    ok = e ? append_span(e, &b, 1, "t::a", 500, 0) + append_call_at(e, &b, 1, 600) : 0;
    CHECK(ok == 2);
    if (e) {
        CHECK(engine_flush(e, 10000000000ull) == 0);
        engine_free(e);
    }
    char err[256];
    store *st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL);
    if (!st)
        return;
    store_context rows[4];
    CHECK(read_spans(st, NULL, 0, 0, rows, 4) == 3);
    CHECK(rows[0].session == 1 && rows[0].id == 1 && rows[0].end_ns != STORE_NONE);
    CHECK(rows[1].session == 1 && rows[1].id == 2 && rows[1].end_ns == STORE_NONE);
    CHECK(rows[2].session == 2 && rows[2].id == 1 && rows[2].end_ns == STORE_NONE);
    int64_t a0 = rows[0].start_ns, a1 = rows[0].end_ns, b0 = rows[1].start_ns;
    /* the times are the calls' clock: t::a began 5 ns before its first call */
    CHECK(a1 - a0 == 2000 - 5 + 5);
    CHECK(read_spans(st, "t::a", 0, 0, rows, 4) == 2 && rows[1].session == 2);
    CHECK(read_spans(st, "t::b", 0, 0, rows, 4) == 1 && rows[0].id == 2);
    CHECK(read_spans(st, NULL, 1, 2, rows, 4) == 1 && rows[0].id == 2);
    CHECK(read_spans(st, "nope", 0, 0, rows, 4) == 0);
    int64_t got[300];
    query_span spans[3] = {{1, a0, a1}, {1, b0, INT64_MAX}, {2, INT64_MIN, INT64_MAX}};
    int n = span_search(st, spans, 1, 0, 0, a0, got, 300);
    CHECK(n == 200 && got[0] == 5 && got[199] == 5 + 199 * 10);
    n = span_search(st, spans, 2, 0, 1, a0, got, 300); /* newest first: t::b's call first */
    CHECK(n == 201 && got[0] == b0 - a0 + 1 && got[1] == 5 + 199 * 10);
    CHECK(span_search(st, spans, 3, 0, 0, a0, got, 300) == 202);
    CHECK(span_search(st, spans, 3, 2, 0, a0, got, 300) == 1); /* and session 2 only */
    CHECK(span_search(st, spans, 1, 2, 0, a0, got, 300) == 0);
    query_span overlapping[2] = {{1, a0, a0 + 1000}, {1, a0 + 500, a1}}; /* merged: once each */
    CHECK(span_search(st, overlapping, 2, 0, 0, a0, got, 300) == 200);
    store_close(st);

    /* a tape of schema 4 has no spans: read as it is, upgraded by a writer */
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK &&
          sqlite3_exec(db,
                       "DROP TABLE contexts; DROP TABLE specs; DROP TABLE spec_applied;"
                       " DELETE FROM meta WHERE key = 'spec_changes'; PRAGMA user_version = 4",
                       NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(db);
    st = store_open_read(path, err, sizeof err);
    CHECK(st != NULL && store_version(st) == 4);
    if (st)
        CHECK(read_spans(st, NULL, 0, 0, rows, 4) == 0);
    store_close(st);
    st = store_open_write(path, err, sizeof err);
    CHECK(st != NULL);
    store_close(st);
    CHECK(query_int(path, "PRAGMA user_version") == CALLTAPE_SCHEMA_VERSION);
    CHECK(query_int(path, "SELECT count(*) FROM contexts") == 0);
    wbuf_free(&b);
    remove_tape(path);
}

/* Collects read_specs rows as "id=spec|process=info;" */
static int spec_collect(void *ctx, const char *id, const char *spec, const char *process,
                        const char *info)
{
    char *out = ctx;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s=%s|%s=%s;", id, spec, process ? process : "-",
             info ? info : "-");
    return 0;
}

static void test_probe_specs(void)
{
    char path[] = "/tmp/calltape-specs-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    char err[400], rows[512] = "";
    store_err e = {0, ""};
    store *st = store_open_write(path, err, sizeof err);
    CHECK(st != NULL && store_has_specs(st));
    if (!st)
        return;
    int64_t v0 = -1, v1 = -1, v2 = -1;
    int found = -1;
    CHECK(store_spec_version(st, &v0, &e) == 0 && v0 == 0);
    CHECK(store_put_spec(st, "a", "{}", &e) == 0);
    CHECK(store_mark_spec(st, "a", "h:1", "{\"e\":1}", &e) == 0);
    CHECK(store_mark_spec(st, "nope", "h:1", "{}", &e) == 0); /* no such spec: nothing */
    CHECK(store_spec_version(st, &v1, &e) == 0 && v1 == 1);   /* a report does not move it */
    CHECK(store_read_specs(st, &v2, spec_collect, rows, &e) == 0 && v2 == 1);
    CHECK(strcmp(rows, "a={}|h:1={\"e\":1};") == 0);
    CHECK(store_put_spec(st, "a", "{\"x\":2}", &e) == 0); /* a new text forgets the reports */
    rows[0] = 0;
    CHECK(store_read_specs(st, &v2, spec_collect, rows, &e) == 0 && v2 == 2);
    CHECK(strcmp(rows, "a={\"x\":2}|-=-;") == 0);
    CHECK(store_delete_spec(st, "a", &found, &e) == 0 && found == 1);
    CHECK(store_delete_spec(st, "a", &found, &e) == 0 && found == 0);
    rows[0] = 0;
    CHECK(store_read_specs(st, &v2, spec_collect, rows, &e) == 0 && v2 == 4 && rows[0] == 0);
    store_close(st);
    remove_tape(path);
}

static atomic_int final_then_calls;

static void count_final_then(void)
{
    atomic_fetch_add(&final_then_calls, 1);
}

/* A SIGTERM's final round while the process exits: exit() runs
 * engine_shutdown_all, which joins the writer that answers the round.
 * That writer must not wait for anything the exiting thread holds (it once
 * waited for the registry lock: a Pool worker terminated while exiting hung
 * for good).  alarm() ends the test binary if it hangs.  Run last: the
 * final round is asked of the whole process. */
static void test_final_round_while_shutting_down(void)
{
    char path[64];
    fresh_path(path, "final-test");
    engine *e = start_engine(path, 4096, 1 << 20);
    if (!e)
        return;
    wbuf b;
    wbuf_init(&b, NULL, 0);
    for (uint64_t i = 1; i <= 100; i++)
        CHECK(append_bare_call(e, &b, i, NULL) == 1);
    wbuf_free(&b);
    alarm(30);
    CHECK(engine_final_round(count_final_then, 5000000000ull) == 1);
    engine_shutdown_all(5000000000ull);
    alarm(0);
    CHECK(atomic_load(&final_then_calls) == 1);
    engine_stats s;
    engine_get_stats(e, &s);
    CHECK(s.written_calls == 100 && s.dropped_calls == 0);
    engine_free(e);
    CHECK(query_int(path, "SELECT sum(n) FROM segments") == 100);
    remove_tape(path);
}

int main(void)
{
    test_varint_and_skip();
    test_wire_copy();
    test_preview_bounded();
    test_tokenizer();
    test_quote_and_float_repr();
    test_literals();
    test_locals_globals_roundtrip();
    test_value_slots_roundtrip();
    test_hash();
    test_segment_roundtrip();
    test_crc32c();
    test_segment_checksum_and_format_1();
    test_segment_capture();
    test_lz();
    test_segment_packed();
    test_bytes_transpose();
    test_segment_shuffled();
    test_segment_format_5_as_written();
    test_segment_next_within();
    test_engine_end_to_end();
    test_unwritable_tape_drops_and_counts();
    test_park_while_a_producer_appends();
    test_back_pressure_answers_full();
    test_a_call_larger_than_the_backlog_is_written();
    test_deleted_tape_is_noticed();
    test_query_energy();
    test_query_any_order();
    test_bgwrite();
    test_segment_links();
    test_children_index();
    test_query_reports_damage();
    test_store_reader();
    test_find_call_in_a_wide_old_segment();
    test_store_bind_failure();
    test_selftime_table();
    test_selftime_orders();
    test_self_time_totals();
    test_store_copy();
    test_retain_parse();
    test_contexts();
    test_probe_specs();
    test_final_round_while_shutting_down(); /* last: see there */
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
