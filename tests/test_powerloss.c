/*
 * Power loss: budgetd runs with libplshim.so preloaded (tests/powerloss/plshim.c), which
 * journals every write to the files of its data folder and every fsync/fdatasync of them.
 * Clients with ids of their own write concurrently, as in the crash loop (crash_load.c), each
 * recording what it was told; budgetd is killed with SIGKILL at a random moment. The data
 * folder is then replaced by what a power loss at that moment could have left
 * (tests/powerloss/plimage.c): the folder as it was when the daemon started, every write made
 * durable, and of the others none, a random half, or a random half of which some are torn at a
 * 512-byte boundary (the mode turns with each cycle). A plain budgetd starts on it, and:
 *   - every acknowledged write is in the log, at the seq it was acknowledged with;
 *   - the log runs 1..head without a gap, no id is in it twice, and `verify` holds;
 *   - every rule of the budget holds on the replayed state;
 *   - every write left unanswered is retried with the same id and content: it answers the seq
 *     it already has, or is made now, once, and never makes a second event.
 *
 * CI runs RELIABILITY_POWERLOSS_CYCLES cycles (default 12); scripts/reliability.sh powerloss N
 * runs N. RELIABILITY_POWERLOSS_MODE=none|random|torn holds every cycle to one mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crash_load.h"
#include "powerloss/plimage.h"
#include "powerloss/pljournal.h"
#include "rel_util.h"

#define CYCLES_DEFAULT 12

static rel_daemon rd;

static void teardown(void)
{
    rel_cleanup(&rd);
}

TestSuite(powerloss, .fini = teardown, .timeout = 3600);

/* ---- the folders --------------------------------------------------------------------------- */

typedef struct {
    char base[200], journal[200], image[200];
} scratch;

static void copy_base(const scratch *s)
{
    char why[512];
    e2e_remove_tree(s->base);
    cr_assert_eq(pl_copy_tree(rd.d.data, s->base, why, sizeof(why)), 0, "copy: %s", why);
    unlink(s->journal);
}

/* Starts budgetd with the shim recording into the journal. */
static void start_recorded(const scratch *s)
{
    static char preload[300], dir[220], journal[220], asan[600];
    const char *had = getenv("ASAN_OPTIONS");
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", PLSHIM_PATH);
    snprintf(dir, sizeof(dir), "BUDGET_PL_DIR=%s", rd.d.data);
    snprintf(journal, sizeof(journal), "BUDGET_PL_JOURNAL=%s", s->journal);
    /* A sanitized budgetd takes a preloaded library only when told not to check the order. */
    snprintf(asan, sizeof(asan), "ASAN_OPTIONS=%s%sverify_asan_link_order=0", had ? had : "",
             had && *had ? ":" : "");
    const char *env[] = {preload, dir, journal, asan, rd.env[0][0] ? rd.env[0] : NULL, NULL};
    e2e_launch how = {.binary = rd.binary, .env = env};
    rel_assert(&rd, e2e_daemon_launch(&rd.d, &how) == 0, "budgetd with the shim did not start");
}

/* Replaces the data folder by a power-loss image of it. */
static void power_loss(const scratch *s, pl_mode mode, uint64_t seed, pl_image_stats *st)
{
    char why[512];
    e2e_remove_tree(s->image);
    int rc =
        pl_image_make(s->journal, s->base, rd.d.data, s->image, mode, seed, st, why, sizeof(why));
    cr_assert_eq(rc, 0, "image: %s", why);
    e2e_remove_tree(rd.d.data);
    cr_assert_eq(rename(s->image, rd.d.data), 0, "rename the image: %s", strerror(errno));
}

static void powerloss_loop(const char *what, long cycles)
{
    crash_history h = {0};
    scratch s;
    uint64_t rng = rel_seed(what);
    uint64_t records = 0, writes = 0, durable = 0, kept = 0, dropped = 0, torn = 0, syncs = 0;
    uint64_t bytes_dropped = 0, acked_total = 0;
    int64_t t0 = e2e_now_us();
    if (e2e_wrapped())
        cr_skip_test("the shim is preloaded into budgetd itself, never under a wrapper");
    const char *mode_name = getenv("RELIABILITY_POWERLOSS_MODE");
    pl_mode fixed_mode = PL_MODE_NONE;
    bool fixed = mode_name != NULL && *mode_name != '\0';
    cr_assert(!fixed || pl_mode_parse(mode_name, &fixed_mode) == 0,
              "RELIABILITY_POWERLOSS_MODE=%s: none, random or torn", mode_name);

    cr_assert_eq(rel_start(&rd), 0, "budgetd did not start");
    rel_stop_clean(&rd);
    snprintf(s.base, sizeof(s.base), "%s/base", rd.d.dir);
    snprintf(s.journal, sizeof(s.journal), "%s/journal", rd.d.dir);
    snprintf(s.image, sizeof(s.image), "%s/image", rd.d.dir);

    for (int k = 0; k < cycles; k++) {
        size_t cycle_first = h.count;
        pl_mode mode = fixed ? fixed_mode : (pl_mode)(k % 3);
        pl_image_stats st;

        copy_base(&s);
        start_recorded(&s);
        int after = crash_load_cycle(&rd, 'p', k, &rng, &h);

        power_loss(&s, mode, rel_rand(&rng), &st);
        fprintf(stderr,
                "powerloss cycle %d (%s, kill after %d ms): image of %" PRIu64
                " journal records: %" PRIu64 " writes (%" PRIu64 " durable, %" PRIu64
                " kept, %" PRIu64 " dropped, %" PRIu64 " torn), %" PRIu64 " syncs\n",
                k, pl_mode_name(mode), after, st.records, st.writes, st.durable, st.kept,
                st.dropped, st.torn, st.syncs);
        records += st.records, writes += st.writes, durable += st.durable, kept += st.kept;
        dropped += st.dropped, torn += st.torn, syncs += st.syncs;
        bytes_dropped += st.bytes_dropped;

        rel_assert(&rd, rel_restart(&rd) == 0, "budgetd did not start on the power-loss image");
        crash_check r;
        crash_load_check(&rd, &h, cycle_first, "to the image", "powerloss", &r);
        rel_stop_clean(&rd);
        acked_total += r.acked;
        fprintf(stderr,
                "powerloss cycle %d: head %" PRIu64 ", acknowledged %" PRIu64
                " all present; unanswered %" PRIu64 " (%" PRIu64 " had been written)\n",
                k, r.head, r.acked, r.unknown, r.unknown_in_log);
    }

    fprintf(stderr,
            "%s: %ld cycles in %.1f s; %" PRIu64 " writes acknowledged under the shim, "
            "all present after the power loss (checked %" PRIu64 " times in all); journal: %" PRIu64
            " records, %" PRIu64 " file writes, %" PRIu64 " durable, %" PRIu64
            " not durable dropped (%" PRIu64 " bytes), %" PRIu64 " kept (%" PRIu64
            " of them torn), %" PRIu64 " syncs; %" PRIu64 " unanswered, %" PRIu64
            " of them already written, %" PRIu64 " made on retry, %" PRIu64 " refused on retry\n",
            what, cycles, (double)(e2e_now_us() - t0) / 1e6, acked_total, h.acked_checked, records,
            writes, durable, dropped, bytes_dropped, kept, torn, syncs, h.unknown, h.unknown_in_log,
            h.created_on_retry, h.refused_on_retry);
    e2e_remove_tree(s.base);
    free(h.all);
}

/*
 * budgetd as installed: its write-ahead file is large enough that LMDB's data file is not
 * synced within a cycle, so every image holds LMDB's pages as of the start and any mix of
 * those written since, and the start on it must go back to the checkpoint and bring the
 * records in.
 */
Test(powerloss, power_loss_under_load_loses_no_acknowledged_write)
{
    long cycles = e2e_env_long("RELIABILITY_POWERLOSS_CYCLES", CYCLES_DEFAULT) / 2;
    powerloss_loop("powerloss", cycles < 2 ? 2 : cycles);
}

/*
 * With a write-ahead file of 128 KiB (budgetd-faulty's BUDGETD_WAL_BYTES), LMDB is synced
 * behind it and a checkpoint written every hundred writes or so, the file goes round several
 * times in a cycle, and LMDB reuses the pages the checkpoints let go of: the power loss lands
 * amid checkpoints, laps and pages written again.
 */
Test(powerloss, power_loss_with_a_small_write_ahead_file_loses_no_acknowledged_write)
{
    rd.binary = BUDGETD_FAULTY_PATH;
    snprintf(rd.env[0], sizeof(rd.env[0]), "BUDGETD_WAL_BYTES=131072");
    powerloss_loop("powerloss-small-wal",
                   e2e_env_long("RELIABILITY_POWERLOSS_CYCLES", CYCLES_DEFAULT));
}

/* ---- the shim and the image on their own --------------------------------------------------- */

static char scratch_dir[64];

static void scratch_teardown(void)
{
    e2e_remove_tree(scratch_dir);
}

static void make_scratch(void)
{
    snprintf(scratch_dir, sizeof(scratch_dir), "/tmp/budgetd-pl-XXXXXX");
    cr_assert(mkdtemp(scratch_dir) != NULL, "mkdtemp: %s", strerror(errno));
}

static void put_file(const char *path, char byte, size_t size)
{
    char buf[4096];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0 && size <= sizeof(buf), "%s: %s", path, strerror(errno));
    memset(buf, byte, size);
    cr_assert_eq(write(fd, buf, size), (ssize_t)size);
    close(fd);
}

/* The file's bytes (at most `max`), or -1 when it does not exist. */
static ssize_t get_file(const char *path, char *buf, size_t max)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, max);
    close(fd);
    return n;
}

static bool all_bytes(const char *buf, size_t from, size_t to, char byte)
{
    for (size_t i = from; i < to; i++)
        if (buf[i] != byte)
            return false;
    return true;
}

/* Runs dd with the shim preloaded, recording into JOURNAL for the folder DATA. */
static void dd(const char *data, const char *journal, const char *const *args)
{
    char preload[300], dir[200], jr[200];
    const char *argv[12] = {"/bin/dd", "status=none"};
    int argc = 2;
    for (int i = 0; args[i] && argc < 11; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", PLSHIM_PATH);
    snprintf(dir, sizeof(dir), "BUDGET_PL_DIR=%s", data);
    snprintf(jr, sizeof(jr), "BUDGET_PL_JOURNAL=%s", journal);
    const char *set[] = {preload, dir, jr, NULL};
    e2e_child child = {.argv = argv, .out_fd = 2, .err_fd = 2, .set = set};
    pid_t pid = e2e_spawn(&child);
    int status = 0;
    cr_assert(pid > 0, "cannot run dd");
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "dd %s failed", args[0]);
}

Test(powerloss, the_shim_journals_writes_and_syncs_and_the_image_keeps_what_was_synced,
     .fini = scratch_teardown)
{
    char data[128], base[128], journal[128], src[128], image[128], path[200], why[512];
    char in[200], of[5][200], buf[8192];
    pl_image_stats st;

    make_scratch();
    snprintf(data, sizeof(data), "%s/data", scratch_dir);
    snprintf(base, sizeof(base), "%s/base", scratch_dir);
    snprintf(journal, sizeof(journal), "%s/journal", scratch_dir);
    snprintf(src, sizeof(src), "%s/src", scratch_dir);
    cr_assert_eq(mkdir(data, 0700), 0);
    snprintf(path, sizeof(path), "%s/sub", data);
    cr_assert_eq(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/old", data);
    put_file(path, 'a', 4096);
    put_file(src, 'b', 4096);
    cr_assert_eq(pl_copy_tree(data, base, why, sizeof(why)), 0, "%s", why);

    snprintf(in, sizeof(in), "if=%s", src);
    snprintf(of[0], sizeof(of[0]), "of=%s/synced", data);
    snprintf(of[1], sizeof(of[1]), "of=%s/unsynced", data);
    snprintf(of[2], sizeof(of[2]), "of=%s/dsync", data);
    snprintf(of[3], sizeof(of[3]), "of=%s/old", data);
    snprintf(of[4], sizeof(of[4]), "of=%s/sub/synced", data);
    dd(data, journal, (const char *[]){in, of[0], "bs=1024", "count=4", "conv=fsync", NULL});
    dd(data, journal, (const char *[]){in, of[1], "bs=1024", "count=4", NULL});
    dd(data, journal, (const char *[]){in, of[2], "bs=1024", "count=4", "oflag=dsync", NULL});
    dd(data, journal,
       (const char *[]){in, of[3], "bs=1024", "count=1", "seek=1", "conv=notrunc", NULL});
    dd(data, journal, (const char *[]){in, of[4], "bs=1024", "count=4", "conv=fsync", NULL});

    /* none: what was synced or written through O_DSYNC, nothing else. */
    snprintf(image, sizeof(image), "%s/none", scratch_dir);
    cr_assert_eq(pl_image_make(journal, base, data, image, PL_MODE_NONE, 1, &st, why, sizeof(why)),
                 0, "%s", why);
    /* dd truncates the file it opens, unless conv=notrunc: that size change counts. */
    cr_assert_eq(st.durable, 9, "5 records synced and 4 writes through O_DSYNC, not %" PRIu64,
                 st.durable);
    cr_assert_eq(st.dropped, 7, "5 records unsynced, 1 to old, 1 truncation, not %" PRIu64,
                 st.dropped);
    cr_assert_eq(st.syncs, 1);
    snprintf(path, sizeof(path), "%s/synced", image);
    cr_assert(get_file(path, buf, sizeof(buf)) == 4096 && all_bytes(buf, 0, 4096, 'b'), "synced");
    snprintf(path, sizeof(path), "%s/dsync", image);
    cr_assert(get_file(path, buf, sizeof(buf)) == 4096 && all_bytes(buf, 0, 4096, 'b'), "dsync");
    snprintf(path, sizeof(path), "%s/unsynced", image);
    cr_assert_eq(get_file(path, buf, sizeof(buf)), -1, "a new file never synced is not there");
    snprintf(path, sizeof(path), "%s/old", image);
    cr_assert(get_file(path, buf, sizeof(buf)) == 4096 && all_bytes(buf, 0, 4096, 'a'),
              "old keeps what it had at the start");
    snprintf(path, sizeof(path), "%s/sub/synced", image);
    cr_assert(get_file(path, buf, sizeof(buf)) == 4096, "a subfolder is copied as it is");

    /* random: each unsynced write kept or not; over seeds, both. */
    int old_kept = 0, old_dropped = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        snprintf(image, sizeof(image), "%s/random%" PRIu64, scratch_dir, seed);
        cr_assert_eq(
            pl_image_make(journal, base, data, image, PL_MODE_RANDOM, seed, &st, why, sizeof(why)),
            0, "%s", why);
        snprintf(path, sizeof(path), "%s/synced", image);
        cr_assert(get_file(path, buf, sizeof(buf)) == 4096 && all_bytes(buf, 0, 4096, 'b'));
        snprintf(path, sizeof(path), "%s/old", image);
        cr_assert(get_file(path, buf, sizeof(buf)) == 4096 && all_bytes(buf, 0, 1024, 'a') &&
                  all_bytes(buf, 2048, 4096, 'a'));
        if (all_bytes(buf, 1024, 2048, 'b'))
            old_kept++;
        else if (all_bytes(buf, 1024, 2048, 'a'))
            old_dropped++;
        snprintf(path, sizeof(path), "%s/unsynced", image);
        ssize_t n = get_file(path, buf, sizeof(buf));
        for (ssize_t i = 0; i < n; i++)
            cr_assert(buf[i] == 'b' || buf[i] == 0, "unsynced holds only its bytes or holes");
        e2e_remove_tree(image);
    }
    cr_assert(old_kept > 0 && old_dropped > 0 && old_kept + old_dropped == 40,
              "the write to old kept %d times, dropped %d", old_kept, old_dropped);
}

Test(powerloss, a_torn_write_is_cut_at_a_sector_boundary, .fini = scratch_teardown)
{
    char data[128], base[128], journal[128], image[128], path[200], why[512], buf[4096];
    uint8_t bytes[2000];
    pl_image_stats st;

    make_scratch();
    snprintf(data, sizeof(data), "%s/data", scratch_dir);
    snprintf(base, sizeof(base), "%s/base", scratch_dir);
    snprintf(journal, sizeof(journal), "%s/journal", scratch_dir);
    cr_assert_eq(mkdir(data, 0700), 0);
    cr_assert_eq(mkdir(base, 0700), 0);
    snprintf(path, sizeof(path), "%s/f", data);
    put_file(path, 'x', 2100);

    /* One write of 2000 bytes at offset 100 of a new file f, never synced; the journal ends
     * in a record cut short, which is ignored. */
    memset(bytes, 'x', sizeof(bytes));
    pl_record rec[2] = {{PL_MAGIC, PL_NAME, 0, 0, 1, 0, 0},
                        {PL_MAGIC, PL_WRITE, 0, 0, sizeof(bytes), 100, 0}};
    int fd = open(journal, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, &rec[0], sizeof(rec[0])), (ssize_t)sizeof(rec[0]));
    cr_assert_eq(write(fd, "f", 1), 1);
    cr_assert_eq(write(fd, &rec[1], sizeof(rec[1])), (ssize_t)sizeof(rec[1]));
    cr_assert_eq(write(fd, bytes, sizeof(bytes)), (ssize_t)sizeof(bytes));
    cr_assert_eq(write(fd, &rec[1], sizeof(rec[1]) / 2), (ssize_t)sizeof(rec[1]) / 2);
    close(fd);

    int absent = 0, whole = 0, torn = 0;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        snprintf(image, sizeof(image), "%s/torn%" PRIu64, scratch_dir, seed);
        cr_assert_eq(
            pl_image_make(journal, base, data, image, PL_MODE_TORN, seed, &st, why, sizeof(why)), 0,
            "%s", why);
        cr_assert_eq(st.records, 2, "the record cut short is not read");
        snprintf(path, sizeof(path), "%s/f", image);
        ssize_t n = get_file(path, buf, sizeof(buf));
        if (n < 0) {
            absent++;
        } else {
            cr_assert(n == 512 || n == 1024 || n == 1536 || n == 2048 || n == 2100,
                      "f cut at %zd, not at a 512-byte boundary", n);
            cr_assert(all_bytes(buf, 0, 100, 0) && all_bytes(buf, 100, (size_t)n, 'x'));
            if (n == 2100)
                whole++;
            else
                torn++;
        }
        e2e_remove_tree(image);
    }
    cr_assert(absent > 0 && whole > 0 && torn > 0, "absent %d, whole %d, torn %d", absent, whole,
              torn);
}
