/*
 * blkbench: a small block I/O benchmark for the guest's root image (issue 16).
 *
 *   blkbench [-s MIB] [-t SECONDS] [-m MODES] PATH
 *
 * Everything goes through O_DIRECT with 4 KiB-aligned buffers, so the guest's page cache
 * is out of the way and every request reaches the (virtual) disk:
 *
 *   write     sequential writes of 1 MiB over MIB MiB (creating or extending a regular
 *             file), then fsync; the fsync is inside the timing;
 *   read      sequential reads of 1 MiB over MIB MiB;
 *   randread  4 KiB reads at random 4 KiB-aligned offsets within MIB MiB for SECONDS.
 *
 * MODES is a comma list of these, run in the order given. The default is write,read,randread
 * for a regular file; for a block device it is read,randread (writing would destroy what is
 * on it), and `write` must be asked for. One line per measurement, machine-readable:
 *
 *   BLKBENCH seq_write_mbps=123.4 bytes=268435456 secs=2.175 path=/bench.dat
 *   BLKBENCH seq_read_mbps=...
 *   BLKBENCH rand_read_iops=... ops=... secs=... path=...
 *
 * (MB = 10^6 bytes.) Errors print one line starting "blkbench: error:" and exit 1; bad
 * arguments exit 2. Build: gcc -static -O2 -o blkbench blkbench.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <linux/fs.h>

#define SEQ_BLOCK (1u << 20)
#define RAND_BLOCK 4096u
#define ALIGN 4096u
#define MAX_MIB (1u << 20) /* 1 TiB */
#define MAX_SECS 3600u

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("blkbench: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

static void usage(void)
{
    fputs("usage: blkbench [-s MIB] [-t SECONDS] [-m write,read,randread] PATH\n"
          "  -s MIB      bytes to write/read sequentially and the random-read span "
          "(default 256)\n"
          "  -t SECONDS  random-read duration (default 10)\n"
          "  -m MODES    what to measure, in order (default: write,read,randread for a "
          "file,\n"
          "              read,randread for a block device)\n",
          stderr);
    exit(2);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A whole number in [min, max], or exit 2 with a message naming the option. */
static unsigned parse_uint(const char *opt, const char *s, unsigned min, unsigned max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        die(2, "%s %s: expected a whole number from %u to %u", opt, s, min, max);
    return (unsigned)v;
}

/* xorshift64*: a fixed-seed generator, so runs pick the same offsets. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void full_pwrite(int fd, const void *buf, size_t len, off_t off, const char *path)
{
    ssize_t n = pwrite(fd, buf, len, off);
    if (n < 0)
        die(1, "writing %s at %lld: %s", path, (long long)off, strerror(errno));
    if ((size_t)n != len)
        die(1, "short write to %s at %lld (%zd of %zu bytes): is the disk full?", path,
            (long long)off, n, len);
}

static void full_pread(int fd, void *buf, size_t len, off_t off, const char *path)
{
    ssize_t n = pread(fd, buf, len, off);
    if (n < 0)
        die(1, "reading %s at %lld: %s", path, (long long)off, strerror(errno));
    if ((size_t)n != len)
        die(1, "short read from %s at %lld (%zd of %zu bytes): run the write mode first "
               "or lower -s", path, (long long)off, n, len);
}

int main(int argc, char **argv)
{
    unsigned mib = 256, secs = 10;
    const char *modes = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:t:m:h")) != -1) {
        switch (opt) {
        case 's': mib = parse_uint("-s", optarg, 1, MAX_MIB); break;
        case 't': secs = parse_uint("-t", optarg, 1, MAX_SECS); break;
        case 'm': modes = optarg; break;
        default: usage();
        }
    }
    if (optind != argc - 1)
        usage();
    const char *path = argv[optind];

    struct stat st;
    int exists = stat(path, &st) == 0;
    if (!exists && errno != ENOENT)
        die(1, "%s: %s", path, strerror(errno));
    int is_blk = exists && S_ISBLK(st.st_mode);
    if (exists && !is_blk && !S_ISREG(st.st_mode))
        die(2, "%s is neither a regular file nor a block device", path);
    if (!modes)
        modes = is_blk ? "read,randread" : "write,read,randread";

    /* Validate the whole mode list before touching the disk. */
    int want_write = 0;
    {
        char *copy = strdup(modes), *save = NULL;
        if (!copy)
            die(1, "out of memory");
        int n = 0;
        for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save), n++) {
            if (!strcmp(m, "write"))
                want_write = 1;
            else if (strcmp(m, "read") && strcmp(m, "randread"))
                die(2, "-m: unknown mode '%s' (write, read, randread)", m);
        }
        free(copy);
        if (!n)
            die(2, "-m: no mode given (write, read, randread)");
    }
    if (!exists && !want_write)
        die(1, "%s does not exist (the write mode creates a file)", path);

    uint64_t bytes = (uint64_t)mib << 20;
    if (is_blk) {
        uint64_t dev_bytes = 0;
        int fd0 = open(path, O_RDONLY);
        if (fd0 < 0 || ioctl(fd0, BLKGETSIZE64, &dev_bytes) < 0)
            die(1, "%s: cannot read the device size: %s", path, strerror(errno));
        close(fd0);
        if (bytes > dev_bytes)
            die(2, "-s %u: %s holds only %" PRIu64 " MiB", mib, path, dev_bytes >> 20);
    }

    int flags = O_DIRECT | (want_write ? O_RDWR | O_CREAT : O_RDONLY);
    int fd = open(path, flags, 0644);
    if (fd < 0)
        die(1, "opening %s with O_DIRECT: %s%s", path, strerror(errno),
            errno == EINVAL ? " (this file system has no O_DIRECT, e.g. tmpfs)" : "");

    void *buf;
    if (posix_memalign(&buf, ALIGN, SEQ_BLOCK))
        die(1, "out of memory for a %u-byte aligned buffer", SEQ_BLOCK);
    for (size_t i = 0; i < SEQ_BLOCK; i++)
        ((unsigned char *)buf)[i] = (unsigned char)(i * 131 + 7);

    char *copy = strdup(modes), *save = NULL;
    if (!copy)
        die(1, "out of memory");
    for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        if (!strcmp(m, "write")) {
            double t0 = now();
            for (uint64_t off = 0; off < bytes; off += SEQ_BLOCK)
                full_pwrite(fd, buf, SEQ_BLOCK, (off_t)off, path);
            if (fsync(fd) < 0)
                die(1, "fsync %s: %s", path, strerror(errno));
            double dt = now() - t0;
            printf("BLKBENCH seq_write_mbps=%.1f bytes=%" PRIu64 " secs=%.3f path=%s\n",
                   (double)bytes / dt / 1e6, bytes, dt, path);
        } else if (!strcmp(m, "read")) {
            double t0 = now();
            for (uint64_t off = 0; off < bytes; off += SEQ_BLOCK)
                full_pread(fd, buf, SEQ_BLOCK, (off_t)off, path);
            double dt = now() - t0;
            printf("BLKBENCH seq_read_mbps=%.1f bytes=%" PRIu64 " secs=%.3f path=%s\n",
                   (double)bytes / dt / 1e6, bytes, dt, path);
        } else {
            uint64_t blocks = bytes / RAND_BLOCK, ops = 0;
            double t0 = now(), end = t0 + secs, t = t0;
            while (t < end) {
                for (int i = 0; i < 64; i++, ops++)
                    full_pread(fd, buf, RAND_BLOCK, (off_t)((rng() % blocks) * RAND_BLOCK),
                               path);
                t = now();
            }
            double dt = t - t0;
            printf("BLKBENCH rand_read_iops=%.0f ops=%" PRIu64 " secs=%.3f path=%s\n",
                   (double)ops / dt, ops, dt, path);
        }
        fflush(stdout);
    }
    free(copy);
    free(buf);
    if (close(fd) < 0)
        die(1, "closing %s: %s", path, strerror(errno));
    return 0;
}
