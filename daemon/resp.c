/* Response frames (resp.h). */
#include <stdlib.h>
#include <string.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "proto/frame.h"
#include "proto/text.h"
#include "request.h"
#include "resp.h"

/* The first buffer of an answer: a write's ok answer (seq, hash, head) fits in it. */
#define RESP_FIRST_BYTES 256u

void resp_begin(resp_t *r, uint64_t req_id, bool ok)
{
    static const char header[BUDGET_FRAME_HEADER_BYTES] = {0};
    msgpack_sbuffer_init(&r->sb);
    /* Most answers are a few hundred bytes. msgpack's first buffer is 8 KiB, which the answer
     * then left (conn.c copies a frame into an allocation of its own size when its buffer is
     * much larger); a small first buffer is kept as the frame, and a large answer grows it by
     * doubling as before. */
    r->sb.data = malloc(RESP_FIRST_BYTES);
    r->sb.alloc = r->sb.data ? RESP_FIRST_BYTES : 0;
    msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&r->sb, header, sizeof(header));
    msgpack_pack_map(&r->pk, 3);
    pack_key_uint(&r->pk, "id", req_id);
    pack_cstr(&r->pk, "ok");
    if (ok)
        msgpack_pack_true(&r->pk);
    else
        msgpack_pack_false(&r->pk);
    pack_cstr(&r->pk, ok ? "result" : "error");
}

/* Every error message goes out as clean text (a msgpack str must be UTF-8): one that holds
 * outside bytes still raw is escaped here, whoever made it. */
void resp_error_into(resp_t *r, uint64_t req_id, int code, const char *message)
{
    char safe[1024];
    size_t len = strlen(message);

    if (!budget_text_clean(message, len))
        message = safe, len = budget_escape(safe, sizeof(safe), message, len);
    resp_begin(r, req_id, false);
    msgpack_pack_map(&r->pk, 2);
    pack_key_str(&r->pk, "code", budget_err_code(code));
    pack_cstr(&r->pk, "message");
    msgpack_pack_str(&r->pk, len);
    msgpack_pack_str_body(&r->pk, message, len);
}

void resp_finish(resp_t *r, uint64_t req_id)
{
    size_t body = r->sb.size - BUDGET_FRAME_HEADER_BYTES;
    if (body > BUDGET_FRAME_BYTES_MAX) {
        msgpack_sbuffer_destroy(&r->sb);
        resp_error_into(r, req_id, BUDGET_ETOO_LARGE,
                        "the result is over the 1 MiB frame limit; narrow the query or page it");
        body = r->sb.size - BUDGET_FRAME_HEADER_BYTES;
    }
    budget_frame_header((uint8_t *)r->sb.data, (uint32_t)body);
}
