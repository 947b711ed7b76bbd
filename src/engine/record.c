/*
 * record.c - the producer records of engine.h: building a REC_CALL (its
 * parsers, rec_call_head and rec_parse_call, are inline in engine.h, as the
 * writer parses every call) and building and parsing a REC_CONTEXT.  Producers that need speed
 * build records inline (the binding's record/emit.h); this is the reference
 * form used by the C tests.
 */
#include "engine.h"

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

void rec_put_call(wbuf *b, const call_rec *c)
{
    uint8_t tmp[160];
    wbuf body;
    wbuf_init(&body, tmp, sizeof tmp);
    wbuf_byte(&body, REC_CALL);
    if (wbuf_reserve(&body, REC_CALL_HEAD) == 0)
        body.len =
            (size_t)(rec_put_call_head(body.data + body.len, c->fn, c->thread, c->depth, c->seq,
                                       c->parent, c->start, c->duration, c->flags, c->outcome) -
                     body.data);
    if (c->flags & REC_HAS_CPU)
        wbuf_varint(&body, c->cpu_ns);
    if (c->flags & REC_HAS_MEMORY) {
        wbuf_varint(&body, c->rss_before);
        wbuf_varint(&body, c->rss_after);
        wbuf_varint(&body, c->rss_peak);
    }
    if (c->flags & REC_HAS_ENERGY) {
        wbuf_varint(&body, c->energy_pkg);
        wbuf_varint(&body, c->energy_dram);
    }
    size_t extra = 0;
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
    for (int i = 0; i < VALUE_NSLOTS; i++)
        if (c->flags & value_flag((enum value_slot)i))
            extra += varint_size(c->value[i].len) + c->value[i].len;
    wbuf_varint(b, body.len + extra);
    wbuf_put(b, body.data, body.len);
#pragma GCC unroll 8 /* one copy per slot: flags and columns are constants */
    for (int i = 0; i < VALUE_NSLOTS; i++) {
        if (c->flags & value_flag((enum value_slot)i)) {
            wbuf_varint(b, c->value[i].len);
            wbuf_put(b, c->value[i].data, c->value[i].len);
        }
    }
    if (body.failed)
        b->failed = 1;
    wbuf_free(&body);
}

int rec_parse_context(const uint8_t *p, size_t n, context_rec *c)
{
    wreader r;
    wreader_init(&r, p, n);
    memset(c, 0, sizeof *c);
    c->id = wreader_varint(&r);
    c->start = wreader_varint(&r);
    c->end = wreader_varint(&r);
    c->kind_len = (size_t)wreader_varint(&r);
    c->kind = wreader_take(&r, c->kind_len);
    c->name_len = (size_t)wreader_varint(&r);
    c->name = wreader_take(&r, c->name_len);
    return (r.bad || r.p != r.end || c->id == 0) ? -1 : 0;
}

void rec_put_context(wbuf *b, const context_rec *c)
{
    size_t body = 1 + varint_size(c->id) + varint_size(c->start) + varint_size(c->end) +
                  varint_size(c->kind_len) + c->kind_len + varint_size(c->name_len) + c->name_len;
    wbuf_varint(b, body);
    wbuf_byte(b, REC_CONTEXT);
    wbuf_varint(b, c->id);
    wbuf_varint(b, c->start);
    wbuf_varint(b, c->end);
    wire_sized(b, c->kind, c->kind_len);
    wire_sized(b, c->name, c->name_len);
}
