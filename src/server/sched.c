/* sched.c: the slot scheduler — one engine thread owns the ds_ctx and runs
 * continuous batching over N slots (sequence id = slot index): queued jobs
 * join between steps, each step packs one token per decoding slot plus
 * prompt chunks of prefilling slots, samples each slot's last row and hands
 * released text to the job. Not HTTP and not JSON: see http.c / oai_resp.c. */
#define _GNU_SOURCE /* memmem */
#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct ds_slot {
    int id;
    ds_job *job;         /* NULL when idle */
    int32_t *cache;      /* [n_ctx_slot] tokens whose KV rows this sequence holds */
    int64_t n_cache;
    bool prefilling;     /* prompt tokens [n_cache, n_prompt) still to feed */
    int32_t last;        /* sampled token to feed next step (decoding) */
    int chunk;           /* rows this step (bookkeeping between build and apply) */
    int out_row;         /* index of its logits row this step, -1 if none */
    int64_t reserve;     /* KV blocks reserved for the job (kv_limited) */
    uint64_t last_used;  /* step counter when it last finished (LRU eviction) */
    ds_detok *detok;
} ds_slot;

struct ds_sched {
    ds_ctx *c;
    const ds_tokenizer *tok;
    ds_sched_params p;
    int n_vocab, block;
    int64_t total_blocks;
    pthread_t th;
    bool th_started;
    pthread_mutex_t mu;  /* queue, flags, slot_info */
    pthread_cond_t cv;
    ds_job *q_head, *q_tail;
    int n_queued;
    int n_idle;          /* slots without a job; under mu (see ds_sched_submit) */
    bool stopping, cancel_all;
    ds_slot *slots;      /* [n_slots], engine thread only */
    ds_slot_info *info;  /* [n_slots], published under mu */
    /* step buffers, allocated once: [cap_rows] and [n_slots][n_vocab] */
    int cap_rows;
    int32_t *b_tok, *b_pos, *b_seq;
    bool *b_logits;
    float *logits;
    int32_t *best;       /* each output row's argmax id [n_slots] */
    ds_logprob *lp_top;
    uint64_t n_steps;
    ds_sched_stats st;
    /* DSINFER_SCHED_STATS=1: where the engine loop's time goes, printed at
     * exit (engine thread only; seconds summed over the steps that ran) */
    bool prof;
    uint64_t prof_steps;
    double prof_head, prof_build, prof_decode, prof_sample, prof_token, prof_iter;
};

const char *ds_finish_name(ds_finish f) {
    switch (f) {
    case DS_FINISH_STOP: return "stop";
    case DS_FINISH_LENGTH: return "length";
    case DS_FINISH_CANCEL: return "cancelled";
    case DS_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

/* ---- jobs ------------------------------------------------------------------ */

ds_job *ds_job_new(int32_t *prompt, int64_t n_prompt, ds_sampler *smp) {
    static atomic_ullong next_id = 1;
    ds_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    if (pthread_mutex_init(&j->mu, NULL)) {
        free(j);
        return NULL;
    }
    if (pthread_cond_init(&j->cv, NULL)) {
        pthread_mutex_destroy(&j->mu);
        free(j);
        return NULL;
    }
    j->prompt = prompt;
    j->n_prompt = n_prompt;
    j->smp = smp;
    j->max_tokens = -1;
    j->id = atomic_fetch_add(&next_id, 1);
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancel, false);
    j->t_submit = ds_time_s();
    return j;
}

void ds_job_ref(ds_job *j) { atomic_fetch_add(&j->refs, 1); }

void ds_job_unref(ds_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    free(j->prompt);
    ds_sampler_free(j->smp);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->text);
    free(j->recs);
    free(j->pend);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

void ds_job_timings(ds_job *j, ds_timings *out) {
    pthread_mutex_lock(&j->mu);
    *out = (ds_timings){ .cache_n = j->n_cached, .predicted_n = j->n_gen };
    if (j->t_admit > 0) {
        out->prompt_n = j->n_prompt - j->n_cached;
        /* a job that ended before its first token: the prompt phase ran
         * until the end */
        double end = j->t_first > 0 ? j->t_first : j->t_done;
        out->prompt_ms = end > j->t_admit ? (end - j->t_admit) * 1e3 : 0;
    }
    if (j->t_first > 0) out->predicted_ms = (j->t_last - j->t_first) * 1e3;
    pthread_mutex_unlock(&j->mu);
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* Appends released bytes to the job's visible text (under its mutex). */
static bool job_release(ds_job *j, const char *p, size_t n) {
    if (!n) return true;
    pthread_mutex_lock(&j->mu);
    bool ok = grow((void **)&j->text, &j->text_cap, j->text_len + n + 1, 1);
    if (ok) {
        memcpy(j->text + j->text_len, p, n);
        j->text_len += n;
        j->text[j->text_len] = 0;
        pthread_cond_broadcast(&j->cv);
    }
    pthread_mutex_unlock(&j->mu);
    return ok;
}

static void job_finish(ds_job *j, ds_finish f, const ds_http_error *err) {
    pthread_mutex_lock(&j->mu);
    if (j->finish == DS_FINISH_NONE) {
        j->finish = f;
        if (err) j->err = *err;
        j->t_done = ds_time_s();
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* ---- stop strings ------------------------------------------------------- */

/* Longest k < len(stop) such that buf ends with stop[0..k): bytes that may
 * still become a stop string and so are held back. */
static size_t stop_hold(const char *buf, size_t n, const char *stop) {
    size_t sl = strlen(stop);
    for (size_t k = sl - 1 < n ? sl - 1 : n; k > 0; k--)
        if (!memcmp(buf + n - k, stop, k)) return k;
    return 0;
}

/* Adds a generated piece; releases what can no longer start a stop string.
 * Returns true when a stop string matched (the text before it released). */
static bool job_feed_text(ds_job *j, const char *p, size_t n, bool *oom) {
    if (!n) return false;
    if (!j->n_stop) {
        if (!job_release(j, p, n)) *oom = true;
        return false;
    }
    if (!grow((void **)&j->pend, &j->pend_cap, j->pend_len + n, 1)) {
        *oom = true;
        return false;
    }
    memcpy(j->pend + j->pend_len, p, n);
    j->pend_len += n;
    size_t best = SIZE_MAX;
    for (int i = 0; i < j->n_stop; i++) {
        const char *hit = memmem(j->pend, j->pend_len, j->stop[i], strlen(j->stop[i]));
        if (hit && (size_t)(hit - j->pend) < best) best = (size_t)(hit - j->pend);
    }
    if (best != SIZE_MAX) {
        if (!job_release(j, j->pend, best)) *oom = true;
        j->pend_len = 0;
        return true;
    }
    size_t hold = 0;
    for (int i = 0; i < j->n_stop; i++) {
        size_t h = stop_hold(j->pend, j->pend_len, j->stop[i]);
        if (h > hold) hold = h;
    }
    size_t out = j->pend_len - hold;
    if (!job_release(j, j->pend, out)) *oom = true;
    memmove(j->pend, j->pend + out, hold);
    j->pend_len = hold;
    return false;
}

/* ---- scheduler ------------------------------------------------------------ */

static void publish(ds_sched *s) {
    ds_kv *kv = ds_ctx_kv(s->c);
    int idle = 0, busy = 0;
    for (int i = 0; i < s->p.n_slots; i++) {
        ds_slot *sl = &s->slots[i];
        ds_slot_info *in = &s->info[i];
        in->id = i;
        in->busy = sl->job != NULL;
        in->n_cached = sl->n_cache;
        in->n_prompt = sl->job ? sl->job->n_prompt : 0;
        in->n_gen = sl->job ? sl->job->n_gen : 0;
        in->job_id = sl->job ? sl->job->id : 0;
        if (sl->job) busy++;
        else idle++;
    }
    atomic_store_explicit(&s->st.kv_used, ds_kv_used_tokens(kv), memory_order_relaxed);
    atomic_store_explicit(&s->st.kv_cap, ds_kv_capacity_tokens(kv), memory_order_relaxed);
    atomic_store_explicit(&s->st.slots_idle, idle, memory_order_relaxed);
    atomic_store_explicit(&s->st.slots_busy, busy, memory_order_relaxed);
    atomic_store_explicit(&s->st.queued, s->n_queued, memory_order_relaxed);
}

static int64_t blocks_of(const ds_sched *s, int64_t tokens) { return (tokens + s->block - 1) / s->block; }

/* Frees the slot of a finished job: the tokens fed so far stay cached for
 * prefix reuse; blocks reserved beyond them go back. */
static void slot_release(ds_sched *s, ds_slot *sl, ds_finish f, const ds_http_error *err) {
    ds_job *j = sl->job;
    if (!j) return;
    if (f == DS_FINISH_STOP || f == DS_FINISH_LENGTH) {
        /* generation is over: a character cut at the end is flushed, and a
         * held stop-string prefix turns out to be plain text */
        size_t n;
        const char *tail = ds_detok_flush(sl->detok, &n);
        bool oom = false;
        if (n && job_feed_text(j, tail, n, &oom)) f = DS_FINISH_STOP;
        else if (j->pend_len) job_release(j, j->pend, j->pend_len);
    } else {
        ds_detok_reset(sl->detok);
    }
    j->pend_len = 0;
    job_finish(j, f, err);
    ds_ctx_seq_truncate(s->c, sl->id, sl->n_cache);
    sl->job = NULL;
    sl->prefilling = false;
    sl->reserve = 0;
    sl->last_used = s->n_steps;
    ds_job_unref(j);
    /* published now, not at the next loop: a request that arrives in
     * between must see the free slot (ds_sched_submit counts it) */
    pthread_mutex_lock(&s->mu);
    s->n_idle++;
    publish(s);
    pthread_mutex_unlock(&s->mu);
}

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    int64_t n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

/* Under s->mu: moves queued jobs into idle slots while they fit. FIFO: a
 * job that does not fit yet blocks the ones behind it (no starvation). */
static void admit(ds_sched *s) {
    while (s->q_head) {
        ds_job *j = s->q_head;
        bool late = j->deadline > 0 && ds_time_s() > j->deadline;
        if (atomic_load(&j->cancel) || late) {
            s->q_head = j->next;
            if (!s->q_head) s->q_tail = NULL;
            s->n_queued--;
            ds_http_error e;
            ds_http_fail(&e, 504, "timeout_error", "timeout", "the request waited longer than the server's --timeout");
            job_finish(j, late ? DS_FINISH_ERROR : DS_FINISH_CANCEL, late ? &e : NULL);
            ds_job_unref(j);
            continue;
        }
        /* the idle slot sharing the longest prefix with the prompt */
        ds_slot *best = NULL;
        int64_t best_common = -1;
        for (int i = 0; i < s->p.n_slots; i++) {
            ds_slot *sl = &s->slots[i];
            if (sl->job) continue;
            int64_t c = common_prefix(sl->cache, sl->n_cache, j->prompt, j->n_prompt);
            if (c > best_common || (c == best_common && best && sl->last_used < best->last_used)) {
                best = sl;
                best_common = c;
            }
        }
        if (!best) return;
        int64_t need = blocks_of(s, j->n_prompt + j->max_tokens);
        if (s->p.kv_limited) {
            /* worst-case reservation, so a running job never meets a full
             * cache; idle slots' prefix caches are evicted (LRU) to make room */
            int64_t reserved = 0;
            for (int i = 0; i < s->p.n_slots; i++)
                if (s->slots[i].job) reserved += s->slots[i].reserve;
            for (;;) {
                int64_t idle_cached = 0;
                ds_slot *lru = NULL;
                for (int i = 0; i < s->p.n_slots; i++) {
                    ds_slot *sl = &s->slots[i];
                    if (sl->job || sl == best || !sl->n_cache) continue;
                    idle_cached += blocks_of(s, sl->n_cache);
                    if (!lru || sl->last_used < lru->last_used) lru = sl;
                }
                if (reserved + idle_cached + need <= s->total_blocks) break;
                if (!lru) return; /* wait for running jobs to finish */
                ds_ctx_seq_truncate(s->c, lru->id, 0);
                lru->n_cache = 0;
            }
        }
        s->q_head = j->next;
        if (!s->q_head) s->q_tail = NULL;
        s->n_queued--;
        j->next = NULL;
        /* keep the common prefix, but always feed at least one prompt token:
         * its logits pick the first generated token */
        int64_t keep = best_common < j->n_prompt ? best_common : j->n_prompt - 1;
        ds_ctx_seq_truncate(s->c, best->id, keep);
        best->n_cache = keep;
        best->job = j;
        s->n_idle--;
        best->prefilling = true;
        best->reserve = need;
        ds_detok_reset(best->detok);
        for (int64_t i = 0; i < j->n_prompt; i++) ds_sampler_accept(j->smp, j->prompt[i]);
        pthread_mutex_lock(&j->mu);
        j->n_cached = keep;
        j->t_admit = ds_time_s(); /* queue time is not prompt time */
        pthread_mutex_unlock(&j->mu);
    }
}

/* One generated token of slot sl: logprobs, stop checks, limits. */
static void on_token(ds_sched *s, ds_slot *sl, const float *logits, int32_t id) {
    /* stamped before logprobs and detokenizing: the token is sampled now */
    double now = ds_time_s();
    ds_job *j = sl->job;
    bool oom = false;
    if (j->want_logprobs) {
        ds_tok_rec rec = { .id = id, .n_top = j->top_logprobs };
        rec.logprob = ds_logprobs(logits, s->n_vocab, id, rec.top, j->top_logprobs);
        pthread_mutex_lock(&j->mu);
        if (grow((void **)&j->recs, &j->recs_cap, j->n_recs + 1, sizeof *j->recs)) j->recs[j->n_recs++] = rec;
        else oom = true;
        pthread_mutex_unlock(&j->mu);
    }
    ds_sampler_accept(j->smp, id);
    pthread_mutex_lock(&j->mu);
    j->n_gen++;
    if (j->n_gen == 1) j->t_first = now;
    j->t_last = now;
    pthread_mutex_unlock(&j->mu);
    atomic_fetch_add_explicit(&s->st.n_gen_tokens, 1, memory_order_relaxed);
    if (!j->ignore_eos && ds_tokenizer_is_eog(s->tok, id)) {
        slot_release(s, sl, DS_FINISH_STOP, NULL);
        return;
    }
    size_t n;
    const char *piece = ds_detok_push(sl->detok, id, &n);
    bool stopped = job_feed_text(j, piece, n, &oom);
    if (oom) {
        ds_http_error e;
        ds_http_fail(&e, 500, "server_error", "out_of_memory", "out of memory while generating");
        slot_release(s, sl, DS_FINISH_ERROR, &e);
    } else if (stopped) {
        j->pend_len = 0;
        ds_detok_reset(sl->detok);
        slot_release(s, sl, DS_FINISH_STOP, NULL);
    } else if (j->n_gen >= j->max_tokens || sl->n_cache + 1 > s->p.n_ctx_slot) {
        slot_release(s, sl, DS_FINISH_LENGTH, NULL);
    } else {
        sl->last = id;
        sl->prefilling = false;
    }
}

/* Finishes every job in the batch after a failed decode: KV full (which
 * the reservation should prevent) ends decoding jobs at "length"; anything
 * else is a 500. The server keeps running either way. */
static void fail_batch(ds_sched *s, ds_status st, const char *msg) {
    ds_http_error e;
    if (st == DS_ERR_KV_FULL) ds_http_fail(&e, 503, "server_error", "kv_cache_full", "KV cache full: %s", msg);
    else ds_http_fail(&e, 500, "server_error", "decode_failed", "decode failed: %s", msg);
    ds_log(DS_LOG_WARN, "serve: %s", e.message);
    for (int i = 0; i < s->p.n_slots; i++) {
        ds_slot *sl = &s->slots[i];
        if (!sl->job || !sl->chunk) continue;
        if (st == DS_ERR_KV_FULL && !sl->prefilling) slot_release(s, sl, DS_FINISH_LENGTH, NULL);
        else slot_release(s, sl, DS_FINISH_ERROR, &e);
    }
}

static void step(ds_sched *s) {
    int n = 0, n_out = 0, n_prompt_rows = 0;
    double now = ds_time_s(); /* also where the batch build starts (DSINFER_SCHED_STATS) */
    /* decoding slots first: one row each keeps their latency steady while
     * long prompts are chunked in behind them */
    for (int i = 0; i < s->p.n_slots; i++) {
        ds_slot *sl = &s->slots[i];
        sl->chunk = 0;
        sl->out_row = -1;
        if (!sl->job) continue;
        if (atomic_load(&sl->job->cancel)) {
            slot_release(s, sl, DS_FINISH_CANCEL, NULL);
            continue;
        }
        if (sl->job->deadline > 0 && now > sl->job->deadline) {
            ds_http_error e;
            ds_http_fail(&e, 504, "timeout_error", "timeout", "the request took longer than the server's --timeout");
            slot_release(s, sl, DS_FINISH_ERROR, &e);
            continue;
        }
        if (sl->prefilling) continue;
        s->b_tok[n] = sl->last;
        s->b_pos[n] = (int32_t)sl->n_cache;
        s->b_seq[n] = sl->id;
        s->b_logits[n] = true;
        sl->chunk = 1;
        n++;
    }
    for (int i = 0; i < s->p.n_slots && n < s->p.n_batch; i++) {
        ds_slot *sl = &s->slots[i];
        if (!sl->job || !sl->prefilling) continue;
        int64_t left = sl->job->n_prompt - sl->n_cache;
        int k = (int)(left < s->p.n_batch - n ? left : s->p.n_batch - n);
        for (int r = 0; r < k; r++) {
            s->b_tok[n + r] = sl->job->prompt[sl->n_cache + r];
            s->b_pos[n + r] = (int32_t)(sl->n_cache + r);
            s->b_seq[n + r] = sl->id;
            s->b_logits[n + r] = false;
        }
        if (k == left) s->b_logits[n + k - 1] = true; /* the prompt's last row picks the first token */
        sl->chunk = k;
        n += k;
        n_prompt_rows += k;
    }
    if (n == 0) return;
    /* logits rows come out in batch order, one per slot at most. Greedy
     * picks without logprobs need only the argmax id: when every output row
     * is one, no logits come back (on the GPU only the ids cross the bus;
     * at 129k vocabulary that is 0.5 MB per row and a host scan saved) */
    bool ids_only = true, any_greedy = false;
    for (int r = 0; r < n; r++) {
        if (!s->b_logits[r]) continue;
        ds_slot *sl = &s->slots[s->b_seq[r]];
        const bool greedy = ds_sampler_is_greedy(sl->job->smp);
        sl->out_row = n_out++;
        any_greedy |= greedy;
        ids_only &= greedy && !sl->job->want_logprobs;
    }
    ds_batch b = { .n = n, .tokens = s->b_tok, .pos = s->b_pos, .seq = s->b_seq, .logits = s->b_logits,
                   .best = any_greedy ? s->best : NULL };
    ds_error err = { 0 };
    double t0 = ds_time_s();
    ds_status st = ds_ctx_decode(s->c, &b, ids_only ? NULL : s->logits, &err);
    double dt = ds_time_s() - t0;
    if (s->prof) {
        s->prof_steps++;
        s->prof_build += t0 - now;
        s->prof_decode += dt;
    }
    s->n_steps++;
    atomic_fetch_add_explicit(&s->st.steps, 1, memory_order_relaxed);
    if (st) {
        /* rows reserved before the failure are released with the slot */
        fail_batch(s, st, err.msg);
        return;
    }
    /* time split by rows: prompt vs generation */
    long long us = (long long)(dt * 1e6);
    long long us_prompt = n ? us * n_prompt_rows / n : 0;
    atomic_fetch_add_explicit(&s->st.prompt_us, us_prompt, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->st.gen_us, us - us_prompt, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->st.n_prompt_tokens, n_prompt_rows, memory_order_relaxed);
    for (int i = 0; i < s->p.n_slots; i++) {
        ds_slot *sl = &s->slots[i];
        if (!sl->job || !sl->chunk) continue;
        if (sl->prefilling) {
            memcpy(sl->cache + sl->n_cache, sl->job->prompt + sl->n_cache, (size_t)sl->chunk * sizeof(int32_t));
            sl->n_cache += sl->chunk;
        } else {
            sl->cache[sl->n_cache++] = sl->last;
        }
        if (sl->out_row < 0) continue;
        const float *row = ids_only ? NULL : s->logits + (size_t)sl->out_row * s->n_vocab;
        const double ts = s->prof ? ds_time_s() : 0;
        ds_sampler *smp = sl->job->smp;
        int32_t id = ds_sampler_is_greedy(smp) ? s->best[sl->out_row] : ds_sampler_sample(smp, row);
        const double tt = s->prof ? ds_time_s() : 0;
        on_token(s, sl, row, id);
        if (s->prof) {
            s->prof_sample += tt - ts;
            s->prof_token += ds_time_s() - tt;
        }
    }
}

static void prof_print(const ds_sched *s) {
    if (!s->prof || !s->prof_steps) return;
    const double k = 1e6 / (double)s->prof_steps;
    ds_log(DS_LOG_INFO,
            "serve: engine loop, %llu steps, us per step: %.1f in all = %.1f lock/admit/publish + %.1f batch build + "
            "%.1f forward + %.1f sampling + %.1f token handling + %.1f other",
            (unsigned long long)s->prof_steps, s->prof_iter * k, s->prof_head * k, s->prof_build * k,
            s->prof_decode * k, s->prof_sample * k, s->prof_token * k,
            (s->prof_iter - s->prof_head - s->prof_build - s->prof_decode - s->prof_sample - s->prof_token) * k);
}

static void *engine_main(void *arg) {
    ds_sched *s = arg;
    for (;;) {
        const double t_iter = s->prof ? ds_time_s() : 0;
        pthread_mutex_lock(&s->mu);
        if (s->cancel_all || s->stopping) {
            for (ds_job *j = s->q_head; j; j = j->next) atomic_store(&j->cancel, true);
            for (int i = 0; i < s->p.n_slots; i++)
                if (s->slots[i].job) atomic_store(&s->slots[i].job->cancel, true);
            s->cancel_all = false;
        }
        admit(s);
        bool any = false;
        for (int i = 0; i < s->p.n_slots; i++) any |= s->slots[i].job != NULL;
        publish(s);
        if (!any) {
            if (s->stopping && !s->q_head) {
                pthread_mutex_unlock(&s->mu);
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000000L; /* wakes to drop cancelled queued jobs */
            if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            pthread_mutex_unlock(&s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        const double t_step = s->prof ? ds_time_s() : 0;
        const uint64_t before = s->prof_steps;
        step(s);
        if (s->prof && s->prof_steps != before) { /* a forward ran: count the whole iteration */
            s->prof_head += t_step - t_iter;
            s->prof_iter += ds_time_s() - t_iter;
        }
    }
    prof_print(s);
    return NULL;
}

ds_status ds_sched_create(ds_ctx *c, const ds_tokenizer *tok, const ds_sched_params *p, ds_sched **out,
                          ds_error *err) {
    *out = NULL;
    ds_sched *s = calloc(1, sizeof *s);
    if (!s) return ds_error_set(err, DS_ERR_OOM, "out of memory");
    s->c = c;
    s->tok = tok;
    s->p = *p;
    if (s->p.n_batch < 1) s->p.n_batch = 512;
    if (s->p.max_queue < 1) s->p.max_queue = 1;
    s->n_vocab = ds_ctx_model(c)->hp.n_vocab;
    ds_kv *kv = ds_ctx_kv(c);
    s->block = ds_kv_block_tokens(kv);
    s->total_blocks = ds_kv_capacity_tokens(kv) / s->block;
    s->cap_rows = s->p.n_batch + s->p.n_slots;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->slots = calloc((size_t)p->n_slots, sizeof *s->slots);
    s->n_idle = p->n_slots;
    s->info = calloc((size_t)p->n_slots, sizeof *s->info);
    s->b_tok = malloc((size_t)s->cap_rows * sizeof(int32_t));
    s->b_pos = malloc((size_t)s->cap_rows * sizeof(int32_t));
    s->b_seq = malloc((size_t)s->cap_rows * sizeof(int32_t));
    s->b_logits = malloc((size_t)s->cap_rows * sizeof(bool));
    s->logits = malloc((size_t)p->n_slots * s->n_vocab * sizeof(float));
    s->best = malloc((size_t)p->n_slots * sizeof(int32_t));
    ds_status st = DS_OK;
    if (!s->slots || !s->info || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_logits || !s->logits || !s->best) {
        st = ds_error_set(err, DS_ERR_OOM, "out of memory for %d slots", p->n_slots);
        goto fail;
    }
    for (int i = 0; i < p->n_slots; i++) {
        s->slots[i].id = i;
        s->slots[i].cache = malloc((size_t)p->n_ctx_slot * sizeof(int32_t));
        if (!s->slots[i].cache) {
            st = ds_error_set(err, DS_ERR_OOM, "out of memory for slot token lists");
            goto fail;
        }
        if ((st = ds_detok_create(tok, false, &s->slots[i].detok, err))) goto fail;
    }
    publish(s);
    const char *ps = getenv("DSINFER_SCHED_STATS");
    s->prof = ps && ps[0] == '1';
    if (pthread_create(&s->th, NULL, engine_main, s)) {
        st = ds_error_set(err, DS_ERR_INTERNAL, "cannot start the engine thread");
        goto fail;
    }
    s->th_started = true;
    *out = s;
    return DS_OK;
fail:
    ds_sched_free(s);
    return st;
}

void ds_sched_free(ds_sched *s) {
    if (!s) return;
    if (s->th_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    /* after the thread: anything left is finished as cancelled */
    while (s->q_head) {
        ds_job *j = s->q_head;
        s->q_head = j->next;
        job_finish(j, DS_FINISH_CANCEL, NULL);
        ds_job_unref(j);
    }
    if (s->slots)
        for (int i = 0; i < s->p.n_slots; i++) {
            if (s->slots[i].job) slot_release(s, &s->slots[i], DS_FINISH_CANCEL, NULL);
            free(s->slots[i].cache);
            ds_detok_free(s->slots[i].detok);
        }
    free(s->slots);
    free(s->info);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_logits);
    free(s->logits);
    free(s->best);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

bool ds_sched_submit(ds_sched *s, ds_job *j, ds_http_error *e) {
    int64_t n_ctx = s->p.n_ctx_slot;
    if (j->n_prompt < 1) return ds_http_fail(e, 400, "invalid_request_error", "empty_prompt", "the prompt is empty");
    int64_t want = j->max_tokens > 0 ? j->max_tokens : 0;
    if (j->n_prompt + want > n_ctx || j->n_prompt >= n_ctx ||
        (s->p.kv_limited && blocks_of(s, j->n_prompt + want) > s->total_blocks))
        return ds_http_fail(e, 400, "invalid_request_error", "context_length_exceeded",
                            "This model's maximum context length is %lld tokens. However, you requested %lld tokens "
                            "(%lld in the prompt, %lld for the completion). Please reduce the length of the prompt "
                            "or the completion.",
                            (long long)n_ctx, (long long)(j->n_prompt + want), (long long)j->n_prompt, (long long)want);
    if (j->max_tokens <= 0) j->max_tokens = n_ctx - j->n_prompt;
    pthread_mutex_lock(&s->mu);
    bool ok = false;
    if (s->stopping) ds_http_fail(e, 503, "server_error", "shutting_down", "the server is shutting down");
    /* a job that an idle slot will take at the engine's next loop is not
     * waiting: the bound is on requests beyond the free slots */
    else if (s->n_queued >= s->p.max_queue + s->n_idle)
        ds_http_fail(e, 503, "server_error", "queue_full", "the server is busy (%d requests queued); retry later",
                     s->n_queued);
    else {
        ds_job_ref(j);
        j->next = NULL;
        if (s->q_tail) s->q_tail->next = j;
        else s->q_head = j;
        s->q_tail = j;
        s->n_queued++;
        atomic_store_explicit(&s->st.queued, s->n_queued, memory_order_relaxed);
        pthread_cond_broadcast(&s->cv);
        ok = true;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

void ds_sched_cancel_all(ds_sched *s) {
    pthread_mutex_lock(&s->mu);
    s->cancel_all = true;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

const ds_sched_stats *ds_sched_stats_get(const ds_sched *s) { return &s->st; }

int ds_sched_slots(ds_sched *s, ds_slot_info *out, int cap) {
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->p.n_slots && i < cap; i++) out[i] = s->info[i];
    pthread_mutex_unlock(&s->mu);
    return s->p.n_slots;
}

int64_t ds_sched_n_ctx_slot(const ds_sched *s) { return s->p.n_ctx_slot; }
int ds_sched_n_slots(const ds_sched *s) { return s->p.n_slots; }
