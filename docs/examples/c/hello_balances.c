/*
 * hello_balances: a budgetd client in C with the installed libbudgetclient.
 *
 * Says hello, then reads the balances and prints, one line each, every unit's totals per
 * fiscal year and every frame's figures, amounts in öre:
 *
 *   hello budgetd 0.1.0 protocol 1 head 18 uid 1000 name kim
 *   unit KS 2021 frames=300000000 allocated=150000000 called_off=0 pending=0 available=...
 *   frame ks-2021 KS 2021 granted=300000000 allocated=... pending=... unallocated=... ...
 *
 * Build it from the installed files alone:  make   (pkg-config --cflags --libs budgetclient)
 * Run it:  ./hello_balances [SOCKET]   (default: $BUDGETD_SOCKET, as budgetctl finds it)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <budget/client.h>

/* The integer under `key`, or -1 printed where the daemon sent something else. */
static int64_t get_int(const budget_value *map, const char *key)
{
    int64_t v;
    return budget_value_int(budget_value_get(map, key), &v) == 0 ? v : -1;
}

static void print_str(const budget_value *map, const char *key)
{
    size_t len = 0;
    const char *s = budget_value_str(budget_value_get(map, key), &len);
    printf("%.*s", (int)len, s != NULL ? s : "");
}

static const char *const unit_keys[] = {"frames", "allocated", "called_off", "pending",
                                        "available"};
static const char *const frame_keys[] = {"granted", "allocated", "pending", "unallocated",
                                         "called_off"};

static void print_figures(const budget_value *row, const char *const *keys, size_t n)
{
    for (size_t k = 0; k < n; k++)
        printf(" %s=%" PRId64, keys[k], get_int(row, keys[k]));
    printf("\n");
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "hello_balances: %s: %s\n", what, budget_strerror(rc));
    return 1;
}

/* Prints the units and frames of one page of balances. */
static void print_page(const budget_value *result)
{
    const budget_value *units = budget_value_get(result, "units");
    for (size_t i = 0; i < budget_value_count(units); i++) {
        const budget_value *u = budget_value_at(units, i);
        printf("unit ");
        print_str(u, "unit");
        printf(" %" PRId64, get_int(u, "year"));
        print_figures(u, unit_keys, sizeof(unit_keys) / sizeof(unit_keys[0]));
    }
    const budget_value *frames = budget_value_get(result, "frames");
    for (size_t i = 0; i < budget_value_count(frames); i++) {
        const budget_value *f = budget_value_at(frames, i);
        printf("frame ");
        print_str(f, "id");
        printf(" ");
        print_str(f, "unit");
        printf(" %" PRId64, get_int(f, "year"));
        print_figures(f, frame_keys, sizeof(frame_keys) / sizeof(frame_keys[0]));
    }
}

/* Asks for one page of balances: the first (as_of 0: the head), or the one `next` names. */
static int balances_page(budget_client *c, uint64_t as_of, const char *const offsets[3],
                         const uint64_t next[3], budget_answer **a)
{
    budget_req *req = NULL;
    int rc = budget_req_new("balances", &req);
    for (size_t k = 0; rc == 0 && as_of != 0 && k < 3; k++)
        rc = budget_req_add_uint(req, offsets[k], next[k]);
    if (rc == 0 && as_of != 0)
        rc = budget_req_add_uint(req, "as_of", as_of);
    if (rc == 0)
        rc = budget_call(c, req, a);
    budget_req_free(req);
    if (rc != 0)
        return fail("balances", rc);
    if (budget_answer_error(*a) != 0) {
        fprintf(stderr, "hello_balances: balances: %s: %s\n", budget_answer_code(*a),
                budget_answer_message(*a));
        budget_answer_free(*a);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    char path[128];
    int rc = budget_socket_path(argc > 1 ? argv[1] : NULL, path, sizeof(path));
    if (rc != 0)
        return fail("socket path", rc);

    budget_client *c = NULL;
    rc = budget_client_connect(path, &c);
    if (rc != 0)
        return fail(path, rc);

    /* hello: who the daemon says we are, and the ledger's head. */
    budget_answer *a = NULL;
    rc = budget_call_op(c, "hello", &a);
    if (rc != 0)
        return fail("hello", rc);
    if (budget_answer_error(a) != 0) {
        fprintf(stderr, "hello_balances: hello: %s: %s\n", budget_answer_code(a),
                budget_answer_message(a));
        return 1;
    }
    const budget_value *hello = budget_answer_result(a);
    const budget_value *actor = budget_value_get(hello, "actor");
    printf("hello ");
    print_str(hello, "server");
    printf(" ");
    print_str(hello, "version");
    printf(" protocol %" PRId64 " head %" PRId64 " uid %" PRId64 " name ",
           get_int(hello, "protocol"), get_int(hello, "head"), get_int(actor, "uid"));
    print_str(actor, "name");
    printf("\n");
    budget_answer_free(a);

    /* balances, everything: units per fiscal year, and frames, page by page. Every page after
     * the first is asked as of the first one's seq, so all of them show the same ledger. */
    static const char *const offsets[] = {"frames_offset", "offset", "units_offset"};
    uint64_t next[3] = {0, 0, 0}, as_of = 0;
    for (bool more = true; more;) {
        rc = balances_page(c, as_of, offsets, next, &a);
        if (rc != 0)
            return rc;
        const budget_value *result = budget_answer_result(a);
        print_page(result);
        const budget_value *n = budget_value_get(result, "next");
        if (budget_value_uint(budget_value_get(result, "as_of"), &as_of) != 0 ||
            budget_value_bool(budget_value_get(result, "more"), &more) != 0)
            more = false;
        for (size_t k = 0; k < 3; k++)
            if (budget_value_uint(budget_value_get(n, offsets[k]), &next[k]) != 0)
                more = false;
        budget_answer_free(a);
    }
    budget_client_close(c);
    return 0;
}
