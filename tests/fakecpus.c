/* LD_PRELOAD for tests/_cpus.py: the process believes it has FAKE_CPUS processors. Each library sizes its thread
 * pools its own way, so each way is answered: sched_getaffinity / pthread_getaffinity_np (OpenBLAS, OpenMP,
 * OpenCV, FFmpeg), sysconf(_SC_NPROCESSORS_*) and get_nprocs (glibc, libstdc++'s hardware_concurrency), and the
 * files under /sys/devices/system/cpu/, /proc/cpuinfo and the cgroup cpuset (cpuinfo, which torch and
 * onnxruntime use, and OpenCV), which are read from the copy under FAKE_ROOT that tests/_cpus.py writes. Without
 * FAKE_CPUS it changes nothing. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <unistd.h>

static int fake(void) {
    const char *s = getenv("FAKE_CPUS");
    return s ? atoi(s) : 0;
}

static void fill(size_t size, cpu_set_t *mask) {
    CPU_ZERO_S(size, mask);
    for (int i = 0; i < fake() && (size_t)i < size * 8; i++) CPU_SET_S(i, size, mask);
}

int sched_getaffinity(pid_t pid, size_t size, cpu_set_t *mask) {
    static int (*real)(pid_t, size_t, cpu_set_t *);
    if (!real) real = dlsym(RTLD_NEXT, "sched_getaffinity");
    int r = real(pid, size, mask);
    if (r == 0 && fake() > 0) fill(size, mask);
    return r;
}

int pthread_getaffinity_np(pthread_t t, size_t size, cpu_set_t *mask) {
    static int (*real)(pthread_t, size_t, cpu_set_t *);
    if (!real) real = dlsym(RTLD_NEXT, "pthread_getaffinity_np");
    int r = real(t, size, mask);
    if (r == 0 && fake() > 0) fill(size, mask);
    return r;
}

/* Pinning a thread to a processor the host does not have fails (EINVAL): it is left where it is. */
int pthread_setaffinity_np(pthread_t t, size_t size, const cpu_set_t *mask) {
    static int (*real)(pthread_t, size_t, const cpu_set_t *);
    if (!real) real = dlsym(RTLD_NEXT, "pthread_setaffinity_np");
    return fake() > 0 ? 0 : real(t, size, mask);
}

long sysconf(int name) {
    static long (*real)(int);
    if (!real) real = dlsym(RTLD_NEXT, "sysconf");
    if (fake() > 0 && (name == _SC_NPROCESSORS_ONLN || name == _SC_NPROCESSORS_CONF)) return fake();
    return real(name);
}

int get_nprocs(void) {
    static int (*real)(void);
    if (!real) real = dlsym(RTLD_NEXT, "get_nprocs");
    return fake() > 0 ? fake() : real();
}

int get_nprocs_conf(void) {
    static int (*real)(void);
    if (!real) real = dlsym(RTLD_NEXT, "get_nprocs_conf");
    return fake() > 0 ? fake() : real();
}

static __thread char moved[4096];

static const char *where(const char *path) {
    const char *root = getenv("FAKE_ROOT");
    if (fake() <= 0 || !root || !path) return path;
    if (strncmp(path, "/sys/devices/system/cpu/", 24) && strcmp(path, "/proc/cpuinfo") &&
        strcmp(path, "/sys/fs/cgroup/cpuset/cpuset.cpus"))
        return path;
    snprintf(moved, sizeof moved, "%s%s", root, path);
    return moved;
}

#define OPEN_HOOK(name)                                                              \
    int name(const char *path, int flags, ...) {                                     \
        static int (*real)(const char *, int, ...);                                  \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                   \
        va_list ap;                                                                  \
        va_start(ap, flags);                                                         \
        int mode = va_arg(ap, int);                                                  \
        va_end(ap);                                                                  \
        return real(where(path), flags, mode);                                       \
    }
#define OPENAT_HOOK(name)                                                            \
    int name(int dir, const char *path, int flags, ...) {                            \
        static int (*real)(int, const char *, int, ...);                             \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                   \
        va_list ap;                                                                  \
        va_start(ap, flags);                                                         \
        int mode = va_arg(ap, int);                                                  \
        va_end(ap);                                                                  \
        return real(dir, where(path), flags, mode);                                  \
    }
#define FOPEN_HOOK(name)                                                             \
    FILE *name(const char *path, const char *mode) {                                 \
        static FILE *(*real)(const char *, const char *);                            \
        if (!real) real = dlsym(RTLD_NEXT, #name);                                   \
        return real(where(path), mode);                                              \
    }
OPEN_HOOK(open)
OPEN_HOOK(open64)
OPENAT_HOOK(openat)
OPENAT_HOOK(openat64)
FOPEN_HOOK(fopen)
FOPEN_HOOK(fopen64)
