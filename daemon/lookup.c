/* Identity lookups on threads of their own (lookup.h). */
#include <assert.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lookup.h"

struct lookup_job {
    lookup_job_t *next;       /* in lookup_pool.running (loop thread) */
    lookup_job_t *queue_next; /* in lookup_pool.todo or done (under the mutex) */
    lookup_waiter_t *waiters; /* waiting for this answer */
    void (*hook)(uint32_t uid);
    lookup_result_t result;
};

/* On a lookup thread. */
static void job_run(lookup_job_t *j)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    lookup_result_t *r = &j->result;

    if (j->hook)
        j->hook(r->uid);
    if (getpwuid_r(r->uid, &pw, buf, sizeof(buf), &found) != 0 || !found ||
        strlen(found->pw_name) > BUDGET_NAME_BYTES_MAX)
        return;
    snprintf(r->name, sizeof(r->name), "%s", found->pw_name);
    r->found = true;
    access_identity_of(r->uid, (uint32_t)found->pw_gid, r->name, (uint32_t)found->pw_gid, &r->user);
}

static uint32_t running_count(const lookup_pool_t *p)
{
    uint32_t n = 0;
    for (const lookup_job_t *j = p->running; j; j = j->next)
        n++;
    return n;
}

/* Hands a new lookup of `w->uid` to a thread; one is free (running_count). */
static void job_launch(lookup_pool_t *p, lookup_waiter_t *w)
{
    assert(running_count(p) < LOOKUP_THREADS);
    lookup_job_t *j = calloc(1, sizeof(*j));
    if (!j || p->threads_count == 0) {
        free(j);
        w->done(w, NULL);
        return;
    }
    w->next = NULL;
    j->waiters = w;
    j->hook = p->hook;
    j->result.uid = w->uid;
    j->next = p->running;
    p->running = j;
    uv_mutex_lock(&p->mutex);
    lookup_job_t **tail = &p->todo;
    while (*tail)
        tail = &(*tail)->queue_next;
    *tail = j;
    uv_cond_signal(&p->cond);
    uv_mutex_unlock(&p->mutex);
}

void lookup_want(lookup_pool_t *p, lookup_waiter_t *w)
{
    assert(w->turn != NULL && w->done != NULL);
    for (lookup_job_t *j = p->running; j; j = j->next)
        if (j->result.uid == w->uid) {
            w->next = j->waiters;
            j->waiters = w;
            return;
        }
    if (running_count(p) >= LOOKUP_THREADS) {
        w->next = NULL;
        if (p->waiting_tail)
            p->waiting_tail->next = w;
        else
            p->waiting = w;
        p->waiting_tail = w;
        return;
    }
    job_launch(p, w);
}

/* A lookup is done: its waiters get the answer, and the next in line a thread. */
static void job_done(lookup_pool_t *p, lookup_job_t *j)
{
    for (lookup_job_t **at = &p->running; *at; at = &(*at)->next)
        if (*at == j) {
            *at = j->next;
            break;
        }
    while (j->waiters) {
        lookup_waiter_t *w = j->waiters;
        j->waiters = w->next;
        w->next = NULL;
        w->done(w, &j->result);
    }
    free(j);
    while (p->waiting && running_count(p) < LOOKUP_THREADS) {
        lookup_waiter_t *w = p->waiting;
        p->waiting = w->next;
        if (!p->waiting)
            p->waiting_tail = NULL;
        w->next = NULL;
        if (w->turn(w))
            lookup_want(p, w);
        else
            w->done(w, NULL);
    }
}

/* A lookup thread: runs the lookups handed to it, one at a time, and wakes the loop. */
static void lookup_main(void *arg)
{
    lookup_pool_t *p = arg;

    uv_mutex_lock(&p->mutex);
    for (;;) {
        while (!p->todo && !p->stop)
            uv_cond_wait(&p->cond, &p->mutex);
        lookup_job_t *j = p->todo;
        if (!j)
            break; /* stopping, and nothing left to do */
        p->todo = j->queue_next;
        uv_mutex_unlock(&p->mutex);
        job_run(j);
        uv_mutex_lock(&p->mutex);
        j->queue_next = p->done;
        p->done = j;
        /* Under the mutex: the loop closes the handle only once it has taken every job. */
        uv_async_send(&p->async);
    }
    uv_mutex_unlock(&p->mutex);
}

/* On the loop thread: the lookups the threads finished. */
static void on_lookups_done(uv_async_t *h)
{
    lookup_pool_t *p = h->data;

    uv_mutex_lock(&p->mutex);
    lookup_job_t *done = p->done;
    p->done = NULL;
    uv_mutex_unlock(&p->mutex);
    while (done) {
        lookup_job_t *j = done;
        done = j->queue_next;
        job_done(p, j);
    }
    if (p->quiet)
        p->quiet(p->owner);
}

int lookup_start(lookup_pool_t *p, uv_loop_t *loop)
{
    p->loop = loop;
    uv_mutex_init(&p->mutex);
    uv_cond_init(&p->cond);
    uv_async_init(loop, &p->async, on_lookups_done);
    p->async.data = p;
    for (uint32_t i = 0; i < LOOKUP_THREADS; i++) {
        if (uv_thread_create(&p->threads[i], lookup_main, p) != 0)
            break;
        p->threads_count++;
    }
    if (p->threads_count == 0) {
        log_error("cannot start a thread to look up users; connections will be refused");
        return -1;
    }
    return 0;
}

bool lookup_busy(const lookup_pool_t *p)
{
    return p->running != NULL;
}

void lookup_close(lookup_pool_t *p)
{
    assert(p->running == NULL && p->waiting == NULL);
    if (!uv_is_closing((uv_handle_t *)&p->async))
        uv_close((uv_handle_t *)&p->async, NULL);
}

void lookup_join(lookup_pool_t *p)
{
    uv_mutex_lock(&p->mutex);
    p->stop = true;
    uv_cond_broadcast(&p->cond);
    uv_mutex_unlock(&p->mutex);
    for (uint32_t i = 0; i < p->threads_count; i++)
        uv_thread_join(&p->threads[i]);
    uv_cond_destroy(&p->cond);
    uv_mutex_destroy(&p->mutex);
}
