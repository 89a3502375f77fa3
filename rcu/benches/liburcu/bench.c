/*
 * liburcu 0.13 beside the rcu crate: the same measurements as the benches/ files, so that
 * report.py can show liburcu in the same tables. Built twice by run.sh:
 *   -DFLAVOR_QSBR  (urcu-qsbr.h, -lurcu-qsbr)   and   -DFLAVOR_MEMB  (urcu.h, -lurcu: memb)
 * with _LGPL_SOURCE so that the read-side fast paths are inlined, as a C user would build.
 *
 * Prints one JSON object per line: {"group", "id", "median_ns", "min_ns", "max_ns", ...}
 * with the same group names and (prefixed) ids as the Rust benchmarks.
 */
#define _GNU_SOURCE
#define _LGPL_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(FLAVOR_QSBR)
#include <urcu-qsbr.h>
#define FLAVOR "qsbr"
#elif defined(FLAVOR_MEMB)
#include <urcu.h>
#define FLAVOR "memb"
#else
#error "define FLAVOR_QSBR or FLAVOR_MEMB"
#endif

#define REPS 15
#define QS_EVERY 16
#define MAGIC 0x5eedcafef00dd00dULL
#define POISON 0xdeaddeaddeaddeadULL

struct node {
	uint64_t magic;
	uint64_t seq;
	struct rcu_head head;
};

static struct node *gptr;
static volatile int stop_bg;
static volatile int bg_ready;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static void emit(const char *group, const char *id, double *v, int n, long elements)
{
	qsort(v, n, sizeof(double), cmp_double);
	printf("{\"group\": \"%s\", \"id\": \"%s\", \"median_ns\": %.4f, \"min_ns\": %.4f, "
	       "\"max_ns\": %.4f",
	       group, id, v[n / 2], v[0], v[n - 1]);
	if (elements > 0)
		printf(", \"elements\": %ld", elements);
	printf("}\n");
	fflush(stdout);
}

/* ---- read side ------------------------------------------------------------------------ */

enum read_kind { FLOOR, READ, READ_QS1000 };

static uintptr_t sink_global;

static __attribute__((noinline)) uintptr_t reads(enum read_kind kind, uint64_t iters)
{
	uintptr_t sink = 0;
	uint64_t i, j;

	switch (kind) {
	case FLOOR:
		for (i = 0; i < iters; i++)
			sink ^= (uintptr_t)__atomic_load_n(&gptr, __ATOMIC_ACQUIRE);
		break;
	case READ:
	case READ_QS1000: {
		uint64_t every = kind == READ ? QS_EVERY : 1000;
		for (i = 0; i < iters; i += every) {
			for (j = 0; j < every; j++) {
				rcu_read_lock();
				sink ^= (uintptr_t)rcu_dereference(gptr);
				rcu_read_unlock();
			}
#ifdef FLAVOR_QSBR
			rcu_quiescent_state();
#endif
		}
		break;
	}
	}
	return sink;
}

struct bg_arg {
	enum read_kind kind;
};

static void *bg_reader(void *p)
{
	struct bg_arg *a = p;
	rcu_register_thread();
	__atomic_add_fetch(&bg_ready, 1, __ATOMIC_SEQ_CST);
	while (!stop_bg)
		sink_global ^= reads(a->kind, 16000);
	rcu_unregister_thread();
	return NULL;
}

static void bench_read(const char *group, const char *id, enum read_kind kind, int threads)
{
	pthread_t bg;
	struct bg_arg arg = { kind };
	double v[REPS];
	uint64_t iters = 50 * 1000 * 1000;
	int r;

	stop_bg = 0;
	bg_ready = 0;
	if (threads == 2) {
		pthread_create(&bg, NULL, bg_reader, &arg);
		while (!__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST))
			;
	}
	rcu_register_thread();
	sink_global ^= reads(kind, iters / 10); /* warm-up */
	for (r = 0; r < REPS; r++) {
		uint64_t t = now_ns();
		sink_global ^= reads(kind, iters);
		v[r] = (double)(now_ns() - t) / iters;
	}
	rcu_unregister_thread();
	if (threads == 2) {
		stop_bg = 1;
		pthread_join(bg, NULL);
	}
	emit(group, id, v, REPS, 0);
}

/* ---- synchronize latency --------------------------------------------------------------- */

static void *busy_reader(void *p)
{
	(void)p;
	rcu_register_thread();
	__atomic_add_fetch(&bg_ready, 1, __ATOMIC_SEQ_CST);
	while (!stop_bg) {
		rcu_read_lock();
		sink_global ^= (uintptr_t)rcu_dereference(gptr);
		rcu_read_unlock();
#ifdef FLAVOR_QSBR
		rcu_quiescent_state();
#endif
	}
	rcu_unregister_thread();
	return NULL;
}

static void bench_synchronize(int readers)
{
	pthread_t th[2];
	static uint64_t lat[2000000];
	uint64_t n = 0, deadline;
	double med[1];
	char id[64];
	int i;

	stop_bg = 0;
	bg_ready = 0;
	for (i = 0; i < readers; i++)
		pthread_create(&th[i], NULL, busy_reader, NULL);
	while (__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST) < readers)
		;
	deadline = now_ns() + 3000000000ull;
	while (n < sizeof(lat) / sizeof(lat[0])) {
		uint64_t t = now_ns();
		synchronize_rcu();
		uint64_t e = now_ns();
		lat[n++] = e - t;
		if (e > deadline)
			break;
	}
	stop_bg = 1;
	for (i = 0; i < readers; i++)
		pthread_join(th[i], NULL);
	qsort(lat, n, sizeof(uint64_t), cmp_u64);
	snprintf(id, sizeof(id), "liburcu_%s_readers_%d", FLAVOR, readers);
	med[0] = (double)lat[n / 2];
	printf("{\"group\": \"synchronize\", \"id\": \"%s\", \"median_ns\": %.1f, \"min_ns\": %.1f, "
	       "\"max_ns\": %.1f, \"p50_ns\": %lu, \"p90_ns\": %lu, \"p99_ns\": %lu, \"count\": %lu}\n",
	       id, med[0], (double)lat[0], (double)lat[n - 1], (unsigned long)lat[n / 2],
	       (unsigned long)lat[n * 9 / 10], (unsigned long)lat[n * 99 / 100], (unsigned long)n);
	fflush(stdout);
}

/* ---- call_rcu throughput --------------------------------------------------------------- */

#define K 20000
static uint64_t ran;

static void free_node(struct rcu_head *h)
{
	struct node *nd = caa_container_of(h, struct node, head);
	nd->magic = POISON;
	free(nd);
	__atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
}

static void bench_call_rcu(void)
{
	pthread_t th;
	double v[REPS];
	int r;
	uint64_t i;
	char id[64];

	stop_bg = 0;
	bg_ready = 0;
	pthread_create(&th, NULL, busy_reader, NULL);
	while (!__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST))
		;
	rcu_register_thread();
#ifdef FLAVOR_QSBR
	rcu_thread_offline(); /* rcu_barrier() must not be called online */
#endif
	for (r = -2; r < REPS; r++) {
		uint64_t before = __atomic_load_n(&ran, __ATOMIC_RELAXED);
		uint64_t t = now_ns();
		for (i = 0; i < K; i++) {
			struct node *nd = malloc(sizeof(*nd));
			nd->magic = MAGIC;
			nd->seq = i;
			call_rcu(&nd->head, free_node);
		}
		rcu_barrier();
		uint64_t e = now_ns();
		if (__atomic_load_n(&ran, __ATOMIC_RELAXED) - before != K) {
			fprintf(stderr, "rcu_barrier returned early\n");
			exit(1);
		}
		if (r >= 0)
			v[r] = (double)(e - t);
	}
#ifdef FLAVOR_QSBR
	rcu_thread_online();
#endif
	rcu_unregister_thread();
	stop_bg = 1;
	pthread_join(th, NULL);
	snprintf(id, sizeof(id), "liburcu_%s_call_rcu", FLAVOR);
	emit("call_rcu", id, v, REPS, K);
}

/* ---- update-heavy mix ------------------------------------------------------------------ */

static volatile uint64_t mix_reads;

static uint64_t checked_reads(uint64_t iters)
{
	uint64_t i, j, sink = 0;
	for (i = 0; i < iters; i += QS_EVERY) {
		for (j = 0; j < QS_EVERY; j++) {
			rcu_read_lock();
			struct node *nd = rcu_dereference(gptr);
			if (nd->magic != MAGIC) {
				fprintf(stderr, "reader saw a reclaimed node\n");
				abort();
			}
			sink ^= nd->seq;
			rcu_read_unlock();
		}
#ifdef FLAVOR_QSBR
		rcu_quiescent_state();
#endif
	}
	return sink;
}

static void *mix_reader(void *p)
{
	(void)p;
	rcu_register_thread();
	__atomic_add_fetch(&bg_ready, 1, __ATOMIC_SEQ_CST);
	while (!stop_bg)
		sink_global ^= checked_reads(1024);
	rcu_unregister_thread();
	return NULL;
}

static void update_once(uint64_t seq)
{
	struct node *nd = malloc(sizeof(*nd)), *old;
	nd->magic = MAGIC;
	nd->seq = seq;
	old = rcu_xchg_pointer(&gptr, nd);
	synchronize_rcu();
	old->magic = POISON;
	free(old);
}

static void *mix_updater(void *p)
{
	uint64_t seq = 1;
	(void)p;
	__atomic_add_fetch(&bg_ready, 1, __ATOMIC_SEQ_CST);
	while (!stop_bg)
		update_once(seq++);
	return NULL;
}

static void bench_mix(void)
{
	pthread_t th;
	double v[REPS];
	int r, with_updater;
	uint64_t iters = 20 * 1000 * 1000;
	char id[64];

	/* Reads, alone and with a synchronize updater; the measuring thread reads. */
	for (with_updater = 0; with_updater < 2; with_updater++) {
		stop_bg = 0;
		bg_ready = 0;
		if (with_updater) {
			pthread_create(&th, NULL, mix_updater, NULL);
			while (!__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST))
				;
		}
		rcu_register_thread();
		for (r = 0; r < REPS; r++) {
			uint64_t t = now_ns();
			sink_global ^= checked_reads(iters);
			v[r] = (double)(now_ns() - t) / iters;
#ifdef FLAVOR_QSBR
			rcu_thread_offline();
			rcu_thread_online();
#endif
		}
		rcu_unregister_thread();
		if (with_updater) {
			stop_bg = 1;
			pthread_join(th, NULL);
		}
		snprintf(id, sizeof(id), "liburcu_%s_reads_%s", FLAVOR,
			 with_updater ? "sync_updater" : "no_updater");
		emit("update_mix", id, v, REPS, 1);
	}
	/* Updates; the measuring thread updates, a background thread reads. */
	stop_bg = 0;
	bg_ready = 0;
	pthread_create(&th, NULL, mix_reader, NULL);
	while (!__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST))
		;
	for (r = 0; r < REPS; r++) {
		uint64_t n = 0, t = now_ns(), e;
		do {
			update_once(n + 1);
			n++;
			e = now_ns();
		} while (e - t < 100000000ull);
		v[r] = (double)(e - t) / n;
	}
	stop_bg = 1;
	pthread_join(th, NULL);
	snprintf(id, sizeof(id), "liburcu_%s_updates_sync", FLAVOR);
	emit("update_mix", id, v, REPS, 1);
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : "all";
#ifdef FLAVOR_QSBR
	char id[64];
#endif

	gptr = malloc(sizeof(*gptr));
	gptr->magic = MAGIC;
	gptr->seq = 0;

	if (!strcmp(only, "all") || !strcmp(only, "read")) {
		int t;
		for (t = 1; t <= 2; t++) {
			const char *group = t == 1 ? "read_side_1t" : "read_side_2t";
#ifdef FLAVOR_QSBR
			bench_read(group, "liburcu_floor", FLOOR, t);
			snprintf(id, sizeof(id), "liburcu_qsbr_qs_every_%d", QS_EVERY);
			bench_read(group, id, READ, t);
			bench_read(group, "liburcu_qsbr_qs_every_1000", READ_QS1000, t);
#else
			bench_read(group, "liburcu_memb_read_lock", READ, t);
#endif
		}
	}
	if (!strcmp(only, "all") || !strcmp(only, "sync")) {
		int n;
		for (n = 0; n <= 2; n++) {
#ifdef FLAVOR_MEMB
			if (n != 1)
				continue;
#endif
			bench_synchronize(n);
		}
	}
	if (!strcmp(only, "all") || !strcmp(only, "call_rcu"))
		bench_call_rcu();
	if (!strcmp(only, "all") || !strcmp(only, "mix"))
		bench_mix();
	return 0;
}
