/* The live heap's peak, for benchmarks/curvature.py --heap (preloaded into each measuring
 * process): every malloc-family allocation counted at its usable size, so that a tool's peak is
 * what it allocated, not the resident memory the allocator happens to keep (a few MB of noise
 * on 50). torch's CPU tensors come from posix_memalign. Read through ctypes:
 * heap_peak_reset() sets the peak to the live bytes; heap_peak_bytes(), heap_live_bytes().
 *
 *     gcc -O2 -shared -fPIC -o heappeak.so heappeak.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

static _Atomic long live = 0, peak = 0;
static void *(*next_malloc)(size_t), *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t), *(*next_aligned_alloc)(size_t, size_t);
static void *(*next_memalign)(size_t, size_t);
static void (*next_free)(void *);
static int (*next_posix_memalign)(void **, size_t, size_t);
/* dlsym itself calls calloc before the real one is known: served from here, never freed */
static char early[1 << 16];
static size_t early_used = 0;

static void find(void) {
    next_malloc = dlsym(RTLD_NEXT, "malloc");
    next_calloc = dlsym(RTLD_NEXT, "calloc");
    next_realloc = dlsym(RTLD_NEXT, "realloc");
    next_free = dlsym(RTLD_NEXT, "free");
    next_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
    next_aligned_alloc = dlsym(RTLD_NEXT, "aligned_alloc");
    next_memalign = dlsym(RTLD_NEXT, "memalign");
}

static void *counted(void *p) {
    if (p) {
        long size = (long)malloc_usable_size(p);
        long now = atomic_fetch_add(&live, size) + size, seen = atomic_load(&peak);
        while (now > seen && !atomic_compare_exchange_weak(&peak, &seen, now)) {
        }
    }
    return p;
}

static int is_early(void *p) { return (char *)p >= early && (char *)p < early + sizeof early; }

void *malloc(size_t n) {
    if (!next_malloc) find();
    return counted(next_malloc(n));
}

void *calloc(size_t count, size_t n) {
    if (!next_calloc) {
        void *p = early + early_used;
        early_used += (count * n + 15) & ~(size_t)15;
        return memset(p, 0, count * n);
    }
    return counted(next_calloc(count, n));
}

void *realloc(void *old, size_t n) {
    if (!next_realloc) find();
    if (is_early(old)) {
        size_t room = (size_t)(early + sizeof early - (char *)old);
        return memcpy(malloc(n), old, n < room ? n : room);
    }
    if (old) atomic_fetch_sub(&live, (long)malloc_usable_size(old));
    return counted(next_realloc(old, n));
}

void free(void *p) {
    if (!p || is_early(p)) return;
    if (!next_free) find();
    atomic_fetch_sub(&live, (long)malloc_usable_size(p));
    next_free(p);
}

int posix_memalign(void **out, size_t alignment, size_t n) {
    if (!next_posix_memalign) find();
    int error = next_posix_memalign(out, alignment, n);
    if (!error) counted(*out);
    return error;
}

void *aligned_alloc(size_t alignment, size_t n) {
    if (!next_aligned_alloc) find();
    return counted(next_aligned_alloc(alignment, n));
}

void *memalign(size_t alignment, size_t n) {
    if (!next_memalign) find();
    return counted(next_memalign(alignment, n));
}

void heap_peak_reset(void) { atomic_store(&peak, atomic_load(&live)); }
long heap_peak_bytes(void) { return atomic_load(&peak); }
long heap_live_bytes(void) { return atomic_load(&live); }
