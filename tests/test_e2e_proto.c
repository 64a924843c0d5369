/*
 * What a client's bytes can and cannot do to the daemon's reading of a frame and to the text
 * it writes, against a real budgetd: a key given twice is refused in every map, so the op
 * judged for read-your-writes is the op that runs; a unit or an op of control characters and
 * stray bytes reaches neither the log nor an answer raw. The daemon runs with an access file
 * that makes the suite's user (root, as in CI) an admin for KS only, so a grant for another
 * unit is refused, and the refusal logged, before any field rule is checked.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "e2e_util.h"
#include "proto/text.h"

static e2e_daemon bd;
static char conf_dir[64], conf_path[128];

static void setup(void)
{
    snprintf(conf_dir, sizeof(conf_dir), "/tmp/budgetd-proto-XXXXXX");
    cr_assert_not_null(mkdtemp(conf_dir));
    snprintf(conf_path, sizeof(conf_path), "%s/access", conf_dir);
    FILE *f = fopen(conf_path, "w");
    cr_assert_not_null(f);
    fprintf(f, "user %u admin KS\n", (unsigned)getuid());
    cr_assert_eq(fclose(f), 0);
    const char *argv[] = {"--config", conf_path, NULL};
    cr_assert_eq(e2e_daemon_start_with(&bd, argv), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", NULL);
}

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
    unlink(conf_path);
    rmdir(conf_dir);
}

TestSuite(proto, .init = setup, .fini = teardown, .timeout = 120);

static void stop_cleanly(void)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not stop");
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "budgetd exited with 0x%x", status);
}

/* ---- frames -----------------------------------------------------------------------------------
 */

/* {"id": id, "op": "frame.grant", "args": {...}} of 100 öre to `unit`. */
static void pack_grant(e2e_buf *b, uint64_t id, const char *frame, const char *unit)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, 3);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", "frame.grant");
    e2e_pack_str(b, "args");
    msgpack_pack_map(&b->pk, 6 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", frame);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "year", 2021);
    e2e_kv_int(b, "amount", 100);
    e2e_kv_str(b, "title", "Två op i en ram");
    e2e_kv_decision(b);
    e2e_pack_str(b, "intended"); /* many frames alike, on purpose */
    msgpack_pack_true(&b->pk);
    e2e_frame_end(b);
}

static void pack_hello(e2e_buf *b, uint64_t id)
{
    e2e_frame_begin(b);
    msgpack_pack_map(&b->pk, 2);
    e2e_kv_uint(b, "id", id);
    e2e_kv_str(b, "op", "hello");
    e2e_frame_end(b);
}

/* What one response on a raw connection said. */
typedef struct {
    e2e_envelope env;
    msgpack_unpacked u;
    const msgpack_object *message; /* the error's message str, or NULL */
} response;

static void read_response(int fd, response *r, const char *what)
{
    int rc = e2e_raw_recv(fd, E2E_FRAME_TIMEOUT_MS, &r->u);
    e2e_assert(rc == E2E_FRAME, "%s: no response (%d)", what, rc);
    e2e_assert(e2e_envelope_read(&r->u.data, &r->env), "%s: the response is malformed", what);
    r->message = NULL;
    if (!r->env.ok) {
        const msgpack_object *error = budget_map_get(&r->u.data, "error");
        r->message = budget_map_get(error, "message");
        e2e_assert(r->message != NULL && r->message->type == MSGPACK_OBJECT_STR,
                   "%s: the error has no message str", what);
    }
}

/* A message as a NUL-terminated copy, for assertions and their output. */
static void message_text(const response *r, char *out, size_t out_size)
{
    size_t n = r->message->via.str.size < out_size - 1 ? r->message->via.str.size : out_size - 1;
    memcpy(out, r->message->via.str.ptr, n);
    out[n] = '\0';
}

/* ---- a key given twice ------------------------------------------------------------------------
 */

/*
 * {"id": 2, "op": "approve", "op": "balances"} pipelined behind a write: a reading that takes
 * the first op sees a write, which need not wait; one that takes the last runs balances. The
 * frame is refused whole, as bad_request naming the key, and the connection serves on.
 */
Test(proto, a_key_twice_in_a_pipelined_frame_is_refused)
{
    e2e_buf b;
    response r;
    char text[512];
    int fd = e2e_raw_connect(bd.socket);

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    pack_grant(&b, 1, "twice-1", "KS");
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 2);
    e2e_kv_str(&b, "op", "approve");
    e2e_kv_str(&b, "op", "balances");
    e2e_frame_end(&b);
    pack_hello(&b, 3);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");

    read_response(fd, &r, "the grant");
    e2e_assert(r.env.ok && r.env.id == 1, "the grant: %s", r.env.code);
    msgpack_unpacked_destroy(&r.u);
    read_response(fd, &r, "the frame with op twice");
    e2e_assert_int(r.env.id, 2, "id of the answer to op twice");
    e2e_assert(!r.env.ok, "op twice was answered ok");
    e2e_assert_str(r.env.code, "bad_request", "op twice");
    message_text(&r, text, sizeof(text));
    e2e_assert(strstr(text, "\"op\"") && strstr(text, "twice"), "the message: %s", text);
    msgpack_unpacked_destroy(&r.u);
    read_response(fd, &r, "the hello after it");
    e2e_assert(r.env.ok && r.env.id == 3, "the hello: %s", r.env.code);
    e2e_assert_int(e2e_map_uint(r.env.result, "head"), 2,
                   "head after KS's registration and the grant");
    msgpack_unpacked_destroy(&r.u);
    e2e_buf_destroy(&b);
    close(fd);
    stop_cleanly();
}

/*
 * Read-your-writes holds whatever keys a frame repeats: a read pipelined behind a write, its
 * op hidden behind a write's op, is never answered from a ledger without that write. Each
 * variant asks for the frame the write before it grants; an answer "no such frame", or one as
 * of a seq before the write, would be a read that overtook it.
 */
Test(proto, a_key_twice_cannot_skip_read_your_writes)
{
    static const char *const first_ops[] = {"approve", "frame.grant", "withdraw"};
    int fd = e2e_raw_connect(bd.socket);
    e2e_buf b;

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    for (size_t i = 0; i < sizeof(first_ops) / sizeof(first_ops[0]); i++) {
        char frame[32];
        response r;
        snprintf(frame, sizeof(frame), "ryw-%zu", i);
        e2e_buf_clear(&b);
        pack_grant(&b, 1, frame, "KS");
        e2e_frame_begin(&b);
        msgpack_pack_map(&b.pk, 4);
        e2e_kv_uint(&b, "id", 2);
        e2e_kv_str(&b, "op", first_ops[i]);
        e2e_kv_str(&b, "op", "balances");
        e2e_pack_str(&b, "args");
        msgpack_pack_map(&b.pk, 1);
        e2e_kv_str(&b, "frame", frame);
        e2e_frame_end(&b);
        e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");

        read_response(fd, &r, "the grant");
        e2e_assert(r.env.ok && r.env.id == 1, "the grant of %s: %s", frame, r.env.code);
        uint64_t seq = e2e_map_uint(r.env.result, "seq");
        msgpack_unpacked_destroy(&r.u);
        read_response(fd, &r, "the read behind it");
        e2e_assert_int(r.env.id, 2, "id of the read");
        if (r.env.ok) {
            uint64_t as_of = e2e_map_uint(r.env.result, "as_of");
            e2e_assert(as_of >= seq,
                       "%s then balances: answered as of seq %llu, before the write "
                       "(seq %llu) it was pipelined behind",
                       first_ops[i], (unsigned long long)as_of, (unsigned long long)seq);
        } else {
            char text[512];
            message_text(&r, text, sizeof(text));
            e2e_assert(strcmp(r.env.code, "not_found") != 0,
                       "%s then balances: the read overtook the write before it: %s", first_ops[i],
                       text);
        }
        msgpack_unpacked_destroy(&r.u);
    }
    e2e_buf_destroy(&b);
    close(fd);
    stop_cleanly();
}

/* ---- a client's bytes in the log and in answers ------------------------------------------------
 */

/* The daemon's log, read whole into a static buffer (NUL-terminated); its length. */
static size_t read_log(char *buf, size_t size)
{
    int fd = open(bd.log, O_RDONLY | O_CLOEXEC);
    size_t n = 0;
    if (fd < 0)
        return 0;
    for (ssize_t got; n < size - 1 && (got = read(fd, buf + n, size - 1 - n)) > 0;)
        n += (size_t)got;
    close(fd);
    buf[n] = '\0';
    return n;
}

/* True when the log holds `text` within the frame timeout. */
static bool log_has(const char *text)
{
    static char buf[1 << 18];
    for (int64_t until = e2e_now_ms() + E2E_FRAME_TIMEOUT_MS;;) {
        read_log(buf, sizeof(buf));
        if (strstr(buf, text) != NULL)
            return true;
        if (e2e_now_ms() > until)
            return false;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/*
 * A unit of "X\nbudgetd error: FAKE" in a grant the caller may not make: the refusal is
 * logged, with the unit escaped on its one line, and no line of the log is the forged one.
 */
Test(proto, a_unit_cannot_forge_a_log_line)
{
    static const char forged[] = "X\nbudgetd error: FAKE";
    static char log[1 << 18];
    budget_client *c = e2e_client(&bd);
    e2e_buf args;
    budget_response r;

    e2e_buf_init(&args);
    msgpack_pack_map(&args.pk, 5 + E2E_DECISION_PAIRS);
    e2e_kv_str(&args, "id", "forged-unit");
    e2e_kv_str(&args, "unit", forged);
    e2e_kv_int(&args, "year", 2021);
    e2e_kv_int(&args, "amount", 100);
    e2e_kv_str(&args, "title", "Falsk rad");
    e2e_kv_decision(&args);
    e2e_call(c, "frame.grant", &args, &r);
    e2e_assert(!r.ok, "the grant to another unit was answered ok");
    e2e_assert_str(r.code, "forbidden", "a grant for a unit the caller does not hold");
    e2e_assert(budget_text_clean(r.message, strlen(r.message)), "the answer is not clean: %s",
               r.message);
    e2e_assert(strstr(r.message, "X\\nbudgetd error: FAKE") != NULL,
               "the answer does not show the unit escaped: %s", r.message);
    budget_response_free(&r);

    e2e_assert(log_has("X\\nbudgetd error: FAKE"), "the refusal is not logged with the unit");
    size_t n = read_log(log, sizeof(log));
    for (char *line = log; line < log + n;) {
        char *end = memchr(line, '\n', (size_t)(log + n - line));
        size_t len = end ? (size_t)(end - line) : (size_t)(log + n - line);
        e2e_assert(strncmp(line, "budgetd error: FAKE", strlen("budgetd error: FAKE")) != 0,
                   "the log holds a forged line: %.*s", (int)len, line);
        e2e_assert(budget_text_clean(line, len), "a log line is not clean: %.*s", (int)len, line);
        line += len + 1;
    }
    e2e_buf_destroy(&args);
    budget_client_close(c);
    stop_cleanly();
}

/*
 * An op of the bytes ff fe 0a is no op: the answer names it escaped, as UTF-8 without a
 * control character (a msgpack str must be UTF-8; a strict client would refuse the frame).
 */
Test(proto, an_unknown_op_of_stray_bytes_is_named_in_clean_text)
{
    int fd = e2e_raw_connect(bd.socket);
    e2e_buf b;
    response r;
    char text[512];

    e2e_assert(fd >= 0, "connect");
    e2e_buf_init(&b);
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 2);
    e2e_kv_uint(&b, "id", 5);
    e2e_pack_str(&b, "op");
    msgpack_pack_str_with_body(&b.pk, "\xff\xfe\n", 3);
    e2e_frame_end(&b);
    /* And an arg of the same bytes, which the write's error names. */
    e2e_frame_begin(&b);
    msgpack_pack_map(&b.pk, 3);
    e2e_kv_uint(&b, "id", 6);
    e2e_kv_str(&b, "op", "frame.grant");
    e2e_pack_str(&b, "args");
    msgpack_pack_map(&b.pk, 1);
    msgpack_pack_str_with_body(&b.pk, "\xff\xfe\n", 3);
    msgpack_pack_int(&b.pk, 1);
    e2e_frame_end(&b);
    e2e_assert(e2e_raw_send(fd, b.sb.data, b.sb.size) == 0, "send");

    read_response(fd, &r, "the op of stray bytes");
    e2e_assert_int(r.env.id, 5, "id of the answer");
    e2e_assert_str(r.env.code, "unknown_op", "an op of stray bytes");
    e2e_assert(budget_text_clean(r.message->via.str.ptr, r.message->via.str.size),
               "the message is not UTF-8 without control characters");
    message_text(&r, text, sizeof(text));
    e2e_assert_str(text, "no op \"\\xff\\xfe\\n\"", "the message");
    msgpack_unpacked_destroy(&r.u);

    read_response(fd, &r, "the arg of stray bytes");
    e2e_assert_int(r.env.id, 6, "id of the answer");
    e2e_assert_str(r.env.code, "bad_request", "an arg of stray bytes");
    e2e_assert(budget_text_clean(r.message->via.str.ptr, r.message->via.str.size),
               "the message is not UTF-8 without control characters");
    message_text(&r, text, sizeof(text));
    e2e_assert_str(text, "frame.grant takes no arg \"\\xff\\xfe\\n\"", "the message");
    msgpack_unpacked_destroy(&r.u);
    e2e_buf_destroy(&b);
    close(fd);
    stop_cleanly();
}
