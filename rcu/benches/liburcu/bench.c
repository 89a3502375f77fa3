/*
 * liburcu 0.13 beside the rcu crate: the same measurements as the benches/ files, with loops
 * of the same shape, so that the report (benchreport) can show liburcu in the same tables.
 * Built twice by run.sh:
 *   -DFLAVOR_QSBR  (urcu-qsbr.h, -lurcu-qsbr)   and   -DFLAVOR_MEMB  (urcu.h, -lurcu: memb)
 * with _LGPL_SOURCE so that the read-side fast paths are inlined, as a C user would build.
 *
 *   bench-<flavour> [all|read|sync|call_rcu|mix]   prints one JSON object per line:
 *       {"group", "id", "median_ns", "min_ns", "max_ns", ...} with the same group names and
 *       (prefixed) ids as the Rust benchmarks
 *   bench-<flavour> callgrind ROW ITERS            runs one read-side loop once (for
 *       callgrind.sh, which counts its instructions); `callgrind list` prints the rows
 *
 * Environment: RCU_BENCH_SYNC_SECS (seconds per synchronize configuration, default 2).
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

/*
 * Rust's std::hint::black_box(v), spelled out: the value goes to a stack slot whose address
 * is handed to an empty asm statement with a memory clobber. One store per use; the compiler
 * can neither drop the load that produced the value nor merge it with another.
 */
#define BLACK_BOX(v)                                                                 \
	do {                                                                         \
		__typeof__(v) bb_ = (v);                                             \
		__asm__ __volatile__("" : : "r"(&bb_) : "memory");                   \
	} while (0)

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
	       "\"max_ns\": %.4f, \"reps\": %d",
	       group, id, v[n / 2], v[0], v[n - 1], n);
	if (elements > 0)
		printf(", \"elements\": %ld", elements);
	printf("}\n");
	fflush(stdout);
}

/* ---- read side ------------------------------------------------------------------------ */

/*
 * The measured loops, of the same shape as rcu/benches/read_side.rs's `loops`: one read-side
 * section and one pointer load per iteration, the value through BLACK_BOX.
 */
/*
 * The counters count down, as LLVM's loops do (a decrement and a branch; GCC would otherwise
 * count up and compare: one instruction more per iteration than the Rust loops).
 */
static __attribute__((noinline)) void loop_floor(uint64_t iters)
{
	uint64_t i;

	for (i = iters; i != 0; i--) {
		struct node *p = __atomic_load_n(&gptr, __ATOMIC_ACQUIRE);
		BLACK_BOX(p);
	}
}

/* chunks x (every x (read_lock, load, unlock), then a quiescent state (QSBR)). */
static __attribute__((noinline)) void loop_read(uint64_t every, uint64_t chunks)
{
	uint64_t i, j;

	for (i = chunks; i != 0; i--) {
		for (j = every; j != 0; j--) {
			rcu_read_lock();
			struct node *p = rcu_dereference(gptr);
			BLACK_BOX(p);
			rcu_read_unlock();
		}
#ifdef FLAVOR_QSBR
		rcu_quiescent_state();
#endif
	}
}

/* read_lock, load, unlock: the flat loop of read_side.rs's `read_lock`. */
static __attribute__((noinline)) void loop_lock(uint64_t iters)
{
	uint64_t i;

	for (i = iters; i != 0; i--) {
		rcu_read_lock();
		struct node *p = rcu_dereference(gptr);
		BLACK_BOX(p);
		rcu_read_unlock();
	}
}

struct read_row {
	const char *id;
	int every; /* 0: floor; -1: flat read_lock loop */
};

static const struct read_row read_rows[] = {
#ifdef FLAVOR_QSBR
	{ "liburcu_floor", 0 },
	{ "liburcu_qsbr_qs_every_1", 1 },
	{ "liburcu_qsbr_qs_every_16", 16 },
	{ "liburcu_qsbr_qs_every_1000", 1000 },
#else
	{ "liburcu_memb_read_lock", -1 },
#endif
};
#define N_READ_ROWS (sizeof(read_rows) / sizeof(read_rows[0]))

/* Runs `iters` iterations of a row (QSBR: rounded up to whole chunks); returns the count run. */
static uint64_t run_row(const struct read_row *row, uint64_t iters)
{
	if (row->every == 0) {
		loop_floor(iters);
		return iters;
	}
	if (row->every < 0) {
		loop_lock(iters);
		return iters;
	}
	uint64_t chunks = (iters + row->every - 1) / row->every;
	loop_read(row->every, chunks);
	return chunks * row->every;
}

static void *bg_reader(void *p)
{
	const struct read_row *row = p;

	rcu_register_thread();
	__atomic_add_fetch(&bg_ready, 1, __ATOMIC_SEQ_CST);
	while (!stop_bg)
		run_row(row, 16000);
	rcu_unregister_thread();
	return NULL;
}

/* ns per iteration of one timed run */
static double timed_row(const struct read_row *row, uint64_t iters)
{
	uint64_t t = now_ns();
	uint64_t done = run_row(row, iters);
	return (double)(now_ns() - t) / done;
}

/*
 * As read_side.rs's measure_group: iteration counts calibrated to about 20 ms per repetition
 * (a multiple of 1000), then REPS repetitions of every row round-robin, so that a noisy
 * second hits every row alike; `threads == 2`: a background thread runs the same reads.
 */
#define REP_NS 20e6
static void bench_read(const char *group, int threads)
{
	static double v[N_READ_ROWS][REPS];
	uint64_t iters[N_READ_ROWS];
	unsigned i;
	int r;

	rcu_register_thread();
	for (i = 0; i < N_READ_ROWS; i++) {
		double per;
		uint64_t k;

		run_row(&read_rows[i], 100000); /* warm-up */
		per = timed_row(&read_rows[i], 1000000);
		if (per < 0.05)
			per = 0.05;
		k = (uint64_t)(REP_NS / per) / 1000;
		iters[i] = (k < 10 ? 10 : k > 200000 ? 200000 : k) * 1000;
	}
	for (r = 0; r < REPS; r++) {
		for (i = 0; i < N_READ_ROWS; i++) {
			pthread_t bg;

			if (threads == 2 && read_rows[i].every == 1)
				continue;
			if (threads == 2) {
				stop_bg = 0;
				bg_ready = 0;
				pthread_create(&bg, NULL, bg_reader, (void *)&read_rows[i]);
				while (!__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST))
					;
			}
			v[i][r] = timed_row(&read_rows[i], iters[i]);
			if (threads == 2) {
				stop_bg = 1;
				pthread_join(bg, NULL);
			}
		}
	}
	rcu_unregister_thread();
	for (i = 0; i < N_READ_ROWS; i++) {
		if (threads == 2 && read_rows[i].every == 1)
			continue;
		qsort(v[i], REPS, sizeof(double), cmp_double);
		printf("{\"group\": \"%s\", \"id\": \"%s\", \"median_ns\": %.4f, \"min_ns\": %.4f, "
		       "\"max_ns\": %.4f, \"reps\": %d, \"iters\": %lu}\n",
		       group, read_rows[i].id, v[i][REPS / 2], v[i][0], v[i][REPS - 1], REPS,
		       (unsigned long)iters[i]);
	}
	fflush(stdout);
}

static int callgrind_mode(int argc, char **argv)
{
	const char *want = argc > 2 ? argv[2] : "list";
	unsigned i;

	for (i = 0; i < N_READ_ROWS; i++) {
		if (!strcmp(want, "list")) {
			printf("%s\n", read_rows[i].id);
			continue;
		}
		if (strcmp(want, read_rows[i].id))
			continue;
		if (argc < 4) {
			fprintf(stderr, "usage: %s callgrind ROW ITERS\n", argv[0]);
			return 2;
		}
		rcu_register_thread();
		run_row(&read_rows[i], 1000); /* warm-up, outside the N vs 2N difference */
		run_row(&read_rows[i], strtoull(argv[3], NULL, 10));
		rcu_unregister_thread();
		return 0;
	}
	if (strcmp(want, "list")) {
		fprintf(stderr, "unknown row %s\n", want);
		return 2;
	}
	return 0;
}

/* ---- synchronize latency --------------------------------------------------------------- */

/*
 * A busy reader: read_lock, load, unlock, and (QSBR) a quiescent state every `every` reads;
 * what the Rust benches' background readers do.
 */
struct busy_arg {
	uint64_t every;
};

static void *busy_reader(void *p)
{
	struct busy_arg *a = p;
	uint64_t j;

	rcu_register_thread();
	__atomic_add_fetch(&bg_ready, 1, __ATOMIC_SEQ_CST);
	while (!stop_bg) {
		for (j = 0; j < a->every; j++) {
			rcu_read_lock();
			struct node *nd = rcu_dereference(gptr);
			BLACK_BOX(nd);
			rcu_read_unlock();
		}
#ifdef FLAVOR_QSBR
		rcu_quiescent_state();
#endif
	}
	rcu_unregister_thread();
	return NULL;
}

static void start_readers(pthread_t *th, int n, struct busy_arg *arg)
{
	int i;

	stop_bg = 0;
	bg_ready = 0;
	for (i = 0; i < n; i++)
		pthread_create(&th[i], NULL, busy_reader, arg);
	while (__atomic_load_n(&bg_ready, __ATOMIC_SEQ_CST) < n)
		;
}

static void stop_readers(pthread_t *th, int n)
{
	int i;

	stop_bg = 1;
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
}

static void bench_synchronize(int readers)
{
	pthread_t th[2];
	struct busy_arg arg = { 1 }; /* a quiescent state (QSBR) after every read */
	static uint64_t lat[4000000];
	uint64_t n = 0, over = 0, deadline, i;
	const char *env = getenv("RCU_BENCH_SYNC_SECS");
	double secs = env ? atof(env) : 2.0;
	char id[64];

	start_readers(th, readers, &arg);
	deadline = now_ns() + (uint64_t)(secs * 1e9);
	while (n < sizeof(lat) / sizeof(lat[0])) {
		uint64_t t = now_ns();
		synchronize_rcu();
		uint64_t e = now_ns();
		lat[n++] = e - t;
		if (e > deadline)
			break;
	}
	stop_readers(th, readers);
	for (i = 0; i < n; i++)
		over += lat[i] > 1000000;
	qsort(lat, n, sizeof(uint64_t), cmp_u64);
	snprintf(id, sizeof(id), "liburcu_%s_readers_%d", FLAVOR, readers);
	printf("{\"group\": \"synchronize\", \"id\": \"%s\", \"median_ns\": %lu, \"p50_ns\": %lu, "
	       "\"p90_ns\": %lu, \"p99_ns\": %lu, \"max_ns\": %lu, \"count\": %lu, "
	       "\"over_1ms\": %lu}\n",
	       id, (unsigned long)lat[n / 2], (unsigned long)lat[n / 2],
	       (unsigned long)lat[n * 9 / 10], (unsigned long)lat[n * 99 / 100],
	       (unsigned long)lat[n - 1], (unsigned long)n, (unsigned long)over);
	fflush(stdout);
}

/* ---- call_rcu throughput --------------------------------------------------------------- */

static uint64_t ran;

static void free_node(struct rcu_head *h)
{
	struct node *nd = caa_container_of(h, struct node, head);
	nd->magic = POISON;
	free(nd);
	__atomic_add_fetch(&ran, 1, __ATOMIC_RELAXED);
}

/* `reps` batches of `k` callbacks (after `warm` unrecorded ones), each call_rcu x k then
 * rcu_barrier, with one busy reader (QSBR: a quiescent state every QS_EVERY reads, as in
 * call_rcu.rs). */
static void bench_call_rcu(long k, int warm, int reps)
{
	pthread_t th;
	struct busy_arg arg = { QS_EVERY };
	double v[64];
	int r;
	long i;
	char id[64];

	start_readers(&th, 1, &arg);
	rcu_register_thread();
#ifdef FLAVOR_QSBR
	rcu_thread_offline(); /* rcu_barrier() must not be called online */
#endif
	for (r = -warm; r < reps; r++) {
		uint64_t before = __atomic_load_n(&ran, __ATOMIC_RELAXED);
		uint64_t t = now_ns();
		for (i = 0; i < k; i++) {
			struct node *nd = malloc(sizeof(*nd));
			nd->magic = MAGIC;
			nd->seq = i;
			call_rcu(&nd->head, free_node);
		}
		rcu_barrier();
		uint64_t e = now_ns();
		if (__atomic_load_n(&ran, __ATOMIC_RELAXED) - before != (uint64_t)k) {
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
	stop_readers(&th, 1);
	snprintf(id, sizeof(id), "liburcu_%s_call_rcu", FLAVOR);
	qsort(v, reps, sizeof(double), cmp_double);
	printf("{\"group\": \"call_rcu\", \"id\": \"%s\", \"batch\": %ld, \"median_ns\": %.0f, "
	       "\"min_ns\": %.0f, \"max_ns\": %.0f, \"reps\": %d, \"elements\": %ld}\n",
	       id, k, v[reps / 2], v[0], v[reps - 1], reps, k);
	fflush(stdout);
}

/* ---- update-heavy mix ------------------------------------------------------------------ */

static uint64_t sink_global;

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
	int n;

	gptr = malloc(sizeof(*gptr));
	gptr->magic = MAGIC;
	gptr->seq = 0;

	if (!strcmp(only, "callgrind"))
		return callgrind_mode(argc, argv);
	if (!strcmp(only, "all") || !strcmp(only, "read")) {
		bench_read("read_side_1t", 1);
		bench_read("read_side_2t", 2);
	}
	if (!strcmp(only, "all") || !strcmp(only, "sync"))
		for (n = 0; n <= 2; n++)
			bench_synchronize(n);
	if (!strcmp(only, "all") || !strcmp(only, "call_rcu")) {
		bench_call_rcu(20000, 3, 21);
		bench_call_rcu(1000000, 1, 7);
	}
	if (!strcmp(only, "all") || !strcmp(only, "mix"))
		bench_mix();
	return 0;
}
