/*
 * Snapshots through a real budgetd: with a small --snapshot-every it writes snapshots as events
 * commit, restarts from them, and answers `balances as_of` every seq exactly as the same
 * daemon without snapshots (--snapshot-every 0) and as one whose newest snapshot was damaged.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_util.h"

static e2e_daemon bd;

static void teardown(void)
{
    e2e_daemon_cleanup(&bd);
}

TestSuite(e2e_snapshots, .fini = teardown, .timeout = 180);

static const char *const with_snapshots[] = {"--snapshot-every", "7", "--snapshots-keep", "3",
                                             NULL};
/* Snapshots, and nothing kept between reads: every answer is built from the newest snapshot
 * at or below its point and the events after it, their links checked from its hash. */
static const char *const snapshots_only[] = {
    "--snapshot-every", "7", "--snapshots-keep", "3", "--as-of-keep", "0", NULL};
/* Nothing kept between reads either: every answer replays the log from its first event. */
static const char *const without_snapshots[] = {"--snapshot-every", "0", "--as-of-keep", "0", NULL};

#define ROUNDS 6
#define SEQS_MAX 128

static void stop_cleanly(void)
{
    int status = 0;
    e2e_assert(e2e_daemon_stop(&bd, SIGTERM, E2E_STOP_TIMEOUT_MS, &status) == 0,
               "budgetd did not exit within %d ms of SIGTERM", E2E_STOP_TIMEOUT_MS);
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "budgetd stopped with status 0x%x, expected exit 0", status);
}

/* Grants frame `id` to `unit` in 2021, by the decision e2e_kv_decision packs; `intended`, as
 * the same grant may exist. */
static void grant_frame(budget_client *c, e2e_buf *b, const char *id, const char *unit,
                        int64_t amount, const char *title, const char *reference)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, 7 + E2E_DECISION_PAIRS);
    e2e_kv_str(b, "id", id);
    e2e_kv_str(b, "unit", unit);
    e2e_kv_int(b, "year", 2021);
    e2e_kv_int(b, "amount", amount);
    e2e_kv_str(b, "title", title);
    e2e_kv_decision(b);
    e2e_kv_str(b, "reference", reference);
    msgpack_pack_str(&b->pk, 8);
    msgpack_pack_str_body(&b->pk, "intended", 8);
    msgpack_pack_true(&b->pk);
    e2e_write_ok(c, "frame.grant", b);
}

static void write_rounds(void)
{
    budget_client *c = e2e_client(&bd), *approver = e2e_client_as(&bd, &e2e_other);
    e2e_buf b;
    char id[64], frame[32], alloc[32];
    e2e_buf_init(&b);
    for (int round = 0; round < ROUNDS; round++) {
        snprintf(frame, sizeof(frame), "f%d", round);
        grant_frame(c, &b, frame, "KS", 300000000 + round, "Utökat trygghetsarbete",
                    "KS 2021-08-24 § 241");
        for (int k = 0; k < 2; k++) {
            snprintf(alloc, sizeof(alloc), "a%d-%d", round, k);
            e2e_buf_clear(&b);
            msgpack_pack_map(&b.pk, 5);
            e2e_kv_str(&b, "id", alloc);
            e2e_kv_str(&b, "frame", frame);
            e2e_kv_str(&b, "unit", k == 0 ? "SON" : "KFN");
            e2e_kv_int(&b, "amount", 100000000);
            e2e_kv_str(&b, "purpose", "Områdesarbete");
            e2e_write_ok(c, "allocation.propose", &b);
            snprintf(id, sizeof(id), "%s-ok", alloc);
            e2e_buf_clear(&b);
            msgpack_pack_map(&b.pk, 2 + E2E_DECISION_PAIRS);
            e2e_kv_str(&b, "id", id);
            e2e_kv_str(&b, "target", alloc);
            e2e_kv_decision(&b);
            e2e_write_ok(approver, k == 0 ? "approve" : "reject", &b);
        }
        snprintf(id, sizeof(id), "v%d", round);
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 3);
        e2e_kv_str(&b, "id", id);
        snprintf(alloc, sizeof(alloc), "a%d-0", round);
        e2e_kv_str(&b, "allocation", alloc);
        e2e_kv_int(&b, "amount", 25000000);
        e2e_write_ok(c, "avrop.request", &b);
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 2 + E2E_DECISION_PAIRS);
        snprintf(alloc, sizeof(alloc), "v%d-ok", round);
        e2e_kv_str(&b, "id", alloc);
        e2e_kv_str(&b, "target", id);
        e2e_kv_decision(&b);
        e2e_write_ok(approver, "approve", &b);
    }
    e2e_buf_destroy(&b);
    budget_client_close(approver);
    budget_client_close(c);
}

typedef struct {
    char *bytes;
    size_t size;
} answer;

/* `balances` as of `seq`, and, when `day` is not NULL, decided by that day (YYYY-MM-DD). */
static void balances_at(budget_client *c, uint64_t seq, const char *day, budget_response *r)
{
    e2e_buf b;
    e2e_buf_init(&b);
    msgpack_pack_map(&b.pk, day != NULL ? 2 : 1);
    e2e_kv_uint(&b, "as_of", seq);
    if (day != NULL)
        e2e_kv_str(&b, "decided_by", day);
    e2e_call(c, "balances", &b, r);
    e2e_buf_destroy(&b);
}

/* The result of `r`, as bytes; `r` is freed. */
static answer answer_of(budget_response *r)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, r->result);
    budget_response_free(r);
    return (answer){sb.data, sb.size};
}

/* The `balances` result as of every seq 1..head, decided by `day` (YYYY-MM-DD) when it is not
 * NULL, as bytes. */
static uint64_t answers_by(answer *out, const char *day)
{
    budget_client *c = e2e_client(&bd);
    uint64_t head = e2e_head(c);
    e2e_assert(head < SEQS_MAX, "head %llu", (unsigned long long)head);
    for (uint64_t seq = 1; seq <= head; seq++) {
        budget_response r;
        balances_at(c, seq, day, &r);
        e2e_assert(r.ok, "balances as_of %llu: %s: %s", (unsigned long long)seq, r.code, r.message);
        out[seq] = answer_of(&r);
    }
    budget_client_close(c);
    return head;
}

static uint64_t answers_now(answer *out)
{
    return answers_by(out, NULL);
}

static void expect_same_answers_by(const answer *want, uint64_t head, const char *day,
                                   const char *what)
{
    answer got[SEQS_MAX];
    e2e_assert_int(answers_by(got, day), head, what);
    for (uint64_t seq = 1; seq <= head; seq++) {
        e2e_assert(got[seq].size == want[seq].size &&
                       memcmp(got[seq].bytes, want[seq].bytes, got[seq].size) == 0,
                   "%s: balances as_of %llu differ", what, (unsigned long long)seq);
        free(got[seq].bytes);
    }
}

static void expect_same_answers(const answer *want, uint64_t head, const char *what)
{
    expect_same_answers_by(want, head, NULL, what);
}

/* The seqs of the snapshot files in the data folder, newest first; their number. */
static int snapshot_files(uint64_t *seqs, int max)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/snapshots", bd.data);
    DIR *d = opendir(path);
    e2e_assert(d != NULL, "no folder %s", path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        unsigned long long seq;
        char rest[16];
        if (sscanf(e->d_name, "%llu%15s", &seq, rest) == 2 && strcmp(rest, ".snap") == 0 && n < max)
            seqs[n++] = seq;
    }
    closedir(d);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (seqs[j] > seqs[i]) {
                uint64_t t = seqs[i];
                seqs[i] = seqs[j];
                seqs[j] = t;
            }
    return n;
}

/* The last line of the daemon's log that holds `what`, into line; false when none does. */
static bool log_line(const char *what, char *line, size_t size)
{
    FILE *f = fopen(bd.log, "r");
    e2e_assert(f != NULL, "no log %s", bd.log);
    char one[1024];
    bool found = false;
    while (fgets(one, sizeof(one), f))
        if (strstr(one, what) != NULL) {
            snprintf(line, size, "%s", one);
            found = true;
        }
    fclose(f);
    return found;
}

/* The last start-up's replay line of the log says it started from snapshot `from`. */
static bool last_start_from(uint64_t from)
{
    char line[1024], want[64];
    snprintf(want, sizeof(want), "(from snapshot %llu,", (unsigned long long)from);
    return log_line("replayed ", line, sizeof(line)) && strstr(line, want) != NULL;
}

static uint64_t stat_of(const char *key)
{
    budget_client *c = e2e_client(&bd);
    uint64_t v = e2e_stat(c, key);
    budget_client_close(c);
    return v;
}

Test(e2e_snapshots, as_of_answers_the_same_with_and_without_snapshots)
{
    cr_assert_eq(e2e_daemon_start_with(&bd, with_snapshots), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    write_rounds();
    answer want[SEQS_MAX];
    uint64_t head = answers_now(want);
    e2e_assert_int(head, 3 + ROUNDS * 7, "head");
    /* Read in order, most points were built from a copy of the one kept for the point before
     * (the rest from a snapshot at that very point); the run without either below is the
     * reference for both. */
    uint64_t from_kept = stat_of("as_of_from_kept");
    e2e_assert(from_kept >= head / 2 && from_kept < head,
               "%llu of %llu points built from a kept ledger", (unsigned long long)from_kept,
               (unsigned long long)head);
    stop_cleanly();

    /* Every 7th event made one (one at a time: a multiple reached while the one before is
     * still being written is left out); at most the newest 3 are kept; the key is the
     * daemon's alone. */
    uint64_t seqs[16];
    int n = snapshot_files(seqs, 16);
    e2e_assert(n >= 1 && n <= 3, "%d snapshots kept", n);
    for (int i = 0; i < n; i++)
        e2e_assert(seqs[i] % 7 == 0 && seqs[i] <= head, "snapshot %llu",
                   (unsigned long long)seqs[i]);
    char key[256];
    struct stat st;
    snprintf(key, sizeof(key), "%s/snapshots/key", bd.data);
    e2e_assert(stat(key, &st) == 0 && (st.st_mode & 0777) == 0600, "the key is not 0600");

    /* From the newest snapshot. */
    cr_assert_eq(e2e_daemon_restart_with(&bd, with_snapshots), 0);
    e2e_assert(last_start_from(seqs[0]), "budgetd did not start from snapshot %llu",
               (unsigned long long)seqs[0]);
    expect_same_answers(want, head, "restarted from a snapshot");
    stop_cleanly();

    /* Every point built from a snapshot and the events after it. */
    cr_assert_eq(e2e_daemon_restart_with(&bd, snapshots_only), 0);
    expect_same_answers(want, head, "each point from a snapshot");
    e2e_assert(stat_of("as_of_from_kept") == 0, "a point was built from a kept ledger");
    stop_cleanly();

    /* Without snapshots: the whole log. */
    cr_assert_eq(e2e_daemon_restart_with(&bd, without_snapshots), 0);
    e2e_assert(last_start_from(0), "budgetd with --snapshot-every 0 used a snapshot");
    expect_same_answers(want, head, "without snapshots");
    stop_cleanly();

    /* The newest snapshot damaged: the one before it, and the same answers. A start from a
     * snapshot more than an interval behind the head writes one at the head, so the files are
     * listed again: which is newest now depends on which multiples the first run left out. */
    n = snapshot_files(seqs, 16);
    e2e_assert(n >= 1 && n <= 3, "%d snapshots kept after the restarts", n);
    char path[256];
    snprintf(path, sizeof(path), "%s/snapshots/%llu.snap", bd.data, (unsigned long long)seqs[0]);
    FILE *f = fopen(path, "r+b");
    e2e_assert(f != NULL, "open %s", path);
    fseek(f, 200, SEEK_SET);
    int byte = fgetc(f);
    fseek(f, 200, SEEK_SET);
    fputc(byte ^ 0x10, f);
    fclose(f);
    cr_assert_eq(e2e_daemon_restart_with(&bd, with_snapshots), 0);
    e2e_assert(last_start_from(n >= 2 ? seqs[1] : 0),
               "budgetd did not start from the snapshot before the damaged one");
    expect_same_answers(want, head, "the newest snapshot damaged");
    stop_cleanly();

    for (uint64_t seq = 1; seq <= head; seq++)
        free(want[seq].bytes);
}

/* The log's lines about the snapshots written while serving: how many were made again from the
 * log, and checks on each: at a multiple of 7, made from the snapshot before it (or from the
 * log's first event when there was none) with the events between; *from_snapshot counts those made
 * from a snapshot. Fails on a line that says one was not written, or was a copy of the state. */
static int snapshots_made_again(int *from_snapshot)
{
    FILE *f = fopen(bd.log, "r");
    e2e_assert(f != NULL, "no log %s", bd.log);
    char line[1024];
    int made = 0;
    uint64_t last = 0;
    *from_snapshot = 0;
    while (fgets(line, sizeof(line), f)) {
        e2e_assert(strstr(line, "not written") == NULL, "%s", line);
        e2e_assert(strstr(line, "of the state at start") == NULL, "%s", line);
        const char *at = strstr(line, "snapshot ");
        unsigned long long seq, from, events;
        char source[16];
        if (at == NULL ||
            sscanf(at, "snapshot %llu written, made again from %15s", &seq, source) != 2)
            continue;
        if (strcmp(source, "snapshot") == 0) {
            e2e_assert(sscanf(strstr(at, "from snapshot"), "from snapshot %llu and the %llu", &from,
                              &events) == 2,
                       "%s", line);
            (*from_snapshot)++;
        } else {
            const char *whole = strstr(at, "the log's");
            e2e_assert(whole != NULL && sscanf(whole, "the log's %llu events", &events) == 1, "%s",
                       line);
            from = 0;
        }
        e2e_assert(seq % 7 == 0 && seq > last && from == last && events == seq - from,
                   "snapshot %llu made from %llu and %llu events, the one before at %llu: %s", seq,
                   from, events, (unsigned long long)last, line);
        last = seq;
        made++;
    }
    fclose(f);
    return made;
}

/* Waits (up to 30 s) until the snapshot at `seq` is in the folder. */
static void wait_for_snapshot(uint64_t seq)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/snapshots/%llu.snap", bd.data, (unsigned long long)seq);
    struct stat st;
    for (int i = 0; i < 3000 && stat(path, &st) != 0; i++)
        usleep(10000);
    e2e_assert(stat(path, &st) == 0, "no snapshot %llu after 30 s", (unsigned long long)seq);
}

/* While serving, a snapshot at a multiple of --snapshot-every is made on a thread of its own from
 * the one before it and the events since (snapshot_rebuild), not from a copy of the ledger the loop
 * serves; each restores to the answers of the log replayed whole. Frames are granted one at a
 * time, and at each multiple of 7 the test waits for its snapshot, so that none is left out. */
Test(e2e_snapshots, snapshots_written_while_serving_are_made_again_from_the_log)
{
    cr_assert_eq(e2e_daemon_start_with(&bd, with_snapshots), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_buf_init(&b);
    char id[32];
    for (uint64_t head = e2e_head(c); head < 45; head++) {
        snprintf(id, sizeof(id), "g%llu", (unsigned long long)head);
        grant_frame(c, &b, id, head % 2 ? "SON" : "KFN", 1000000 + (int64_t)head, "Ram", "KS 1");
        if ((head + 1) % 7 == 0)
            wait_for_snapshot(head + 1);
    }
    e2e_buf_destroy(&b);
    budget_client_close(c);
    answer want[SEQS_MAX];
    uint64_t head = answers_now(want);
    e2e_assert_int(head, 45, "head");
    stop_cleanly();
    int from_snapshot = 0, made = snapshots_made_again(&from_snapshot);
    e2e_assert(made == 6 && from_snapshot == 5,
               "%d snapshots written, %d of them from the snapshot before", made, from_snapshot);

    /* Each point from the newest snapshot kept at or below it. */
    cr_assert_eq(e2e_daemon_restart_with(&bd, snapshots_only), 0);
    expect_same_answers(want, head, "each point from a snapshot made again");
    e2e_assert(stat_of("as_of_from_snapshot") > 0, "no point was built from a snapshot");
    stop_cleanly();
    for (uint64_t seq = 1; seq <= head; seq++)
        free(want[seq].bytes);
}

/* ---- a damaged event after a snapshot ------------------------------------------------------ */

#define MARK "Avsiktligt-skadad-titel"

/* Flips one byte of every copy of MARK in the daemon's data.mdb, under the running daemon,
 * as someone who can write the file would; the number of copies changed. */
static int damage_marks(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/data.mdb", bd.data);
    FILE *f = fopen(path, "r+b");
    e2e_assert(f != NULL, "open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    e2e_assert(size > 0, "%s is empty", path);
    char *bytes = malloc((size_t)size);
    e2e_assert(bytes != NULL, "out of memory");
    fseek(f, 0, SEEK_SET);
    e2e_assert(fread(bytes, 1, (size_t)size, f) == (size_t)size, "read %s", path);
    int found = 0;
    size_t mark = strlen(MARK);
    for (long at = 0; at + (long)mark <= size; at++) {
        if (memcmp(bytes + at, MARK, mark) != 0)
            continue;
        fseek(f, at, SEEK_SET);
        fputc('a', f); /* "Avsiktligt" becomes "avsiktligt" */
        found++;
    }
    fclose(f);
    free(bytes);
    return found;
}

/* The views by `days` as of every seq, each into want[d], on the running daemon; the reads
 * built from a kept view and from a snapshot for each day into from_kept[d], from_snapshot[d]. */
static uint64_t decided_answers(answer want[][SEQS_MAX], const char *const *days, int n,
                                uint64_t *from_kept, uint64_t *from_snapshot)
{
    uint64_t head = 0;
    for (int d = 0; d < n; d++) {
        uint64_t kept0 = stat_of("as_of_from_kept"), snap0 = stat_of("as_of_from_snapshot");
        head = answers_by(want[d], days[d]);
        from_kept[d] = stat_of("as_of_from_kept") - kept0;
        from_snapshot[d] = stat_of("as_of_from_snapshot") - snap0;
    }
    return head;
}

/*
 * A view by decision day read as of every seq in turn, for a day before the log's decisions
 * (grants with nothing granted, approvals left pending) and one after them, compared byte for
 * byte with each point replayed from the first event:
 *  - with views kept between reads, each point is built from a copy of the view kept for the
 *    point before, for the same day, with the events since applied, or, for the later day, from
 *    a snapshot newer than that view: every snapshot up to the point is that day's view (no
 *    decision dated after it, no year closed, no correction);
 *  - with none kept, each point of the later day from the newest snapshot at or below it, once
 *    there is one; no point of the earlier day, whose view no snapshot is.
 */
Test(e2e_snapshots, decided_by_answers_the_same_from_a_kept_view_a_snapshot_and_the_start)
{
    cr_assert_eq(e2e_daemon_start_with(&bd, with_snapshots), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    write_rounds();
    const char *const days[] = {"2021-08-23", "2021-12-31"};
    answer want[2][SEQS_MAX], again[2][SEQS_MAX];
    uint64_t kept[2], snap[2], snaps[SEQS_MAX];
    uint64_t head = decided_answers(want, days, 2, kept, snap);
    e2e_assert(kept[0] + 1 >= head && snap[0] == 0,
               "decided by %s: %llu of %llu points from a kept view, %llu from a snapshot", days[0],
               (unsigned long long)kept[0], (unsigned long long)head, (unsigned long long)snap[0]);
    e2e_assert(kept[1] + snap[1] + 1 >= head && snap[1] > 0,
               "decided by %s: %llu of %llu points from a kept view, %llu from a snapshot", days[1],
               (unsigned long long)kept[1], (unsigned long long)head, (unsigned long long)snap[1]);
    e2e_assert(want[0][head].size != want[1][head].size ||
                   memcmp(want[0][head].bytes, want[1][head].bytes, want[0][head].size) != 0,
               "the two days give the same view");

    stop_cleanly();
    cr_assert_eq(e2e_daemon_restart_with(&bd, snapshots_only), 0);
    /* A snapshot still being written when the daemon stopped is not there; start-up then writes
     * one of the head, on a thread of its own, and removes the oldest after it. The reads count on
     * the snapshots once that is done: the newest less than 7 events behind the head, 3 kept. */
    int n = 0;
    for (int tries = 0; tries < 100; tries++) {
        n = snapshot_files(snaps, SEQS_MAX);
        if (n > 0 && n <= 3 && snaps[0] + 7 > head)
            break;
        usleep(100000);
    }
    e2e_assert(n > 0 && n <= 3 && snaps[0] + 7 > head, "%d snapshots, the newest %llu, head %llu",
               n, (unsigned long long)(n > 0 ? snaps[0] : 0), (unsigned long long)head);
    uint64_t oldest = snaps[n - 1];
    e2e_assert_int(decided_answers(again, days, 2, kept, snap), head, "head");
    e2e_assert(kept[0] == 0 && snap[0] == 0 && kept[1] == 0 && snap[1] == head - oldest + 1,
               "with nothing kept: %llu and %llu points from a snapshot, %llu wanted for %s",
               (unsigned long long)snap[0], (unsigned long long)snap[1],
               (unsigned long long)(head - oldest + 1), days[1]);
    for (int d = 0; d < 2; d++)
        for (uint64_t seq = 1; seq <= head; seq++) {
            e2e_assert(again[d][seq].size == want[d][seq].size &&
                           memcmp(again[d][seq].bytes, want[d][seq].bytes, want[d][seq].size) == 0,
                       "decided by %s as of %llu: from a snapshot, not the view kept", days[d],
                       (unsigned long long)seq);
            free(again[d][seq].bytes);
        }

    stop_cleanly();
    cr_assert_eq(e2e_daemon_restart_with(&bd, without_snapshots), 0);
    for (int d = 0; d < 2; d++) {
        expect_same_answers_by(want[d], head, days[d], "each point from the first event");
        for (uint64_t seq = 1; seq <= head; seq++)
            free(want[d][seq].bytes);
    }
    e2e_assert(stat_of("as_of_from_kept") == 0 && stat_of("as_of_from_snapshot") == 0,
               "a point was built from a kept view or a snapshot");
    stop_cleanly();
}

/* A view of what was decided by `day` as of `seq`, as bytes. */
static answer decided_answer(uint64_t seq, const char *day)
{
    budget_client *c = e2e_client(&bd);
    budget_response r;
    balances_at(c, seq, day, &r);
    e2e_assert(r.ok, "decided by %s as of %llu: %s: %s", day, (unsigned long long)seq, r.code,
               r.message);
    budget_client_close(c);
    return answer_of(&r);
}

/*
 * A view by decision day that starts from a snapshot applies the events after it as such a view
 * does: a decision dated after the day, entered after the snapshot, is left out. Proposals and
 * their approvals dated in 2022 follow the log of write_rounds (every decision of 2021); each
 * snapshot before them is the view of 31 December 2021, those after are not (all are kept: with
 * three, the later ones could leave none of the first kind). Read decided by that
 * day as of the head with nothing kept, the view is built from the newest snapshot before the
 * approvals and must be, byte for byte, the view replayed from the first event.
 */
Test(e2e_snapshots, a_view_from_a_snapshot_leaves_out_what_was_decided_after_its_day)
{
    /* Every snapshot kept: those of 2021's view must not be pruned by the later ones. */
    static const char *const keep_all[] = {
        "--snapshot-every", "7", "--snapshots-keep", "16", "--as-of-keep", "0", NULL};
    cr_assert_eq(e2e_daemon_start_with(&bd, keep_all), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    write_rounds();
    budget_client *c = e2e_client(&bd), *approver = e2e_client_as(&bd, &e2e_other);
    /* Snapshots are written on a thread of their own, behind the writes: wait for one of 2021's
     * view before anything of 2022 is entered (a slow build may not have written it yet). */
    uint64_t of_2021 = e2e_head(c), snaps[SEQS_MAX];
    bool have = false;
    for (int tries = 0; tries < 200 && !have; tries++) {
        int n = snapshot_files(snaps, SEQS_MAX);
        have = n > 0 && snaps[n - 1] <= of_2021;
        if (!have)
            usleep(50000);
    }
    e2e_assert(have, "no snapshot of the first %llu events within 10 s",
               (unsigned long long)of_2021);
    e2e_buf b;
    e2e_buf_init(&b);
    for (int k = 0; k < 9; k++) { /* 18 events: snapshots among them are no view of 2021 */
        char alloc[32], ok[40];
        snprintf(alloc, sizeof(alloc), "late-%d", k);
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 5);
        e2e_kv_str(&b, "id", alloc);
        e2e_kv_str(&b, "frame", "f0");
        e2e_kv_str(&b, "unit", "SON");
        e2e_kv_int(&b, "amount", 1000000);
        e2e_kv_str(&b, "purpose", "Insatser 2022");
        e2e_write_ok(c, "allocation.propose", &b);
        snprintf(ok, sizeof(ok), "%s-ok", alloc);
        e2e_buf_clear(&b);
        msgpack_pack_map(&b.pk, 5);
        e2e_kv_str(&b, "id", ok);
        e2e_kv_str(&b, "target", alloc);
        e2e_kv_str(&b, "decision_body", "KS");
        e2e_kv_str(&b, "decision_date", "2022-01-10");
        e2e_kv_str(&b, "decision_paragraph", "12");
        e2e_write_ok(approver, "approve", &b);
    }
    e2e_buf_destroy(&b);
    uint64_t head = e2e_head(c);
    budget_client_close(approver);
    budget_client_close(c);

    const char *day = "2021-12-31";
    uint64_t snap0 = stat_of("as_of_from_snapshot");
    answer got = decided_answer(head, day), now = decided_answer(head, "2022-12-31");
    e2e_assert(stat_of("as_of_from_snapshot") - snap0 == 2,
               "the views as of %llu were not built from snapshots", (unsigned long long)head);
    stop_cleanly();
    cr_assert_eq(e2e_daemon_restart_with(&bd, without_snapshots), 0);
    answer want = decided_answer(head, day);
    e2e_assert(got.size == want.size && memcmp(got.bytes, want.bytes, want.size) == 0,
               "decided by %s as of %llu: the view from a snapshot is not the view from the first "
               "event",
               day, (unsigned long long)head);
    e2e_assert(now.size != want.size || memcmp(now.bytes, want.bytes, want.size) != 0,
               "the approvals of 2022 change nothing in the view");
    free(got.bytes);
    free(now.bytes);
    free(want.bytes);
    stop_cleanly();
}

/* The rounds, then a grant whose title holds MARK (its seq returned; the event before it in
 * *before) and one allocation after it (the head, in *head). */
static uint64_t write_marked(budget_client *c, uint64_t *before, uint64_t *head)
{
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    write_rounds();
    *before = e2e_head(c);
    e2e_buf b;
    e2e_buf_init(&b);
    grant_frame(c, &b, "f-mark", "KFN", 5000000, MARK, "KS 2021-08-24 § 241");
    uint64_t marked = e2e_head(c);
    e2e_assert_int(marked, *before + 1, "the marked grant's seq");
    /* One more: `balances` as of the head is the ledger in memory, built as events committed. */
    e2e_buf_clear(&b);
    msgpack_pack_map(&b.pk, 5);
    e2e_kv_str(&b, "id", "a-mark");
    e2e_kv_str(&b, "frame", "f-mark");
    e2e_kv_str(&b, "unit", "SON");
    e2e_kv_int(&b, "amount", 1000000);
    e2e_kv_str(&b, "purpose", "Områdesarbete");
    e2e_write_ok(c, "allocation.propose", &b);
    e2e_buf_destroy(&b);
    *head = e2e_head(c);
    e2e_assert_int(*head, marked + 1, "the head");
    return marked;
}

/* Starts budgetd with snapshots_only, connects (*c) and writes what write_marked does, the
 * newest snapshot before the grant: the grant's seq. */
static uint64_t marked_after_a_snapshot(budget_client **c, uint64_t *before, uint64_t *head)
{
    cr_assert_eq(e2e_daemon_start_with(&bd, snapshots_only), 0, "budgetd did not start");
    *c = e2e_client(&bd);
    uint64_t marked = write_marked(*c, before, head);
    /* The next multiple of 7 after the marked event is beyond the head: no snapshot holds it.
     * Snapshots are made on a thread of their own: the first may still be on its way. */
    uint64_t seqs[16];
    int n = snapshot_files(seqs, 16);
    for (int i = 0; i < 3000 && n == 0; i++) {
        usleep(10000);
        n = snapshot_files(seqs, 16);
    }
    e2e_assert(n >= 1, "no snapshot after 30 s");
    e2e_assert(seqs[0] < marked, "a snapshot at or after %llu", (unsigned long long)marked);
    return marked;
}

/*
 * An event changed on disk after the daemon started, after its newest snapshot: a read as of
 * it, or later (but before the head, which is answered from memory), restores the snapshot and
 * checks the links of the events after it as it applies them, so it is refused, naming the
 * event; a read as of the event before is whole. A view of what was decided by a day replays
 * from the first event, checking every link as it goes: refused too from the changed event
 * on, the head included.
 */
Test(e2e_snapshots, an_event_changed_after_a_snapshot_fails_the_reads_past_it)
{
    budget_client *c;
    uint64_t before, head;
    uint64_t marked = marked_after_a_snapshot(&c, &before, &head);

    e2e_assert(damage_marks() >= 1, "the marked title is not in data.mdb");
    budget_response r;
    const char *days[] = {NULL, "2021-12-31"};
    char want[64];
    snprintf(want, sizeof(want), "event %llu", (unsigned long long)marked);
    for (size_t d = 0; d < sizeof(days) / sizeof(days[0]); d++) {
        const char *by = days[d] != NULL ? days[d] : "-";
        balances_at(c, before, days[d], &r);
        e2e_assert(r.ok, "as of %llu, decided by %s, before the changed event: %s %s",
                   (unsigned long long)before, by, r.code, r.message);
        budget_response_free(&r);
        for (uint64_t seq = marked; seq < head + (days[d] != NULL); seq++) {
            balances_at(c, seq, days[d], &r);
            e2e_assert(!r.ok, "as of %llu, decided by %s, past the changed event %llu: answered",
                       (unsigned long long)seq, by, (unsigned long long)marked);
            e2e_assert(strstr(r.message, want) != NULL, "as of %llu, decided by %s: %s: %s",
                       (unsigned long long)seq, by, r.code, r.message);
            budget_response_free(&r);
        }
    }
    budget_client_close(c);
}

/*
 * The same from a ledger kept since an earlier read: the read past it copies that ledger and
 * applies the events after it, their links hashed beside the copy and the replay. An event
 * changed on disk after the kept point fails the reads past it, naming the event, though they
 * start from the kept ledger; the read as of the kept point is answered from memory.
 */
Test(e2e_snapshots, an_event_changed_after_a_kept_ledger_fails_the_reads_past_it)
{
    static const char *const kept_only[] = {"--snapshot-every", "0", NULL};
    cr_assert_eq(e2e_daemon_start_with(&bd, kept_only), 0, "budgetd did not start");
    budget_client *c = e2e_client(&bd);
    uint64_t before, head;
    uint64_t marked = write_marked(c, &before, &head);
    budget_response r;
    balances_at(c, before, NULL, &r);
    e2e_assert(r.ok, "as of %llu: %s %s", (unsigned long long)before, r.code, r.message);
    budget_response_free(&r);
    e2e_assert(stat_of("as_of_kept") >= 1, "the ledger as of %llu is not kept",
               (unsigned long long)before);

    e2e_assert(damage_marks() >= 1, "the marked title is not in data.mdb");
    uint64_t based = stat_of("as_of_from_kept");
    char want[64];
    snprintf(want, sizeof(want), "event %llu", (unsigned long long)marked);
    for (uint64_t seq = marked; seq < head; seq++) {
        balances_at(c, seq, NULL, &r);
        e2e_assert(!r.ok, "as of %llu, past the changed event %llu: answered",
                   (unsigned long long)seq, (unsigned long long)marked);
        e2e_assert(strstr(r.message, want) != NULL, "as of %llu: %s: %s", (unsigned long long)seq,
                   r.code, r.message);
        budget_response_free(&r);
    }
    e2e_assert(stat_of("as_of_from_kept") > based, "no read started from the kept ledger");
    balances_at(c, before, NULL, &r);
    e2e_assert(r.ok, "as of %llu, kept: %s %s", (unsigned long long)before, r.code, r.message);
    budget_response_free(&r);
    budget_client_close(c);
}

/* The daemon, started without waiting for its socket, exits on its own within the start-up
 * timeout: its waitpid status. */
static int start_fails(void)
{
    e2e_assert(e2e_daemon_launch(&bd, &(e2e_launch){.extra = snapshots_only, .no_wait = true}) == 0,
               "budgetd could not be run");
    int status = 0;
    for (int waited = 0; bd.pid != 0; waited += 10) {
        pid_t got = waitpid(bd.pid, &status, WNOHANG);
        if (got == bd.pid)
            bd.pid = 0;
        else if (waited > E2E_START_TIMEOUT_MS)
            e2e_assert(false, "budgetd still runs after %d ms", waited);
        else
            usleep(10000);
    }
    return status;
}

/*
 * An event changed on disk while budgetd was stopped, after its newest snapshot. Start-up
 * restores the snapshot and applies the events after it without hashing them on the way, for
 * the check of the whole chain beside it covers them: budgetd refuses to start (exit 1), and its
 * log names the changed event.
 */
Test(e2e_snapshots, a_log_changed_after_its_newest_snapshot_does_not_start)
{
    budget_client *c;
    uint64_t before, head;
    uint64_t marked = marked_after_a_snapshot(&c, &before, &head);
    budget_client_close(c);
    stop_cleanly();
    uint64_t seqs[16];
    e2e_assert(snapshot_files(seqs, 16) >= 1 && seqs[0] < marked,
               "no snapshot before event %llu once stopped", (unsigned long long)marked);
    e2e_assert(damage_marks() >= 1, "the marked title is not in data.mdb");

    int status = start_fails();
    e2e_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1,
               "budgetd on a log changed at event %llu: status 0x%x, expected exit 1",
               (unsigned long long)marked, status);
    char want[64], line[1024];
    snprintf(want, sizeof(want), "replay stopped at seq %llu: ", (unsigned long long)marked);
    e2e_assert(log_line(want, line, sizeof(line)), "the log does not name event %llu",
               (unsigned long long)marked);
    e2e_assert(strstr(line, "(hash)") != NULL, "not a changed byte: %s", line);
}

/* ---- the ledgers of earlier points kept between reads --------------------------------------- */

#define KEPT_QUERIES 5
#define KEPT_READERS 6

/* One `balances` query as of `seq`: the i-th of KEPT_QUERIES (other filters and pages). */
static void pack_kept_query(e2e_buf *b, int i, uint64_t seq)
{
    e2e_buf_clear(b);
    msgpack_pack_map(&b->pk, i == 0 ? 1 : i == 4 ? 4 : 2);
    e2e_kv_uint(b, "as_of", seq);
    if (i == 1)
        e2e_kv_str(b, "frame", "f1");
    else if (i == 2)
        e2e_kv_str(b, "unit", "SON");
    else if (i == 3)
        e2e_kv_str(b, "allocation", "a0-0");
    else if (i == 4) {
        e2e_kv_uint(b, "offset", 1);
        e2e_kv_uint(b, "frames_offset", 2);
        e2e_kv_uint(b, "units_offset", 1);
    }
}

static answer balances_answer(budget_client *c, const e2e_buf *args, const char *what)
{
    budget_response r;
    e2e_call(c, "balances", args, &r);
    e2e_assert(r.ok, "%s: %s: %s", what, r.code, r.message);
    return answer_of(&r);
}

/* Every KEPT_QUERIES query as of `seq`, into out. */
static void kept_answers(uint64_t seq, answer *out)
{
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_buf_init(&b);
    for (int i = 0; i < KEPT_QUERIES; i++) {
        pack_kept_query(&b, i, seq);
        out[i] = balances_answer(c, &b, "balances as_of");
    }
    e2e_buf_destroy(&b);
    budget_client_close(c);
}

static void expect_answers(const answer *want, const answer *got, int n, const char *what)
{
    for (int i = 0; i < n; i++)
        e2e_assert(got[i].size == want[i].size &&
                       memcmp(got[i].bytes, want[i].bytes, got[i].size) == 0,
                   "%s: query %d answered otherwise", what, i);
}

static void free_answers(answer *a, int n)
{
    for (int i = 0; i < n; i++)
        free(a[i].bytes);
}

/* The `stats` keys as_of_builds, as_of_hits and as_of_kept. */
static void kept_stats(uint64_t *builds, uint64_t *hits, uint64_t *kept)
{
    *builds = stat_of("as_of_builds");
    *hits = stat_of("as_of_hits");
    *kept = stat_of("as_of_kept");
}

typedef struct {
    uint64_t seq;
    answer got;
} kept_reader;

static void *kept_read(void *arg)
{
    kept_reader *k = arg;
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_buf_init(&b);
    pack_kept_query(&b, 0, k->seq);
    k->got = balances_answer(c, &b, "a reader at once");
    e2e_buf_destroy(&b);
    budget_client_close(c);
    return NULL;
}

Test(e2e_snapshots, a_ledger_as_of_an_earlier_point_is_built_once_for_its_pages_and_readers)
{
    static const char *const keep[] = {
        "--snapshot-every", "7", "--as-of-keep", "2", "--as-of-idle", "1", NULL};
    static const char *const keep_none[] = {"--snapshot-every", "7", "--as-of-keep", "0", NULL};
    uint64_t builds, hits, kept;

    cr_assert_eq(e2e_daemon_start_with(&bd, keep_none), 0, "budgetd did not start");
    e2e_register_units(&bd, NULL, "KS", "SON", "KFN", NULL);
    write_rounds();
    /* Built for every query when nothing is kept: the answers to hold the kept ones to. */
    answer want[KEPT_QUERIES], want_later[KEPT_QUERIES];
    kept_answers(20, want);
    kept_answers(33, want_later);
    kept_stats(&builds, &hits, &kept);
    e2e_assert(builds == 2 * KEPT_QUERIES && hits == 0 && kept == 0,
               "--as-of-keep 0: %llu builds, %llu hits, %llu kept", (unsigned long long)builds,
               (unsigned long long)hits, (unsigned long long)kept);
    stop_cleanly();

    cr_assert_eq(e2e_daemon_restart_with(&bd, keep), 0);
    answer got[KEPT_QUERIES];
    kept_answers(20, got);
    expect_answers(want, got, KEPT_QUERIES, "kept");
    free_answers(got, KEPT_QUERIES);
    kept_stats(&builds, &hits, &kept);
    e2e_assert(builds == 1 && hits == KEPT_QUERIES - 1 && kept == 1,
               "one point, %d queries: %llu builds, %llu hits, %llu kept", KEPT_QUERIES,
               (unsigned long long)builds, (unsigned long long)hits, (unsigned long long)kept);

    /* Writes after the point change nothing the kept ledger answers. */
    budget_client *c = e2e_client(&bd);
    e2e_buf b;
    e2e_buf_init(&b);
    grant_frame(c, &b, "f-later", "KS", 5000000, "Tillägg", "KS 2021-09-21 § 260");
    e2e_buf_destroy(&b);
    budget_client_close(c);
    kept_answers(20, got);
    expect_answers(want, got, KEPT_QUERIES, "kept, after a later write");
    free_answers(got, KEPT_QUERIES);

    /* Readers at once of another point: one ledger between them. */
    kept_reader readers[KEPT_READERS];
    pthread_t threads[KEPT_READERS];
    for (int i = 0; i < KEPT_READERS; i++) {
        readers[i] = (kept_reader){.seq = 33};
        e2e_assert(pthread_create(&threads[i], NULL, kept_read, &readers[i]) == 0, "thread");
    }
    for (int i = 0; i < KEPT_READERS; i++) {
        pthread_join(threads[i], NULL);
        expect_answers(&want_later[0], &readers[i].got, 1, "a reader at once");
        free(readers[i].got.bytes);
    }
    kept_stats(&builds, &hits, &kept);
    e2e_assert(builds == 2 && kept == 2,
               "after %d readers of a second point: %llu builds, "
               "%llu kept",
               KEPT_READERS, (unsigned long long)builds, (unsigned long long)kept);

    /* Unused for --as-of-idle (1 s): freed, and built again when asked. */
    int64_t until = e2e_now_ms() + 10000;
    do {
        usleep(100000);
        kept_stats(&builds, &hits, &kept);
    } while (kept != 0 && e2e_now_ms() < until);
    e2e_assert(kept == 0, "%llu ledgers still kept 10 s after their last read",
               (unsigned long long)kept);
    kept_answers(20, got);
    expect_answers(want, got, KEPT_QUERIES, "built again");
    free_answers(got, KEPT_QUERIES);
    kept_stats(&builds, &hits, &kept);
    e2e_assert(builds == 3 && kept == 1, "after the idle ones were freed: %llu builds",
               (unsigned long long)builds);
    stop_cleanly();
    free_answers(want, KEPT_QUERIES);
    free_answers(want_later, KEPT_QUERIES);
}
